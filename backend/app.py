"""The root service: the page, the generate API, cluster and container stats."""
from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path

from flask import Flask, Response, jsonify, request, send_from_directory
from werkzeug.exceptions import RequestEntityTooLarge

from common.config import RootSettings
from common.errors import error_response
from common.latency import RequestDelays

from .chain import WorkerFailure
from .generation import Reply, final_object, generate
from .metrics import StageTotals
from .runtime import Runtime
from .validation import BadRequest, parse_generate

log = logging.getLogger("root.api")
MAX_BODY_BYTES = 1024 * 1024


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def create_app(settings: RootSettings | None = None, runtime: Runtime | None = None) -> Flask:
    settings = settings or RootSettings.from_env()
    if runtime is None:
        runtime = Runtime(settings)
        runtime.start()
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["runtime"] = runtime
    frontend = Path(settings.frontend_dir)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_):
        return error_response(413, f"the body is larger than {MAX_BODY_BYTES} bytes")

    @app.errorhandler(404)
    def not_found(_):
        return error_response(404, f"no such endpoint: {request.path}")

    @app.errorhandler(405)
    def bad_method(_):
        return error_response(405, f"{request.method} is not allowed on {request.path}")

    @app.get("/")
    def index():
        return send_from_directory(frontend, "index.html")

    @app.get("/static/<path:name>")
    def static_file(name):
        return send_from_directory(frontend, name)

    @app.get("/healthz")
    def healthz():
        if runtime.ready():
            return jsonify({"status": "ok"})
        return jsonify({"status": "loading" if runtime.status != "failed" else "failed",
                        "reason": runtime.not_ready_reason()}), 503

    @app.get("/api/cluster")
    def cluster():
        return jsonify(runtime.describe())

    @app.get("/api/stats")
    def stats():
        return jsonify({"source": runtime.stats_source, "time": time.time(), "containers": runtime.history.latest()})

    @app.post("/api/requests/<request_id>/cancel")
    def cancel(request_id):
        flag = runtime.active.get(request_id)
        if flag is None:
            return error_response(404, f"no running request {request_id}")
        flag.set()
        return jsonify({"cancelled": True})

    @app.post("/api/generate")
    def generate_api():
        t0 = time.perf_counter()
        try:
            params = parse_generate(_json_body())
        except BadRequest as exc:
            return error_response(400, str(exc))
        if not runtime.ready():
            return error_response(503, f"the cluster is not ready: {runtime.not_ready_reason()}")
        try:
            prompt_ids = _encode(runtime.tokenizer, params.prompt, params.chat)
        except BadRequest as exc:
            return error_response(400, str(exc))
        limit = runtime.context_limit()
        if len(prompt_ids) >= limit:
            return error_response(400, f"the prompt is {len(prompt_ids)} tokens; the context holds {limit} "
                                       f"(prompt + reply)")
        if not runtime.slots.acquire(blocking=False):
            resp, status = error_response(429, f"{settings.max_concurrent} requests are already running; retry shortly")
            resp.headers["Retry-After"] = "1"
            return resp, status
        reply = Reply(request_id=uuid.uuid4().hex[:16], prompt_ids=prompt_ids, request=params,
                      max_new_tokens=min(params.max_tokens, limit - len(prompt_ids)), t0=t0)
        runtime.active[reply.request_id] = reply.cancel
        run = _Run(runtime, reply)
        headers = {"X-Request-Id": reply.request_id}
        if params.stream:
            return Response(_EventStream(run), mimetype="text/event-stream",
                            headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            for _ in run.tokens():
                pass
        except WorkerFailure as exc:
            return error_response(exc.status if exc.status == 429 else 502, str(exc), worker=exc.worker)
        finally:
            run.close()
        return jsonify(run.final()), 200, headers

    return app


class _Run:
    """A reply being produced; releases its slot and caches however it ends (done, error, disconnect)."""

    def __init__(self, runtime: Runtime, reply: Reply):
        self.runtime, self.reply = runtime, reply
        self.wall_start = time.time()
        self.delays = RequestDelays(runtime.links, runtime.settings.latency_seed, next(runtime.requests_started))
        self.totals = StageTotals([w.name for w in runtime.cluster.specs],
                                  [[w.shard.start, w.shard.end] for w in runtime.cluster.specs])
        self._gen = generate(reply, runtime.head, runtime.chain, runtime.tokenizer, runtime.eos_ids,
                             self.delays, self.totals)
        self._closed = False

    def tokens(self):
        yield from self._gen

    def final(self) -> dict:
        return final_object(self.reply, self.delays, self.totals, self.runtime.history.window(self.wall_start, time.time()))

    def events(self):
        try:
            yield sse("start", {"request_id": self.reply.request_id, "prompt_tokens": len(self.reply.prompt_ids)})
            for index, (token, text) in enumerate(self.tokens()):
                yield sse("token", {"id": token, "text": text, "index": index})
            yield sse("done", self.final())
        except WorkerFailure as exc:
            log.warning("request %s failed: %s", self.reply.request_id, exc)
            yield sse("error", {"message": str(exc), "worker": exc.worker})
        finally:
            self.close()  # also on a client that went away (GeneratorExit at a yield)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._gen.close()  # runs generate()'s finally: caches released on every worker
        self.runtime.active.pop(self.reply.request_id, None)
        self.runtime.slots.release()


class _EventStream:
    """The SSE body; the server calls close() even when the client left before the first event."""

    def __init__(self, run: _Run):
        self.run = run

    def __iter__(self):
        return self.run.events()

    def close(self) -> None:
        self.run.close()


def _json_body():
    raw = request.get_data(cache=False)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body is not valid UTF-8") from None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise BadRequest("the body is not valid JSON") from None


def _encode(tokenizer, prompt: str, chat: bool) -> list[int]:
    if not chat:
        return list(tokenizer(prompt).input_ids)
    if not getattr(tokenizer, "chat_template", None):
        raise BadRequest("this model's tokenizer has no chat template: send chat: false")
    out = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        tokenize=True, return_dict=True)
    ids = out["input_ids"]
    return list(ids[0] if ids and isinstance(ids[0], list) else ids)
