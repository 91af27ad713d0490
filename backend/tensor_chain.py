"""The root's end of tensor mode: broadcast a step to every worker, sum their partials, take worker 1's output.

Same interface as backend/chain.py's Chain (`forward(request_id, hidden, start_pos, delays_ms)` ->
(hidden, timings), `release`), so generation.py runs either. The topology (common/tensor_protocol.py):
the root calls every worker's data port with the step; each worker's partials come to the root's
data port (`arrive`) as calls, and each is answered with the sum once all N partials of that sync
are in (`reduce_partials`, float32). Worker 1's answer to the broadcast carries the output.
SYNC_DTYPE=q80: the broadcast, the partials and the sums travel as q80 blocks (common/q80.py); the
root still sums in float32 (each partial dequantized) and quantizes each sum once for the way back,
as distributed-llama's q80 sync buffer does; worker 1's output home stays in the compute dtype.

Concurrency: one tensor step at a time across the cluster (`_step_lock`). Every worker takes part in
every sync of a step, so two steps interleaved on the workers could each wait for a partial the
other holds up; serialising them at the root cannot deadlock, and requests in flight take turns
step by step (a decode step of each in turn, as in pipeline mode's busy ring).

SYNC_TOPOLOGY=mesh: the workers exchange their partials among themselves (worker/mesh_sync.py); the
root only broadcasts and collects the answers, each worker's TensorRecord carrying what the delays
added to its syncs and the bytes it exchanged.

Failures: any worker's error or silence fails the round at once; the workers waiting on a sum of
that round are answered with the failure (naming the worker), so each answers the broadcast quickly
and the root raises one WorkerFailure naming the worker that failed first. In the mesh, the root
sends the workers still in the step a MeshAbort that wakes their waits for the failed one's partials.
"""
from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

import torch

from common.frame import FrameError, Payload, decode_frame, encode_frame, encode_payload, frame_with
from common.latency import sleep_exactly
from common.protocol import ProtocolError, StepError
from common.tensor_links import TensorStepDelays, leg_delays, realized_ms, syncs_per_step
from common.tensor_protocol import MeshAbort, SyncPartial, SyncSum, TensorRecord, TensorStep, sync_label
from common.transport import Transport
from common.reduction import reduce_partials

from .chain import WorkerFailure, WorkerSpec
from .control import ControlClient
from .metrics import StepTimings


class _Round:
    """The syncs of one step: partials in, one sum out per sync, or the failure that ended the step."""

    def __init__(self, request_id: str, step: int, names: list[str], n_syncs: int, delays: TensorStepDelays,
                 timeout_s: float, as_q80: bool = False):
        self.request_id, self.step, self.names, self.delays, self.timeout_s = request_id, step, names, delays, timeout_s
        self.as_q80 = as_q80
        n = len(names)
        self.cond = threading.Condition()
        self.arrived: list[set[int]] = [set() for _ in range(n_syncs)]
        self.partials: list[list[torch.Tensor | None]] = [[None] * n for _ in range(n_syncs)]
        self.sums: list[Payload | None] = [None] * n_syncs  # each sum encoded once, for every worker's answer
        self.arrival_ns: list[list[int]] = [[0] * n for _ in range(n_syncs)]  # the root's clock
        self.realized_ms = 0.0  # what the delays added, barrier by barrier (common/tensor_links.realized_ms)
        self.up_transport_ms = [0.0] * n  # per worker, summed over the step's syncs
        self.sync_bytes = 0
        self.failure: WorkerFailure | None = None

    def fail(self, failure: WorkerFailure) -> None:
        with self.cond:
            if self.failure is None:  # the first failure is the one named
                self.failure = failure
            self.cond.notify_all()

    def contribute(self, sync: int, rank: int, partial: torch.Tensor, recv_ns: int) -> Payload:
        """Blocks until every rank's partial of `sync` is in; returns their sum (float32, or its q80 blocks),
        encoded once by the last to arrive."""
        with self.cond:
            if self.failure is None and rank in self.arrived[sync]:
                raise ProtocolError(f"{self.names[rank]} sent {sync_label(sync)} twice")
            self.arrived[sync].add(rank)
            self.partials[sync][rank] = partial
            self.arrival_ns[sync][rank] = recv_ns
            if len(self.arrived[sync]) == len(self.names):
                self.realized_ms += realized_ms(self.arrival_ns[sync], leg_delays(self.delays, sync))
                try:
                    self.sums[sync] = encode_payload(reduce_partials(self.partials[sync], torch.float32), self.as_q80)
                except FrameError as exc:  # a sum q80 cannot carry (NaN or infinite)
                    self.failure = self.failure or WorkerFailure(f"the sum of {sync_label(sync)} cannot travel: {exc}")
                except ValueError as exc:  # partials of different shapes: a worker out of step
                    self.failure = self.failure or WorkerFailure(f"the partials of {sync_label(sync)} differ: {exc}")
                self.partials[sync] = []  # the sum is all that is needed from here on
                self.cond.notify_all()
            elif not self.cond.wait_for(lambda: self.sums[sync] is not None or self.failure is not None,
                                        self.timeout_s):
                missing = [self.names[r] for r in range(len(self.names)) if r not in self.arrived[sync]]
                self.failure = self.failure or WorkerFailure(
                    f"{', '.join(missing)} did not send its partial of {sync_label(sync)} (step {self.step}) "
                    f"within {self.timeout_s:g} s", missing[0], 504)
                self.cond.notify_all()
            if self.failure is not None:
                raise self.failure
            return self.sums[sync]


