"""python -m backend.local: the root and N workers as local processes (the code the containers run).

Each process is a real gunicorn HTTP server on 127.0.0.1; the root prints its URL once every worker
holds its slice, and Ctrl-C stops them all.
"""
from __future__ import annotations

import argparse
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from common.auth import HEADER as SECRET_HEADER
from common.health import wait_healthy
from common.profiles import ProfileError, devices_for
from common.profiles import network as network_profile
from common.transport import data_port

REPO = Path(__file__).resolve().parent.parent


_handed_out: set[int] = set()  # ports given to a process of this one: free now, but not twice


# Below the kernel's ephemeral range (32768-60999 by default): a port the kernel hands out itself can
# be taken by any outgoing connection between this check and the server's bind (seen on a busy machine).
PORT_RANGE = (20000, 32000)


def _take(port: int) -> bool:
    """Reserve a port for a process of this one: free now and not handed out before."""
    if port in _handed_out or port > 65535:
        return False
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    _handed_out.add(port)
    return True


def free_port() -> int:
    for _ in range(1000):
        port = random.randrange(*PORT_RANGE)
        if _take(port):
            return port
    raise RuntimeError("found no free port")


def free_port_pair() -> int:
    """A free port whose data port is free too: the process serves HTTP on it and its data plane beside it."""
    for _ in range(100):
        port = free_port()
        if _take(data_port(port)):
            return port
    raise RuntimeError("found no pair of free ports")


