"""Every message that crosses the boundary between the root and the workers, as frozen dataclasses.

Each type has one `to_dict` / `from_dict` pair used by both sides; `from_dict` checks every field a
peer sent and raises ProtocolError (a ValueError) with a message that names the field.

The data path is a ring (common/transport.py carries the bytes):
    root --StepHeader+hidden--> worker 1 --...--> worker N --StepHeader+hidden+records--> root
Each hop's call is answered with an Ack once the receiver has passed its output on, or with a
StepError naming the worker that failed, so a failure anywhere reaches the root at once.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .placement import Shard
from .tensor_split import TensorShare

REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ADDRESS = re.compile(r"^[A-Za-z0-9._-]{1,253}:\d{1,5}$")
MAX_DELAY_MS = 600_000.0   # ten minutes: longer than any link model a user means
MAX_LINKS = 4096
MAX_STAGES = 1024
# How hidden states travel between processes (SYNC_DTYPE): float32, today's frames (tensor mode's partials
# and sums in float32, pipeline mode's hidden states in the compute dtype) | q80, distributed-llama's
# 8-bit blocks (common/q80.py) for tensor mode's broadcast, partials and sums and pipeline mode's hops.
SYNC_DTYPES = ("float32", "q80")


class ProtocolError(ValueError):
    """A message a peer sent is malformed; the message says which field and why."""


def _get(d: dict, key: str, kind, what: str):
    if not isinstance(d, dict):
        raise ProtocolError(f"{what} must be a JSON object")
    value = d.get(key)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:  # JSON true is not a number here
        raise ProtocolError(f"{what}.{key} must be {kind_name(kinds)}, not {value!r}")
    if not isinstance(value, kinds):
        raise ProtocolError(f"{what}.{key} must be {kind_name(kinds)}, not {type(value).__name__}")
    return value


def kind_name(kinds: tuple) -> str:
    return " or ".join({int: "an integer", float: "a number", str: "a string", list: "a list",
                        dict: "an object", bool: "true or false", type(None): "null"}.get(k, k.__name__)
                       for k in kinds)


def _number(d: dict, key: str, what: str, lo: float = 0.0, hi: float = float("inf")) -> float:
    value = float(_get(d, key, (int, float), what))
    if not lo <= value <= hi:
        raise ProtocolError(f"{what}.{key} must be in [{lo:g}, {hi:g}], not {value:g}")
    return value


def _nonneg_int(d: dict, key: str, what: str, hi: int = 2**63) -> int:
    value = _get(d, key, int, what)
    if not 0 <= value < hi:
        raise ProtocolError(f"{what}.{key} must be a non-negative integer below {hi}, not {value}")
    return value


def _address(d: dict, key: str, what: str) -> str:
    value = _get(d, key, str, what)
    if not ADDRESS.match(value) or not 0 < int(value.rsplit(":", 1)[1]) < 65536:
        raise ProtocolError(f"{what}.{key} must be host:port, not {value!r}")
    return value


@dataclass(frozen=True)
class LoadAssignment:
    """Root -> worker (POST /v1/load): which layers to hold and where to send the output."""
    name: str          # worker-1, worker-2, ... in chain order
    index: int         # position in the chain: the link that enters this worker is link `index`
    shard: Shard       # layers [start, end)
    dtype: str         # float32 | bfloat16 | int8 (common.dtypes.MODEL_DTYPES)
    model_path: str    # a folder the worker may read (the worker checks it against MODEL_ROOTS)
    next_address: str  # data address (host:port) of the next worker, or of the root for the last one
    # Tensor mode: this worker's share of every layer (shard is then every layer, index its rank and
    # next_address the root's data port, where its partial sums go); None in pipeline mode.
    share: TensorShare | None = None
    device: str = "host"   # the device profile this worker plays (profiles/devices.yaml); host: its own share
    compute: str = "real"  # real | modelled: the layers are not run, their modelled time is taken
    sync_dtype: str = "float32"  # how this worker sends hidden states (SYNC_DTYPES); read at every step
    # Tensor mode with SYNC_TOPOLOGY=mesh: every rank's data address, in rank order (this worker's too),
    # where the partials go instead of the root; empty: the star (partials to next_address).
    peers: tuple[str, ...] = ()

    def holds_same(self, other: "LoadAssignment") -> bool:
        """The same slice in the same place of the chain: only the next hop and the sync dtype may differ
        (neither needs a reload)."""
        return (self.name, self.index, self.shard, self.dtype, self.model_path, self.device, self.compute) == \
            (other.name, other.index, other.shard, other.dtype, other.model_path, other.device, other.compute)

    def to_dict(self) -> dict:
        out = {"name": self.name, "index": self.index, "start": self.shard.start, "end": self.shard.end,
               "dtype": self.dtype, "model_path": self.model_path, "next_address": self.next_address}
        if self.share is not None:
            out["share"] = self.share.to_dict()
        if self.device != "host":
            out["device"] = self.device
        if self.compute != "real":
            out["compute"] = self.compute
        if self.sync_dtype != "float32":
            out["sync_dtype"] = self.sync_dtype
        if self.peers:
            out["peers"] = list(self.peers)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "LoadAssignment":
        what = "load"
        name = _get(d, "name", str, what)
        if not 0 < len(name) <= 64:
            raise ProtocolError("load.name must be 1-64 characters")
        start, end = _nonneg_int(d, "start", what, 1 << 20), _nonneg_int(d, "end", what, 1 << 20)
        if end <= start:
            raise ProtocolError(f"load layers [{start}, {end}) are empty")
        return cls(name=name, index=_nonneg_int(d, "index", what, MAX_LINKS), shard=Shard(start, end),
                   dtype=_get(d, "dtype", str, what), model_path=_get(d, "model_path", str, what),
                   next_address=_address(d, "next_address", what), share=_share(d.get("share")),
                   device=_profile_name(d.get("device", "host")), compute=_compute(d.get("compute", "real")),
                   sync_dtype=_sync_dtype(d.get("sync_dtype", "float32")), peers=_peers(d))


def _peers(d: dict) -> tuple[str, ...]:
    """load.peers (mesh): one data address per rank of the share's world."""
    raw = d.get("peers", [])
    if not isinstance(raw, list) or len(raw) > MAX_LINKS or not all(isinstance(a, str) and ADDRESS.match(a) for a in raw):
        raise ProtocolError(f"load.peers must be a list of at most {MAX_LINKS} host:port data addresses")
    share = d.get("share")
    if raw and (not isinstance(share, dict) or share.get("world") != len(raw)):
        raise ProtocolError("load.peers needs a tensor share and one address per rank of its world")
    return tuple(raw)


