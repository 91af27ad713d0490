"""The root's side of modelled compute (COMPUTE=modelled): its weightless head, and placement against the
played devices' memory instead of this host's.

In modelled mode a worker holds no weights, so what it reports about this host's memory says nothing
about whether the cluster could run: a 70B on 4 Raspberry Pi 4B must be refused as it would be on the
real Pis. Each worker's memory is then its device profile's (all of it: the profiles give no figure for
what the OS keeps).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from common.config import RootSettings
from common.placement import Device
from common.profiles import DeviceProfile, ProfileError, device

from .head import ModelledHead, filler_token


class ModelledRefused(ValueError):
    """A device name that modelled compute cannot time; the message lists the catalog."""


def profiles_of(names: list[str]) -> list[DeviceProfile]:
    """Every worker's profile ("host": the catalog's entry for this machine's core, which modelled compute
    needs too: it has no other speed to take)."""
    try:
        return [device(name) for name in names]
    except ProfileError as exc:
        raise ModelledRefused(f"COMPUTE=modelled times each worker by its device profile: {exc}") from None


def played_memory(devices: list[Device], profiles: list[DeviceProfile]) -> list[Device]:
    """The workers' reports with each one's memory replaced by its device's (pure)."""
    if len(devices) != len(profiles):
        raise ValueError(f"{len(devices)} workers but {len(profiles)} device profiles")
    return [replace(d, memory_limit_bytes=p.memory_bytes, memory_available_bytes=p.memory_bytes)
            for d, p in zip(devices, profiles)]


def modelled_head(settings: RootSettings, model_path: Path, tokenizer, eos_ids: list[int]) -> ModelledHead:
    """The root's head, timed on ROOT_DEVICE."""
    try:
        root = device(settings.root_device)
    except ProfileError as exc:
        raise ModelledRefused(f"ROOT_DEVICE: {exc}") from None
    return ModelledHead(model_path, settings.dtype, root, filler_token(tokenizer, eos_ids))