def stop_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop a process started in its own session (start_new_session) and its children: SIGTERM to the
    group, SIGKILL after grace_s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class LocalCluster:
    """Start with .start(), stop with .stop() (or use as a context manager)."""

    def __init__(self, model: str, workers: int = 2, threads: int = 1, latency_ms: str | None = None,
                 port: int | None = None, dtype: str = "float32", layer_split: str = "", seed: int = 0,
                 extra_env: dict | None = None, log_dir: Path | None = None, repo: Path = REPO,
                 parallelism: str = "pipeline", devices: str = "", network: str = ""):
        """latency_ms: "MIN,MAX" on every link; None: 0 ms, or the named network's own latency.
        devices: DEVICES, the profile every worker plays (one name, or one per worker; "": its share of
        this host); network: NETWORK, the link model of every link (profiles/networks.yaml).
        An unknown name raises ProfileError (with the catalog's names) here, before any process starts."""
        devices_for(tuple(n.strip() for n in devices.split(",") if n.strip()), workers)
        if network:
            network_profile(network)
        self.model, self.n_workers, self.threads = model, workers, threads
        self.latency_ms = latency_ms if latency_ms is not None or network else "0,0"
        self.dtype, self.layer_split, self.seed = dtype, layer_split, seed
        self.parallelism, self.devices, self.network = parallelism, devices, network
        self.port = port or free_port_pair()
        self.extra_env = extra_env or {}
        self.log_dir = log_dir
        if log_dir:
            log_dir.mkdir(parents=True, exist_ok=True)
        self.repo = Path(repo)  # the code the processes run: this checkout, or another to compare with
        self.worker_ports = [free_port_pair() for _ in range(workers)]
        self.secret = secrets.token_hex(16)  # a fresh cluster secret per cluster: no peer outside it gets in
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def model_name(self) -> str:
        return Path(self.model).name

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.worker_ports[i]}"

    def worker_info(self, i: int) -> dict:
        """A worker's GET /v1/info, with the cluster secret (as the root's own requests carry it)."""
        return requests.get(self.worker_url(i) + "/v1/info", headers={SECRET_HEADER: self.secret}, timeout=10).json()

    def _model_env(self) -> dict:
        path = Path(self.model)
        if (path / "config.json").is_file():
            return {"MODEL_PATH": str(path.resolve()), "MODEL_ROOTS": str(path.resolve().parent)}
        # a preset name: a synthetic model is made (once) under models/synthetic
        synth = REPO / "models" / "synthetic"
        return {"MODEL_PRESET": self.model, "SYNTHETIC_DIR": str(synth), "MODEL_ROOTS": str(synth)}

    def _spawn(self, name: str, module: str, env: dict) -> None:
        full = {**os.environ, "PYTHONPATH": str(self.repo), "HOST": "127.0.0.1", "CLUSTER_SECRET": self.secret, **env}
        out = open(self.log_dir / f"{name}.log", "ab") if self.log_dir else subprocess.DEVNULL
        self.procs[name] = subprocess.Popen([sys.executable, "-m", module], env=full, cwd=self.repo,
                                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def start_worker(self, i: int) -> None:
        self._spawn(f"worker-{i + 1}", "worker", {
            "PORT": str(self.worker_ports[i]), "THREADS": str(self.threads),
            "MODEL_ROOTS": self._model_env()["MODEL_ROOTS"], **self.extra_env})

    def start(self, timeout_s: float = 300) -> "LocalCluster":
        for i in range(self.n_workers):
            self.start_worker(i)
        self._spawn("root", "backend", {
            "PORT": str(self.port), "THREADS": str(self.threads), "DTYPE": self.dtype,
            "WORKER_URLS": ",".join(self.worker_url(i) for i in range(self.n_workers)),
            **self._link_env(), "DEVICES": self.devices, "LATENCY_SEED": str(self.seed),
            "LAYER_SPLIT": self.layer_split, "PARALLELISM": self.parallelism, "STATS_SOURCE": "local", **self._model_env(), **self.extra_env})
        self.wait_ready(timeout_s)
        return self

    def _link_env(self) -> dict:
        """NETWORK, then LATENCY_MIN/MAX_MS over its latency when they are given too."""
        env = {"NETWORK": self.network}
        if self.latency_ms is not None:
            lo, _, hi = self.latency_ms.partition(",")
            env |= {"LATENCY_MIN_MS": lo or "0", "LATENCY_MAX_MS": hi or lo or "0"}
        return env

    def wait_ready(self, timeout_s: float) -> None:
        def alive():
            if self.procs["root"].poll() is not None:
                raise RuntimeError(f"the root exited with code {self.procs['root'].returncode}")
        try:
            wait_healthy(self.url, timeout_s, alive, interval_s=0.2)
        except TimeoutError as exc:
            raise TimeoutError(f"the cluster was not ready: {exc}") from None

    def stop_process(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc:
            stop_group(proc)

    def stop(self) -> None:
        for name in list(self.procs):
            self.stop_process(name)

    def __enter__(self):
        return self if self.procs else self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backend.local", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a model folder, or a synthetic preset name (tiny, llama-3.2-1b, ...)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--latency-ms", default=None,
                    help="MIN,MAX injected per link, uniform (default 0,0; with --network, the network's own)")
    ap.add_argument("--devices", default="", help="the device every worker plays (rpi5), or one per worker "
                    "(rpi5,rpi5,rpi4b); default: each worker is its share of this machine")
    ap.add_argument("--network", default="", help="the link model of every link, by name (gigabit-ethernet)")
    ap.add_argument("--port", type=int, default=5000)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "int8", "int4", "q40", "q80"],
                    help="q40, q80: with --compute modelled only")
    ap.add_argument("--compute", default="real", choices=["real", "modelled"],
                    help="modelled: no weights, each worker takes its device's modelled time (tokens not real)")
    ap.add_argument("--root-device", default="", help="with --compute modelled: the device of the root's LM head")
    ap.add_argument("--parallelism", default="pipeline", choices=["pipeline", "tensor"],
                    help="pipeline: each worker holds a run of layers; tensor: a share of every layer")
    ap.add_argument("--sync-topology", default="", choices=["", "star", "mesh"],
                    help="tensor mode's syncs: star (through the root, the default) or mesh (worker to worker)")
    ap.add_argument("--placement", default="", choices=["", "even", "manual", "threads", "memory", "fit"],
                    help="how layers are placed (default: manual with --layer-split, else even)")
    ap.add_argument("--layer-split", default="", help="manual layer counts per worker, like 8,8,6")
    ap.add_argument("--seed", type=int, default=0, help="seed of the latency generator")
    ap.add_argument("--logs", default="", help="folder for each process's log (default: discard)")
    args = ap.parse_args(argv)
    if args.workers < 1:
        ap.error("--workers must be at least 1")
    log_dir = Path(args.logs) if args.logs else None
    extra_env = {"PLACEMENT": args.placement} if args.placement else {}
    extra_env.update({k: v for k, v in (("COMPUTE", args.compute), ("ROOT_DEVICE", args.root_device),
                                        ("SYNC_TOPOLOGY", args.sync_topology)) if v})
    try:
        cluster = LocalCluster(args.model, args.workers, args.threads, args.latency_ms, args.port, args.dtype,
                               args.layer_split, args.seed, extra_env=extra_env, log_dir=log_dir,
                               parallelism=args.parallelism, devices=args.devices, network=args.network)
    except ProfileError as exc:
        ap.error(str(exc))
    try:
        cluster.start()
    except (RuntimeError, TimeoutError) as exc:
        cluster.stop()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"ready: {cluster.url}  ({args.workers} workers; Ctrl-C stops them all)", flush=True)
    try:
        while all(p.poll() is None for p in cluster.procs.values()):
            time.sleep(0.5)
        print("a process exited; stopping the cluster", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