def _sync_dtype(raw) -> str:
    if raw not in SYNC_DTYPES:
        raise ProtocolError(f"load.sync_dtype must be one of {', '.join(SYNC_DTYPES)}, not {raw!r}")
    return raw


def _profile_name(raw) -> str:
    if not isinstance(raw, str) or not 0 < len(raw) <= 64:
        raise ProtocolError("load.device must be a profile name of 1-64 characters")
    return raw


def _compute(raw) -> str:
    if raw not in ("real", "modelled"):
        raise ProtocolError(f"load.compute must be real or modelled, not {raw!r}")
    return raw


def _share(raw) -> TensorShare | None:
    """load.share: a TensorShare's fields, each a bounded integer or [start, end) pair (the worker checks
    it against the model itself)."""
    if raw is None:
        return None
    what = "load.share"
    rank, world = _nonneg_int(raw, "rank", what, MAX_LINKS), _nonneg_int(raw, "world", what, MAX_LINKS + 1)
    if not rank < world:
        raise ProtocolError(f"{what}.rank {rank} must be below world {world}")
    pairs = {}
    for key in ("q_heads", "kv_heads", "ffn"):
        pair = _get(raw, key, list, what)
        if (len(pair) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 1 << 24 for x in pair)
                or pair[1] <= pair[0]):
            raise ProtocolError(f"{what}.{key} must be [start, end) with 0 <= start < end")
        pairs[key] = (pair[0], pair[1])
    return TensorShare(rank=rank, world=world, **pairs)


