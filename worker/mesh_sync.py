"""SYNC_TOPOLOGY=mesh: this worker's all-reduce without the root (common/tensor_protocol.py has the frames).

Per sync, a rank sleeps its link's delay, posts its partial in its own mailbox (`Exchange`), then calls
every higher rank with it; each of those calls is answered with the callee's partial once the callee
has posted it, and the lower ranks' calls bring theirs in. With all N partials in, every rank adds them
up in rank order in float32 (common/reduction.py, as the root does in the star), so every rank holds the
same sum. No cycle can deadlock: a rank posts before it calls anyone, and a call only waits for a post.

A failure ends the step on every rank at once: a peer that cannot be reached or answers with an error
fails this rank's sync, naming it; a rank that fails otherwise answers the root with its error, and the
root sends the others a MeshAbort that wakes whatever waits on that step's partials.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import torch

from common import q80
from common.frame import FrameError, Payload, decode_frame, encode_frame, encode_payload, frame_with
from common.latency import sleep_exactly
from common.protocol import ProtocolError, StepError
from common.reduction import reduce_partials
from common.tensor_links import realized_ms
from common.tensor_protocol import MeshAbort, MeshPartial, TensorStep, sync_label

MAX_OPEN_SYNCS = 8  # a step has at most two syncs open at once (a fast rank one ahead); the rest is a peer gone wrong


class SyncFailed(Exception):
    """A synchronisation that did not come back with a sum; carries the StepError to answer with."""

    def __init__(self, error: StepError):
        super().__init__(error.message)
        self.error = error


@dataclass
class _Slot:
    """One sync's partials as they come in, by rank."""
    partials: dict[int, torch.Tensor] = field(default_factory=dict)
    arrival_ns: dict[int, int] = field(default_factory=dict)  # this worker's clock
    slept_ms: dict[int, float] = field(default_factory=dict)
    transport_ms: dict[int, float] = field(default_factory=dict)  # each peer's partial on the wire
    own: tuple[Payload, int, float] | None = None  # this rank's partial as it travels, when posted, what it slept
    answered: int = 0  # lower ranks' calls whose answer is built (the compute thread waits for them: see `all`)


