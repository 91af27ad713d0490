"""Every setting of the root and the workers, read from the environment here and nowhere else.

Each default lives once, on the dataclass field. `from_env` reads only the variables that are set
(an empty value counts as unset), so compose passes through just what the user sets.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

from .auth import SecretSource
from .device import default_threads
from .dtypes import check_compute
from .latency import LinkModel
from .placement import MODES
from .placement import parse_counts
from .profiles import HOST
from .profiles import device as device_profile
from .profiles import network as network_profile
from .protocol import SYNC_DTYPES
from .tensor_protocol import SYNC_TOPOLOGIES

MiB = 1024 * 1024
PARALLELISMS = ("pipeline", "tensor")
COMPUTE_MODES = ("real", "modelled")
PLAY_CLOCKS = ("profile", "cpu")  # what a played device's real compute is stretched toward (common/stretch.py)


def _int(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {text!r}") from None


def _float(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {text!r}") from None


def _switch(name: str, text: str) -> bool:
    value = text.lower()
    if value in ("on", "1", "true", "yes"):
        return True
    if value in ("off", "0", "false", "no"):
        return False
    raise ValueError(f"{name} must be on or off, not {text!r}")


def _mib(name: str, text: str) -> int:
    return _int(name, text) * MiB


def _text(name: str, text: str) -> str:
    return text


def _lower(name: str, text: str) -> str:
    return text.lower()


def _names(name: str, text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _urls(name: str, text: str) -> tuple[str, ...]:
    return tuple(u.rstrip("/") for u in _names(name, text))


def _folders(name: str, text: str) -> tuple[str, ...]:
    return tuple(str(Path(r).resolve()) for r in _names(name, text))


def _split(name: str, text: str) -> tuple[int, ...]:
    return tuple(parse_counts(text))


def _overrides(name: str, text: str) -> dict:
    try:
        return {int(k): v for k, v in json.loads(text).items()}
    except (ValueError, AttributeError):
        raise ValueError(f"{name} must be JSON like {{\"1\": {{\"min_ms\": 50, \"max_ms\": 90}}}}") from None


def _read(env, table: dict[str, tuple[str, Callable]]) -> dict:
    """{field: parsed value} for every variable of the table that is set and not empty."""
    out = {}
    for name, (attr, parse) in table.items():
        text = str(env.get(name, "")).strip()
        if text:
            out[attr] = parse(name, text)
    return out


def _secret(env) -> SecretSource:
    return SecretSource(env.get("CLUSTER_SECRET", ""), env.get("CLUSTER_SECRET_FILE", "").strip())


@dataclass(frozen=True)
class WorkerSettings:
    host: str = "0.0.0.0"
    port: int = 5100                       # HTTP (control); the data plane listens on port + 1
    threads: int = field(default_factory=default_threads)  # torch intra-op threads: the CPU share of this "device"
    model_roots: tuple[str, ...] = ("/models", "/synthetic")  # loads are refused outside these
    max_frame_bytes: int = 64 * MiB        # a prefill of 2048 tokens x 4096 hidden x fp32 is 32 MiB
    max_caches: int = 16                   # KV caches held at once; the oldest idle one goes first
    cache_ttl_s: float = 600.0             # a cache idle this long is dropped (a root that vanished)
    hop_timeout_s: float = 30.0            # the longest this worker waits on the next hop
    memory_limit_bytes: int | None = None  # declared device memory (MEMORY_LIMIT_MB): a smaller device
                                           # than its cgroup, or a limit for a local process that has none
    decode_gemv: bool = True               # float32 one-row products through gemv (common/gemv.py)
    sync_spin_ms: float = 2.0              # mesh: poll the links this long before sleeping on them, as distributed-
                                           # llama's nodes spin: a sleeping vCPU wakes late (worker/mesh_links.py)
    play_clock: str = "profile"            # a played device's computes last: profile, the cost model's time for
                                           # the device | cpu, their CPU time x the measured factor (common/stretch.py)
    secret: SecretSource = field(default_factory=SecretSource)  # none: open (one-process tests, tools)

    ENV = {
        "HOST": ("host", _text), "PORT": ("port", _int), "THREADS": ("threads", _int),
        "MODEL_ROOTS": ("model_roots", _folders), "MAX_FRAME_MB": ("max_frame_bytes", _mib),
        "MAX_CACHES": ("max_caches", _int), "CACHE_TTL_S": ("cache_ttl_s", _float),
        "HOP_TIMEOUT_S": ("hop_timeout_s", _float), "MEMORY_LIMIT_MB": ("memory_limit_bytes", _mib),
        "DECODE_GEMV": ("decode_gemv", _switch), "PLAY_CLOCK": ("play_clock", _lower),
        "SYNC_SPIN_MS": ("sync_spin_ms", _float),
    }

    def __post_init__(self):
        if not 0 <= self.sync_spin_ms <= 1000:
            raise ValueError(f"SYNC_SPIN_MS must be between 0 and 1000, not {self.sync_spin_ms}")
        if self.play_clock not in PLAY_CLOCKS:
            raise ValueError(f"PLAY_CLOCK must be one of {', '.join(PLAY_CLOCKS)}, not {self.play_clock!r}")

    @classmethod
    def from_env(cls, env=os.environ) -> "WorkerSettings":
        values = _read(env, cls.ENV)
        if values.get("memory_limit_bytes") == 0:
            values["memory_limit_bytes"] = None
        return cls(**values, secret=_secret(env))


# LinkModel fields by variable; the defaults are the root's `link` default below.
LINK_ENV = {
    "LATENCY_MIN_MS": ("min_ms", _float), "LATENCY_MAX_MS": ("max_ms", _float),
    "LATENCY_DISTRIBUTION": ("distribution", _lower), "LATENCY_MEAN_MS": ("mean_ms", _float),
    "LATENCY_STD_MS": ("std_ms", _float), "LATENCY_PARETO_ALPHA": ("pareto_alpha", _float),
    "BANDWIDTH_MBPS": ("bandwidth_mbps", _float), "LINK_LOSS": ("loss", _float), "LINK_RTO_MS": ("rto_ms", _float),
}


@dataclass(frozen=True)
class RootSettings:
    host: str = "0.0.0.0"
    port: int = 3001                      # the page and the API; the ring's return link arrives on port + 1
    model_path: str = ""                  # a model folder; empty: a real model in models_dir, else synthetic
    models_dir: str = "/models"           # where fetched real models live (read-only)
    model_preset: str = "llama-3.2-1b"    # synthetic model made when model_path is empty: the real 1B shape
    model_seed: int = 0
    synthetic_dir: str = "/synthetic"     # where synthetic models are made (writable by the root only)
    parallelism: str = "pipeline"         # pipeline: each worker holds a run of layers | tensor: a share of every layer
    dtype: str = "float32"               # float32 | bfloat16 | int8 | int4 (int8 / 4-bit weights in the workers'
                                          # projections and the root's LM head; they compute in float32)
    worker_urls: tuple[str, ...] = ()     # fixed list (local mode); empty: discover through Docker
    layer_split: tuple[int, ...] | None = None
    placement: str = ""                   # even | manual | threads | memory | fit; "": manual if layer_split else even
    placement_order: tuple[str, ...] = () # fit: workers to use first (worker-2, a container or a compose service)
    memory_check: bool = True             # refuse to start a placement whose estimate exceeds a worker's memory
    link: LinkModel = LinkModel(min_ms=10, max_ms=50)  # every link: 10-50 ms uniform, a Wi-Fi-like spread
    link_overrides: dict = field(default_factory=dict)  # {link index: {LinkModel field: value}}
    latency_seed: int = 0
    threads: int = field(default_factory=default_threads)
    max_concurrent: int = 8               # requests in flight; more get 429
    max_context: int = 4096               # prompt + reply tokens, capped by the model's own context
    max_frame_bytes: int = 64 * MiB
    hop_timeout_s: float = 30.0
    recovery_wait_s: float = 30.0         # mid-reply worker failure: wait this long for it to return, then replay
    stats_interval_s: float = 1.0
    stats_source: str = "auto"            # auto | docker | local | reported (each worker its own, on a swarm)
    worker_port: int = 5100               # port of discovered workers (docker mode)
    return_host: str = ""                 # the root's address for the last worker; "": the route's source address
    decode_gemv: bool = True              # the LM head's float32 one-row product through gemv
    devices: tuple[str, ...] = ()         # device profile of each worker (profiles/devices.yaml): one name for all,
                                          # or one per worker; empty: each worker is its share of this host
    network: str = ""                     # network profile of every link (profiles/networks.yaml); the LATENCY_*,
                                          # BANDWIDTH_MBPS and LINK_* variables set override its fields
    compute: str = "real"                 # real: workers run their layers | modelled: they take the time the cost
                                          # model gives their device, and the tokens are not real
    root_device: str = "host"             # modelled compute: the device that times the root's LM head
    sync_dtype: str = "float32"           # how hidden states travel: float32 (tensor mode's partials and sums in
                                          # float32, pipeline's hops in the compute dtype) | q80: distributed-llama's
                                          # 8-bit blocks, 3.76x fewer bytes than float32 (common/q80.py)
    sync_topology: str = "star"           # tensor mode's syncs: star (each partial to the root, the sum back: two
                                          # crossings) | mesh (every worker sends its partial to every other and sums
                                          # them itself, as distributed-llama's nodes do: one crossing)
    frontend_dir: str = str(Path(__file__).resolve().parent.parent / "frontend")
    secret: SecretSource = field(default_factory=SecretSource)

    ENV = {
        "HOST": ("host", _text), "PORT": ("port", _int), "MODEL_PATH": ("model_path", _text),
        "MODELS_DIR": ("models_dir", _text), "MODEL_PRESET": ("model_preset", _text),
        "MODEL_SEED": ("model_seed", _int), "SYNTHETIC_DIR": ("synthetic_dir", _text), "DTYPE": ("dtype", _text),
        "PARALLELISM": ("parallelism", _lower), "WORKER_URLS": ("worker_urls", _urls), "LAYER_SPLIT": ("layer_split", _split),
        "PLACEMENT": ("placement", _lower), "PLACEMENT_ORDER": ("placement_order", _names),
        "MEMORY_CHECK": ("memory_check", _switch), "LINK_OVERRIDES": ("link_overrides", _overrides),
        "LATENCY_SEED": ("latency_seed", _int), "THREADS": ("threads", _int),
        "MAX_CONCURRENT": ("max_concurrent", _int), "MAX_CONTEXT": ("max_context", _int),
        "MAX_FRAME_MB": ("max_frame_bytes", _mib), "HOP_TIMEOUT_S": ("hop_timeout_s", _float),
        "RECOVERY_WAIT_S": ("recovery_wait_s", _float), "STATS_INTERVAL_S": ("stats_interval_s", _float),
        "STATS_SOURCE": ("stats_source", _lower), "WORKER_PORT": ("worker_port", _int),
        "RETURN_HOST": ("return_host", _text), "DECODE_GEMV": ("decode_gemv", _switch),
        "FRONTEND_DIR": ("frontend_dir", _text), "DEVICES": ("devices", _names), "NETWORK": ("network", _lower),
        "COMPUTE": ("compute", _lower), "ROOT_DEVICE": ("root_device", _lower),
        "SYNC_DTYPE": ("sync_dtype", _lower), "SYNC_TOPOLOGY": ("sync_topology", _lower),
    }

    def __post_init__(self):
        if not self.placement:
            object.__setattr__(self, "placement", "manual" if self.layer_split else "even")
        if self.placement not in MODES:
            raise ValueError(f"PLACEMENT must be one of {', '.join(MODES)}, not {self.placement!r}")
        if self.layer_split and self.placement != "manual":
            raise ValueError(f"LAYER_SPLIT is set but PLACEMENT={self.placement}: unset one of them")
        if self.placement == "manual" and not self.layer_split:
            raise ValueError("PLACEMENT=manual needs LAYER_SPLIT, e.g. 8,4,2,2")
        if self.parallelism not in PARALLELISMS:
            raise ValueError(f"PARALLELISM must be one of {', '.join(PARALLELISMS)}, not {self.parallelism!r}")
        if self.compute not in COMPUTE_MODES:
            raise ValueError(f"COMPUTE must be one of {', '.join(COMPUTE_MODES)}, not {self.compute!r}")
        check_compute(self.dtype, self.compute)  # q40/q80 only with COMPUTE=modelled
        if self.sync_dtype not in SYNC_DTYPES:
            raise ValueError(f"SYNC_DTYPE must be one of {', '.join(SYNC_DTYPES)}, not {self.sync_dtype!r}")
        if self.sync_topology not in SYNC_TOPOLOGIES:
            raise ValueError(f"SYNC_TOPOLOGY must be one of {', '.join(SYNC_TOPOLOGIES)}, not {self.sync_topology!r}")
        for name in self.devices + (self.root_device,):
            if name != HOST:
                device_profile(name)  # an unknown name is refused here, with the catalog's names

    @classmethod
    def from_env(cls, env=os.environ) -> "RootSettings":
        values = _read(env, cls.ENV)
        link_values = _read(env, LINK_ENV)
        if "min_ms" in link_values and "max_ms" not in link_values:  # one number: a fixed delay
            link_values["max_ms"] = link_values["min_ms"]
        if "network" in values:  # the named network, then the explicit variables over its fields
            values["link"] = replace(network_profile(values["network"]).link(), **link_values)
        elif link_values:
            default_link = next(f.default for f in fields(cls) if f.name == "link")
            values["link"] = replace(default_link, **link_values)
        return cls(**values, secret=_secret(env))
