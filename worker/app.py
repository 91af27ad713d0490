"""A worker service: holds one slice of decoder layers and passes hidden states down the chain."""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from pathlib import Path

import psutil
import torch
from flask import Flask, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from common.config import WorkerSettings
from common.errors import error_response
from common.cpu import read_cgroup_quota
from common.latency import sleep_exactly
from common.frame import FrameError, decode_frame, encode_frame
from common.wire import DATA_PORT_OFFSET, StreamClient, StreamServer, data_address, error_frame
from common.placement import memory_report, read_cgroup_memory, read_host_memory
from common.split import Shard

from .caches import CacheFull, KVCacheStore
from .quantize import quantized_engine
from .shard import DecoderSlice

log = logging.getLogger("worker")
REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_DELAY_MS = 600_000.0


class Assignment:
    """What the root asked this worker to be: its place in the chain and its slice."""

    def __init__(self, body: dict, settings: WorkerSettings):
        try:
            self.name = str(body["name"])[:64]
            self.index = int(body["index"])
            self.shard = Shard(int(body["start"]), int(body["end"]))
            self.dtype = str(body["dtype"])
            self.model_path = str(Path(body["model_path"]).resolve())
            next_url = body.get("next_url")
            self.next_url = str(next_url).rstrip("/") if next_url else None
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"load needs name, index, start, end, dtype, model_path: {exc}") from None
        if not any(self.model_path == r or self.model_path.startswith(r + "/") for r in settings.model_roots):
            raise ValueError(f"model path {self.model_path} is outside the allowed folders {list(settings.model_roots)}")
        if self.next_url and not re.match(r"^https?://[A-Za-z0-9._-]+(:\d+)?$", self.next_url):
            raise ValueError(f"next_url {self.next_url!r} must be http://host:port")

    def describe(self) -> dict:
        return {"name": self.name, "index": self.index, "start": self.shard.start, "end": self.shard.end,
                "dtype": self.dtype, "model_path": self.model_path, "next_url": self.next_url}


class WorkerState:
    def __init__(self, settings: WorkerSettings):
        self.settings = settings
        self.caches = KVCacheStore(settings.max_caches, settings.cache_ttl_s)
        self.assignment: Assignment | None = None
        self.slice: DecoderSlice | None = None
        self.status, self.error = "empty", None
        self.compute_lock = threading.Lock()  # one device computes one thing at a time
        self.load_lock = threading.Lock()
        self._clients: dict[str, StreamClient] = {}

    def next_client(self, next_url: str) -> StreamClient:
        """The data-plane client to the next worker (kept per address: a reload may change it)."""
        client = self._clients.get(next_url)
        if client is None:
            client = self._clients[next_url] = StreamClient(data_address(next_url), self.settings.max_frame_bytes)
        return client

    def load(self, assignment: Assignment) -> None:
        with self.load_lock:
            self.status, self.error, self.assignment = "loading", None, assignment
            try:
                self.slice = None
                self.caches.clear()
                started = time.perf_counter()
                self.slice = DecoderSlice(assignment.model_path, assignment.shard, assignment.dtype,
                                          gemv=self.settings.decode_gemv)
                log.info("%s loaded layers [%d, %d) in %.1f s", assignment.name, assignment.shard.start,
                         assignment.shard.end, time.perf_counter() - started)
                self.status = "ready"
            except Exception as exc:  # any load failure is reported to the root through /healthz
                log.exception("load failed")
                self.status, self.error = "error", f"{type(exc).__name__}: {exc}"


def device_report(settings: WorkerSettings, state: WorkerState) -> dict:
    """What placement needs to know about this "device": its CPU share and its memory."""
    quota, period = read_cgroup_quota()
    cgroup_limit, cgroup_used = read_cgroup_memory()
    host_total, host_available = read_host_memory()
    held = state.slice.weight_bytes if state.slice is not None else 0
    memory = memory_report(cgroup_limit=cgroup_limit, cgroup_used=cgroup_used, host_total=host_total,
                           host_available=host_available, declared_limit=settings.memory_limit_bytes,
                           process_rss=psutil.Process().memory_info().rss, held_bytes=held)
    return {"threads": settings.threads, "cpus": round(quota / period, 3) if quota and period else None,
            "held_weight_bytes": held, **memory}


