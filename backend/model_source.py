"""Which model the cluster serves: one named by MODEL_PATH, else a real one in models/, else synthetic.

A shape-only model (config.json and tokenizer, no weights: the llama-2-* and llama-3-8b presets) serves
only modelled compute; real compute refuses it here, before anything is made or loaded."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from common.config import RootSettings
from common.model_info import synthetic_marker

log = logging.getLogger("root.model")


def real_model_folders(models_dir: Path) -> list[Path]:
    """Folders with a config.json that model_downloader did not make synthetic, sorted by name."""
    if not models_dir.is_dir():
        return []
    found = []
    for child in sorted(models_dir.iterdir()):
        config = child / "config.json"
        if config.is_file():
            try:
                json.loads(config.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if synthetic_marker(child) is None:
                found.append(child)
    return found


class ShapeOnly(ValueError):
    """A model with no weights asked to compute for real."""


def check_weights(name: str, shape_only: bool, compute: str) -> None:
    if shape_only and compute != "modelled":
        raise ShapeOnly(f"{name} is a shape-only model (config.json and tokenizer, no weights): set "
                        "COMPUTE=modelled to serve it (the workers then take their devices' modelled time)")


def resolve_model(settings: RootSettings) -> Path:
    if settings.model_path:
        path = Path(settings.model_path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"MODEL_PATH {path} is not a model folder (no config.json)")
        marker = synthetic_marker(path) or {}
        check_weights(f"MODEL_PATH {path}", bool(marker.get("shape_only")), settings.compute)
        return path.resolve()
    real = real_model_folders(Path(settings.models_dir))
    if real:
        if len(real) > 1:
            log.warning("several models in %s, serving %s (set MODEL_PATH to choose): %s",
                        settings.models_dir, real[0].name, [p.name for p in real])
        return real[0].resolve()
    from model_downloader.presets import get_preset
    from model_downloader.synthetic import ensure_synthetic_model
    check_weights(f"MODEL_PRESET={settings.model_preset}", get_preset(settings.model_preset).shape_only,
                  settings.compute)
    out = Path(settings.synthetic_dir) / f"{settings.model_preset}-seed{settings.model_seed}"
    log.info("no real model: using synthetic %s at %s (%s)", settings.model_preset, out,
             "modelled compute" if settings.compute == "modelled" else "random weights")
    return Path(ensure_synthetic_model(settings.model_preset, out, settings.model_seed)).resolve()
