"""The frames of one tensor-parallel step (PARALLELISM=tensor), as frozen dataclasses like common/protocol.py.

The topology is distributed-llama's: the root is the hub of a star.
    root --TensorStep + hidden--> every worker                      (the broadcast, one link each)
    per layer, twice (attention, then MLP):
        worker --SyncPartial + its partial--> root                  (the request of a data-plane call)
        root --SyncSum + the sum over all workers--> each worker    (its reply, once all N arrived)
    every worker --TensorRecord--> root, worker 1's with the output (the answer to the broadcast call)
A synchronisation therefore costs two link crossings (worker -> root, root -> worker).

SYNC_TOPOLOGY=mesh: the workers exchange their partials directly, as distributed-llama's nodes do
(src/nn/nn-network.cpp, syncNodeSlices: every node writes its slice to every other node, then each
adds them up itself). Every pair of ranks i < j keeps one connection open, both ways: worker i opens it
on worker j's data port with a MeshLink, and j's answer hands it to j's compute (worker/mesh_links.py).
Per sync, on every link, both ways at once:
        worker i --MeshPartial + its partial--> worker j            (written, never answered)
        worker j --MeshPartial + its partial--> worker i
and every worker sums all N partials in rank order (the same float32 sum the root makes in the star).
A synchronisation costs one link crossing; the root only broadcasts, collects the answers, and on a
failure tells the others (MeshAbort) so that none waits for a partial that will not come. Partials and
sums travel as float32 (the issue's default sync dtype), whatever the compute dtype, or with
SYNC_DTYPE=q80 (LoadAssignment.sync_dtype) as q80 blocks, the broadcast too (common/q80.py).

The root draws every delay of the step and sends each worker its own: the worker sleeps a partial's
delay before sending it and a sum's delay after receiving it, so the root (one process, which would
wait N delays at once) only does I/O. Either end may wait a link's delay: the message arrives late.
"""
from __future__ import annotations

from dataclasses import dataclass

from .protocol import (MAX_DELAY_MS, MAX_LINKS, REQUEST_ID, ProtocolError, StepError, _get, _nonneg_int, _number,
                       _optional_number)

PHASES = ("attention", "mlp")
SYNC_TOPOLOGIES = ("star", "mesh")  # the root sums (distributed-llama's description) | the workers exchange
MAX_SYNCS = 1 << 16


def sync_label(sync: int) -> str:
    """Sync index -> 'layer 3 mlp': sync 2l is layer l's attention, 2l+1 its MLP."""
    return f"layer {sync // 2} {PHASES[sync % 2]}"


def _request_id(d: dict, what: str) -> str:
    rid = _get(d, "request_id", str, what)
    if not REQUEST_ID.match(rid):
        raise ProtocolError(f"{what}.request_id must be 1-64 letters, digits, '-' or '_'")
    return rid


@dataclass(frozen=True)
class TensorStep:
    """Root -> every worker: one step's hidden states (1, T, hidden) at positions [start_pos, start_pos + T)."""
    request_id: str
    step: int          # numbers the root's steps: a late partial is never taken for a new step's
    start_pos: int
    delay_ms: float    # the injected delay of this worker's broadcast link, slept by the worker on receipt
    up_ms: tuple[float, ...]    # per sync: its partial's link delay, slept before sending it
    down_ms: tuple[float, ...]  # per sync: the sum's link delay, slept on receiving it

    def to_dict(self) -> dict:
        return {"tensor_step": {"request_id": self.request_id, "step": self.step, "start_pos": self.start_pos,
                                "delay_ms": self.delay_ms, "up_ms": list(self.up_ms), "down_ms": list(self.down_ms)}}

    @classmethod
    def from_dict(cls, d: dict) -> "TensorStep":
        what = "tensor_step"
        body = _get(d, what, dict, "frame")
        up, down = _delays(body, "up_ms", what), _delays(body, "down_ms", what)
        if len(up) != len(down):
            raise ProtocolError(f"{what}.up_ms and down_ms must have one delay per sync each")
        return cls(request_id=_request_id(body, what), step=_nonneg_int(body, "step", what),
                   start_pos=_nonneg_int(body, "start_pos", what, 2**31),
                   delay_ms=_number(body, "delay_ms", what, 0, MAX_DELAY_MS), up_ms=up, down_ms=down)


