"""A worker's app and data port, as `python -m worker` serves them, on free ports of this process."""
import time

from backend.local import free_port_pair
from common.auth import HEADER, SecretSource
from common.config import WorkerSettings
from common.protocol import LoadAssignment
from common.transport import data_port
from worker.app import create_app, serve_data_plane


class InProcessWorker:
    """Loaded with `assignment` through its own /v1/load, ready when built; `.client` is Flask's test client."""

    def __init__(self, model, assignment: LoadAssignment, secret: str, hop_timeout_s: float = 30.0,
                 port: int | None = None):
        """port: one taken beforehand (free_port_pair), for peers that must know the address before it serves."""
        self.name, self.port = assignment.name, port or free_port_pair()
        self.settings = WorkerSettings(host="127.0.0.1", port=self.port, threads=1, model_roots=(str(model.parent),),
                                       max_frame_bytes=1 << 22, hop_timeout_s=hop_timeout_s,
                                       secret=SecretSource(secret))
        self.app = create_app(self.settings)
        self.client = self.app.test_client()
        self.listener = serve_data_plane(self.app.extensions["worker_state"], data_port(self.port))
        r = self.client.post("/v1/load", headers={HEADER: secret}, json=assignment.to_dict())
        assert r.status_code == 202, r.json
        deadline = time.monotonic() + 60
        while self.client.get("/healthz").json["status"] != "ready":
            assert time.monotonic() < deadline, self.client.get("/healthz", headers={HEADER: secret}).json
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.listener.stop()
