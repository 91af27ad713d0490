"""Workers that hang or restart mid-reply, and a soak: the real local cluster, real processes."""
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from .conftest import start_cluster
from .sse import read_sse, skip_tokens

PROMPT = "Resilience is a property of systems"


def wait_for(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def worker_status(cluster, i):
    return requests.get(cluster.url + "/api/cluster", timeout=5).json()["workers"][i]["status"]


def test_hung_worker_ends_the_reply_within_the_hop_timeout(tiny_model, logs_dir):
    env = {"HOP_TIMEOUT_S": "2", "RECOVERY_WAIT_S": "0"}
    with start_cluster(tiny_model, logs_dir, workers=3, extra_env=env) as cluster:
        pid = cluster.procs["worker-2"].pid
        os.killpg(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            r = requests.post(cluster.url + "/api/generate", json={"prompt": PROMPT, "max_tokens": 4, "stream": False},
                              timeout=30)
            elapsed = time.monotonic() - started
            assert r.status_code in (502, 503, 504) and "worker-2" in r.json()["error"]["message"], r.text
            assert elapsed < 2 + 3, elapsed  # the hop timeout plus start-up slack, never a hang
            wait_for(lambda: worker_status(cluster, 1) == "down", 10, "worker-2 shown down")
        finally:
            os.killpg(pid, signal.SIGCONT)
        wait_for(lambda: requests.get(cluster.url + "/healthz").status_code == 200, 30, "recovery")
        assert requests.post(cluster.url + "/api/generate", json={"prompt": PROMPT, "max_tokens": 3, "stream": False},
                             timeout=30).status_code == 200


def test_restarted_worker_mid_reply_is_replayed_and_the_reply_completes(tiny_model, logs_dir):
    body = {"prompt": PROMPT, "max_tokens": 120, "ignore_eos": True}
    with start_cluster(tiny_model, logs_dir, workers=2, latency_ms="10,20",
                       extra_env={"RECOVERY_WAIT_S": "60"}) as cluster:
        clean = requests.post(cluster.url + "/api/generate", json={**body, "stream": False}, timeout=120).json()
        r = requests.post(cluster.url + "/api/generate", json=body, stream=True, timeout=120)
        lines = r.iter_lines(decode_unicode=True)
        skip_tokens(lines, 10)
        cluster.stop_process("worker-2")  # mid-reply: the chain loses its second half
        cluster.start_worker(1)
        events = read_sse(lines)
        assert events[-1][0] == "done", events[-1]
        done = events[-1][1]
        assert done["metrics"]["recoveries"] == 1
        assert done["metrics"]["completion_tokens"] == 120
        # the replay recomputes the same positions: greedy output is unchanged
        assert done["token_ids"] == clean["token_ids"]


def test_soak_sequential_and_concurrent(tiny_model, logs_dir):
    env = {"MAX_CONCURRENT": "64", "MAX_CACHES": "64"}
    with start_cluster(tiny_model, logs_dir, workers=2, extra_env=env) as cluster:
        def one(i):
            r = requests.post(cluster.url + "/api/generate",
                              json={"prompt": f"request {i}", "max_tokens": 3, "stream": False}, timeout=120)
            return r.status_code if r.status_code == 200 else (r.status_code, r.text)  # a failure says why

        def rss():
            return {c["name"]: c["mem_bytes"] for c in requests.get(cluster.url + "/api/stats").json()["containers"]}

        for i in range(20):  # warm-up: allocator pools and caches reach their working size
            assert one(i) == 200
        time.sleep(2.5)
        before = rss()
        statuses = [one(i) for i in range(200)]
        assert statuses == [200] * 200
        with ThreadPoolExecutor(50) as pool:
            statuses = list(pool.map(one, range(50)))
        assert statuses == [200] * 50
        assert requests.get(cluster.url + "/metrics").text.count("dllm_active_requests 0.0") == 1
        for i in range(2):
            assert cluster.worker_info(i)["caches"] == []
        time.sleep(2.5)
        after = rss()
        growth = {name: (after[name] - before[name]) / 2**20 for name in before if name in after}
        print("soak RSS growth (MiB):", {k: round(v, 1) for k, v in growth.items()})
        assert set(growth) >= {"root", "worker-1", "worker-2"}
        assert all(g < 64 for g in growth.values()), growth
