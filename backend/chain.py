"""The root's end of the ring: send a step to worker 1, take worker N's output on the root's own data port.

    root --link 0--> worker 1 --link 1--> ... worker N --link N--> root (data port = PORT + 1)

`forward` sends the step and waits for worker 1's answer. Every worker answers its sender once it
has passed its output on, so when worker 1's Ack arrives the output is already here; a StepError
names the worker that failed (or the hop it could not reach) instead.
"""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass

import torch

from common.frame import FrameError, decode_frame, encode_frame
from common.latency import sleep_exactly
from common.placement import Shard
from common.protocol import Ack, ProtocolError, StepError, StepHeader, reply_from_dict
from common.transport import Transport, data_address

from .control import ControlClient
from .metrics import StepTimings, step_timings


@dataclass(frozen=True)
class WorkerSpec:
    name: str   # worker-1, worker-2, ... in chain order
    url: str    # http://host:port (control); the data address is derived from it
    shard: Shard

    @property
    def address(self) -> str:
        return data_address(self.url)


class WorkerFailure(RuntimeError):
    """A worker failed or did not answer; the message names it and says what happened."""

    def __init__(self, message: str, worker: str | None = None, status: int = 502):
        super().__init__(message)
        self.worker, self.status = worker, status


@dataclass
class _Arrival:
    header: StepHeader
    hidden: torch.Tensor
    recv_ns: int
    nbytes: int


class Chain:
    def __init__(self, workers: list[WorkerSpec], transport: Transport, control: ControlClient, return_address: str,
                 max_frame_bytes: int, hop_timeout_s: float, sync_dtype: str = "float32"):
        """sync_dtype: float32, hidden states travel in the compute dtype | q80, as 8-bit blocks (common/q80.py);
        the workers send theirs on and home as their LoadAssignment says, the same."""
        if not workers:
            raise ValueError("a chain needs at least one worker")
        self.transport, self.control, self.return_address = transport, control, return_address
        self.max_frame_bytes, self.hop_timeout_s = max_frame_bytes, hop_timeout_s
        self.as_q80 = sync_dtype == "q80"
        self.follow(workers)
        self._steps = itertools.count()
        self._waiting: dict[tuple[str, int], _Arrival | None] = {}
        self._lock = threading.Lock()

    def follow(self, workers: list[WorkerSpec]) -> None:
        """The chain's workers (again, when a task moved to a new address)."""
        self.workers = list(workers)
        self._names = {w.address: w.name for w in workers} | {self.return_address: "the root"}

    def forward(self, request_id: str, hidden: torch.Tensor, start_pos: int,
                delays_ms: list[float]) -> tuple[torch.Tensor, StepTimings]:
        """One pass root -> worker 1 -> ... -> worker N -> root; returns (hidden, step timings)."""
        key = (request_id, next(self._steps))
        body = encode_frame(StepHeader(request_id, key[1], start_pos, tuple(delays_ms)).to_dict(), hidden,
                            self.as_q80)
        # Inner workers time out on their own next hop first and say which one failed.
        timeout = self.hop_timeout_s * (len(self.workers) + 1) + sum(delays_ms) / 1e3
        with self._lock:
            self._waiting[key] = None
        sent_ns = time.time_ns()
        try:
            answer = self._call_first(body, timeout)
        finally:
            with self._lock:
                arrival = self._waiting.pop(key)
        if arrival is None:  # an output that arrived is the step done, whatever came back after it
            if isinstance(answer, StepError):
                raise self._failure_from(answer)
            raise WorkerFailure(f"{self.workers[-1].name} acknowledged the step but its output never reached "
                                f"the root at {self.return_address}", self.workers[-1].name)
        final_delay = delays_ms[-1]
        if final_delay > 0:
            sleep_exactly(final_delay / 1e3)  # the last link, worker N -> root: its receiver waits it
        return arrival.hidden, step_timings(sent_ns, arrival.header.stages, arrival.recv_ns, final_delay,
                                            len(body), arrival.nbytes)

    def _call_first(self, body: bytes, timeout: float) -> Ack | StepError:
        first = self.workers[0]
        try:
            reply = self.transport.peer(first.address).call(body, timeout)
            return reply_from_dict(decode_frame(reply, self.max_frame_bytes)[0])
        except TimeoutError:
            return StepError(504, f"{first.name} ({first.url}) did not answer within {timeout:g} s", first.name)
        except (FrameError, ProtocolError) as exc:
            return StepError(502, f"{first.name} ({first.url}) sent a bad answer: {exc}", first.name)
        except OSError as exc:
            return StepError(502, f"{first.name} ({first.url}) is unreachable: {type(exc).__name__}", first.name)

    def arrive(self, frame: bytearray) -> bytes:
        """The root's data port: worker N's output of a step someone is waiting for."""
        recv_ns = time.time_ns()
        try:
            raw, hidden = decode_frame(frame, self.max_frame_bytes)
            header = StepHeader.from_dict(raw)
            if hidden is None or len(header.stages) != len(self.workers):
                raise ProtocolError("the ring's output lacks hidden states or a stage per worker")
        except (FrameError, ProtocolError) as exc:
            return encode_frame(StepError(400, f"the root got a bad frame: {exc}").to_dict(), None)
        key = (header.request_id, header.step)
        with self._lock:
            if key not in self._waiting:
                return encode_frame(StepError(409, f"the root is not waiting for step {header.step} of "
                                                   f"{header.request_id} (late or unknown)").to_dict(), None)
            self._waiting[key] = _Arrival(header, hidden, recv_ns, len(frame))
        return encode_frame(Ack().to_dict(), None)

    def _failure_from(self, err: StepError) -> WorkerFailure:
        worker, message = err.worker, err.message
        if err.failed_next in self._names:
            target = self._names[err.failed_next]
            if target == "the root":
                message = f"{worker} cannot send its output to the root at {err.failed_next} ({message})"
            else:
                worker, message = target, f"{target} is down or unreachable ({message})"
        status = err.status if err.status in (429, 504) else 502
        return WorkerFailure(message, worker, status)

    def release(self, request_id: str) -> None:
        """Free the request's KV cache on every worker; best effort, a down worker has none anyway."""
        for w in self.workers:
            self.control.release(w.url, request_id)