def create_app(settings: WorkerSettings | None = None) -> Flask:
    settings = settings or WorkerSettings.from_env()
    torch.set_num_threads(settings.threads)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_frame_bytes
    state = WorkerState(settings)
    app.extensions["worker_state"] = state

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_):
        return error_response(400, f"frame exceeds the limit of {settings.max_frame_bytes} bytes")

    @app.get("/healthz")
    def healthz():
        a = state.assignment
        body = {"status": state.status, "error": state.error, "threads": settings.threads, "pid": os.getpid(),
                "name": a.name if a else None, "layers": [a.shard.start, a.shard.end] if a else None,
                "assignment": a.describe() if a else None, "device": device_report(settings, state),
                "data_port": settings.port + DATA_PORT_OFFSET}
        return jsonify(body), 200 if state.status == "ready" else 503

    @app.post("/v1/load")
    def load():
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return error_response(400, "load needs a JSON object")
        try:
            assignment = Assignment(body, settings)
        except ValueError as exc:
            return error_response(400, str(exc))
        if state.assignment and state.assignment.describe() == assignment.describe() and state.status in ("ready", "loading"):
            return jsonify({"status": state.status}), 200
        threading.Thread(target=state.load, args=(assignment,), daemon=True).start()
        return jsonify({"status": "loading"}), 202

    @app.post("/v1/release")
    def release():
        body = request.get_json(silent=True)
        rid = body.get("request_id") if isinstance(body, dict) else None
        if not isinstance(rid, str) or not REQUEST_ID.match(rid):
            return error_response(400, "release needs {\"request_id\": str}")
        return jsonify({"released": state.caches.release(rid)})

    @app.get("/v1/info")
    def info():
        sl = state.slice
        return jsonify({
            "status": state.status, "threads": settings.threads, "pid": os.getpid(),
            "layers": [sl.shard.start, sl.shard.end] if sl else None,
            "loaded_tensors": sl.loaded_tensor_names if sl else [],
            "weight_bytes": sl.weight_bytes if sl else 0,
            "dtype": sl.dtype_name if sl else None,
            "quantized_engine": quantized_engine() if sl and sl.dtype_name == "int8" else None,
            "gemv_linears": sl.gemv_linears if sl else 0,  # float32 projections decoding through gemv
            "caches": state.caches.ids(),
            "rss_bytes": psutil.Process().memory_info().rss,
            "device": device_report(settings, state),
        })

    @app.post("/v1/forward")
    def forward():
        # The HTTP door to the same step the data plane serves (curl, tests, tools).
        try:
            return _frame_bytes(forward_step(state, request.get_data(cache=False), time.time_ns()))
        except ForwardError as exc:
            return error_response(exc.status, exc.message, **exc.fields)

    return app


class ForwardError(Exception):
    """A step that cannot be done: HTTP status, message, and fields for the root (worker, failed_next)."""

    def __init__(self, status: int, message: str, **fields):
        super().__init__(message)
        self.status, self.message, self.fields = status, message, fields

    def frame(self) -> bytes:
        return error_frame(self.status, self.message, **self.fields)


