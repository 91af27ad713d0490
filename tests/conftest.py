"""Shared fixtures: tiny synthetic models (Llama, Qwen3) made once per session, and real local clusters."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from backend.local import LocalCluster
from model_downloader.synthetic import make_synthetic_model

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return Path(make_synthetic_model("tiny", tmp_path_factory.mktemp("models") / "tiny", seed=0))


@pytest.fixture(scope="session")
def tiny_qwen3_model(tmp_path_factory) -> Path:
    return Path(make_synthetic_model("tiny-qwen3", tmp_path_factory.mktemp("models") / "tiny-qwen3", seed=0))


@pytest.fixture(scope="session")
def logs_dir() -> Path:
    path = ARTIFACTS / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_cluster(model: Path, logs_dir: Path, **kwargs) -> LocalCluster:
    return LocalCluster(str(model), log_dir=logs_dir, **kwargs).start(timeout_s=180)


@pytest.fixture(scope="module")
def local_cluster(tiny_model, logs_dir):
    """Root + 2 workers with a little latency, so that streaming can be watched (used by browser tests)."""
    cluster = start_cluster(tiny_model, logs_dir, workers=2, latency_ms="3,8")
    yield cluster
    cluster.stop()


def hf_greedy(model_dir: Path, prompt_ids: list[int], max_new_tokens: int, dtype: str = "float32") -> list[int]:
    """The oracle: Hugging Face generate on the same model, greedy."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype))
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, len(prompt_ids):].tolist()


def pytest_configure(config):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class ComposeCluster:
    """`docker compose` on this repository's compose file, reshaped by variables only."""

    def __init__(self, project: str, env: dict):
        self.project, self.url = project, f"http://127.0.0.1:{env.get('WEB_PORT', '3001')}"
        self.env = {**os.environ, **env}
        self.repo = Path(__file__).resolve().parent.parent
        self.timings: dict[str, float] = {}

    def compose(self, *args, check=True, timeout=1800):
        import subprocess
        return subprocess.run(["docker", "compose", "-p", self.project, *args], cwd=self.repo, env=self.env,
                              check=check, capture_output=True, text=True, timeout=timeout)

    def container(self, service: str, number: int = 1) -> str:
        return f"{self.project}-{service}-{number}"

    def wait_healthy(self, timeout_s: float) -> None:
        from common.health import wait_healthy
        try:
            wait_healthy(self.url, timeout_s, interval_s=1)
        except (TimeoutError, RuntimeError) as exc:
            raise type(exc)(f"compose cluster not healthy: {exc}\n"
                            + self.compose("logs", "--tail", "40", check=False).stdout) from None


@pytest.fixture(scope="module")
def compose_cluster():
    """Root + 2 workers on the tiny synthetic model, through compose on the real engine.

    Per module, not per session: it holds 127.0.0.1:3001, which the swarm test's stack needs after it."""
    import json
    import time

    cluster = ComposeCluster("ddllm-test", {"NODES": "2", "MODEL_PRESET": "tiny", "WORKER_CPUS": "1",
                                            "WORKER_MEMORY": "2g", "LATENCY_MIN_MS": "2", "LATENCY_MAX_MS": "6",
                                            "HOP_TIMEOUT_S": "5"})
    cluster.compose("down", "-v", "--remove-orphans", check=False)
    started = time.monotonic()
    cluster.compose("build")
    cluster.timings["build_s"] = time.monotonic() - started
    started = time.monotonic()
    cluster.compose("up", "-d")
    try:
        cluster.wait_healthy(600)
        cluster.timings["up_to_healthy_s"] = time.monotonic() - started
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "compose_timings.json").write_text(json.dumps(cluster.timings))
        yield cluster
    finally:
        (ARTIFACTS / "compose.log").write_text(cluster.compose("logs", "--no-color", check=False).stdout)
        cluster.compose("down", "-v", "--remove-orphans", check=False)
