"""Shared fixtures: a tiny synthetic model made once per session, and real local clusters on it."""
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
