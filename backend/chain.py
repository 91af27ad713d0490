"""The root's end of the pipeline: send hidden states to worker 1, get worker N's output back."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import requests
import torch

from common.latency import sleep_exactly
from common.frame import FrameError, decode_frame, encode_frame
from common.split import Shard
from common.wire import StreamClient, data_address

from .metrics import chain_step_timings


@dataclass(frozen=True)
class WorkerSpec:
    name: str   # worker-1, worker-2, ... in chain order
    url: str    # http://host:port, the same address the previous worker uses
    shard: Shard


class WorkerFailure(RuntimeError):
    """A worker failed or did not answer; the message names it and says what happened."""

    def __init__(self, message: str, worker: str | None = None, status: int = 502):
        super().__init__(message)
        self.worker, self.status = worker, status


class Chain:
    def __init__(self, workers: list[WorkerSpec], max_frame_bytes: int, hop_timeout_s: float):
        self.workers, self.max_frame_bytes, self.hop_timeout_s = workers, max_frame_bytes, hop_timeout_s
        self._local = threading.local()
        self._names_by_url = {w.url: w.name for w in workers}
        self._data = StreamClient(data_address(workers[0].url), max_frame_bytes) if workers else None

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def forward(self, request_id: str, hidden: torch.Tensor, start_pos: int,
                delays_ms: list[float]) -> tuple[torch.Tensor, dict]:
        """One pass root -> worker 1 -> ... -> worker N -> root; returns (hidden, step timings)."""
        body = encode_frame({"request_id": request_id, "start_pos": start_pos, "delays_ms": delays_ms}, hidden)
        first = self.workers[0]
        # Inner workers time out on their own next hop first and say which one failed.
        timeout = self.hop_timeout_s * (len(self.workers) + 1) + sum(delays_ms) / 1e3
        sent_ns = time.time_ns()
        try:
            reply = self._data.call(body, timeout)
        except TimeoutError:
            raise WorkerFailure(f"{first.name} ({first.url}) did not answer within {timeout:g} s", first.name, 504)
        except FrameError as exc:
            raise WorkerFailure(f"{first.name} ({first.url}) sent a bad reply: {exc}", first.name)
        except OSError as exc:
            raise WorkerFailure(f"{first.name} ({first.url}) is unreachable: {type(exc).__name__}", first.name)
        returned_ns = time.time_ns()
        try:
            header, out = decode_frame(reply, self.max_frame_bytes)
            if isinstance(header.get("error"), dict):
                raise self._failure_from(header["error"])
            records = header["stages"]
            if out is None or not isinstance(records, list) or len(records) != len(self.workers):
                raise FrameError("the chain's reply lacks hidden states or a stage per worker")
        except (FrameError, KeyError) as exc:
            raise WorkerFailure(f"the chain sent back a bad frame: {exc}")
        final_delay = delays_ms[-1]
        if final_delay > 0:
            sleep_exactly(final_delay / 1e3)  # the last link, worker N -> root
        return out, chain_step_timings(sent_ns, records, returned_ns, final_delay, len(body), len(reply))

    def _failure_from(self, err: dict) -> WorkerFailure:
        message, worker = str(err.get("message")), err.get("worker")
        failed_next = err.get("failed_next")
        if failed_next in self._names_by_url:
            worker = self._names_by_url[failed_next]
            message = f"{worker} is down or unreachable ({message})"
        status = 429 if err.get("status") == 429 else 502
        return WorkerFailure(message, worker if isinstance(worker, str) else None, status)

    def release(self, request_id: str) -> None:
        """Free the request's KV cache on every worker; best effort, a down worker has none anyway."""
        for w in self.workers:
            try:
                self._session().post(w.url + "/v1/release", json={"request_id": request_id}, timeout=2)
            except requests.RequestException:
                pass