class Exchange:
    """This worker's mailbox for the partials of its current step: (request, step, sync) -> a slot."""

    def __init__(self):
        self.cond = threading.Condition()
        self.slots: dict[tuple[str, int, int], _Slot] = {}
        self.failed: dict[tuple[str, int], StepError] = {}

    def begin(self, request_id: str, step: int) -> None:
        """A new step: the slots and failures of any other step are over (a step starts only after every
        rank answered the last one, so a peer's partial of another step is a leftover)."""
        with self.cond:
            self.slots = {k: v for k, v in self.slots.items() if k[:2] == (request_id, step)}
            self.failed = {k: v for k, v in self.failed.items() if k == (request_id, step)}
            self.cond.notify_all()

    def abort(self, request_id: str, step: int, error: StepError) -> None:
        with self.cond:
            self.failed[(request_id, step)] = error
            self.cond.notify_all()

    def _slot(self, key: tuple[str, int, int]) -> _Slot:
        slot = self.slots.get(key)
        if slot is None:
            if len(self.slots) >= MAX_OPEN_SYNCS:
                raise ProtocolError(f"more than {MAX_OPEN_SYNCS} syncs open at once")
            slot = self.slots[key] = _Slot()
        return slot

    def _put(self, slot: _Slot, key: tuple[str, int, int], rank: int, partial: torch.Tensor, arrival_ns: int,
             slept_ms: float, transport_ms: float) -> None:
        if rank in slot.partials:
            raise ProtocolError(f"rank {rank} sent {sync_label(key[2])} of step {key[1]} twice")
        slot.partials[rank], slot.arrival_ns[rank], slot.slept_ms[rank] = partial, arrival_ns, slept_ms
        slot.transport_ms[rank] = transport_ms
        self.cond.notify_all()

    def put(self, key: tuple[str, int, int], rank: int, partial: torch.Tensor, arrival_ns: int, slept_ms: float,
            transport_ms: float) -> None:
        """A peer's partial, from the answer to this rank's call."""
        with self.cond:
            self._put(self._slot(key), key, rank, partial, arrival_ns, slept_ms, transport_ms)

    def trade(self, key: tuple[str, int, int], rank: int, partial: torch.Tensor, arrival_ns: int, slept_ms: float,
              transport_ms: float, timeout_s: float) -> tuple[_Slot, tuple[Payload, int, float]]:
        """A lower rank's call: keep its partial, then block until this rank posted its own (the answer).
        Raises TimeoutError, ProtocolError, or SyncFailed (the step failed, or is over)."""
        with self.cond:
            slot = self._slot(key)
            self._put(slot, key, rank, partial, arrival_ns, slept_ms, transport_ms)
            # The slot object, not the key: the compute thread forgets the key once all partials are in.
            if not self.cond.wait_for(lambda: slot.own is not None or key[:2] in self.failed
                                      or (key not in self.slots and slot.own is None), timeout_s):
                raise TimeoutError("own partial")
            if slot.own is not None:
                return slot, slot.own
            raise SyncFailed(self.failed.get(key[:2]) or StepError(409, f"step {key[1]} of {key[0]} is over"))

    def answered(self, slot: _Slot) -> None:
        with self.cond:
            slot.answered += 1
            self.cond.notify_all()

    def post(self, key: tuple[str, int, int], rank: int, partial: torch.Tensor, payload: Payload,
             slept_ms: float) -> int:
        """This rank's own partial (as the others will add it up) and its encoding for their calls."""
        now = time.time_ns()
        with self.cond:
            slot = self._slot(key)
            self._put(slot, key, rank, partial, now, slept_ms, 0.0)
            slot.own = (payload, now, slept_ms)
        return now

    def all(self, key: tuple[str, int, int], world: int, rank: int, timeout_s: float) -> _Slot:
        """Blocks until every rank's partial of the sync is in and each of the `rank` lower ranks' calls has
        its answer built, then forgets the slot. Raises TimeoutError, or SyncFailed when the root aborted.

        Why wait for the answers: so that a call's thread never has to take the GIL back from this rank's
        compute to send its answer. That was the reason given when it was added; torch releases the GIL
        inside its ops (checked since), and two benchmark runs, without and with this wait, measured the
        same mesh sync time (README, Tensor parallelism). It costs the answer's few lines of Python."""
        with self.cond:
            slot = self.slots[key]  # posted by this rank just before
            if not self.cond.wait_for(lambda: (len(slot.partials) == world and slot.answered >= rank)
                                      or key[:2] in self.failed, timeout_s):
                raise TimeoutError("partials")
            if key[:2] in self.failed:
                raise SyncFailed(self.failed[key[:2]])
            self.slots.pop(key, None)
            return slot

    def missing(self, key: tuple[str, int, int], world: int) -> list[int]:
        with self.cond:
            slot = self.slots.get(key)
            return [r for r in range(world) if slot is None or r not in slot.partials]


