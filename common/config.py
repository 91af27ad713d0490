"""Every setting of the root and the workers, read from the environment here and nowhere else."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .cpu import default_threads
from .latency import LinkModel, parse_range
from .placement import DTYPES, MODES
from .split import parse_counts

MiB = 1024 * 1024


def _int(env, name, default):
    try:
        return int(env.get(name, default))
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {env.get(name)!r}") from None


def _float(env, name, default):
    try:
        return float(env.get(name, default))
    except ValueError:
        raise ValueError(f"{name} must be a number, not {env.get(name)!r}") from None


def _switch(env, name, default: bool) -> bool:
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("on", "1", "true", "yes"):
        return True
    if value in ("off", "0", "false", "no"):
        return False
    raise ValueError(f"{name} must be on or off, not {env.get(name)!r}")


def _threads(env, name):
    value = env.get(name, "").strip()
    return int(value) if value else default_threads()


@dataclass(frozen=True)
class WorkerSettings:
    host: str = "0.0.0.0"
    port: int = 5100
    threads: int = 1                       # torch intra-op threads: the CPU share of this "device"
    model_roots: tuple[str, ...] = ("/models", "/synthetic")  # loads are refused outside these
    max_frame_bytes: int = 64 * MiB        # a prefill of 2048 tokens x 4096 hidden x fp32 is 32 MiB
    max_caches: int = 16                   # KV caches held at once; the oldest idle one goes first
    cache_ttl_s: float = 600.0             # a cache idle this long is dropped (a root that vanished)
    hop_timeout_s: float = 30.0            # the longest this worker waits on the next one
    memory_limit_bytes: int | None = None  # declared device memory (MEMORY_LIMIT_MB): a smaller device
                                           # than its cgroup, or a limit for a local process that has none
    decode_gemv: bool = True               # float32 one-row products through gemv (common/gemv.py)

    @classmethod
    def from_env(cls, env=os.environ) -> "WorkerSettings":
        roots = env.get("MODEL_ROOTS", "/models,/synthetic")
        return cls(
            host=env.get("HOST", "0.0.0.0"),
            port=_int(env, "PORT", 5100),
            threads=_threads(env, "THREADS"),
            model_roots=tuple(str(Path(r).resolve()) for r in roots.split(",") if r),
            max_frame_bytes=_int(env, "MAX_FRAME_MB", 64) * MiB,
            max_caches=_int(env, "MAX_CACHES", 16),
            cache_ttl_s=_float(env, "CACHE_TTL_S", 600),
            hop_timeout_s=_float(env, "HOP_TIMEOUT_S", 30),
            memory_limit_bytes=_int(env, "MEMORY_LIMIT_MB", 0) * MiB or None,
            decode_gemv=_switch(env, "DECODE_GEMV", True),
        )


@dataclass(frozen=True)
class RootSettings:
    host: str = "0.0.0.0"
    port: int = 3001
    model_path: str = ""                  # a model folder; empty: a real model in models_dir, else synthetic
    models_dir: str = "/models"           # where fetched real models live (read-only)
    model_preset: str = "tiny"            # synthetic model made when model_path is empty
    model_seed: int = 0
    synthetic_dir: str = "/synthetic"     # where synthetic models are made (writable by the root only)
    dtype: str = "float32"               # float32 | bfloat16 | int8 (int8 weights in the workers' projections;
                                          # they compute in float32, the root's head stays float32)
    worker_urls: tuple[str, ...] = ()     # fixed list (local mode); empty: discover through Docker
    layer_split: tuple[int, ...] | None = None
    placement: str = ""                   # even | manual | threads | memory | fit; "": manual if layer_split else even
    placement_order: tuple[str, ...] = () # fit: workers to use first (worker-2, a container or a compose service)
    memory_check: bool = True             # refuse to start a placement whose estimate exceeds a worker's memory
    link: LinkModel = field(default_factory=LinkModel)
    link_overrides: dict = field(default_factory=dict)  # {link index: {LinkModel field: value}}
    latency_seed: int = 0
    threads: int = 1
    max_concurrent: int = 8               # requests in flight; more get 429
    max_context: int = 4096               # prompt + reply tokens, capped by the model's own context
    max_frame_bytes: int = 64 * MiB
    hop_timeout_s: float = 30.0
    recovery_wait_s: float = 30.0         # mid-reply worker failure: wait this long for it to return, then replay
    stats_interval_s: float = 1.0
    stats_source: str = "auto"            # auto | docker | local
    worker_port: int = 5100               # port of discovered workers (docker mode)
    decode_gemv: bool = True              # the LM head's float32 one-row product through gemv
    frontend_dir: str = str(Path(__file__).resolve().parent.parent / "frontend")

    def __post_init__(self):
        if not self.placement:
            object.__setattr__(self, "placement", "manual" if self.layer_split else "even")
        if self.placement not in MODES:
            raise ValueError(f"PLACEMENT must be one of {', '.join(MODES)}, not {self.placement!r}")
        if self.layer_split and self.placement != "manual":
            raise ValueError(f"LAYER_SPLIT is set but PLACEMENT={self.placement}: unset one of them")
        if self.placement == "manual" and not self.layer_split:
            raise ValueError("PLACEMENT=manual needs LAYER_SPLIT, e.g. 8,4,2,2")
        if self.dtype not in DTYPES:
            raise ValueError(f"DTYPE must be one of {', '.join(DTYPES)}, not {self.dtype!r}")

    @classmethod
    def from_env(cls, env=os.environ) -> "RootSettings":
        lo, hi = parse_range(f"{env.get('LATENCY_MIN_MS', '0')},{env.get('LATENCY_MAX_MS', '0')}")
        link = LinkModel(
            min_ms=lo, max_ms=hi,
            distribution=env.get("LATENCY_DISTRIBUTION", "uniform"),
            mean_ms=_float(env, "LATENCY_MEAN_MS", 0), std_ms=_float(env, "LATENCY_STD_MS", 0),
            pareto_alpha=_float(env, "LATENCY_PARETO_ALPHA", 3),
            bandwidth_mbps=_float(env, "BANDWIDTH_MBPS", 0),
            loss=_float(env, "LINK_LOSS", 0), rto_ms=_float(env, "LINK_RTO_MS", 200),
        )
        try:
            overrides = {int(k): v for k, v in json.loads(env.get("LINK_OVERRIDES", "") or "{}").items()}
        except (ValueError, AttributeError):
            raise ValueError("LINK_OVERRIDES must be JSON like {\"1\": {\"min_ms\": 50, \"max_ms\": 90}}") from None
        split = env.get("LAYER_SPLIT", "").strip()
        urls = env.get("WORKER_URLS", "").strip()
        return cls(
            host=env.get("HOST", "0.0.0.0"),
            port=_int(env, "PORT", 3001),
            model_path=env.get("MODEL_PATH", "").strip(),
            models_dir=env.get("MODELS_DIR", "/models"),
            model_preset=env.get("MODEL_PRESET", "tiny").strip(),
            model_seed=_int(env, "MODEL_SEED", 0),
            synthetic_dir=env.get("SYNTHETIC_DIR", "/synthetic"),
            dtype=env.get("DTYPE", "float32"),
            worker_urls=tuple(u.strip().rstrip("/") for u in urls.split(",") if u.strip()),
            layer_split=tuple(parse_counts(split)) if split else None,
            placement=env.get("PLACEMENT", "").strip().lower(),
            placement_order=tuple(p.strip() for p in env.get("PLACEMENT_ORDER", "").split(",") if p.strip()),
            memory_check=_switch(env, "MEMORY_CHECK", True),
            link=link,
            link_overrides=overrides,
            latency_seed=_int(env, "LATENCY_SEED", 0),
            threads=_threads(env, "THREADS"),
            max_concurrent=_int(env, "MAX_CONCURRENT", 8),
            max_context=_int(env, "MAX_CONTEXT", 4096),
            max_frame_bytes=_int(env, "MAX_FRAME_MB", 64) * MiB,
            hop_timeout_s=_float(env, "HOP_TIMEOUT_S", 30),
            recovery_wait_s=_float(env, "RECOVERY_WAIT_S", 30),
            stats_interval_s=_float(env, "STATS_INTERVAL_S", 1.0),
            stats_source=env.get("STATS_SOURCE", "auto"),
            worker_port=_int(env, "WORKER_PORT", 5100),
            decode_gemv=_switch(env, "DECODE_GEMV", True),
            frontend_dir=env.get("FRONTEND_DIR", cls.frontend_dir),
        )