def _delays(body: dict, key: str, what: str) -> tuple[float, ...]:
    values = _get(body, key, list, what)
    if not len(values) <= MAX_SYNCS or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= MAX_DELAY_MS for x in values):
        raise ProtocolError(f"{what}.{key} must be a list of 0-{MAX_SYNCS} delays in [0, {MAX_DELAY_MS:g}] ms")
    return tuple(float(x) for x in values)


def _sync_of(body: dict, what: str) -> dict:
    """Which partial a frame carries: its request, step, sync and rank, each checked."""
    return {"request_id": _request_id(body, what), "step": _nonneg_int(body, "step", what),
            "sync": _nonneg_int(body, "sync", what, MAX_SYNCS), "rank": _nonneg_int(body, "rank", what, MAX_LINKS)}


@dataclass(frozen=True)
class SyncPartial:
    """Worker -> root: this rank's partial (1, T, hidden) of sync `sync` of a step."""
    request_id: str
    step: int
    sync: int          # 2 * layer + phase (0 attention, 1 MLP)
    rank: int
    sent_ns: int       # wall clock when the worker sent it, after its delay (the root measures the transport)

    def to_dict(self) -> dict:
        return {"sync_partial": {"request_id": self.request_id, "step": self.step, "sync": self.sync,
                                 "rank": self.rank, "sent_ns": self.sent_ns}}

    @classmethod
    def from_dict(cls, d: dict) -> "SyncPartial":
        what = "sync_partial"
        body = _get(d, what, dict, "frame")
        return cls(**_sync_of(body, what), sent_ns=_nonneg_int(body, "sent_ns", what))


@dataclass(frozen=True)
class SyncSum:
    """Root -> worker (the reply to a SyncPartial): the sum over every rank comes with the frame."""
    sent_ns: int       # wall clock when the root handed the sum to the link

    def to_dict(self) -> dict:
        return {"sync_sum": {"sent_ns": self.sent_ns}}

    @classmethod
    def from_dict(cls, d: dict) -> "SyncSum":
        body = _get(d, "sync_sum", dict, "frame")
        return cls(sent_ns=_nonneg_int(body, "sent_ns", "sync_sum"))


@dataclass(frozen=True)
class TensorRecord:
    """Worker -> root (the answer to a TensorStep): what this worker did with the step."""
    name: str
    rank: int
    recv_ns: int              # the broadcast's arrival
    sent_ns: int              # when the answer (worker 1: with the output) was handed to the link
    delay_ms: float           # the broadcast link's injected delay, slept after recv_ns
    compute_ms: float         # its partials and the residual adds, every layer: real + stretch_ms
    syncs: int
    sync_ms: float       # wall time from sending each partial to holding the sum: links, delays, the slowest rank
    down_transport_ms: float  # the sums' time on the wire root -> this worker (delays not inside)
    bytes_in: int             # the broadcast frame
    stretch_ms: float = 0.0   # slept after each compute segment to play a slower device (common/stretch.py)
    shortfall_ms: float = 0.0  # how far the real segments alone overran the device's time (host too slow)
    # mesh: the syncs' frames this worker sent or was answered with (each pair's call counted by its caller),
    # and what the delays added to its syncs, barrier by barrier on its own clock (the broadcast's included)
    sync_bytes: int = 0
    sync_injected_ms: float = 0.0

    def to_dict(self) -> dict:
        return {"tensor_record": {"name": self.name, "rank": self.rank, "recv_ns": self.recv_ns,
                                  "sent_ns": self.sent_ns, "delay_ms": self.delay_ms, "compute_ms": self.compute_ms,
                                  "syncs": self.syncs, "sync_ms": self.sync_ms,
                                  "down_transport_ms": self.down_transport_ms, "bytes_in": self.bytes_in,
                                  "stretch_ms": self.stretch_ms, "shortfall_ms": self.shortfall_ms,
                                  "sync_bytes": self.sync_bytes, "sync_injected_ms": self.sync_injected_ms}}

    @classmethod
    def from_dict(cls, d: dict) -> "TensorRecord":
        what = "tensor_record"
        body = _get(d, what, dict, "frame")
        return cls(name=_get(body, "name", str, what)[:64], rank=_nonneg_int(body, "rank", what, MAX_LINKS),
                   recv_ns=_nonneg_int(body, "recv_ns", what), sent_ns=_nonneg_int(body, "sent_ns", what),
                   delay_ms=_number(body, "delay_ms", what, 0, MAX_DELAY_MS),
                   compute_ms=_number(body, "compute_ms", what), syncs=_nonneg_int(body, "syncs", what, MAX_SYNCS + 1),
                   sync_ms=_number(body, "sync_ms", what),
                   down_transport_ms=_number(body, "down_transport_ms", what),
                   bytes_in=_nonneg_int(body, "bytes_in", what),
                   stretch_ms=_optional_number(body, "stretch_ms", what),
                   shortfall_ms=_optional_number(body, "shortfall_ms", what),
                   sync_bytes=_nonneg_int(body, "sync_bytes", what) if "sync_bytes" in body else 0,
                   sync_injected_ms=_optional_number(body, "sync_injected_ms", what))


