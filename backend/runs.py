"""Admitting a request and running its reply; shared by the native API and the OpenAI-compatible one."""
from __future__ import annotations

import json
import logging
import time
import uuid

from flask import request

from .chain import WorkerFailure
from .generation import Event, Reply, TokenEvent, generate
from .runtime import Runtime
from .validation import BadRequest, GenerateRequest

log = logging.getLogger("root.runs")


class ApiError(Exception):
    """An HTTP error to send back: status, message and extra headers."""

    def __init__(self, status: int, message: str, headers: dict | None = None, **extra):
        super().__init__(message)
        self.status, self.headers, self.extra = status, headers or {}, extra


def json_body():
    raw = request.get_data(cache=False)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body is not valid UTF-8") from None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise BadRequest("the body is not valid JSON") from None


def encode_prompt(tokenizer, prompt: str | None, chat: bool, messages: list[dict] | None = None) -> list[int]:
    if not chat:
        return list(tokenizer(prompt).input_ids)
    if not getattr(tokenizer, "chat_template", None):
        raise BadRequest("this model's tokenizer has no chat template: send chat: false")
    messages = messages if messages is not None else [{"role": "user", "content": prompt}]
    try:
        out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    except Exception as exc:  # a template may raise on roles it does not know
        raise BadRequest(f"the chat template rejected the messages: {exc}") from None
    ids = out["input_ids"]
    return list(ids[0] if ids and isinstance(ids[0], list) else ids)


def admit(runtime: Runtime, params: GenerateRequest, t0: float, messages: list[dict] | None = None) -> "Run":
    """Checks readiness, context and the concurrency limit; returns a Run holding a slot."""
    if not runtime.ready():
        raise ApiError(503, f"the cluster is not ready: {runtime.cluster.reason()}")
    prompt_ids = encode_prompt(runtime.tokenizer, params.prompt, params.chat, messages)
    limit = runtime.context_limit()
    if len(prompt_ids) >= limit:
        raise ApiError(400, f"the prompt is {len(prompt_ids)} tokens; the context holds {limit} (prompt + reply)")
    if not runtime.slots.acquire(blocking=False):
        runtime.prom.rejected.inc()
        raise ApiError(429, f"{runtime.settings.max_concurrent} requests are already running; retry shortly",
                       headers={"Retry-After": "1"})
    metrics = runtime.reply_metrics(t0, len(prompt_ids))
    reply = Reply(request_id=uuid.uuid4().hex[:16], prompt_ids=prompt_ids, request=params,
                  max_new_tokens=min(params.max_tokens, limit - len(prompt_ids)), metrics=metrics)
    runtime.active[reply.request_id] = reply.cancel
    return Run(runtime, reply)


class Run:
    """A reply being produced; releases its slot and caches however it ends (done, error, disconnect)."""

    def __init__(self, runtime: Runtime, reply: Reply):
        self.runtime, self.reply = runtime, reply
        self.wall_start = time.time()
        self._gen = generate(reply, runtime.engine, runtime.tokenizer, runtime.eos_ids,
                             recover=self._wait_for_cluster, recovery_wait_s=runtime.settings.recovery_wait_s)
        self._closed = False
        self.failure: WorkerFailure | None = None
        self.result: dict | None = None

    def _wait_for_cluster(self) -> bool:
        """True once every worker is ready again (the monitor reloads a restarted one), within the wait."""
        wait = self.runtime.settings.recovery_wait_s
        if wait <= 0:  # RECOVERY_WAIT_S=0: no replay, a failure ends the reply
            return False
        deadline = time.monotonic() + wait
        time.sleep(min(1.0, wait))  # let the monitor see the failure before asking whether all are ready
        while not self.reply.cancel.is_set():
            if self.runtime.ready():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)
        return False

    def events(self):
        """The reply's events; a WorkerFailure is recorded, then raised."""
        try:
            yield from self._gen
        except WorkerFailure as exc:
            self.failure = exc
            log.warning("request %s failed: %s", self.reply.request_id, exc)
            raise

    def tokens(self):
        """(token id, new text) per token, for callers that show only tokens."""
        for event in self.events():
            if isinstance(event, TokenEvent):
                yield event.token, event.text

    def run_to_end(self) -> dict:
        for _ in self.events():
            pass
        return self.final()

    def final(self) -> dict:
        """The whole reply: text, tokens, finish reason and every metric (partial when it failed)."""
        if self.result is None:
            failed = self.failure is not None
            metrics = self.reply.metrics.summary(failed=failed)
            metrics["containers"] = self.runtime.history.window(self.wall_start, time.time())
            self.result = {"request_id": self.reply.request_id, "text": self.reply.text,
                           "token_ids": self.reply.token_ids,
                           "finish_reason": "error" if failed else self.reply.finish_reason, "metrics": metrics}
        return self.result

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._gen.close()  # runs generate()'s finally: caches released on every worker
        self.runtime.active.pop(self.reply.request_id, None)
        self.runtime.slots.release()
        self.runtime.prom.observe(self)


class ClosingStream:
    """A streamed body; the server calls close() even when the client left before the first chunk."""

    def __init__(self, chunks, run: Run):
        self.chunks, self.run = chunks, run

    def __iter__(self):
        return iter(self.chunks)

    def close(self) -> None:
        close = getattr(self.chunks, "close", None)
        if close:
            close()
        self.run.close()


__all__ = ["ApiError", "Run", "ClosingStream", "admit", "json_body", "Event"]