@dataclass(frozen=True)
class StageRecord:
    """What one worker did with one step; records travel forward with the hidden states."""
    name: str
    layers: tuple[int, int]  # [start, end)
    recv_ns: int             # wall clock when the frame arrived (every process shares the host clock)
    sent_ns: int             # wall clock when the output was handed to the next link
    delay_ms: float          # the injected delay of the incoming link, slept after recv_ns
    compute_ms: float        # the played device's compute: the real one here + stretch_ms
    bytes_in: int            # size of the frame that arrived
    stretch_ms: float = 0.0  # slept after the real compute to play a slower device (common/stretch.py)
    shortfall_ms: float = 0.0  # how far the real compute alone overran the device's time (host too slow)

    def to_dict(self) -> dict:
        return {"name": self.name, "layers": list(self.layers), "recv_ns": self.recv_ns, "sent_ns": self.sent_ns,
                "delay_ms": self.delay_ms, "compute_ms": self.compute_ms, "bytes_in": self.bytes_in,
                "stretch_ms": self.stretch_ms, "shortfall_ms": self.shortfall_ms}

    @classmethod
    def from_dict(cls, d: dict) -> "StageRecord":
        what = "stage"
        layers = _get(d, "layers", list, what)
        if len(layers) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in layers):
            raise ProtocolError("stage.layers must be [start, end]")
        return cls(name=_get(d, "name", str, what)[:64], layers=(layers[0], layers[1]),
                   recv_ns=_nonneg_int(d, "recv_ns", what), sent_ns=_nonneg_int(d, "sent_ns", what),
                   delay_ms=_number(d, "delay_ms", what, 0, MAX_DELAY_MS),
                   compute_ms=_number(d, "compute_ms", what), bytes_in=_nonneg_int(d, "bytes_in", what),
                   stretch_ms=_optional_number(d, "stretch_ms", what),
                   shortfall_ms=_optional_number(d, "shortfall_ms", what))


def _optional_number(d: dict, key: str, what: str) -> float:
    """A non-negative figure a peer may leave out (a worker that plays no device): 0 then."""
    return _number(d, key, what) if key in d else 0.0


@dataclass(frozen=True)
class StepHeader:
    """The header of a frame of hidden states on the ring: one step of one request."""
    request_id: str
    step: int                  # numbers the root's passes for this request: a late reply is never taken for a new one
    start_pos: int             # the positions of the hidden states are [start_pos, start_pos + T)
    delays_ms: tuple[float, ...]  # the injected delay of each link, drawn by the root; link i enters worker i+1
    stages: tuple[StageRecord, ...] = ()  # one record per worker passed so far

    def to_dict(self) -> dict:
        return {"request_id": self.request_id, "step": self.step, "start_pos": self.start_pos,
                "delays_ms": list(self.delays_ms), "stages": [s.to_dict() for s in self.stages]}

    @classmethod
    def from_dict(cls, d: dict) -> "StepHeader":
        what = "step"
        rid = _get(d, "request_id", str, what)
        if not REQUEST_ID.match(rid):
            raise ProtocolError("request_id must be 1-64 letters, digits, '-' or '_'")
        delays = _get(d, "delays_ms", list, what)
        if not 0 < len(delays) <= MAX_LINKS or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= MAX_DELAY_MS for x in delays):
            raise ProtocolError(f"delays_ms must be a list of 1-{MAX_LINKS} delays in [0, {MAX_DELAY_MS:g}] ms")
        stages = _get(d, "stages", list, what) if "stages" in d else []
        if len(stages) > MAX_STAGES:
            raise ProtocolError(f"a step carries at most {MAX_STAGES} stage records")
        step = _nonneg_int(d, "step", what) if "step" in d else 0  # /v1/forward callers may leave it out
        return cls(request_id=rid, step=step, start_pos=_nonneg_int(d, "start_pos", what, 2**31),
                   delays_ms=tuple(float(x) for x in delays), stages=tuple(StageRecord.from_dict(s) for s in stages))

    def passed(self, record: StageRecord) -> "StepHeader":
        """The header a worker sends on: the same step with its own record added."""
        return StepHeader(self.request_id, self.step, self.start_pos, self.delays_ms, self.stages + (record,))


