"""The root service: the page, the generate API, cluster and container stats, metrics."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from flask import Flask, Response, jsonify, request, send_from_directory
from werkzeug.exceptions import RequestEntityTooLarge

from common.config import RootSettings
from common.errors import error_response

from .chain import WorkerFailure
from .generation import Recovered, TokenEvent, WorkerDown
from .openai_api import openai_blueprint
from .placement_api import placement_blueprint
from .replies import sse, status_for
from .runs import ApiError, ClosingStream, Run, admit, encode_prompt, json_body
from .runtime import Runtime, Startup, latency_description
from .validation import BadRequest, parse_generate

log = logging.getLogger("root.api")
MAX_BODY_BYTES = 1024 * 1024


def create_app(settings: RootSettings | None = None, runtime: Runtime | None = None) -> Flask:
    """The root's app; with `runtime`, one built already (tests), else a Startup in the background."""
    settings = settings or RootSettings.from_env()
    torch.set_num_threads(settings.threads)  # the LM head runs on the root's CPU share, like the workers' layers
    startup = Startup.ready_with(runtime) if runtime is not None else Startup(settings).start()
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["startup"] = startup
    frontend = Path(settings.frontend_dir)

    def serving() -> Runtime:
        """The Runtime, or a 503 that says what the root is waiting for."""
        if startup.runtime is None:
            raise ApiError(503, f"the cluster is not ready: {startup.reason}")
        return startup.runtime

    app.register_blueprint(openai_blueprint(serving))
    app.register_blueprint(placement_blueprint(
        lambda: startup.runtime.placement_view() if startup.runtime else None, lambda: startup.reason))

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_):
        return error_response(413, f"the body is larger than {MAX_BODY_BYTES} bytes")

    @app.errorhandler(404)
    def not_found(_):
        return error_response(404, f"no such endpoint: {request.path}")

    @app.errorhandler(405)
    def bad_method(_):
        return error_response(405, f"{request.method} is not allowed on {request.path}")

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        resp, status = error_response(exc.status, str(exc), **exc.extra)
        resp.headers.update(exc.headers)
        return resp, status

    @app.errorhandler(BadRequest)
    def bad_request(exc: BadRequest):
        return error_response(400, str(exc))

    @app.get("/")
    def index():
        return send_from_directory(frontend, "index.html")

    @app.get("/static/<path:name>")
    def static_file(name):
        return send_from_directory(frontend, name)

    @app.get("/healthz")
    def healthz():
        status, reason = startup.health()
        if status == "ok":
            return jsonify({"status": "ok"})
        return jsonify({"status": status, "reason": reason}), 503

    @app.get("/metrics")
    def metrics():
        if startup.runtime is None:
            return Response(b"", mimetype="text/plain; version=0.0.4")
        return Response(startup.runtime.prom.exposition(), mimetype="text/plain; version=0.0.4")

    @app.get("/api/cluster")
    def cluster():
        if startup.runtime is not None:
            return jsonify(startup.runtime.describe())
        # Still starting (or failed): what is known so far, and why it is not serving.
        return jsonify({"model": None, "latency": latency_description(settings), "threads_root": settings.threads,
                        "root_tensors": [], "workers": [], "chain": [], "ready": False,
                        "placement": startup.refused.describe() if startup.refused else None,
                        "reason": startup.reason, "state": startup.state, "stats_source": "none",
                        "compute": settings.compute, "tokens_are_real": settings.compute == "real",
                        "max_concurrent": settings.max_concurrent})

    @app.get("/api/stats")
    def stats():
        rt = startup.runtime
        return jsonify({"source": rt.stats_source if rt else "none", "time": time.time(),
                        "containers": rt.history.latest() if rt else []})

    @app.post("/api/requests/<request_id>/cancel")
    def cancel(request_id):
        flag = startup.runtime.active.get(request_id) if startup.runtime else None
        if flag is None:
            return error_response(404, f"no running request {request_id}")
        flag.set()
        return jsonify({"cancelled": True})

    @app.post("/api/tokenize")
    def tokenize():
        """How many tokens a prompt is, before sending it (prefill time depends on it)."""
        body = json_body()
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            raise BadRequest("tokenize needs {\"prompt\": str, \"chat\": bool}")
        chat = body.get("chat", False)
        if not isinstance(chat, bool):
            raise BadRequest("chat must be true or false")
        rt = serving()
        return jsonify({"prompt_tokens": len(encode_prompt(rt.tokenizer, body["prompt"], chat))})

    @app.post("/api/generate")
    def generate_api():
        t0 = time.perf_counter()
        params = parse_generate(json_body())
        run = admit(serving(), params, t0)
        headers = {"X-Request-Id": run.reply.request_id}
        if params.stream:
            return Response(ClosingStream(_events(run), run), mimetype="text/event-stream",
                            headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            final = run.run_to_end()
        except WorkerFailure as exc:
            return error_response(status_for(exc), str(exc), worker=exc.worker, partial=run.final())
        finally:
            run.close()
        return jsonify(final), 200, headers

    return app


def _events(run: Run):
    try:
        yield sse({"request_id": run.reply.request_id, "prompt_tokens": len(run.reply.prompt_ids)}, "start")
        for event in run.events():
            if isinstance(event, TokenEvent):
                yield sse({"id": event.token, "text": event.text, "index": event.index}, "token")
            elif isinstance(event, WorkerDown):
                yield sse({"worker": event.worker, "message": event.message, "wait_s": event.wait_s,
                           "tokens_so_far": event.tokens_so_far}, "worker_down")
            elif isinstance(event, Recovered):
                yield sse({"worker": event.worker, "replayed_tokens": event.replayed_tokens,
                           "waited_ms": event.waited_ms, "recoveries": event.recoveries}, "recovered")
        run.close()  # metrics and release before "done", so a client that reads "done" sees freed caches
        yield sse(run.final(), "done")
    except WorkerFailure as exc:
        run.close()
        yield sse({"message": str(exc), "worker": exc.worker, "status": status_for(exc), "partial": run.final()},
                  "error")
