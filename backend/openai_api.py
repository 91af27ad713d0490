"""OpenAI-compatible endpoints, so that existing clients and chat front ends can use the cluster.

POST /v1/completions, POST /v1/chat/completions (streaming or not, with usage), GET /v1/models.
Fields OpenAI has and a simulator has no use for (penalties, user, ...) are accepted and ignored;
ones that would change the answer and are not supported (n > 1, logprobs, tools) are refused.
Every response and chunk says how the tokens were made: `system_fingerprint` (a field of OpenAI's own
schema) is "ddllm-real-compute" or "ddllm-modelled-compute", and `tokens_are_real` is false with
modelled compute, whose text comes from no model (README: Modelled compute).
"""
from __future__ import annotations

import time
from typing import Callable

from flask import Blueprint, Response, jsonify

from .chain import WorkerFailure
from .replies import sse, status_for
from .runs import ClosingStream, Run, admit, json_body
from .runtime import Runtime
from .validation import BadRequest, parse_generate

ROLES = ("system", "developer", "user", "assistant")  # tool and function roles need tools, refused below
UNSUPPORTED = {"logprobs", "top_logprobs", "tools", "tool_choice", "functions", "function_call", "echo",
               "best_of", "suffix", "response_format", "logit_bias"}


def _common_params(body: dict, prompt: str, chat: bool, default_max: int, default_temperature: float):
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    present = sorted(k for k in UNSUPPORTED if body.get(k) not in (None, False, 0, [], {}))
    if present:
        raise BadRequest(f"not supported here: {', '.join(present)}")
    if body.get("n", 1) != 1:
        raise BadRequest("n must be 1")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens", default_max))
    native = {"prompt": prompt, "max_tokens": max_tokens, "chat": chat,
              "temperature": body.get("temperature", default_temperature), "top_p": body.get("top_p", 1.0),
              "seed": body.get("seed"), "stop": body.get("stop"), "stream": body.get("stream", False)}
    if native["temperature"] is None:
        native["temperature"] = default_temperature
    if native["top_p"] is None:
        native["top_p"] = 1.0
    return parse_generate({k: v for k, v in native.items() if v is not None or k == "prompt"})


def _messages(body) -> list[dict]:
    msgs = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(msgs, list) or not msgs:
        raise BadRequest("messages must be a non-empty list of {role, content}")
    out = []
    for m in msgs:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadRequest("each message needs a role and a content")
        if m["role"] not in ROLES:
            raise BadRequest(f"message role {m['role'][:40]!r} is not one of {', '.join(ROLES)}")
        content = m.get("content")
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if not isinstance(content, str):
            raise BadRequest("each message needs a role and a content")
        out.append({"role": m["role"], "content": content})
    return out


def _usage(final: dict) -> dict:
    m = final["metrics"]
    return {"prompt_tokens": m["prompt_tokens"], "completion_tokens": m["completion_tokens"],
            "total_tokens": m["prompt_tokens"] + m["completion_tokens"]}


def _finish(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"


def _prompt(body) -> str:
    """One prompt: a string, or a list holding exactly one string (as the OpenAI API allows)."""
    prompt = body.get("prompt") if isinstance(body, dict) else None
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise BadRequest(f"prompt lists are limited to 1 prompt here (got {len(prompt)}) and token-id prompts "
                             "are not accepted: send one request per prompt")
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise BadRequest("prompt must be a string")
    return prompt


def openai_blueprint(serving: Callable[[], Runtime]) -> Blueprint:
    """serving(): the Runtime, or an ApiError(503) while the root is not ready."""
    bp = Blueprint("openai", __name__)

    def model_name() -> str:
        try:
            return serving().model_path.name
        except Exception:  # not ready yet: the list still answers
            return "unknown"

    @bp.get("/v1/models")
    def models():
        return jsonify({"object": "list", "data": [{"id": model_name(), "object": "model", "created": 0,
                                                    "owned_by": "docker-distributed-llm"}]})

    @bp.post("/v1/completions")
    def completions():
        t0 = time.perf_counter()
        body = json_body()
        params = _common_params(body, _prompt(body), False, 16, 1.0)
        run = admit(serving(), params, t0)
        ident = f"cmpl-{run.reply.request_id}"
        shape = lambda text, finish: {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
        return _respond(run, params.stream, body, ident, "text_completion", shape,
                        lambda final: shape(final["text"], _finish(final["finish_reason"])))

    @bp.post("/v1/chat/completions")
    def chat_completions():
        t0 = time.perf_counter()
        body = json_body()
        messages = _messages(body)
        params = _common_params(body, messages[-1]["content"] or " ", True, 256, 1.0)
        run = admit(serving(), params, t0, messages=messages)
        ident = f"chatcmpl-{run.reply.request_id}"

        def chunk(text, finish):
            delta = {"content": text} if text else {}
            return {"index": 0, "delta": delta, "finish_reason": finish}

        def whole(final):
            return {"index": 0, "message": {"role": "assistant", "content": final["text"]},
                    "finish_reason": _finish(final["finish_reason"])}

        return _respond(run, params.stream, body, ident, "chat.completion", chunk, whole, first_delta=True)

    def _respond(run: Run, stream: bool, body: dict, ident: str, kind: str, chunk, whole, first_delta=False):
        created = int(time.time())
        compute = run.runtime.settings.compute
        base = {"id": ident, "created": created, "model": model_name(),
                "system_fingerprint": f"ddllm-{compute}-compute", "tokens_are_real": compute == "real"}
        if not stream:
            try:
                final = run.run_to_end()
            except WorkerFailure as exc:
                return jsonify({"error": {"message": str(exc), "type": "worker_failure", "worker": exc.worker}}), \
                    status_for(exc)
            finally:
                run.close()
            return jsonify({**base, "object": kind, "choices": [whole(final)], "usage": _usage(final),
                            "metrics": final["metrics"]})
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        chunk_kind = "chat.completion.chunk" if kind == "chat.completion" else kind

        def events():
            try:
                if first_delta:
                    yield sse({**base, "object": chunk_kind,
                                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                             "finish_reason": None}]})
                for _, text in run.tokens():
                    if text:
                        yield sse({**base, "object": chunk_kind, "choices": [chunk(text, None)]})
                run.close()
                final = run.final()
                yield sse({**base, "object": chunk_kind, "choices": [chunk("", _finish(final["finish_reason"]))]})
                if include_usage:
                    yield sse({**base, "object": chunk_kind, "choices": [], "usage": _usage(final)})
            except WorkerFailure as exc:
                run.close()
                yield sse({"error": {"message": str(exc), "type": "worker_failure", "worker": exc.worker,
                                     "status": status_for(exc)}})
            yield sse("[DONE]")

        return Response(ClosingStream(events(), run), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Request-Id": run.reply.request_id})

    return bp