@dataclass(frozen=True)
class Ack:
    """The answer to a hop: the receiver has passed its output on (or, at the root, taken it)."""

    def to_dict(self) -> dict:
        return {"ack": True}

    @classmethod
    def from_dict(cls, d: dict) -> "Ack":
        if _get(d, "ack", bool, "ack") is not True:
            raise ProtocolError("ack.ack must be true")
        return cls()


@dataclass(frozen=True)
class StepError:
    """A step that failed: an HTTP-like status, a message, and who failed."""
    status: int                      # 400 bad frame, 401 no secret, 409 cache out of step, 429 full, 502/503/504
    message: str
    worker: str | None = None        # the worker that reports it
    failed_next: str | None = None   # data address of the hop it could not reach (the next worker, or the root)

    def to_dict(self) -> dict:
        out = {"status": self.status, "message": self.message}
        if self.worker is not None:
            out["worker"] = self.worker
        if self.failed_next is not None:
            out["failed_next"] = self.failed_next
        return {"error": out}

    @classmethod
    def from_dict(cls, d: dict) -> "StepError":
        err = _get(d, "error", dict, "reply")
        status = _get(err, "status", int, "error")
        if not 400 <= status <= 599:
            raise ProtocolError(f"error.status must be 400-599, not {status}")
        worker, failed_next = err.get("worker"), err.get("failed_next")
        return cls(status=status, message=str(_get(err, "message", str, "error"))[:2000],
                   worker=worker[:64] if isinstance(worker, str) else None,
                   failed_next=failed_next[:300] if isinstance(failed_next, str) else None)


def reply_from_dict(d: dict) -> Ack | StepError:
    """A hop's answer: an Ack or a StepError."""
    if isinstance(d, dict) and "error" in d:
        return StepError.from_dict(d)
    return Ack.from_dict(d)


@dataclass(frozen=True)
class WorkerHealth:
    """Worker -> root (GET /healthz): what the root's monitor and placement read."""
    status: str                       # empty | loading | ready | error
    error: str | None
    threads: int
    pid: int
    assignment: LoadAssignment | None
    device: dict = field(default_factory=dict)  # threads, cpus, memory figures (common.placement.memory_report)
    stats: dict | None = None         # the worker's own CPU and memory (common/selfstats.py), when it reports them

    def to_dict(self) -> dict:
        a = self.assignment
        return {"status": self.status, "error": self.error, "threads": self.threads, "pid": self.pid,
                "name": a.name if a else None, "layers": [a.shard.start, a.shard.end] if a else None,
                "assignment": a.to_dict() if a else None, "device": self.device, "stats": self.stats}

    @classmethod
    def from_dict(cls, d: dict) -> "WorkerHealth":
        what = "healthz"
        status = _get(d, "status", str, what)
        if status not in ("empty", "loading", "ready", "error"):
            raise ProtocolError(f"healthz.status {status!r} is not one of empty, loading, ready, error")
        raw = d.get("assignment")
        device, stats = d.get("device"), d.get("stats")
        error = d.get("error")
        return cls(status=status, error=str(error) if error is not None else None,
                   threads=_nonneg_int(d, "threads", what, 4096), pid=_nonneg_int(d, "pid", what, 2**31),
                   assignment=LoadAssignment.from_dict(raw) if raw is not None else None,
                   device=device if isinstance(device, dict) else {},
                   stats=stats if isinstance(stats, dict) else None)