class TensorChain:
    def __init__(self, workers: list[WorkerSpec], transport: Transport, control: ControlClient, n_layers: int,
                 hidden_size: int, max_frame_bytes: int, hop_timeout_s: float, sync_dtype: str = "float32",
                 topology: str = "star"):
        if not workers:
            raise ValueError("tensor mode needs at least one worker")
        self.workers, self.transport, self.control = workers, transport, control
        self.n_syncs, self.hidden_size = syncs_per_step(len(workers), n_layers), hidden_size
        self.max_frame_bytes, self.hop_timeout_s = max_frame_bytes, hop_timeout_s
        self.as_q80 = sync_dtype == "q80"  # the broadcast and the sums as q80 blocks (the workers send q80 partials)
        self.mesh = topology == "mesh"     # the workers exchange their partials: none comes to `arrive`
        self._names = [w.name for w in workers]
        self._steps = itertools.count()
        self._step_lock = threading.Lock()
        self._round: _Round | None = None
        self._round_lock = threading.Lock()
        # Threads kept across steps keep their data connections open; spare ones cover a call stuck on a hung worker.
        self._pool = ThreadPoolExecutor(max_workers=4 * len(workers), thread_name_prefix="tensor-broadcast")

    def follow(self, workers: list[WorkerSpec]) -> None:
        """The workers again, when a task moved to a new address (a swarm rescheduled it)."""
        with self._step_lock:
            self.workers = list(workers)

    def forward(self, request_id: str, hidden: torch.Tensor, start_pos: int,
                delays_ms: list[float]) -> tuple[torch.Tensor, StepTimings]:
        """One step on every worker; returns (worker 1's output, step timings)."""
        delays = TensorStepDelays.from_flat(list(delays_ms), len(self.workers), self.n_syncs)
        with self._step_lock:
            rnd = _Round(request_id, next(self._steps), self._names, self.n_syncs, delays, self.hop_timeout_s,
                         self.as_q80)
            with self._round_lock:
                self._round = rnd
            try:
                sent_ns = time.time_ns()
                answers = self._broadcast(rnd, hidden, start_pos)
            finally:
                with self._round_lock:
                    self._round = None
        records = [a[0] for a in answers]
        out, back_recv_ns, back_bytes = answers[0][1], answers[0][2], answers[0][3]
        if self.mesh:  # every barrier but the last was a worker's: the slowest worker's view of them
            rnd.realized_ms = max(r.sync_injected_ms for r in records)
            rnd.sync_bytes = sum(r.sync_bytes for r in records)
        # The last barrier: every worker's answer (the root waits for all), after the last sum's down link.
        rnd.realized_ms += realized_ms([a[2] for a in answers], leg_delays(delays, self.n_syncs)) + delays.back
        if delays.back > 0:
            sleep_exactly(delays.back / 1e3)  # worker 1's output home: its receiver (the root) waits it
        return out, tensor_step_timings(sent_ns, records, rnd, delays, back_recv_ns, back_bytes)

    def _broadcast(self, rnd: _Round, hidden: torch.Tensor, start_pos: int) -> list[tuple]:
        # As the ring bounds a worker's compute by HOP_TIMEOUT_S: a share of every layer (1/N of the model)
        # plus the waits for the slowest; a worker silent in a sync is named sooner by the round's timeout.
        timeout = self.hop_timeout_s * 2 + rnd.delays.critical_ms / 1e3
        d = rnd.delays
        futures = [self._pool.submit(self._call, rnd, i, encode_frame(
            TensorStep(rnd.request_id, rnd.step, start_pos, d.broadcast[i], tuple(up[i] for up in d.up),
                       tuple(down[i] for down in d.down)).to_dict(), hidden, self.as_q80), timeout)
            for i in range(len(self.workers))]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        if pending and self.mesh and rnd.failure is not None:  # the others wait on the failed worker's partials
            self._abort(rnd, [i for i, f in enumerate(futures) if f in pending])
        if pending:  # a failure: the others are answered at once by the failed round; wait for them briefly
            wait(pending, timeout=self.hop_timeout_s)
        if rnd.failure is not None:
            raise rnd.failure
        return [f.result() for f in futures]

    def _call(self, rnd: _Round, i: int, frame: bytes, timeout: float):
        w = self.workers[i]
        try:
            reply = self.transport.peer(w.address).call(frame, timeout)
            recv_ns = time.time_ns()
            raw, out = decode_frame(reply, self.max_frame_bytes)
            if "error" in raw:
                raise self._failure_from(StepError.from_dict(raw))
            record = TensorRecord.from_dict(raw)
            if record.rank != i or (i == 0 and (out is None or out.shape[-1] != self.hidden_size)):
                raise ProtocolError(f"the answer is rank {record.rank}'s" + (" without the output" if i == 0 else ""))
            return record, out, recv_ns, len(reply)
        except WorkerFailure as exc:
            failure = exc
        except TimeoutError:
            failure = WorkerFailure(f"{w.name} ({w.url}) did not answer the step within {timeout:g} s", w.name, 504)
        except (FrameError, ProtocolError) as exc:
            failure = WorkerFailure(f"{w.name} ({w.url}) sent a bad answer: {exc}", w.name)
        except OSError as exc:
            failure = WorkerFailure(f"{w.name} ({w.url}) is unreachable: {type(exc).__name__}", w.name)
        rnd.fail(failure)
        raise failure

    def _abort(self, rnd: _Round, ranks: list[int]) -> None:
        """Mesh: tell the workers still in the step that it failed, so each answers at once (best effort:
        a worker that cannot be told answers when its own wait for a partial times out)."""
        failure = rnd.failure
        frame = encode_frame(MeshAbort(rnd.request_id, rnd.step, StepError(
            failure.status, str(failure), failure.worker)).to_dict(), None)

        def tell(i: int) -> None:
            try:
                self.transport.peer(self.workers[i].address).call(frame, min(5.0, self.hop_timeout_s))
            except OSError:
                pass
        for i in ranks:
            threading.Thread(target=tell, args=(i,), name="tensor-abort", daemon=True).start()

    def _failure_from(self, err: StepError) -> WorkerFailure:
        message, worker = err.message, err.worker
        status = err.status if err.status in (429, 504) else 502
        if self.mesh and err.failed_next is not None:  # a peer it could not reach, or whose partial never came
            peer = next((w.name for w in self.workers if w.address == err.failed_next), None)
            if peer is not None:
                return WorkerFailure(f"{peer} failed in a sync: {message}", peer, status)
        elif err.failed_next is not None and err.worker:
            message = f"{err.worker} cannot send its partial to the root at {err.failed_next} ({message})"
        return WorkerFailure(message, worker, status)

    def arrive(self, frame: bytearray) -> bytes:
        """The root's data port: one worker's partial of one sync, answered with the sum over every worker."""
        recv_ns = time.time_ns()
        try:
            raw, partial = decode_frame(frame, self.max_frame_bytes)
            sp = SyncPartial.from_dict(raw)
            if sp.rank >= len(self.workers) or sp.sync >= self.n_syncs:
                raise ProtocolError(f"rank {sp.rank} / sync {sp.sync} is outside this cluster's "
                                    f"{len(self.workers)} workers / {self.n_syncs} syncs")
            if (partial is None or partial.dtype != torch.float32 or partial.dim() != 3
                    or partial.shape[2] != self.hidden_size):
                raise ProtocolError(f"a partial must be float32 of shape (1, T, {self.hidden_size})")
        except (FrameError, ProtocolError) as exc:
            return encode_frame(StepError(400, f"the root got a bad partial: {exc}").to_dict(), None)
        with self._round_lock:
            rnd = self._round
        if rnd is None or (rnd.request_id, rnd.step) != (sp.request_id, sp.step):
            return encode_frame(StepError(409, f"the root is not running step {sp.step} of {sp.request_id} "
                                               "(late or unknown)").to_dict(), None)
        try:
            total = rnd.contribute(sp.sync, sp.rank, partial, recv_ns)
        except (WorkerFailure, ProtocolError) as exc:
            worker = getattr(exc, "worker", None)
            return encode_frame(StepError(getattr(exc, "status", 409), str(exc), worker).to_dict(), None)
        reply = frame_with(SyncSum(time.time_ns()).to_dict(), total)
        with rnd.cond:
            rnd.up_transport_ms[sp.rank] += max(0.0, (recv_ns - sp.sent_ns) / 1e6)
            rnd.sync_bytes += len(frame) + len(reply)
        return reply

    def release(self, request_id: str) -> None:
        """Free the request's KV cache on every worker; best effort, a down worker has none anyway."""
        for w in self.workers:
            self.control.release(w.url, request_id)


