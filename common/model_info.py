"""What the root and the workers need to know about a model folder, from its config.json."""
from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoConfig, PretrainedConfig


def load_config(model_dir: str | Path) -> PretrainedConfig:
    config = AutoConfig.from_pretrained(str(model_dir))
    # Slices are built from bare decoder layers: pick the attention kernel HF generate uses by
    # default, so that both compute the same numbers (eager without a mask would not be causal).
    config._attn_implementation = "sdpa"
    return config


def synthetic_marker(model_dir: str | Path) -> dict | None:
    """The `synthetic` entry model_downloader writes into config.json, or None for a real model."""
    try:
        return json.loads((Path(model_dir) / "config.json").read_text()).get("synthetic")
    except (OSError, json.JSONDecodeError):
        return None
