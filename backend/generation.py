"""One reply: prefill, then decode token by token around the ring, with metrics and cancellation.

prefill(reply, ids)            # hidden: (1, prompt_tokens, hidden); its token ends at TTFT
decode_one(reply, token, pos)  # hidden: (1, 1, hidden); the last one ends at TTLT
generate(...)                  # yields TokenEvent, and WorkerDown / Recovered when a worker fails mid-reply
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Union

import torch

from .chain import Chain, WorkerFailure
from .head import HeadModel
from .metrics import ReplyMetrics
from .sampling import make_generator, sample_token
from .validation import GenerateRequest

log = logging.getLogger("root.generation")


@dataclass
class Reply:
    request_id: str
    prompt_ids: list[int]
    request: GenerateRequest
    max_new_tokens: int
    metrics: ReplyMetrics                       # owns t0, token times, the drawn delays, stage totals
    cancel: threading.Event = field(default_factory=threading.Event)
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None

    @property
    def recoveries(self) -> int:
        return self.metrics.recoveries


@dataclass(frozen=True)
class TokenEvent:
    token: int
    text: str       # the new text this token completes (may be "" while a character is unfinished)
    index: int


@dataclass(frozen=True)
class WorkerDown:
    """A worker failed mid-reply; the root waits up to wait_s for the cluster to be whole again."""
    worker: str | None
    message: str
    wait_s: float
    tokens_so_far: int


@dataclass(frozen=True)
class Recovered:
    worker: str | None
    replayed_tokens: int   # prompt + tokens so far, sent again as one prefill
    waited_ms: float
    recoveries: int


Event = Union[TokenEvent, WorkerDown, Recovered]


class Engine:
    """The model as the root runs it: its head (embedding, final norm, LM head) around the ring."""

    def __init__(self, head: HeadModel, chain: Chain):
        self.head, self.chain = head, chain

    def prefill(self, reply: Reply, ids: list[int]) -> torch.Tensor:
        """ids: the prompt (or, on a replay, prompt + tokens so far) -> logits of the last position."""
        return self._pass(reply, ids, 0)

    def decode_one(self, reply: Reply, token: int, pos: int) -> torch.Tensor:
        """The newest token at position pos -> logits of the next."""
        return self._pass(reply, [token], pos)

    def _pass(self, reply: Reply, ids: list[int], start_pos: int) -> torch.Tensor:
        hidden = self.head.embed(ids)  # (1, T, hidden)
        delays = reply.metrics.delays.draw_step(hidden.numel() * hidden.element_size())
        out, timings = self.chain.forward(reply.request_id, hidden, start_pos, delays)
        reply.metrics.step(timings)
        return self.head.logits(out)

    def release(self, request_id: str) -> None:
        self.chain.release(request_id)


def stop_position(text: str, stops: tuple[str, ...]) -> int | None:
    """Where the earliest stop string starts in text, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def generate(reply: Reply, engine: Engine, tokenizer, eos_ids: list[int],
             recover: Callable[[], bool] | None = None, recovery_wait_s: float = 0.0,
             max_recoveries: int = 2) -> Iterator[Event]:
    """Events of one reply; sets reply.finish_reason. Releases caches at the end.

    A worker that fails mid-reply (after the first token) is waited for with recover(); when the
    cluster is whole again, the prompt and every token so far are replayed as one prefill and the
    reply goes on. A failure before the first token is reported at once.
    """
    eos = set(eos_ids)
    sampler = make_generator(reply.request.sampling.seed)
    ids, pos = reply.prompt_ids, 0
    try:
        while True:
            if reply.cancel.is_set():
                reply.finish_reason = "cancelled"
                return
            try:
                logits = engine.prefill(reply, ids) if pos == 0 else engine.decode_one(reply, ids[0], pos)
            except WorkerFailure as exc:
                if (not reply.token_ids or recover is None or recovery_wait_s <= 0
                        or reply.recoveries >= max_recoveries or reply.cancel.is_set() or exc.status == 429):
                    raise
                yield WorkerDown(exc.worker, str(exc), recovery_wait_s, len(reply.token_ids))
                started = time.perf_counter()
                recovered = recover()
                waited_ms = (time.perf_counter() - started) * 1e3
                reply.metrics.waited(waited_ms, recovered)  # a failed reply's partial metrics keep the wait too
                if not recovered:
                    raise
                ids, pos = reply.prompt_ids + reply.token_ids, 0
                log.warning("request %s: %s; replaying %d tokens", reply.request_id, exc, len(ids))
                yield Recovered(exc.worker, len(ids), waited_ms, reply.recoveries)
                continue
            token = sample_token(logits, reply.request.sampling, sampler)
            reply.metrics.token()
            reply.token_ids.append(token)
            pos += len(ids)
            ids = [token]
            delta, stopped = _advance_text(reply, tokenizer)
            yield TokenEvent(token, delta, len(reply.token_ids) - 1)
            if stopped or (token in eos and not reply.request.ignore_eos):
                reply.finish_reason = "stop"
                return
            if len(reply.token_ids) >= reply.max_new_tokens:
                reply.finish_reason = "length"
                return
    finally:
        engine.release(reply.request_id)
        if reply.finish_reason is None:
            reply.finish_reason = "cancelled"


def _advance_text(reply: Reply, tokenizer) -> tuple[str, bool]:
    """(the new text, whether a stop string was reached); waits for whole characters."""
    text = tokenizer.decode(reply.token_ids, skip_special_tokens=True)
    cut = stop_position(text, reply.request.stop)
    if cut is not None:
        text = text[:cut]
    delta = text[len(reply.text):] if not text.endswith("\ufffd") else ""
    if delta or cut is not None:
        reply.text = text
    return delta, cut is not None


__all__ = ["Reply", "Engine", "generate", "stop_position", "WorkerFailure", "TokenEvent", "WorkerDown",
           "Recovered", "Event"]
