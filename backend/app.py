"""The root service: the page, the generate API, cluster and container stats, metrics."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from flask import Flask, Response, jsonify, request, send_from_directory
from werkzeug.exceptions import RequestEntityTooLarge

from common.config import RootSettings
from common.errors import error_response

from .chain import WorkerFailure
from .openai_api import openai_blueprint
from .placement_api import placement_blueprint
from .prom import PromMetrics
from .runs import ApiError, ClosingStream, Run, admit, json_body
from .runtime import Runtime
from .validation import BadRequest, parse_generate

log = logging.getLogger("root.api")
MAX_BODY_BYTES = 1024 * 1024


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def create_app(settings: RootSettings | None = None, runtime: Runtime | None = None) -> Flask:
    settings = settings or RootSettings.from_env()
    torch.set_num_threads(settings.threads)  # the LM head runs on the root's CPU share, like the workers' layers
    if runtime is None:
        runtime = Runtime(settings)
        runtime.start()
    runtime.prom = PromMetrics(runtime.active)
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["runtime"] = runtime
    frontend = Path(settings.frontend_dir)
    app.register_blueprint(openai_blueprint(runtime))
    app.register_blueprint(placement_blueprint(runtime))

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
        if runtime.ready():
            return jsonify({"status": "ok"})
        return jsonify({"status": "loading" if runtime.status != "failed" else "failed",
                        "reason": runtime.not_ready_reason()}), 503

    @app.get("/metrics")
    def metrics():
        return Response(runtime.prom.exposition(), mimetype="text/plain; version=0.0.4")

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
        params = parse_generate(json_body())
        run = admit(runtime, params, t0)
        headers = {"X-Request-Id": run.reply.request_id}
        if params.stream:
            return Response(ClosingStream(_events(run), run), mimetype="text/event-stream",
                            headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            final = run.run_to_end()
        except WorkerFailure as exc:
            return error_response(429 if exc.status == 429 else 502, str(exc), worker=exc.worker)
        finally:
            run.close()
        return jsonify(final), 200, headers

    return app


def _events(run: Run):
    try:
        yield sse("start", {"request_id": run.reply.request_id, "prompt_tokens": len(run.reply.prompt_ids)})
        for index, (token, text) in enumerate(run.tokens()):
            yield sse("token", {"id": token, "text": text, "index": index})
        run.close()  # metrics and release before "done", so a client that reads "done" sees freed caches
        yield sse("done", run.final())
    except WorkerFailure as exc:
        run.close()
        yield sse("error", {"message": str(exc), "worker": exc.worker})
