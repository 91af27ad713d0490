"""A worker's part of a tensor-parallel step (common/tensor_protocol.py has the topology).

The root calls every worker's data port with the step's hidden states (SYNC_TOPOLOGY=mesh: the
workers sum among themselves, worker/mesh_sync.py; the rest of this holds for both). The worker sleeps its
broadcast link's delay, then runs its share of every layer (worker/tensor_slice.py); each of its
2 x layers partials is the request of a call to the root's data port, whose reply is the sum over
all workers. The worker sleeps both crossings of a sync (before sending the partial, after
receiving the sum), with the delays the root drew and sent in the TensorStep. It answers the root's
call with its TensorRecord (worker 1 with the output too), or with a StepError naming who failed.
"""
from __future__ import annotations

import time

import torch

from common.frame import FrameError, decode_frame, encode_frame
from common.latency import sleep_exactly
from common.protocol import ProtocolError, StepError
from common.tensor_protocol import SyncPartial, SyncSum, TensorRecord, TensorStep, sync_label
from common.torch_threads import use_torch_threads

from .caches import CacheFull
from .mesh_sync import MeshSyncs, SyncFailed, link_request, mesh_abort
from .modelled import TENSOR_SLICES


class Syncs:
    """This worker's all-reduce for one step in the star: partial -> the root -> the sum over all workers."""

    def __init__(self, state, step: TensorStep):
        self.state, self.step = state, step
        self.a = state.assignment
        self.count = 0
        self.sync_ms = 0.0            # wall time in syncs: links, injected delays, waiting for the slowest
        self.down_transport_ms = 0.0
        self.sync_bytes = 0        # the root counts the star's bytes and what its delays added (MeshSyncs: the worker)
        self.injected_ms = 0.0
        # The root waits HOP_TIMEOUT_S for the other partials, then answers; its own delays come on top.
        self.timeout_s = 3 * state.settings.hop_timeout_s

    def __call__(self, partial: torch.Tensor) -> torch.Tensor:
        a, index = self.a, self.count
        if a.share.world == 1:  # the only rank: its partial is the sum (common/tensor_links.syncs_per_step)
            return partial
        if index >= len(self.step.up_ms):
            raise SyncFailed(StepError(400, f"{a.name}: the step carries {len(self.step.up_ms)} syncs' delays, "
                                            f"this share has more layers", a.name))
        started = time.perf_counter()
        if self.step.up_ms[index] > 0:
            sleep_exactly(self.step.up_ms[index] / 1e3)  # the partial's link: waited by its sender, arrives late
        header = SyncPartial(self.step.request_id, self.step.step, index, a.share.rank, time.time_ns())
        # float32, or SYNC_DTYPE=q80's blocks of it (the root sums them in float32 either way)
        frame = encode_frame(header.to_dict(), partial.to(torch.float32), a.sync_dtype == "q80")
        where = f"{sync_label(index)} of step {self.step.step}"
        try:
            reply = self.state.transport.peer(a.next_address).call(frame, self.timeout_s)
        except TimeoutError:
            raise SyncFailed(StepError(504, f"{a.name}: the root ({a.next_address}) did not answer {where} "
                                            f"within {self.timeout_s:g} s", a.name, a.next_address)) from None
        except (OSError, FrameError) as exc:
            raise SyncFailed(StepError(502, f"{a.name}: cannot reach the root ({a.next_address}) for {where}: "
                                            f"{type(exc).__name__}", a.name, a.next_address)) from None
        recv_ns = time.time_ns()
        try:
            raw, total = decode_frame(reply, self.state.settings.max_frame_bytes)
            if "error" in raw:
                raise SyncFailed(StepError.from_dict(raw))  # the root says who failed: passed on as it is
            answer = SyncSum.from_dict(raw)
            if total is None or total.shape != partial.shape:
                raise ProtocolError(f"the sum of {where} is not shaped like the partial {tuple(partial.shape)}")
        except (FrameError, ProtocolError) as exc:
            raise SyncFailed(StepError(502, f"{a.name}: the root sent a bad sum: {exc}", a.name)) from None
        self.down_transport_ms += max(0.0, (recv_ns - answer.sent_ns) / 1e6)
        if self.step.down_ms[index] > 0:
            sleep_exactly(self.step.down_ms[index] / 1e3)  # the sum's link back: its receiver waits it
        self.count += 1
        self.sync_ms += (time.perf_counter() - started) * 1e3
        return total


