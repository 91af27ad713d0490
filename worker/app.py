"""A worker service: holds one slice of decoder layers and passes hidden states on around the ring.

Control is HTTP (load, health, release, info); hidden states arrive on the data port (transport).
A step: receive (StepHeader + hidden) -> sleep the incoming link's delay -> compute -> send the output
with this worker's StageRecord to the next hop (the next worker, or the root for the last one) ->
answer the sender with an Ack, or with a StepError naming who failed.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable

import psutil
import torch
from flask import Flask, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from common.auth import HEADER as SECRET_HEADER
from common.config import WorkerSettings
from common.device import read_cgroup_memory, read_cgroup_quota, read_host_memory
from common.dtypes import torch_threads
from common.errors import error_response
from common.frame import FrameError, decode_frame, encode_frame
from common.latency import sleep_exactly
from common.placement import memory_report
from common.profiles import HOST, DeviceProfile, ProfileError
from common.profiles import device as catalog_device
from common.protocol import (REQUEST_ID, LoadAssignment, ProtocolError, StageRecord, StepError, StepHeader,
                             WorkerHealth, reply_from_dict)
from common.selfstats import container_stats
from common.torch_threads import use_torch_threads
from common.transport import TcpTransport, Transport, data_port

from .caches import CacheFull, KVCacheStore
from .mesh_links import MeshLinks
from .modelled import TENSOR_SLICES, ModelledSlice, ModelledTensorSlice, SliceCost, modelled_slice
from .played_device import StretchClock, play
from common.quantize import quantized_engine
from .shard import DecoderSlice
from .tensor_slice import TensorSlice
from .tensor_step import tensor_step

log = logging.getLogger("worker")


def check_model_path(assignment: LoadAssignment, roots: tuple[str, ...]) -> None:
    path = str(Path(assignment.model_path).resolve())
    if not any(path == r or path.startswith(r + "/") for r in roots):
        raise ValueError(f"model path {path} is outside the allowed folders {list(roots)}")


class WorkerState:
    def __init__(self, settings: WorkerSettings, transport: Transport,
                 profiles: Callable[[str], DeviceProfile] = catalog_device):
        self.settings, self.transport = settings, transport
        self.profiles = profiles  # device name -> profile (profiles/devices.yaml; a test may pass its own)
        self.clock = StretchClock(None, settings.threads)  # times each compute; stretches it to the played device
        self.caches = KVCacheStore(settings.max_caches, settings.cache_ttl_s)
        self.assignment: LoadAssignment | None = None
        self.slice: DecoderSlice | TensorSlice | ModelledSlice | ModelledTensorSlice | None = None
        self.status, self.error = "empty", None
        self.compute_lock = threading.Lock()  # one device computes one thing at a time
        self.torch_threads = settings.threads  # torch's threads while computing (common/dtypes.torch_threads)
        self.mesh = MeshLinks(settings.max_frame_bytes, settings.secret, settings.sync_spin_ms / 1e3)  # tensor mode's mesh
        self.load_lock = threading.Lock()

    def load(self, assignment: LoadAssignment) -> None:
        with self.load_lock:
            self.status, self.error, self.assignment = "loading", None, assignment
            try:
                self.slice = None
                self.caches.clear()
                torch.set_num_threads(self.settings.threads)  # what the load's kernels take (int4's onnxruntime pools)
                self.mesh.reset()  # the peers may be others now
                started = time.perf_counter()
                if assignment.compute == "modelled":  # no weights: each step takes its device's modelled time
                    self.slice = modelled_slice(assignment)
                    log.info("%s models %s on %s (no weights)", assignment.name, assignment.share.label()
                             if assignment.share else f"layers [{assignment.shard.start}, {assignment.shard.end})",
                             assignment.device)
                elif assignment.share is not None:  # tensor mode: a share of every layer
                    self.slice = TensorSlice(assignment.model_path, assignment.share, assignment.dtype,
                                             gemv=self.settings.decode_gemv)
                    log.info("%s loaded %s of every layer in %.1f s", assignment.name, assignment.share.label(),
                             time.perf_counter() - started)
                else:
                    self.slice = DecoderSlice(assignment.model_path, assignment.shard, assignment.dtype,
                                              gemv=self.settings.decode_gemv)
                    log.info("%s loaded layers [%d, %d) in %.1f s", assignment.name, assignment.shard.start,
                             assignment.shard.end, time.perf_counter() - started)
                self.clock = device_clock(self, assignment)  # after the weights: see played_device.measured_gbps
                self.torch_threads = torch_threads(assignment.dtype, self.settings.threads)
                self.status = "ready"
            except Exception as exc:  # any load failure is reported to the root through /healthz
                log.exception("load failed")
                self.status, self.error = "error", f"{type(exc).__name__}: {exc}"

    def health(self) -> WorkerHealth:
        return WorkerHealth(status=self.status, error=self.error, threads=self.settings.threads, pid=os.getpid(),
                            assignment=self.assignment, device=device_report(self.settings, self),
                            stats=_own_stats())


def _own_stats() -> dict | None:
    """This container's CPU and memory as `docker stats` computes them, for roots on other hosts."""
    try:
        return container_stats()
    except Exception:  # stats are a convenience: never fail a health check over them
        log.debug("own stats unavailable", exc_info=True)
        return None


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
            "held_weight_bytes": held, "plays": state.clock.describe(), **memory}


