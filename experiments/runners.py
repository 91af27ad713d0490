"""The clusters a sweep runs on: compose (reshaped by variables) or LocalCluster, one configuration at a time."""
from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

from common.health import wait_healthy

from .config import RunConfig

REPO = Path(__file__).resolve().parent.parent


def is_preset(model: str) -> bool:
    from model_downloader.presets import PRESETS
    return model in PRESETS


def compose_env(cfg: RunConfig, web_port: int) -> dict:
    """The variables that give the compose cluster this configuration's shape (docker-compose.yml reads them)."""
    env = {"NODES": str(cfg.nodes), "WORKER_CPUS": str(cfg.threads), "DTYPE": cfg.dtype,
           "LATENCY_MIN_MS": f"{cfg.latency_ms[0]:g}", "LATENCY_MAX_MS": f"{cfg.latency_ms[1]:g}",
           "LATENCY_SEED": str(cfg.seed), "PARALLELISM": cfg.parallelism, "WEB_PORT": str(web_port)}
    if cfg.max_context:
        env["MAX_CONTEXT"] = str(cfg.max_context)
    env.update(profile_env(cfg))
    if is_preset(cfg.model):
        env.update(MODEL_PRESET=cfg.model, MODEL_PATH="")
    else:  # a real model must sit in ./models, mounted at /models
        env["MODEL_PATH"] = f"/models/{Path(cfg.model).name}"
    return env


def profile_env(cfg: RunConfig) -> dict:
    """COMPUTE, DEVICES, ROOT_DEVICE, NETWORK and SYNC_TOPOLOGY for the root, those set only (as MAX_CONTEXT); a named
    network's latency is its own, so the LATENCY_* variables are cleared (an empty variable counts as unset)."""
    env = {}
    if cfg.compute != "real":
        env["COMPUTE"] = cfg.compute
    if cfg.devices:
        env["DEVICES"] = cfg.devices.replace(" ", "")
    if cfg.root_device != "host":
        env["ROOT_DEVICE"] = cfg.root_device
    if cfg.network:
        env.update(NETWORK=cfg.network, LATENCY_MIN_MS="", LATENCY_MAX_MS="")
    if cfg.sync_topology != "star":
        env["SYNC_TOPOLOGY"] = cfg.sync_topology
    return env


class ComposeRunner:
    """`docker compose -p PROJECT` on the repository's compose file; the synthetic volume is kept between runs."""

    kind = "compose"

    def __init__(self, project: str = "ddllm-sweep", web_port: int = 3201, healthy_timeout_s: float = 1200):
        self.project, self.web_port, self.healthy_timeout_s = project, web_port, healthy_timeout_s
        self.url = f"http://127.0.0.1:{web_port}"

    def compose(self, env: dict, *args, timeout: float = 1800) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", "compose", "-p", self.project, *args], cwd=REPO, env={**os.environ, **env},
                              check=True, capture_output=True, text=True, timeout=timeout)

    @contextmanager
    def cluster(self, cfg: RunConfig):
        env = compose_env(cfg, self.web_port)
        # force-recreate: the root discovers workers and hands out slices only at start-up
        self.compose(env, "up", "-d", "--force-recreate", "--remove-orphans")
        try:
            wait_healthy(self.url, self.healthy_timeout_s)
        except TimeoutError as exc:
            logs = subprocess.run(["docker", "compose", "-p", self.project, "logs", "--tail", "30"], cwd=REPO,
                                  env={**os.environ, **env}, capture_output=True, text=True).stdout
            raise TimeoutError(f"{exc}\n{logs}") from None
        yield self.url

    def close(self, remove_volume: bool = False) -> None:
        self.compose({}, "down", "--remove-orphans", *(["-v"] if remove_volume else []))


class LocalRunner:
    """LocalCluster processes on this machine (no CPU limits: threads is the torch thread count)."""

    kind = "local"

    def __init__(self, log_dir: Path | None = None):
        self.log_dir = log_dir

    @contextmanager
    def cluster(self, cfg: RunConfig):
        from backend.local import LocalCluster
        lo, hi = cfg.latency_ms
        with LocalCluster(cfg.model, workers=cfg.nodes, threads=cfg.threads, latency_ms=f"{lo:g},{hi:g}",
                          dtype=cfg.dtype, seed=cfg.seed, parallelism=cfg.parallelism, log_dir=self.log_dir,
                          extra_env=profile_env(cfg)) as c:
            yield c.url

    def close(self, remove_volume: bool = False) -> None:
        pass