def _error(status: int, message: str, worker: str | None) -> bytes:
    return encode_frame(StepError(status, message, worker=worker).to_dict(), None)


def tensor_step(state, data: bytes, recv_ns: int):
    """The data plane in tensor mode: the answer to the root's broadcast call, and in the mesh to a lower
    rank's link request (worker/mesh_links.py: an Adopt) or to the root's word that a step failed elsewhere."""
    a, sl = state.assignment, state.slice
    try:
        raw, hidden = decode_frame(data, state.settings.max_frame_bytes)
    except FrameError as exc:
        return _error(400, f"bad frame: {exc}", a.name if a else None)
    if "mesh_abort" in raw:
        return mesh_abort(state, raw)
    if state.status != "ready" or not isinstance(sl, TENSOR_SLICES) or a is None or a.share is None:
        return _error(503, f"worker is {state.status}, not ready for a tensor step", a.name if a else None)
    if "mesh_link" in raw:
        if not a.peers:
            return _error(400, f"{a.name} is not a mesh rank: it takes no link", a.name)
        return link_request(state.mesh, raw, a.share.rank, a.share.world, a.name)
    try:
        step = TensorStep.from_dict(raw)
        if hidden is None or hidden.dim() != 3 or hidden.shape[0] != 1 or hidden.shape[2] != sl.hidden_size:
            raise FrameError(f"hidden states must have shape (1, T, {sl.hidden_size})")
    except (FrameError, ProtocolError) as exc:
        return _error(400, f"bad frame: {exc}", a.name)
    if step.delay_ms > 0:
        sleep_exactly(step.delay_ms / 1e3)  # the broadcast link's injected latency
    syncs = MeshSyncs(state, step) if a.peers else Syncs(state, step)
    compute_ms = stretch_ms = shortfall_ms = 0.0
    try:
        with state.compute_lock:
            cache = state.caches.get_or_create(step.request_id, step.start_pos)
        use_torch_threads(state.torch_threads)  # this thread runs the step's computes (run's generator)
        run = sl.forward_steps(hidden, cache, step.start_pos)
        message = None  # the first call starts the coroutine; then each sum is sent in
        segment = 0     # which compute of the step: the one before sync `segment`, or the tail after the last
        while True:
            # The device computes one thing at a time; it is free while this step waits on a sync.
            # A played device stretches each segment between syncs, not the step at its end: its
            # partial leaves when the device would have it, so the syncs wait for the slow rank.
            with state.compute_lock:
                started = time.perf_counter()
                timing = state.clock.start()
                finished = False
                try:
                    partial = next(run) if message is None else run.send(message)
                except StopIteration as done:
                    out, finished = done.value, True
                slept, short = state.clock.finish(timing, hidden.shape[1], step.start_pos, segment)
                segment += 1
                stretch_ms, shortfall_ms = stretch_ms + slept, shortfall_ms + short
                compute_ms += (time.perf_counter() - started) * 1e3
            if finished:
                break
            message = syncs(partial)
    except SyncFailed as exc:
        return encode_frame(exc.error.to_dict(), None)
    except CacheFull as exc:
        return _error(429, str(exc), a.name)
    except (KeyError, ValueError) as exc:  # a cache out of step with the root's positions
        return _error(409, f"{a.name}: {str(exc).strip(chr(39) + chr(34))}", a.name)
    record = TensorRecord(name=a.name, rank=a.share.rank, recv_ns=recv_ns, sent_ns=time.time_ns(),
                          delay_ms=step.delay_ms, compute_ms=compute_ms, syncs=syncs.count, sync_ms=syncs.sync_ms,
                          down_transport_ms=syncs.down_transport_ms, bytes_in=len(data), stretch_ms=stretch_ms,
                          shortfall_ms=shortfall_ms, sync_bytes=syncs.sync_bytes,
                          sync_injected_ms=syncs.injected_ms)
    # Every worker holds the same output; worker 1's goes home for the LM head.
    return encode_frame(record.to_dict(), out.contiguous() if a.share.rank == 0 else None)
