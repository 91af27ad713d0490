"""The real path: root + worker processes (gunicorn, HTTP, real decoder layers) on the tiny model.

Greedy output through the cluster must equal Hugging Face generate, token for token.
"""
import time

import pytest
import requests

from .conftest import hf_greedy, start_cluster
from .sse import read_sse, skip_tokens

PROMPT = "The quick brown fox jumps over the lazy dog"
N_TOKENS = 24


def generate(url, **body):
    r = requests.post(url + "/api/generate", json={"prompt": PROMPT, "max_tokens": N_TOKENS, "stream": False,
                                                   **body}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def prompt_ids(model):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(model))(PROMPT).input_ids


@pytest.fixture(scope="module")
def reference(tiny_model):
    return {dtype: hf_greedy(tiny_model, prompt_ids(tiny_model), N_TOKENS, dtype) for dtype in ("float32", "bfloat16")}


@pytest.mark.parametrize("workers,split,dtype", [
    (1, "", "float32"), (2, "", "float32"), (3, "", "float32"), (4, "", "float32"),
    (2, "3,1", "float32"), (3, "1,2,1", "float32"), (2, "", "bfloat16"),
])
def test_greedy_equals_hf_generate(tiny_model, logs_dir, reference, workers, split, dtype):
    with start_cluster(tiny_model, logs_dir, workers=workers, layer_split=split, dtype=dtype) as cluster:
        out = generate(cluster.url)
        assert out["token_ids"] == reference[dtype][:len(out["token_ids"])]
        assert len(out["token_ids"]) == len(reference[dtype])
        layers = [w["layers"] for w in requests.get(cluster.url + "/api/cluster").json()["workers"]]
        assert layers[0][0] == 0 and layers[-1][1] == 4 and len(layers) == workers
        if split:
            assert [e - s for s, e in layers] == [int(c) for c in split.split(",")]