class MeshSyncs:
    """This worker's all-reduce for one step, straight with its peers (same interface as tensor_step.Syncs)."""

    def __init__(self, state, step: TensorStep):
        self.state, self.step = state, step
        self.a = state.assignment
        self.count = 0
        self.sync_ms = 0.0            # wall time in syncs: delays, links, waiting for the slowest rank
        self.down_transport_ms = 0.0  # per sync, the slowest peer's partial on the wire (delays not inside)
        self.sync_bytes = 0
        self.injected_ms = 0.0        # what the delays added, sync by sync (the broadcast's in the first)
        # As the root's round in the star: HOP_TIMEOUT_S for the other partials of a sync. A call is answered
        # within that (the callee waits as long for its own partial), so its own timeout has a margin on top.
        self.timeout_s = state.settings.hop_timeout_s
        self.call_timeout_s = self.timeout_s + 5.0
        state.exchange.begin(step.request_id, step.step)

    def __call__(self, partial: torch.Tensor) -> torch.Tensor:
        a, index, step = self.a, self.count, self.step
        rank, world = a.share.rank, a.share.world
        if world == 1:
            return partial
        if index >= len(step.up_ms):
            raise SyncFailed(StepError(400, f"{a.name}: the step carries {len(step.up_ms)} syncs' delays, "
                                            f"this share has more layers", a.name))
        started = time.perf_counter()
        if step.up_ms[index] > 0:
            sleep_exactly(step.up_ms[index] / 1e3)  # this rank's link: its partial reaches every peer late
        slept = step.up_ms[index] + (step.delay_ms if index == 0 else 0.0)
        as_q80 = a.sync_dtype == "q80"
        own = partial.to(torch.float32)
        try:
            payload = encode_payload(own, as_q80)
        except FrameError as exc:
            raise SyncFailed(StepError(502, f"{a.name}: its partial of {sync_label(index)} cannot travel: {exc}",
                                       a.name)) from None
        if as_q80:  # every rank adds up the partials as they travel, its own too: one sum on every rank
            own = q80.decode(payload.data, payload.shape)
        key = (step.request_id, step.step, index)
        exchange = self.state.exchange
        try:
            exchange.post(key, rank, own, payload, slept)
        except ProtocolError as exc:
            raise SyncFailed(StepError(409, f"{a.name}: {exc}", a.name)) from None
        for peer in range(rank + 1, world):  # the lower rank of each pair calls; the higher answers
            self._call(peer, key, payload, slept, partial.shape)
        try:
            slot = exchange.all(key, world, rank, self.timeout_s)
        except TimeoutError:
            missing = exchange.missing(key, world)
            raise SyncFailed(StepError(504, f"no partial of {sync_label(index)} (step {step.step}) came from rank "
                                            f"{', '.join(map(str, missing))} to {a.name} within {self.timeout_s:g} s",
                                       a.name, a.peers[missing[0]] if missing else None)) from None
        order = range(world)
        self.down_transport_ms += max(slot.transport_ms.values(), default=0.0)
        self.injected_ms += realized_ms([slot.arrival_ns[r] for r in order], [slot.slept_ms[r] for r in order])
        total = reduce_partials([slot.partials[r] for r in order], torch.float32)
        self.count += 1
        self.sync_ms += (time.perf_counter() - started) * 1e3
        return total

    def _call(self, peer: int, key: tuple[str, int, int], payload: Payload, slept: float, shape) -> None:
        a, settings = self.a, self.state.settings
        address = a.peers[peer]
        where = f"{sync_label(key[2])} of step {key[1]}"
        now = time.time_ns()
        frame = frame_with(MeshPartial(key[0], key[1], key[2], a.share.rank, now, now, slept).to_dict(), payload)
        try:
            reply = self.state.transport.peer(address).call(frame, self.call_timeout_s)
        except TimeoutError:
            raise SyncFailed(StepError(504, f"{a.name}: rank {peer} ({address}) did not answer {where} within "
                                            f"{self.call_timeout_s:g} s", a.name, address)) from None
        except (OSError, FrameError) as exc:
            raise SyncFailed(StepError(502, f"{a.name}: cannot reach rank {peer} ({address}) for {where}: "
                                            f"{type(exc).__name__}", a.name, address)) from None
        recv_ns = time.time_ns()
        try:
            raw, theirs = decode_frame(reply, settings.max_frame_bytes)
            if "error" in raw:
                raise SyncFailed(StepError.from_dict(raw))  # the peer says who failed: passed on as it is
            answer = MeshPartial.from_dict(raw)
            if (answer.request_id, answer.step, answer.sync, answer.rank) != (key[0], key[1], key[2], peer):
                raise ProtocolError(f"the answer is rank {answer.rank}'s sync {answer.sync} of step {answer.step}")
            if theirs is None or theirs.dtype != torch.float32 or tuple(theirs.shape) != tuple(shape):
                raise ProtocolError(f"the partial of {where} is not float32 shaped like {tuple(shape)}")
        except (FrameError, ProtocolError) as exc:
            raise SyncFailed(StepError(502, f"{a.name}: rank {peer} ({address}) sent a bad partial: {exc}",
                                       a.name, address)) from None
        self.sync_bytes += len(frame) + len(reply)
        # The peer held its partial from ready_ns until this call came (both on its clock): less that, the
        # reply is when the partial would have arrived had the call been waiting for it, so the barrier's
        # arithmetic does not count this rank's own delay as the peer's.
        transport_ms = max(0.0, (recv_ns - answer.sent_ns) / 1e6)
        try:
            self.state.exchange.put(key, peer, theirs, recv_ns - max(0, answer.sent_ns - answer.ready_ns),
                                    answer.slept_ms, transport_ms)
        except ProtocolError as exc:
            raise SyncFailed(StepError(409, f"{a.name}: {exc}", a.name)) from None