def tensor_step_timings(sent_ns: int, records: list[TensorRecord], rnd: _Round, delays: TensorStepDelays,
                        back_recv_ns: int, back_bytes: int) -> StepTimings:
    """One step's figures (backend/tensor_metrics.py sums them): per worker, the broadcast link, its
    compute and sync time; what the delays added (realized), the syncs' share of it (the realized
    total less the broadcast's and the output's drawn delays; exact when the ranks are even), the
    drawn critical path of the syncs, the slowest worker's sync transport, bytes."""
    stages = [{"name": r.name, "compute_ms": r.compute_ms, "sync_ms": r.sync_ms, "stretch_ms": r.stretch_ms,
               "shortfall_ms": r.shortfall_ms,
               "link_in": {"injected_ms": r.delay_ms, "transport_ms": max(0.0, (r.recv_ns - sent_ns) / 1e6),
                           "bytes": r.bytes_in}} for r in records]
    sync_transport = max(up + r.down_transport_ms for up, r in zip(rnd.up_transport_ms, records))
    sync_realized = max(0.0, rnd.realized_ms - max(delays.broadcast) - delays.back) if records[0].syncs else 0.0
    return {"parallelism": "tensor", "stages": stages, "injected_ms": rnd.realized_ms,
            "link_out": {"injected_ms": delays.back, "transport_ms": max(0.0, (back_recv_ns - records[0].sent_ns) / 1e6),
                         "bytes": back_bytes},
            "sync": {"count": records[0].syncs, "injected_ms": sync_realized, "drawn_ms": delays.sync_ms,
                     "transport_ms": sync_transport,
                     "bytes": rnd.sync_bytes}}
