"""The ring on real sockets: worker processes' code in this process, the root's Chain, the cluster secret."""
import socket
import time

import pytest
import requests
import torch

from backend.chain import Chain, WorkerFailure, WorkerSpec
from backend.control import ControlClient
from backend.local import free_port_pair
from common.auth import HEADER, SecretSource
from common.frame import decode_frame, encode_frame
from common.placement import Shard
from common.protocol import LoadAssignment, StepHeader
from common.transport import TcpTransport, data_port, split_address
from common.wire import read_message, write_message

from .inprocess import InProcessWorker

SECRET = "s3cret-for-tests"


def worker(model, name: str, index: int, shard: Shard, next_address: str) -> InProcessWorker:
    return InProcessWorker(model, LoadAssignment(name, index, shard, "float32", str(model), next_address), SECRET)


@pytest.fixture()
def ring(tiny_model):
    root_port = free_port_pair()
    return_address = f"127.0.0.1:{data_port(root_port)}"
    second = worker(tiny_model, "worker-2", 1, Shard(2, 4), return_address)
    first = worker(tiny_model, "worker-1", 0, Shard(0, 2), f"127.0.0.1:{data_port(second.port)}")
    secret = SecretSource(SECRET)
    transport = TcpTransport("127.0.0.1", 1 << 22, secret)
    specs = [WorkerSpec(first.name, first.url, Shard(0, 2)), WorkerSpec(second.name, second.url, Shard(2, 4))]
    chain = Chain(specs, transport, ControlClient(secret), return_address, 1 << 22, hop_timeout_s=5)
    listener = transport.serve(data_port(root_port), chain.arrive)
    yield chain, first, second, listener
    for x in (first, second, listener):
        x.stop()


def test_the_last_worker_sends_straight_home_and_the_return_link_is_one_link(ring, tiny_model):
    chain, first, second, _ = ring
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32)
    x = torch.randn(1, 5, model.config.hidden_size)
    out, timings = chain.forward("r1", x, 0, [0.0, 0.0, 30.0])
    # the same four layers run in one stock model: the ring computes exactly them
    with torch.inference_mode():
        pos = torch.arange(5).unsqueeze(0)
        emb = model.model.rotary_emb(x, pos)
        want = x
        for layer in model.model.layers:
            want = layer(want, attention_mask=None, position_ids=pos, position_embeddings=emb)
            want = want[0] if isinstance(want, tuple) else want
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)
    assert [s["name"] for s in timings["stages"]] == ["worker-1", "worker-2"]
    out_link = timings["link_out"]
    # One link: worker-2's send to the root's receipt, far below the 30 ms injected on it, which is
    # slept by its receiver (the root) and not counted as transport.
    assert out_link["injected_ms"] == 30.0 and 0 < out_link["transport_ms"] < 30
    assert out_link["bytes"] > x.numel() * 4  # the hidden states themselves came home on this link
    assert all(0 < s["link_in"]["transport_ms"] < 30 for s in timings["stages"])
    # a second step continues the same caches
    out2, _ = chain.forward("r1", x[:, :1], 5, [0.0, 0.0, 0.0])
    assert out2.shape == (1, 1, model.config.hidden_size)
    assert first.client.get("/v1/info", headers={HEADER: SECRET}).json["caches"] == ["r1"]


def test_a_root_that_cannot_be_reached_is_named(ring):
    chain, first, second, listener = ring
    listener.stop()  # the root's data port is gone: worker-2 cannot send its output home
    with pytest.raises(WorkerFailure, match="worker-2 cannot send its output to the root"):
        chain.forward("r2", torch.randn(1, 2, 64), 0, [0.0, 0.0, 0.0])


def test_a_down_worker_is_named_at_once(ring):
    chain, first, second, _ = ring
    second.stop()
    started = time.monotonic()
    with pytest.raises(WorkerFailure) as failure:
        chain.forward("r3", torch.randn(1, 2, 64), 0, [0.0, 0.0, 0.0])
    assert failure.value.worker == "worker-2" and "worker-2 is down or unreachable" in str(failure.value)
    assert time.monotonic() - started < 2  # not a wait for the hop timeout


def test_peers_without_the_secret_are_refused(ring):
    chain, first, second, _ = ring
    # control: a 401 and nothing else; /healthz says only whether it is ready
    for path in ("/v1/info", "/v1/load", "/v1/release", "/v1/forward"):
        r = first.client.open(path, method="GET" if path == "/v1/info" else "POST", json={})
        assert r.status_code == 401 and "cluster secret" in r.json["error"]["message"], path
    assert first.client.get("/healthz").json == {"status": "ready"}
    assert first.client.get("/healthz", headers={HEADER: "wrong"}).json == {"status": "ready"}
    assert "assignment" in first.client.get("/healthz", headers={HEADER: SECRET}).json
    # data: a frame without the handshake (or with a wrong one) gets one 401 error frame, then the door shuts
    frame = encode_frame(StepHeader("x", 0, 0, (0.0, 0.0, 0.0)).to_dict(), torch.zeros(1, 1, 64))
    for hello in (None, b"DLMH" + b"wrong"):
        with socket.create_connection(split_address(f"127.0.0.1:{data_port(first.port)}"), timeout=5) as s:
            if hello:
                write_message(s, hello)
            write_message(s, frame)
            header, tensor = decode_frame(read_message(s, 1 << 20), 1 << 20)
            assert header["error"]["status"] == 401 and tensor is None
            assert s.recv(1) == b""  # closed
    # the same worker still serves its cluster
    out, _ = chain.forward("ok", torch.randn(1, 1, 64), 0, [0.0, 0.0, 0.0])
    assert out.shape == (1, 1, 64)


def test_an_http_worker_refuses_without_the_secret_over_the_network(tiny_model):
    # The same check through a real HTTP server (gunicorn is what the containers run; werkzeug here).
    import threading

    from werkzeug.serving import make_server
    w = worker(tiny_model, "worker-1", 0, Shard(0, 4), "127.0.0.1:9")
    server = make_server("127.0.0.1", 0, w.app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        assert requests.get(url + "/v1/info", timeout=5).status_code == 401
        assert requests.get(url + "/v1/info", headers={HEADER: SECRET}, timeout=5).status_code == 200
    finally:
        server.shutdown()
        w.stop()