class TestThreeWorkersWithLatency:
    @pytest.fixture(scope="class")
    def cluster(self, tiny_model, logs_dir):
        c = start_cluster(tiny_model, logs_dir, workers=3, latency_ms="2,6")
        yield c
        c.stop()

    def test_streaming_reply_and_metrics(self, cluster, reference):
        r = requests.post(cluster.url + "/api/generate", json={"prompt": PROMPT, "max_tokens": N_TOKENS},
                          stream=True, timeout=60)
        events = read_sse(r.iter_lines(decode_unicode=True))
        assert events[0][0] == "start" and events[-1][0] == "done"
        tokens = [d["id"] for e, d in events if e == "token"]
        done = events[-1][1]
        assert tokens == done["token_ids"] == reference["float32"]
        m = done["metrics"]
        for key in ("ttft_ms", "ttlt_ms", "tpot_ms", "prefill_tok_s", "decode_tok_s", "injected_latency_ms"):
            assert isinstance(m[key], (int, float)) and m[key] > 0, key
        assert m["ttlt_ms"] > m["ttft_ms"]
        # 24 steps x 4 links x 2..6 ms each
        assert 24 * 4 * 2 <= m["injected_latency_ms"] <= 24 * 4 * 6
        assert m["ttlt_ms"] > m["injected_latency_ms"]
        assert [s["name"] for s in m["stages"]] == ["worker-1", "worker-2", "worker-3"]
        for s in m["stages"]:
            assert s["compute_ms"] > 0 and s["link_in"]["bytes"] > 0 and s["link_in"]["transport_ms"] >= 0
            assert 24 * 2 <= s["link_in"]["injected_ms"] <= 24 * 6
        assert m["link_out"]["injected_ms"] >= 24 * 2

    def test_which_tensors_each_process_holds(self, cluster):
        info = requests.get(cluster.url + "/api/cluster").json()
        assert sorted(info["root_tensors"]) == ["lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"]
        for i, w in enumerate(info["workers"]):
            held = cluster.worker_info(i)["loaded_tensors"]
            start, end = w["layers"]
            layers = {int(n.split(".")[2]) for n in held}
            assert layers == set(range(start, end))
            assert all(n.startswith("model.layers.") for n in held)
            assert len(held) == 9 * (end - start)  # 7 projections + 2 norms per layer

    def test_caches_freed_after_a_request_and_after_a_cancel(self, cluster):
        generate(cluster.url, max_tokens=3)
        assert all(cluster.worker_info(i)["caches"] == [] for i in range(3))
        r = requests.post(cluster.url + "/api/generate", json={"prompt": PROMPT, "max_tokens": 1000,
                                                              "ignore_eos": True}, stream=True, timeout=60)
        rid = r.headers["X-Request-Id"]
        lines = r.iter_lines(decode_unicode=True)
        skip_tokens(lines, 3)
        assert any(rid in cluster.worker_info(i)["caches"] for i in range(3))
        assert requests.post(f"{cluster.url}/api/requests/{rid}/cancel").status_code == 200
        rest = "\n".join(lines)
        assert '"finish_reason": "cancelled"' in rest
        assert all(cluster.worker_info(i)["caches"] == [] for i in range(3))

    def test_client_disconnect_frees_caches(self, cluster):
        r = requests.post(cluster.url + "/api/generate", json={"prompt": PROMPT, "max_tokens": 1000,
                                                              "ignore_eos": True}, stream=True, timeout=60)
        skip_tokens(r.iter_lines(decode_unicode=True), 1)
        r.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if all(cluster.worker_info(i)["caches"] == [] for i in range(3)):
                break
            time.sleep(0.1)
        assert all(cluster.worker_info(i)["caches"] == [] for i in range(3))

    @pytest.mark.parametrize("body,message", [
        ({}, "prompt is required"), ({"prompt": ""}, "must not be empty"),
        ({"prompt": "x", "max_tokens": 0}, "between 1 and 1024"),
        ({"prompt": "x", "max_tokens": 5000}, "between 1 and 1024"),
        ({"prompt": "x", "temperature": "warm"}, "temperature"),
        ({"prompt": "x", "top_p": 2}, "top_p"), ({"prompt": "x", "top_k": -2}, "top_k"),
        ({"prompt": "x", "seed": "s"}, "seed"), ({"prompt": "x", "stop": 7}, "stop"),
        ({"prompt": "word " * 3000}, "context holds"),
    ])
    def test_bad_input_gets_4xx_and_the_cluster_keeps_serving(self, cluster, body, message):
        r = requests.post(cluster.url + "/api/generate", json=body, timeout=30)
        assert 400 <= r.status_code < 500 and message in r.json()["error"]["message"]
        assert generate(cluster.url, max_tokens=2)["finish_reason"] in ("length", "stop")

    def test_not_json_and_not_utf8(self, cluster):
        for data in (b"not json", b"\xff\xfe{}"):
            r = requests.post(cluster.url + "/api/generate", data=data, headers={"Content-Type": "application/json"})
            assert r.status_code == 400 and "error" in r.json()

    def test_sampling_with_seed_repeats(self, cluster):
        a = generate(cluster.url, temperature=0.9, top_k=50, top_p=0.95, seed=11)["token_ids"]
        b = generate(cluster.url, temperature=0.9, top_k=50, top_p=0.95, seed=11)["token_ids"]
        assert a == b

    def test_chat_template_wraps_the_prompt(self, cluster):
        raw = generate(cluster.url, max_tokens=1)["metrics"]["prompt_tokens"]
        chat = generate(cluster.url, chat=True, max_tokens=1)["metrics"]["prompt_tokens"]
        assert chat > raw

    def test_stats_report_local_processes(self, cluster):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            stats = requests.get(cluster.url + "/api/stats").json()
            names = {c["name"] for c in stats["containers"]}
            if {"root", "worker-1", "worker-2", "worker-3"} <= names:
                break
            time.sleep(0.5)
        assert stats["source"] == "local"
        assert {"root", "worker-1", "worker-2", "worker-3"} <= names
        assert all(c["mem_bytes"] > 10_000_000 for c in stats["containers"])


class TestWorkerFailure:
    def test_dead_worker_gives_a_clear_error_then_recovers(self, tiny_model, logs_dir):
        with start_cluster(tiny_model, logs_dir, workers=2) as cluster:
            assert generate(cluster.url, max_tokens=2)
            cluster.stop_process("worker-2")
            started = time.monotonic()
            r = requests.post(cluster.url + "/api/generate", json={"prompt": PROMPT, "max_tokens": 5}, timeout=30)
            assert time.monotonic() - started < 10
            text = r.text
            assert r.status_code in (502, 503) or "event: error" in text
            assert "worker-2" in text
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                workers = requests.get(cluster.url + "/api/cluster").json()["workers"]
                if workers[1]["status"] == "down":
                    break
                time.sleep(0.3)
            assert workers[1]["status"] == "down"
            cluster.start_worker(1)
            deadline = time.monotonic() + 60
            while requests.get(cluster.url + "/healthz").status_code != 200:
                assert time.monotonic() < deadline, "the restarted worker was never given its slice again"
                time.sleep(0.3)
            assert generate(cluster.url, max_tokens=3)["finish_reason"] in ("length", "stop")