def create_app(settings: WorkerSettings | None = None, transport: Transport | None = None,
               profiles: Callable[[str], DeviceProfile] = catalog_device) -> Flask:
    """profiles: the device catalog's lookup by name (tests pass a profile of their own)."""
    settings = settings or WorkerSettings.from_env()
    transport = transport or TcpTransport(settings.host, settings.max_frame_bytes, settings.secret)
    torch.set_num_threads(settings.threads)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_frame_bytes
    state = WorkerState(settings, transport, profiles)
    app.extensions["worker_state"] = state

    def authorised() -> bool:
        return settings.secret.accepts(request.headers.get(SECRET_HEADER))

    @app.before_request
    def only_the_cluster():
        # /healthz answers everyone, but says no more than "ready or not" to a peer without the secret.
        if request.path != "/healthz" and not authorised():
            return error_response(401, f"this worker serves only its cluster: send the cluster secret in {SECRET_HEADER}")
        return None

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_):
        return error_response(400, f"frame exceeds the limit of {settings.max_frame_bytes} bytes")

    @app.get("/healthz")
    def healthz():
        code = 200 if state.status == "ready" else 503
        if not authorised():
            return jsonify({"status": state.status}), code
        return jsonify(state.health().to_dict() | {"data_port": data_port(settings.port)}), code

    @app.post("/v1/load")
    def load():
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return error_response(400, "load needs a JSON object")
        try:
            assignment = LoadAssignment.from_dict(body)
            check_model_path(assignment, settings.model_roots)
        except ValueError as exc:
            return error_response(400, str(exc))
        if state.assignment == assignment and state.status in ("ready", "loading"):
            return jsonify({"status": state.status}), 200
        if state.status == "ready" and state.assignment is not None and state.assignment.holds_same(assignment):
            state.assignment = assignment  # only the next hop moved (a rescheduled task): no reload
            return jsonify({"status": state.status}), 200
        try:
            if assignment.device != HOST:
                state.profiles(assignment.device)  # an unknown name at once; its speed once the slice is in
        except ProfileError as exc:
            return error_response(400, str(exc))
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
        sl, a = state.slice, state.assignment
        tensor = isinstance(sl, TENSOR_SLICES)
        return jsonify({
            "status": state.status, "threads": settings.threads, "pid": os.getpid(),
            "layers": [a.shard.start, a.shard.end] if sl and a else None,
            "share": sl.share.to_dict() if tensor else None,  # tensor mode: heads and MLP width of every layer
            "loaded_tensors": (sorted(sl.loaded) if tensor else sl.loaded_tensor_names) if sl else [],
            "weight_bytes": sl.weight_bytes if sl else 0,
            "dtype": sl.dtype_name if sl else None,
            "quantized_engine": quantized_engine() if sl and sl.dtype_name == "int8" else None,
            "gemv_linears": sl.gemv_linears if sl else 0,  # float32 projections decoding through gemv
            "caches": state.caches.ids(),
            "rss_bytes": psutil.Process().memory_info().rss,
            "device": device_report(settings, state),
            "plays": state.clock.describe(),  # the device it plays, the measured factor, its stretch so far
        })

    @app.post("/v1/forward")
    def forward():
        # The HTTP door to this worker's part of a step (curl, tests, tools): the output comes back
        # to the caller with this worker's record instead of going on around the ring.
        try:
            header, out = compute_step(state, request.get_data(cache=False), time.time_ns())
        except StepFailed as exc:
            return error_response(exc.error.status, exc.error.message,
                                  **{k: v for k, v in exc.error.to_dict()["error"].items() if k not in ("status", "message")})
        return encode_frame(header.to_dict(), out), 200, {"Content-Type": "application/octet-stream"}

    return app


def device_clock(state: WorkerState, assignment: LoadAssignment) -> StretchClock:
    """The clock of the device the assignment plays, this host measured now (ProfileError: an unknown
    name; DeviceRefused: faster than this host, so the load fails and the root's start-up with it).
    Only real compute is stretched: modelled compute takes the device's time from its profile."""
    played = None
    if assignment.compute == "real":
        played = play(assignment.device, assignment.dtype, state.settings.threads, state.profiles)
    if played is None:
        return StretchClock(None, state.settings.threads)
    cost = None
    if state.settings.play_clock == "profile":
        cost = SliceCost.of(assignment.model_path, assignment, state.profiles(assignment.device))
    log.info("%s plays %s on the %s clock: this host %.2f GB/s, the device %.2f GB/s (%s), factor %.2f",
             assignment.name, played.key, state.settings.play_clock, played.host_gbps, played.device_gbps,
             played.figure, played.factor)
    return StretchClock(played, state.settings.threads, cost)