def mesh_partial(state, raw: dict, theirs: torch.Tensor | None, recv_ns: int) -> bytes:
    """A lower rank's call on this worker's data port: keep its partial, answer with this rank's own."""
    a, sl = state.assignment, state.slice
    if state.status != "ready" or a is None or a.share is None or not a.peers:
        return encode_frame(StepError(503, "this worker is not a ready mesh rank", a.name if a else None).to_dict(),
                            None)
    try:
        mp = MeshPartial.from_dict(raw)
        if not mp.rank < a.share.rank:
            raise ProtocolError(f"rank {mp.rank} cannot call rank {a.share.rank} (the lower rank of a pair calls)")
        if theirs is None or theirs.dtype != torch.float32 or theirs.dim() != 3 or theirs.shape[2] != sl.hidden_size:
            raise ProtocolError(f"a partial must be float32 of shape (1, T, {sl.hidden_size})")
    except (FrameError, ProtocolError) as exc:
        return encode_frame(StepError(400, f"{a.name} got a bad partial: {exc}", a.name).to_dict(), None)
    key = (mp.request_id, mp.step, mp.sync)
    try:
        slot, (payload, posted_ns, slept) = state.exchange.trade(key, mp.rank, theirs, recv_ns, mp.slept_ms,
                                                         max(0.0, (recv_ns - mp.sent_ns) / 1e6),
                                                         state.settings.hop_timeout_s)
    except ProtocolError as exc:
        return encode_frame(StepError(409, f"{a.name}: {exc}", a.name).to_dict(), None)
    except SyncFailed as exc:
        return encode_frame(exc.error.to_dict(), None)
    except TimeoutError:
        return encode_frame(StepError(504, f"{a.name} did not send its partial of {sync_label(mp.sync)} (step {mp.step}) "
                                           f"within {state.settings.hop_timeout_s:g} s", a.name).to_dict(), None)
    header = MeshPartial(mp.request_id, mp.step, mp.sync, a.share.rank, time.time_ns(), posted_ns, slept)
    reply = frame_with(header.to_dict(), payload)
    state.exchange.answered(slot)
    return reply


def mesh_abort(state, raw: dict) -> bytes:
    """The root's word that a step failed elsewhere: whatever waits on its partials answers with the error."""
    try:
        abort = MeshAbort.from_dict(raw)
    except ProtocolError as exc:
        return encode_frame(StepError(400, f"bad abort: {exc}").to_dict(), None)
    state.exchange.abort(abort.request_id, abort.step, abort.error)
    return encode_frame({"mesh_aborted": {"request_id": abort.request_id, "step": abort.step}}, None)