def forward_step(state: WorkerState, data: bytes, recv_ns: int) -> bytes:
    """One frame in, through this slice and the rest of the chain, one reply frame (all stages) out."""
    settings = state.settings
    if state.status != "ready" or state.slice is None or state.assignment is None:
        raise ForwardError(503, f"worker is {state.status}, not ready", worker=_name(state))
    a, sl = state.assignment, state.slice
    try:
        header, hidden = decode_frame(data, settings.max_frame_bytes)
        rid, start_pos, delays = _check_header(header, hidden, sl.hidden_size, a.index)
    except FrameError as exc:
        raise ForwardError(400, f"bad frame: {exc}", worker=a.name) from None
    delay_ms = delays[a.index]
    if delay_ms > 0:
        sleep_exactly(delay_ms / 1e3)  # the incoming link's injected latency
    with state.compute_lock:
        started = time.perf_counter()
        try:
            cache = state.caches.get_or_create(rid, start_pos)
            out = sl.forward(hidden, cache, start_pos)
        except CacheFull as exc:
            raise ForwardError(429, str(exc), worker=a.name) from None
        except (KeyError, ValueError) as exc:
            raise ForwardError(409, str(exc).strip("'\""), worker=a.name) from None
        compute_ms = (time.perf_counter() - started) * 1e3
    record = {"name": a.name, "layers": [a.shard.start, a.shard.end], "recv_ns": recv_ns,
              "delay_ms": delay_ms, "compute_ms": compute_ms, "bytes_in": len(data)}
    if a.next_url is None:
        record["sent_ns"] = time.time_ns()
        return encode_frame({"stages": [record]}, out)
    body = encode_frame({"request_id": rid, "start_pos": start_pos, "delays_ms": delays}, out)
    client = state.next_client(a.next_url)
    record["sent_ns"] = time.time_ns()
    try:
        reply = client.call(body, settings.hop_timeout_s)
    except TimeoutError:
        raise ForwardError(504, f"{a.name}: the next worker ({a.next_url}) did not answer within "
                                f"{settings.hop_timeout_s:g} s", worker=a.name, failed_next=a.next_url) from None
    except (OSError, FrameError) as exc:
        raise ForwardError(502, f"{a.name}: cannot reach the next worker ({a.next_url}): {type(exc).__name__}",
                           worker=a.name, failed_next=a.next_url) from None
    try:
        down_header, down_hidden = decode_frame(reply, settings.max_frame_bytes)
        err = down_header.get("error")
        if isinstance(err, dict):  # a failure further down: pass it up as it is
            raise ForwardError(int(err.get("status", 502)), str(err.get("message")),
                               **{k: v for k, v in err.items() if k in ("worker", "failed_next")})
        stages = down_header.get("stages")
        if not isinstance(stages, list):
            raise FrameError("reply has no stages")
    except (FrameError, TypeError, ValueError) as exc:
        raise ForwardError(502, f"{a.name}: the next worker sent a bad frame: {exc}", worker=a.name) from None
    return encode_frame({"stages": [record] + stages}, down_hidden)


def serve_data_plane(state: WorkerState, host: str, port: int) -> StreamServer:
    """The worker's data port: frames from the previous stage, replies back on the same connection."""
    def handle(frame: bytearray) -> bytes:
        recv_ns = time.time_ns()
        try:
            return forward_step(state, frame, recv_ns)
        except ForwardError as exc:
            return exc.frame()
    return StreamServer(host, port, handle, state.settings.max_frame_bytes).start()


def _name(state: WorkerState) -> str | None:
    return state.assignment.name if state.assignment else None


def _check_header(header: dict, hidden, hidden_size: int, index: int) -> tuple[str, int, list[float]]:
    rid, start_pos, delays = header.get("request_id"), header.get("start_pos"), header.get("delays_ms")
    if not isinstance(rid, str) or not REQUEST_ID.match(rid):
        raise FrameError("request_id must be 1-64 letters, digits, '-' or '_'")
    if not isinstance(start_pos, int) or isinstance(start_pos, bool) or not 0 <= start_pos < 2**31:
        raise FrameError("start_pos must be a non-negative integer")
    if (not isinstance(delays, list) or len(delays) <= index or len(delays) > 4096
            or not all(isinstance(d, (int, float)) and not isinstance(d, bool) and 0 <= d <= MAX_DELAY_MS for d in delays)):
        raise FrameError(f"delays_ms must be a list of at least {index + 1} delays in [0, {MAX_DELAY_MS:g}] ms")
    if hidden is None or hidden.dim() != 3 or hidden.shape[0] != 1 or hidden.shape[2] != hidden_size:
        raise FrameError(f"hidden states must have shape (1, T, {hidden_size})")
    return rid, start_pos, [float(d) for d in delays]


def _frame_bytes(frame: bytes):
    return frame, 200, {"Content-Type": "application/octet-stream"}
