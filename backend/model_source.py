"""Which model the cluster serves: one named by MODEL_PATH, else a real one in models/, else synthetic."""
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


def resolve_model(settings: RootSettings) -> Path:
    if settings.model_path:
        path = Path(settings.model_path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"MODEL_PATH {path} is not a model folder (no config.json)")
        return path.resolve()
    real = real_model_folders(Path(settings.models_dir))
    if real:
        if len(real) > 1:
            log.warning("several models in %s, serving %s (set MODEL_PATH to choose): %s",
                        settings.models_dir, real[0].name, [p.name for p in real])
        return real[0].resolve()
    from model_downloader.synthetic import ensure_synthetic_model
    out = Path(settings.synthetic_dir) / f"{settings.model_preset}-seed{settings.model_seed}"
    log.info("no real model: using synthetic %s at %s (random weights)", settings.model_preset, out)
    return Path(ensure_synthetic_model(settings.model_preset, out, settings.model_seed)).resolve()
