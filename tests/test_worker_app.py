"""The worker service through Flask's test client, on a real slice of the tiny model."""
import time

import pytest
import torch

from common.config import WorkerSettings
from common.frame import decode_frame, encode_frame
from worker.app import create_app


@pytest.fixture()
def worker(tiny_model):
    settings = WorkerSettings(threads=1, model_roots=(str(tiny_model.parent),), max_frame_bytes=1 << 20,
                              max_caches=2)
    app = create_app(settings)
    client = app.test_client()
    r = client.post("/v1/load", json={"name": "worker-1", "index": 0, "start": 1, "end": 3, "dtype": "float32",
                                      "model_path": str(tiny_model), "next_address": "127.0.0.1:9"})
    assert r.status_code == 202
    for _ in range(200):
        if client.get("/healthz").status_code == 200:
            break
        time.sleep(0.05)
    assert client.get("/healthz").json["status"] == "ready"
    return client


def _hidden(tiny_model, tokens):
    import json
    hidden = json.loads((tiny_model / "config.json").read_text())["hidden_size"]
    return torch.randn(1, tokens, hidden), hidden


def test_loads_only_its_layers(worker, tiny_model):
    names = worker.get("/v1/info").json["loaded_tensors"]
    assert names and all(n.startswith(("model.layers.1.", "model.layers.2.")) for n in names)
    assert any(n.startswith("model.layers.2.") for n in names)
    assert not any("embed_tokens" in n or "lm_head" in n or n == "model.norm.weight" for n in names)
    assert worker.get("/v1/info").json["gemv_linears"] == 2 * 7  # float32: every projection of both layers


def test_forward_prefill_then_decode_and_release(worker, tiny_model):
    x, hidden = _hidden(tiny_model, 5)
    r = worker.post("/v1/forward", data=encode_frame({"request_id": "r1", "start_pos": 0, "delays_ms": [0, 0]}, x))
    assert r.status_code == 200
    header, out = decode_frame(r.data, 1 << 20)
    assert out.shape == (1, 5, hidden) and header["stages"][0]["name"] == "worker-1"
    assert header["stages"][0]["layers"] == [1, 3] and header["stages"][0]["compute_ms"] > 0
    step = encode_frame({"request_id": "r1", "start_pos": 5, "delays_ms": [0, 0]}, x[:, :1])
    assert worker.post("/v1/forward", data=step).status_code == 200
    assert worker.get("/v1/info").json["caches"] == ["r1"]
    assert worker.post("/v1/release", json={"request_id": "r1"}).json == {"released": True}
    assert worker.get("/v1/info").json["caches"] == []


def test_injected_delay_is_slept_and_recorded(worker, tiny_model):
    x, _ = _hidden(tiny_model, 1)
    started = time.perf_counter()
    r = worker.post("/v1/forward", data=encode_frame({"request_id": "d", "start_pos": 0, "delays_ms": [80, 0]}, x))
    assert time.perf_counter() - started >= 0.08
    assert decode_frame(r.data, 1 << 20)[0]["stages"][0]["delay_ms"] == 80


@pytest.mark.parametrize("body,message", [
    (b"garbage", "bad frame"),
    (encode_frame({"request_id": "x", "start_pos": 0, "delays_ms": [0]}, torch.zeros(1, 2, 3)), "shape"),
    (encode_frame({"request_id": "../x", "start_pos": 0, "delays_ms": [0]}, torch.zeros(1, 2, 3)), "request_id"),
    (encode_frame({"request_id": "x", "start_pos": -1, "delays_ms": [0]}, torch.zeros(1, 2, 3)), "start_pos"),
    (encode_frame({"request_id": "x", "start_pos": 0, "delays_ms": [1e12]}, torch.zeros(1, 2, 3)), "delays_ms"),
    (encode_frame({"request_id": "x", "start_pos": 0, "delays_ms": []}, torch.zeros(1, 2, 3)), "delays_ms"),
    (b"x" * (2 << 20), "exceeds the limit"),
])
def test_bad_frames_get_400_and_the_worker_keeps_serving(worker, tiny_model, body, message):
    r = worker.post("/v1/forward", data=body)
    assert r.status_code == 400 and message in r.json["error"]["message"]
    x, _ = _hidden(tiny_model, 2)
    ok = worker.post("/v1/forward", data=encode_frame({"request_id": "ok", "start_pos": 0, "delays_ms": [0]}, x))
    assert ok.status_code == 200


def test_step_without_prefill_is_refused(worker, tiny_model):
    x, _ = _hidden(tiny_model, 1)
    r = worker.post("/v1/forward", data=encode_frame({"request_id": "nope", "start_pos": 4, "delays_ms": [0]}, x))
    assert r.status_code == 409 and "no KV cache" in r.json["error"]["message"]


def test_cache_slots_are_bounded(worker, tiny_model):
    x, _ = _hidden(tiny_model, 1)
    for rid in ("a", "b"):
        assert worker.post("/v1/forward", data=encode_frame({"request_id": rid, "start_pos": 0, "delays_ms": [0]}, x)).status_code == 200
    r = worker.post("/v1/forward", data=encode_frame({"request_id": "c", "start_pos": 0, "delays_ms": [0]}, x))
    assert r.status_code == 429


def test_load_outside_model_roots_is_refused(worker):
    r = worker.post("/v1/load", json={"name": "w", "index": 0, "start": 0, "end": 1, "dtype": "float32",
                                      "model_path": "/etc", "next_address": "127.0.0.1:9"})
    assert r.status_code == 400 and "outside the allowed folders" in r.json["error"]["message"]
    r = worker.post("/v1/load", json={"name": "w"})
    assert r.status_code == 400


def _load(client, tiny_model, dtype):
    r = client.post("/v1/load", json={"name": "worker-1", "index": 0, "start": 0, "end": 2, "dtype": dtype,
                                      "model_path": str(tiny_model), "next_address": "127.0.0.1:9"})
    assert r.status_code == 202
    for _ in range(400):
        if client.get("/healthz").json["status"] != "loading":
            break
        time.sleep(0.05)
    assert client.get("/healthz").json["status"] == "ready"


def test_int4_computes_with_one_torch_thread_beside_onnxruntime_pools_of_threads(tiny_model):
    from common.int4_ort import MatMulNBitsLinear
    before = torch.get_num_threads()
    try:
        settings = WorkerSettings(threads=2, model_roots=(str(tiny_model.parent),), max_frame_bytes=1 << 20)
        app = create_app(settings)
        client, state = app.test_client(), app.extensions["worker_state"]
        x, _ = _hidden(tiny_model, 1)
        step = encode_frame({"request_id": "t", "start_pos": 0, "delays_ms": [0, 0]}, x)
        _load(client, tiny_model, "int4")
        pools = {m.session.get_session_options().intra_op_num_threads
                 for m in state.slice.layers.modules() if isinstance(m, MatMulNBitsLinear)}
        assert pools == {2}  # the products take THREADS
        torch.set_num_threads(2)
        assert client.post("/v1/forward", data=step).status_code == 200
        assert torch.get_num_threads() == 1  # the compute ran here, with one torch thread
        _load(client, tiny_model, "float32")  # a reload to another dtype computes with THREADS again
        assert client.post("/v1/forward", data=step).status_code == 200
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
