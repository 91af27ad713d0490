"""Devices and networks by name: the catalogs in profiles/devices.yaml and profiles/networks.yaml.

Every speed figure carries its source. A device's figures are for the whole device (all its cores);
a worker plays one device, whatever its thread count here. Loaded once per process and checked
whole: an unknown field, a figure without a source or a negative number is an error that names the
entry. No torch here: the root, the settings and the benches read these.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

from .latency import DISTRIBUTIONS, LinkModel

CATALOG_DIR = Path(__file__).resolve().parent.parent / "profiles"
HOST = "host"  # the device a worker is when no profile is named: its share of this machine, measured at start

# Bytes per weight a token reads, the dtypes a worker runs here and the ones it can only model
# (q40: 4-bit blocks of 32 with a float16 scale, 18 bytes per 32 weights; q80: 8-bit, 34 per 32;
# int4, the worker's 4-bit: q40's codes with a float32 scale and a float32 sum per block in onnxruntime's
# packed copy, 24 per 32, common/int4_ort.py; common/host_speed measures its rate on the same bytes).
MODELLED_WEIGHT_BYTES = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "int8": 1.0, "int4": 24 / 32,
                         "q40": 18 / 32, "q80": 34 / 32}
# matmul_gflops may also name float64: High-Performance Linpack, the one GEMM-bound figure published for
# most boards. No layer computes in it, so the cost model never reads it; it is kept as measured.
MATMUL_DTYPES = tuple(MODELLED_WEIGHT_BYTES) + ("float64",)


class ProfileError(ValueError):
    """A catalog that does not check, or a name that is not in it (the message lists the names)."""


@dataclass(frozen=True)
class Figure:
    value: float
    source: str        # where the number comes from: a URL, a paper, a README at a commit
    note: str = ""     # how it was derived from the source, when it is not quoted as it stands


@dataclass(frozen=True)
class DeviceProfile:
    key: str
    name: str
    cores: int
    memory_bytes: int
    memory_bandwidth_gbps: Figure                            # streamed bytes per second, all cores (STREAM-like)
    matvec_gbps: dict[str, Figure] = field(default_factory=dict)   # decode: weight bytes per second, per dtype
    matmul_gflops: dict[str, Figure] = field(default_factory=dict)  # prefill: GFLOP/s per dtype
    layer_overhead_ms: Figure | None = None                   # per decoder layer, whatever its size

    def decode_gbps(self, dtype: str) -> tuple[float, str]:
        """(weight bytes streamed per second in decode, what it is): the dtype's own figure, else the
        memory bandwidth (a matrix-vector product reads every weight once: bandwidth-bound)."""
        if dtype in self.matvec_gbps:
            return self.matvec_gbps[dtype].value, f"matvec {dtype}"
        return self.memory_bandwidth_gbps.value, "memory bandwidth"

    def prefill_gflops(self, dtype: str) -> float | None:
        fig = self.matmul_gflops.get(dtype) or self.matmul_gflops.get("float32")
        return fig.value if fig else None


@dataclass(frozen=True)
class NetworkProfile:
    key: str
    name: str
    latency: LinkModel   # one-way latency distribution, bandwidth and loss of one link
    source: str
    note: str = ""

    def link(self) -> LinkModel:
        return self.latency


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _text(raw, where: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ProfileError(f"{where} must be a non-empty text, not {raw!r}")
    return raw


def _figure(raw, where: str) -> Figure:
    if not isinstance(raw, dict) or "value" not in raw or not raw.get("source"):
        raise ProfileError(f"{where} must be {{value: <number>, source: <where it comes from>}}")
    unknown = set(raw) - {"value", "source", "note"}
    if unknown:
        raise ProfileError(f"{where} has unknown fields {sorted(unknown)}")
    value = raw["value"]
    if not _is_number(value) or value <= 0:
        raise ProfileError(f"{where}.value must be a positive number, not {value!r}")
    note = raw.get("note", "")
    return Figure(float(value), _text(raw["source"], f"{where}.source"),
                  _text(note, f"{where}.note") if note else "")


def _figures(raw, where: str, dtypes: tuple[str, ...] = tuple(MODELLED_WEIGHT_BYTES)) -> dict[str, Figure]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ProfileError(f"{where} must map a dtype to a figure")
    for dtype in raw:
        if dtype not in dtypes:
            raise ProfileError(f"{where}.{dtype}: dtype must be one of {', '.join(dtypes)}")
    return {dtype: _figure(v, f"{where}.{dtype}") for dtype, v in raw.items()}


DEVICE_FIELDS = {"name", "cores", "memory_gb", "memory_bandwidth_gbps", "matvec_gbps", "matmul_gflops",
                 "layer_overhead_ms"}


def _entry(raw, where: str, known: set[str]) -> dict:
    """A catalog entry: a mapping of known fields only (a misspelt field would be silently ignored)."""
    if not isinstance(raw, dict):
        raise ProfileError(f"{where} must be a mapping")
    unknown = set(raw) - known
    if unknown:
        raise ProfileError(f"{where} has unknown fields {sorted(unknown)} (known: {', '.join(sorted(known))})")
    return raw


def parse_device(key: str, raw) -> DeviceProfile:
    where = f"devices.{key}"
    raw = _entry(raw, where, DEVICE_FIELDS)
    for name in ("name", "cores", "memory_gb", "memory_bandwidth_gbps"):
        if name not in raw:
            raise ProfileError(f"{where} lacks {name}")
    cores, memory_gb = raw["cores"], raw["memory_gb"]
    if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
        raise ProfileError(f"{where}.cores must be a whole number >= 1, not {cores!r}")
    if not _is_number(memory_gb) or memory_gb <= 0:
        raise ProfileError(f"{where}.memory_gb must be a positive number, not {memory_gb!r}")
    overhead = raw.get("layer_overhead_ms")
    return DeviceProfile(key=key, name=_text(raw["name"], f"{where}.name"), cores=cores,
                         memory_bytes=int(memory_gb * 1024 ** 3),
                         memory_bandwidth_gbps=_figure(raw["memory_bandwidth_gbps"], f"{where}.memory_bandwidth_gbps"),
                         matvec_gbps=_figures(raw.get("matvec_gbps"), f"{where}.matvec_gbps"),
                         matmul_gflops=_figures(raw.get("matmul_gflops"), f"{where}.matmul_gflops", MATMUL_DTYPES),
                         layer_overhead_ms=_figure(overhead, f"{where}.layer_overhead_ms") if overhead else None)


NETWORK_FIELDS = {"name", "source", "note", "distribution", "min_ms", "max_ms", "mean_ms", "std_ms",
                  "pareto_alpha", "bandwidth_mbps", "loss", "rto_ms"}


def parse_network(key: str, raw) -> NetworkProfile:
    where = f"networks.{key}"
    raw = _entry(raw, where, NETWORK_FIELDS)
    if not raw.get("name") or not raw.get("source"):
        raise ProfileError(f"{where} needs a name and a source")
    _text(raw["name"], f"{where}.name")
    _text(raw["source"], f"{where}.source")
    if raw.get("note"):
        _text(raw["note"], f"{where}.note")
    link_fields = {k: v for k, v in raw.items() if k not in ("name", "source", "note")}
    if link_fields.get("distribution", "uniform") not in DISTRIBUTIONS:
        raise ProfileError(f"{where}.distribution must be one of {', '.join(DISTRIBUTIONS)}")
    for name, value in link_fields.items():
        if name != "distribution" and (not _is_number(value) or value < 0):
            raise ProfileError(f"{where}.{name} must be a number >= 0, not {value!r}")
    try:
        link = LinkModel(**link_fields)
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"{where}: {exc}") from None
    return NetworkProfile(key=key, name=str(raw["name"]), latency=link, source=str(raw["source"]),
                          note=str(raw.get("note", "")))


def _read_yaml(path: Path, top: str) -> dict:
    import yaml
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ProfileError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get(top), dict):
        raise ProfileError(f"{path} must hold a mapping under '{top}:'")
    if set(data) != {top}:
        raise ProfileError(f"{path} has unknown top-level keys {sorted(set(data) - {top})}: only '{top}:'")
    for key in data[top]:
        if not isinstance(key, str) or not key:
            raise ProfileError(f"{path}: every entry of '{top}:' needs a text name, not {key!r}")
    return data[top]


@functools.lru_cache(maxsize=4)
def devices(directory: Path = CATALOG_DIR) -> dict[str, DeviceProfile]:
    return {key: parse_device(key, raw) for key, raw in _read_yaml(directory / "devices.yaml", "devices").items()}


@functools.lru_cache(maxsize=4)
def networks(directory: Path = CATALOG_DIR) -> dict[str, NetworkProfile]:
    return {key: parse_network(key, raw) for key, raw in _read_yaml(directory / "networks.yaml", "networks").items()}


def device(name: str, directory: Path = CATALOG_DIR) -> DeviceProfile:
    catalog = devices(directory)
    if name not in catalog:
        raise ProfileError(f"unknown device {name!r}: profiles/devices.yaml has {', '.join(catalog)}")
    return catalog[name]


def network(name: str, directory: Path = CATALOG_DIR) -> NetworkProfile:
    catalog = networks(directory)
    if name not in catalog:
        raise ProfileError(f"unknown network {name!r}: profiles/networks.yaml has {', '.join(catalog)}")
    return catalog[name]


def devices_for(names: tuple[str, ...], n_workers: int, directory: Path = CATALOG_DIR) -> list[str]:
    """DEVICES for N workers (pure but for the catalog's names): none -> every worker plays its share of
    this host; one name -> every worker; N names -> one each. Any other count, or an unknown name, is refused."""
    if not names:
        return [HOST] * n_workers
    for name in names:
        if name != HOST:
            device(name, directory)
    if len(names) == 1:
        return list(names) * n_workers
    if len(names) != n_workers:
        raise ProfileError(f"DEVICES names {len(names)} devices for {n_workers} workers: name one for all, "
                           f"or one per worker")
    return list(names)
