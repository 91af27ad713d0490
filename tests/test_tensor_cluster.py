"""PARALLELISM=tensor through real local clusters: greedy equals Hugging Face generate, the syncs' delays,
concurrency, a worker failure, and a worker count that cannot split the model."""
import json
import threading
import time

import pytest
import requests

from .conftest import hf_greedy, start_cluster
from .sse import read_sse, skip_tokens

PROMPT = "The quick brown fox jumps over the lazy dog"
N_TOKENS = 16
LAYERS = 4  # the tiny preset: 4 query heads, 2 key/value heads, so 1, 2 and 4 workers split it


def generate(url, max_tokens=N_TOKENS, **body):
    r = requests.post(url + "/api/generate", json={"prompt": PROMPT, "max_tokens": max_tokens, "stream": False,
                                                   **body}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def reference(tiny_model):
    from transformers import AutoTokenizer
    ids = AutoTokenizer.from_pretrained(str(tiny_model))(PROMPT).input_ids
    return {dtype: hf_greedy(tiny_model, ids, N_TOKENS, dtype) for dtype in ("float32", "bfloat16")}


@pytest.mark.parametrize("workers,dtype,topology", [
    (1, "float32", "star"), (2, "float32", "star"), (4, "float32", "star"),
    (1, "bfloat16", "star"), (2, "bfloat16", "star"), (4, "bfloat16", "star"),
    (2, "float32", "mesh"), (4, "float32", "mesh"), (2, "bfloat16", "mesh"), (4, "bfloat16", "mesh")])
def test_greedy_equals_hf_generate(tiny_model, logs_dir, reference, workers, dtype, topology):
    with start_cluster(tiny_model, logs_dir, workers=workers, dtype=dtype, parallelism="tensor",
                       extra_env={"SYNC_TOPOLOGY": topology}) as cluster:
        out = generate(cluster.url)
        assert out["token_ids"] == reference[dtype]
        m = out["metrics"]
        # 2 per layer per step; one worker holds every head and has nobody to sum with
        assert m["parallelism"] == "tensor" and m["syncs"] == (0 if workers == 1 else N_TOKENS * 2 * LAYERS)
        if workers == 1:
            assert m["sync"]["bytes"] == 0 and m["sync"]["injected_ms"] == 0
        assert [s["name"] for s in m["stages"]] == [f"worker-{i + 1}" for i in range(workers)]
        info = requests.get(cluster.url + "/api/cluster").json()
        assert info["parallelism"] == "tensor" and info["sync_topology"] == topology
        if workers > 1:  # per sync, every pair traded its partials (mesh: a call and its answer), or every
            # worker's partial went to the root and the sum came back (star); each frame >= 64 float32 values
            frames = N_TOKENS * 2 * LAYERS * (workers * (workers - 1) if topology == "mesh" else 2 * workers)
            assert m["sync"]["bytes"] > frames * 64 * 4
        shares = [w["share"] for w in info["workers"]]
        # every head and every MLP column once; 4 workers share 2 KV heads, each held by two of them
        assert [s["q_heads"] for s in shares] == [[i * 4 // workers, (i + 1) * 4 // workers] for i in range(workers)]
        assert shares[0]["ffn"][0] == 0 and shares[-1]["ffn"][1] == 176
        assert all(a["ffn"][1] == b["ffn"][0] for a, b in zip(shares, shares[1:]))
        if workers == 4:
            assert [s["kv_heads"] for s in shares] == [[0, 1], [0, 1], [1, 2], [1, 2]]
        assert all(w["layers"] == [0, LAYERS] for w in info["workers"])


def test_a_worker_count_that_cannot_split_the_heads_is_refused_with_the_valid_ones(tiny_model, logs_dir):
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"3 workers; valid worker counts for this model: 1, 2, 4"):
        start_cluster(tiny_model, logs_dir, workers=3, parallelism="tensor").stop()
    assert time.monotonic() - started < 120


def eight_concurrent_requests_take_turns(cluster, reference) -> None:
    """8 replies of different lengths at once: each equals HF's, none waits forever on another's syncs."""
    results, errors = {}, []

    def one(i):
        try:
            results[i] = generate(cluster.url, max_tokens=6 + i)
        except Exception as exc:  # reported below with the others
            errors.append(repr(exc))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors and len(results) == 8
    for i, out in results.items():
        assert out["token_ids"] == reference["float32"][:6 + i]


def worker_2_fails_and_comes_back(cluster, reference) -> float:
    """Stops worker-2: the next reply fails naming it; restarted, the cluster answers as HF again. Returns
    how long the failed reply took to come back, in s."""
    cluster.stop_process("worker-2")
    started = time.monotonic()
    r = requests.post(cluster.url + "/api/generate", json={"prompt": PROMPT, "max_tokens": 4, "stream": False},
                      timeout=30)
    took = time.monotonic() - started
    assert r.status_code in (502, 503), r.text
    assert "worker-2" in r.json()["error"]["message"]
    cluster.start_worker(1)
    deadline = time.monotonic() + 120
    while requests.get(cluster.url + "/healthz").status_code != 200:
        assert time.monotonic() < deadline, requests.get(cluster.url + "/healthz").text
        time.sleep(0.3)
    assert generate(cluster.url)["token_ids"] == reference["float32"]
    return took


class TestTwoWorkersWithAFixedLatency:
    L_MS = 2.0

    @pytest.fixture(scope="class")
    def cluster(self, tiny_model, logs_dir):
        c = start_cluster(tiny_model, logs_dir, workers=2, latency_ms=f"{self.L_MS:g},{self.L_MS:g}",
                          parallelism="tensor", extra_env={"RECOVERY_WAIT_S": "0"})
        yield c
        c.stop()

    def test_every_sync_crosses_two_links_and_the_metrics_say_so(self, cluster, reference):
        out = generate(cluster.url)
        assert out["token_ids"] == reference["float32"]
        m = out["metrics"]
        tokens = len(out["token_ids"])
        # per step: broadcast L + 8 syncs x (up L + down L) + worker 1's output home L
        assert m["injected_latency_ms"] == pytest.approx(tokens * (2 + 4 * LAYERS) * self.L_MS)
        assert m["injected_latency_ms"] / tokens >= 4 * LAYERS * self.L_MS
        assert m["sync"]["injected_ms"] == pytest.approx(tokens * 4 * LAYERS * self.L_MS)
        assert m["ttlt_ms"] > m["injected_latency_ms"]  # the delays were waited, not only counted
        # every partial and sum of 64 float32 values crossed a link, both ways, for both workers
        assert m["sync"]["bytes"] >= tokens * 2 * LAYERS * 2 * 2 * 64 * 4
        assert m["sync"]["transport_ms"] > 0  # its delays are not inside (both ends stamp around them)
        assert m["sync"]["per_sync_ms"]["p50"] >= 2 * self.L_MS
        for s in m["stages"]:
            assert s["compute_ms"] > 0 and s["sync_ms"] >= tokens * 2 * LAYERS * 2 * self.L_MS
            assert s["link_in"]["injected_ms"] == pytest.approx(tokens * self.L_MS)
        assert m["compute_ms"] < sum(s["compute_ms"] for s in m["stages"])  # side by side: the slowest counts
        assert m["root_other_ms"] >= 0
        prom = requests.get(cluster.url + "/metrics").text
        assert "dllm_syncs_total " in prom and "dllm_sync_bytes_total " in prom

    def test_eight_concurrent_requests_take_turns_without_deadlock(self, cluster, reference):
        eight_concurrent_requests_take_turns(cluster, reference)
        for i in range(2):
            assert cluster.worker_info(i)["caches"] == []  # every request released its caches

    def test_a_worker_failure_is_named_and_the_cluster_recovers_after_a_restart(self, cluster, reference):
        worker_2_fails_and_comes_back(cluster, reference)


class TestMeshWithAFixedLatency:
    """SYNC_TOPOLOGY=mesh: the workers trade their partials directly, one crossing per sync."""
    L_MS = 2.0

    @pytest.fixture(scope="class")
    def cluster(self, tiny_model, logs_dir):
        c = start_cluster(tiny_model, logs_dir, workers=2, latency_ms=f"{self.L_MS:g},{self.L_MS:g}",
                          parallelism="tensor", extra_env={"RECOVERY_WAIT_S": "0", "SYNC_TOPOLOGY": "mesh"})
        yield c
        c.stop()

    def test_every_sync_crosses_one_link_and_the_metrics_say_so(self, cluster, reference):
        out = generate(cluster.url)
        assert out["token_ids"] == reference["float32"]
        m = out["metrics"]
        tokens = len(out["token_ids"])
        # per step: broadcast L + 8 syncs x one crossing L + worker 1's output home L
        assert m["injected_latency_ms"] == pytest.approx(tokens * (2 + 2 * LAYERS) * self.L_MS, rel=0.05)
        assert m["sync"]["injected_ms"] == pytest.approx(tokens * 2 * LAYERS * self.L_MS, rel=0.05)
        assert m["sync"]["drawn_ms"] == pytest.approx(tokens * 2 * LAYERS * self.L_MS)
        assert m["ttlt_ms"] > m["injected_latency_ms"]
        # worker 1 called worker 2 with its 64 float32 values and was answered with worker 2's, every sync
        assert m["sync"]["bytes"] >= tokens * 2 * LAYERS * 2 * 64 * 4
        assert m["sync"]["per_sync_ms"]["p50"] >= self.L_MS
        for s in m["stages"]:
            assert s["sync_ms"] >= tokens * 2 * LAYERS * self.L_MS

    def test_eight_concurrent_requests_take_turns_without_deadlock(self, cluster, reference):
        eight_concurrent_requests_take_turns(cluster, reference)
        for i in range(2):
            assert cluster.worker_info(i)["caches"] == []

    def test_a_worker_failure_is_named_at_once_and_the_cluster_recovers(self, cluster, reference):
        assert worker_2_fails_and_comes_back(cluster, reference) < 10


def test_a_worker_restarted_mid_reply_is_replayed_and_the_reply_completes(tiny_model, logs_dir):
    body = {"prompt": PROMPT, "max_tokens": 60, "ignore_eos": True}
    with start_cluster(tiny_model, logs_dir, workers=2, latency_ms="1,2", parallelism="tensor",
                       extra_env={"RECOVERY_WAIT_S": "60"}) as cluster:
        clean = requests.post(cluster.url + "/api/generate", json={**body, "stream": False}, timeout=120).json()
        r = requests.post(cluster.url + "/api/generate", json=body, stream=True, timeout=120)
        lines = r.iter_lines(decode_unicode=True)
        skip_tokens(lines, 10)
        cluster.stop_process("worker-2")  # mid-reply: every sync loses a partial
        cluster.start_worker(1)
        events = read_sse(lines)
        assert events[-1][0] == "done", events[-1]
        done = events[-1][1]
        assert done["metrics"]["recoveries"] == 1 and done["metrics"]["completion_tokens"] == 60
        assert any(e == "worker_down" and "worker-2" in json.dumps(d) for e, d in events)
        assert done["token_ids"] == clean["token_ids"]  # the replay recomputes the same positions
