"""SYNC_TOPOLOGY=mesh: this worker's all-reduce without the root (common/tensor_protocol.py has the frames).

Per sync, a rank sleeps its link's delay, then writes its partial to every other rank and reads theirs on
the pair's kept-open link (worker/mesh_links.py); with all N partials in, every rank adds them up in rank
order in float32 (common/reduction.py, as the root does in the star), so every rank holds the same sum.
No cycle can deadlock: every rank writes before it waits, and reads while it writes.

A failure ends the step on every rank at once: a peer that cannot be reached, closes its link or sends a
bad frame fails this rank's sync, naming it; a rank that fails otherwise answers the root with its error,
and the root sends the others a MeshAbort that wakes whatever waits on that step's partials.
"""
from __future__ import annotations

import time

import torch

from common import q80
from common.frame import FrameError, encode_frame, encode_payload, frame_with
from common.latency import sleep_exactly
from common.protocol import ProtocolError, StepError
from common.reduction import reduce_partials
from common.tensor_links import realized_ms
from common.tensor_protocol import MeshAbort, MeshPartial, TensorStep, sync_label

from .mesh_links import SyncFailed, link_request

__all__ = ["MeshSyncs", "SyncFailed", "link_request", "mesh_abort"]


class MeshSyncs:
    """This worker's all-reduce for one step, straight with its peers (same interface as tensor_step.Syncs)."""

    def __init__(self, state, step: TensorStep):
        self.state, self.step = state, step
        self.a = state.assignment
        self.count = 0
        self.sync_ms = 0.0            # wall time in syncs: delays, links, waiting for the slowest rank
        self.down_transport_ms = 0.0  # per sync, the slowest peer's partial on the wire while this rank waited
        self.sync_bytes = 0
        self.injected_ms = 0.0        # what the delays added, sync by sync (the broadcast's in the first)
        self.timeout_s = state.settings.hop_timeout_s  # as the root's round in the star, for the other partials
        state.mesh.begin(step.request_id, step.step)

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
        now = time.time_ns()
        key = (step.request_id, step.step, index)
        frame = frame_with(MeshPartial(key[0], key[1], key[2], rank, now, now, slept).to_dict(), payload)
        exchanged = self.state.mesh.exchange(key, rank, a.peers, frame, a.name, self.timeout_s)
        theirs = exchanged.partials
        for p, arrival in theirs.items():
            if tuple(arrival.partial.shape) != tuple(partial.shape):
                raise SyncFailed(StepError(502, f"{a.name}: rank {p} ({a.peers[p]}) sent a partial of "
                                                f"{sync_label(index)} shaped {tuple(arrival.partial.shape)}, "
                                                f"not {tuple(partial.shape)}", a.name, a.peers[p]))
        self.sync_bytes += exchanged.sent_bytes  # what this rank writes: the root adds up every rank's
        self.down_transport_ms += max(x.transport_ms for x in theirs.values())
        partials = [own if r == rank else theirs[r].partial for r in range(world)]
        # this rank's partial "arrives" when it went out (after opening a link, if it had to), on one clock
        arrivals = [exchanged.sent_ns if r == rank else theirs[r].recv_ns for r in range(world)]
        delays = [slept if r == rank else theirs[r].header.slept_ms for r in range(world)]
        self.injected_ms += realized_ms(arrivals, delays)
        total = reduce_partials(partials, torch.float32)
        self.count += 1
        self.sync_ms += (time.perf_counter() - started) * 1e3
        return total


def mesh_abort(state, raw: dict) -> bytes:
    """The root's word that a step failed elsewhere: whatever waits on its partials answers with the error."""
    try:
        abort = MeshAbort.from_dict(raw)
    except ProtocolError as exc:
        return encode_frame(StepError(400, f"bad abort: {exc}").to_dict(), None)
    state.mesh.abort(abort.request_id, abort.step, abort.error)
    return encode_frame({"mesh_aborted": {"request_id": abort.request_id, "step": abort.step}}, None)
