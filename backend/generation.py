"""One reply: prefill, then decode token by token through the chain, with metrics and cancellation.

prefill(ids)        # hidden: (1, prompt_tokens, hidden); ends at TTFT
decode_one(token)   # hidden: (1, 1, hidden); the last one ends at TTLT
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from common.latency import RequestDelays

from .chain import Chain, WorkerFailure
from .head import HeadModel
from .metrics import StageTotals, reply_metrics
from .sampling import make_generator, sample_token
from .validation import GenerateRequest

log = logging.getLogger("root.generation")


@dataclass
class Reply:
    request_id: str
    prompt_ids: list[int]
    request: GenerateRequest
    max_new_tokens: int
    t0: float                                   # perf_counter when the request was accepted
    cancel: threading.Event = field(default_factory=threading.Event)
    token_ids: list[int] = field(default_factory=list)
    token_times: list[float] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    recoveries: int = 0                         # times the prompt and tokens so far were replayed


def stop_position(text: str, stops: tuple[str, ...]) -> int | None:
    """Where the earliest stop string starts in text, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def generate(reply: Reply, head: HeadModel, chain: Chain, tokenizer, eos_ids: list[int],
             delays: RequestDelays, totals: StageTotals,
             recover: Callable[[], bool] | None = None, max_recoveries: int = 2) -> Iterator[tuple[int, str]]:
    """Yields (token id, new text) per token; sets reply.finish_reason. Releases caches at the end.

    A worker that fails mid-reply (after the first token) is waited for with recover(); when the
    cluster is whole again, the prompt and every token so far are replayed as one prefill and the
    reply goes on. A failure before the first token is reported at once.
    """
    eos = set(eos_ids)
    sampler = make_generator(reply.request.sampling.seed)
    try:
        hidden = head.embed(reply.prompt_ids)
        start_pos = 0
        while True:
            if reply.cancel.is_set():
                reply.finish_reason = "cancelled"
                return
            nbytes = hidden.numel() * hidden.element_size()
            try:
                out, timings = chain.forward(reply.request_id, hidden, start_pos, delays.draw_step(nbytes))
            except WorkerFailure as exc:
                if (not reply.token_ids or recover is None or reply.recoveries >= max_recoveries
                        or reply.cancel.is_set() or exc.status == 429 or not recover()):
                    raise
                reply.recoveries += 1
                log.warning("request %s: %s; replaying %d tokens", reply.request_id, exc,
                            len(reply.prompt_ids) + len(reply.token_ids))
                hidden, start_pos = head.embed(reply.prompt_ids + reply.token_ids), 0
                continue
            totals.add_step(timings)
            token = sample_token(head.logits(out), reply.request.sampling, sampler)
            reply.token_times.append(time.perf_counter())
            reply.token_ids.append(token)
            start_pos += hidden.shape[1]
            text = tokenizer.decode(reply.token_ids, skip_special_tokens=True)
            cut = stop_position(text, reply.request.stop)
            if cut is not None:
                text = text[:cut]
            delta = text[len(reply.text):] if not text.endswith("\ufffd") else ""  # wait for whole characters
            reply.text = text if delta or cut is not None else reply.text
            yield token, delta
            if cut is not None or (token in eos and not reply.request.ignore_eos):
                reply.finish_reason = "stop"
                return
            if len(reply.token_ids) >= reply.max_new_tokens:
                reply.finish_reason = "length"
                return
            hidden = head.embed([token])
    finally:
        chain.release(reply.request_id)
        if reply.finish_reason is None:
            reply.finish_reason = "cancelled"


def final_object(reply: Reply, delays: RequestDelays, totals: StageTotals, containers: dict) -> dict:
    metrics = reply_metrics(reply.t0, reply.token_times, len(reply.prompt_ids), delays.total_ms)
    metrics.update(totals.summary())
    metrics["recoveries"] = reply.recoveries
    metrics["containers"] = containers
    return {"request_id": reply.request_id, "text": reply.text, "token_ids": reply.token_ids,
            "finish_reason": reply.finish_reason, "metrics": metrics}


__all__ = ["Reply", "generate", "final_object", "stop_position", "WorkerFailure"]