class StepFailed(Exception):
    """A step that cannot be done; carries the StepError to answer with."""

    def __init__(self, error: StepError):
        super().__init__(error.message)
        self.error = error


def compute_step(state: WorkerState, data: bytes, recv_ns: int) -> tuple[StepHeader, torch.Tensor]:
    """One frame in, through this slice: (the header with this worker's record added, the output)."""
    settings = state.settings
    a, sl = state.assignment, state.slice
    if state.status != "ready" or sl is None or a is None:
        raise StepFailed(StepError(503, f"worker is {state.status}, not ready", worker=a.name if a else None))
    if isinstance(sl, TENSOR_SLICES):
        raise StepFailed(StepError(400, f"{a.name} holds a tensor-parallel share: it takes tensor steps from the "
                                        "root, not ring frames", worker=a.name))
    try:
        raw, hidden = decode_frame(data, settings.max_frame_bytes)
        header = StepHeader.from_dict(raw)
        _check_step(header, hidden, sl.hidden_size, a.index)
    except (FrameError, ProtocolError) as exc:
        raise StepFailed(StepError(400, f"bad frame: {exc}", worker=a.name)) from None
    delay_ms = header.delays_ms[a.index]
    if delay_ms > 0:
        sleep_exactly(delay_ms / 1e3)  # the incoming link's injected latency
    with state.compute_lock:
        use_torch_threads(state.torch_threads)
        started = time.perf_counter()
        timing = state.clock.start()
        try:
            cache = state.caches.get_or_create(header.request_id, header.start_pos)
            out = sl.forward(hidden, cache, header.start_pos)
        except CacheFull as exc:
            raise StepFailed(StepError(429, str(exc), worker=a.name)) from None
        except (KeyError, ValueError) as exc:
            raise StepFailed(StepError(409, str(exc).strip("'\""), worker=a.name)) from None
        # the played device is busy while it sleeps
        stretch_ms, shortfall_ms = state.clock.finish(timing, hidden.shape[1], header.start_pos)
        compute_ms = (time.perf_counter() - started) * 1e3
    record = StageRecord(name=a.name, layers=(a.shard.start, a.shard.end), recv_ns=recv_ns, sent_ns=time.time_ns(),
                         delay_ms=delay_ms, compute_ms=compute_ms, bytes_in=len(data), stretch_ms=stretch_ms,
                         shortfall_ms=shortfall_ms)
    return header.passed(record), out


def ring_step(state: WorkerState, data: bytes, recv_ns: int) -> bytes:
    """The data plane's step: compute, pass the output on to the next hop, answer the sender."""
    try:
        header, out = compute_step(state, data, recv_ns)
    except StepFailed as exc:
        return encode_frame(exc.error.to_dict(), None)
    a, settings = state.assignment, state.settings
    # The rest of the ring sleeps its links' delays before this call is answered.
    timeout = settings.hop_timeout_s + sum(header.delays_ms[a.index + 1:]) / 1e3
    # SYNC_DTYPE=q80: 8-bit blocks on to the next hop (its receiver casts them back to its dtype)
    frame = encode_frame(header.to_dict(), out, a.sync_dtype == "q80")
    try:
        reply = state.transport.peer(a.next_address).call(frame, timeout)
    except TimeoutError:
        return _error(504, f"{a.name}: the next hop ({a.next_address}) did not answer within {timeout:g} s", a)
    except (OSError, FrameError) as exc:
        return _error(502, f"{a.name}: cannot reach the next hop ({a.next_address}): {type(exc).__name__}", a)
    try:
        reply_from_dict(decode_frame(reply, settings.max_frame_bytes)[0])  # an Ack, or a failure further on
    except (FrameError, ProtocolError) as exc:
        return encode_frame(StepError(502, f"{a.name}: the next hop sent a bad answer: {exc}", worker=a.name).to_dict(), None)
    return reply  # checked, then passed back as it is: no second encoding on every hop of every step


def _error(status: int, message: str, a: LoadAssignment) -> bytes:
    return encode_frame(StepError(status, message, worker=a.name, failed_next=a.next_address).to_dict(), None)


def serve_data_plane(state: WorkerState, port: int):
    """The worker's data port: frames from the previous hop (pipeline) or the root's steps (tensor)."""
    def step(frame: bytearray) -> bytes:
        recv_ns = time.time_ns()
        a = state.assignment
        if a is not None and a.share is not None:
            return tensor_step(state, frame, recv_ns)
        return ring_step(state, frame, recv_ns)
    return state.transport.serve(port, step)


def _check_step(header: StepHeader, hidden, hidden_size: int, index: int) -> None:
    if len(header.delays_ms) <= index:
        raise FrameError(f"delays_ms must be a list of at least {index + 1} delays")
    if hidden is None or hidden.dim() != 3 or hidden.shape[0] != 1 or hidden.shape[2] != hidden_size:
        raise FrameError(f"hidden states must have shape (1, T, {hidden_size})")