@dataclass(frozen=True)
class MeshPartial:
    """Worker -> worker (mesh), on the pair's link, never answered: one rank's partial of one sync."""
    request_id: str
    step: int
    sync: int
    rank: int          # whose partial the frame carries
    sent_ns: int       # wall clock when its rank handed the frame to the link
    ready_ns: int      # wall clock when its rank had the partial (on a link it leaves at once: sent_ns)
    slept_ms: float    # what its rank slept since the previous barrier: this sync's link delay (sync 0: and
                       # the broadcast's), for what the delays added (common/tensor_links.realized_ms)

    def to_dict(self) -> dict:
        return {"mesh_partial": {"request_id": self.request_id, "step": self.step, "sync": self.sync,
                                 "rank": self.rank, "sent_ns": self.sent_ns, "ready_ns": self.ready_ns,
                                 "slept_ms": self.slept_ms}}

    @classmethod
    def from_dict(cls, d: dict) -> "MeshPartial":
        what = "mesh_partial"
        body = _get(d, what, dict, "frame")
        return cls(**_sync_of(body, what), sent_ns=_nonneg_int(body, "sent_ns", what),
                   ready_ns=_nonneg_int(body, "ready_ns", what),
                   slept_ms=_number(body, "slept_ms", what, 0, 2 * MAX_DELAY_MS))


@dataclass(frozen=True)
class MeshLink:
    """Worker i -> worker j > i (mesh): make this connection the pair's link; j answers with a MeshLink of its
    own (or a StepError), then both sides write their partials on it and read the other's."""
    rank: int   # the sender's rank
    world: int  # the sender's world: both ends must be of one share

    def to_dict(self) -> dict:
        return {"mesh_link": {"rank": self.rank, "world": self.world}}

    @classmethod
    def from_dict(cls, d: dict) -> "MeshLink":
        body = _get(d, "mesh_link", dict, "frame")
        world = _nonneg_int(body, "world", "mesh_link", MAX_LINKS + 1)
        rank = _nonneg_int(body, "rank", "mesh_link", MAX_LINKS)
        if not rank < world:
            raise ProtocolError(f"mesh_link.rank {rank} is not a rank of a world of {world}")
        return cls(rank, world)


@dataclass(frozen=True)
class MeshAbort:
    """Root -> worker (mesh): the step failed elsewhere; stop waiting for its partials and answer with `error`."""
    request_id: str
    step: int
    error: StepError

    def to_dict(self) -> dict:
        return {"mesh_abort": {"request_id": self.request_id, "step": self.step, **self.error.to_dict()}}

    @classmethod
    def from_dict(cls, d: dict) -> "MeshAbort":
        what = "mesh_abort"
        body = _get(d, what, dict, "frame")
        return cls(request_id=_request_id(body, what), step=_nonneg_int(body, "step", what),
                   error=StepError.from_dict(body))
