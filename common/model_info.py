"""What the root and the workers need to know about a model folder, from its config.json."""
from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoConfig, PretrainedConfig

from .decode_attention import STOCK as STOCK_ATTENTION
from .model_family import FAMILIES, ModelFamily, UnsupportedModel, family_of


def load_config(model_dir: str | Path) -> PretrainedConfig:
    """The model's config; UnsupportedModel (naming its model_type and the supported ones) for a model
    this project cannot slice. Every process reads the config here first, so every one refuses alike."""
    path = Path(model_dir) / "config.json"
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    try:
        family_of(raw)  # before AutoConfig, which fails less clearly on a model_type transformers lacks
    except UnsupportedModel as exc:
        raise UnsupportedModel(f"{Path(model_dir).name}: {exc}") from None
    config = AutoConfig.from_pretrained(str(model_dir))
    # Slices are built from bare decoder layers: pick the attention kernel HF generate uses by
    # default, so that both compute the same numbers (eager without a mask would not be causal).
    config._attn_implementation = STOCK_ATTENTION  # the worker's slices may take common/decode_attention's
    return config


def model_family(config: PretrainedConfig) -> ModelFamily:
    """The family of a config load_config accepted: which stock classes build its layers and norms."""
    return FAMILIES[config.model_type]


def synthetic_marker(model_dir: str | Path) -> dict | None:
    """The `synthetic` entry model_downloader writes into config.json, or None for a real model."""
    try:
        return json.loads((Path(model_dir) / "config.json").read_text()).get("synthetic")
    except (OSError, json.JSONDecodeError):
        return None
