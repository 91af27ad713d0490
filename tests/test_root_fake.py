"""The root's orchestration against a fake chain: streaming, metrics, limits, failures, cancellation."""
import threading
import time

import pytest

from backend.app import create_app
from common.latency import LinkModel

from .fakes import FakeChain, fake_runtime
from .sse import parse_sse as sse_events


def make_client(tiny_model, chain, **settings):
    rt = fake_runtime(tiny_model, chain, **settings)
    return create_app(rt.settings, runtime=rt).test_client(), rt


def test_stream_events_in_order_with_metrics(tiny_model):
    chain = FakeChain(3)
    client, rt = make_client(tiny_model, chain, link=LinkModel(1, 2))
    r = client.post("/api/generate", json={"prompt": "hello world", "max_tokens": 5})
    assert r.status_code == 200 and r.mimetype == "text/event-stream"
    events = sse_events(r.get_data(as_text=True))
    kinds = [e for e, _ in events]
    assert kinds == ["start"] + ["token"] * 5 + ["done"]
    assert [d["index"] for e, d in events if e == "token"] == list(range(5))
    done = events[-1][1]
    assert done["finish_reason"] == "length" and len(done["token_ids"]) == 5
    m = done["metrics"]
    assert m["completion_tokens"] == 5 and m["ttft_ms"] > 0 and m["ttlt_ms"] >= m["ttft_ms"]
    assert len(m["stages"]) == 3 and m["stages"][0]["compute_ms"] == pytest.approx(5.0)
    # 5 steps x 4 links, each 1..2 ms, all recorded and summed
    assert 20 <= m["injected_latency_ms"] <= 40
    assert m["injected_latency_ms"] == pytest.approx(sum(s[3][i] for s in chain.steps for i in range(4)))
    # prefill sends the prompt, decode steps one position each, positions advance
    prompt_len = m["prompt_tokens"]
    assert [(s[1], s[2]) for s in chain.steps] == [(0, prompt_len)] + [(prompt_len + i, 1) for i in range(4)]
    assert chain.released == [done["request_id"]]
    assert rt.active == {}


def test_non_stream_and_same_seed_same_delays(tiny_model):
    chain = FakeChain(2)
    client, _ = make_client(tiny_model, chain, link=LinkModel(5, 50), latency_seed=7)
    a = client.post("/api/generate", json={"prompt": "abc", "max_tokens": 3, "stream": False}).json
    assert a["finish_reason"] == "length" and len(a["token_ids"]) == 3
    chain2 = FakeChain(2)
    client2, _ = make_client(tiny_model, chain2, link=LinkModel(5, 50), latency_seed=7)
    b = client2.post("/api/generate", json={"prompt": "abc", "max_tokens": 3, "stream": False}).json
    assert [s[3] for s in chain.steps] == [s[3] for s in chain2.steps]
    assert a["metrics"]["injected_latency_ms"] == b["metrics"]["injected_latency_ms"]


def test_worker_failure_becomes_an_error_event_and_frees_everything(tiny_model):
    chain = FakeChain(2, fail_at_step=2)
    client, rt = make_client(tiny_model, chain, recovery_wait_s=0)
    events = sse_events(client.post("/api/generate", json={"prompt": "x", "max_tokens": 10}).get_data(as_text=True))
    assert [e for e, _ in events] == ["start", "token", "token", "error"]
    assert "worker-2" in events[-1][1]["message"]
    assert chain.released and rt.active == {}
    r = client.post("/api/generate", json={"prompt": "x", "max_tokens": 10, "stream": False})
    assert r.status_code == 502 and "worker-2" in r.json["error"]["message"]


def test_mid_reply_failure_is_replayed_and_the_reply_completes(tiny_model):
    clean = FakeChain(2)
    client, _ = make_client(tiny_model, clean)
    expected = client.post("/api/generate", json={"prompt": "abc", "max_tokens": 6, "stream": False}).json
    chain = FakeChain(2, fail_at_step=3, fail_times=1)
    client, rt = make_client(tiny_model, chain, recovery_wait_s=0.5)
    out = client.post("/api/generate", json={"prompt": "abc", "max_tokens": 6, "stream": False}).json
    assert out["token_ids"] == expected["token_ids"] and out["metrics"]["recoveries"] == 1
    prompt_len = out["metrics"]["prompt_tokens"]
    # step 3 failed; the replay sends prompt + the 3 tokens so far from position 0
    replay = [s for s in chain.steps if s[1] == 0][1]
    assert replay[2] == prompt_len + 3
    assert rt.active == {}


def test_too_many_requests_get_429_with_retry_after(tiny_model):
    chain = FakeChain(1, step_sleep_s=0.05)
    client, rt = make_client(tiny_model, chain, max_concurrent=1)
    results = {}

    def long_one():
        results["first"] = client.post("/api/generate", json={"prompt": "x", "max_tokens": 20, "stream": False})

    t = threading.Thread(target=long_one)
    t.start()
    for _ in range(100):
        if rt.active:
            break
        time.sleep(0.01)
    r = client.post("/api/generate", json={"prompt": "y", "max_tokens": 2})
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    t.join()
    assert results["first"].status_code == 200
    assert client.post("/api/generate", json={"prompt": "y", "max_tokens": 2, "stream": False}).status_code == 200


def test_cancel_stops_a_running_request(tiny_model):
    chain = FakeChain(2, step_sleep_s=0.02)
    client, rt = make_client(tiny_model, chain)
    out = {}

    def run():
        out["r"] = client.post("/api/generate", json={"prompt": "x", "max_tokens": 500, "stream": False})

    t = threading.Thread(target=run)
    t.start()
    for _ in range(200):
        if rt.active:
            break
        time.sleep(0.01)
    rid = next(iter(rt.active))
    assert client.post(f"/api/requests/{rid}/cancel").json == {"cancelled": True}
    t.join(5)
    body = out["r"].json
    assert body["finish_reason"] == "cancelled" and len(body["token_ids"]) < 500
    assert chain.released == [rid] and rt.active == {}
    assert client.post(f"/api/requests/{rid}/cancel").status_code == 404


def test_client_that_disconnects_releases_its_request(tiny_model):
    chain = FakeChain(2)
    client, rt = make_client(tiny_model, chain)
    r = client.post("/api/generate", json={"prompt": "x", "max_tokens": 100}, buffered=False)
    events = iter(r.response)
    next(events), next(events)  # the start event and the first token: caches exist on the workers
    r.close()  # what the server does when the socket goes away
    assert rt.active == {} and len(chain.released) == 1
    assert rt.slots.acquire(blocking=False)


@pytest.mark.parametrize("data,content_type,message", [
    (b"{not json", "application/json", "not valid JSON"),
    (b"\xff\xfe\xfa", "application/json", "not valid UTF-8"),
    (b"[" * 100000 + b"]" * 100000, "application/json", "not valid JSON"),
    (b'{"prompt": ""}', "application/json", "must not be empty"),
    (b'{"prompt": "x", "max_tokens": 0}', "application/json", "between 1 and 1024"),
])
def test_bad_bodies_get_400(tiny_model, data, content_type, message):
    client, _ = make_client(tiny_model, FakeChain(1))
    r = client.post("/api/generate", data=data, content_type=content_type)
    assert r.status_code == 400 and message in r.json["error"]["message"]


def test_huge_body_and_long_prompt(tiny_model):
    client, _ = make_client(tiny_model, FakeChain(1), max_context=64)
    r = client.post("/api/generate", data=b"x" * (2 << 20), content_type="application/json")
    assert r.status_code == 413 and "larger than" in r.json["error"]["message"]
    r = client.post("/api/generate", json={"prompt": "word " * 200})
    assert r.status_code == 400 and "context holds 64" in r.json["error"]["message"]


def test_not_ready_cluster_says_why(tiny_model):
    client, rt = make_client(tiny_model, FakeChain(2))
    rt.cluster.status["worker-2"] = {"status": "down", "error": "unreachable: ConnectionError", "threads": 1}
    health = client.get("/healthz")
    # a running cluster with a worker down is degraded, not loading, and says so once
    assert health.status_code == 503 and health.json["status"] == "degraded"
    assert health.json["reason"].count("worker-2 is down") == 1 and "loading" not in health.json["reason"]
    r = client.post("/api/generate", json={"prompt": "x"})
    assert r.status_code == 503 and "worker-2 is down" in r.json["error"]["message"]


def test_stop_string_ends_the_reply(tiny_model):
    client, rt = make_client(tiny_model, FakeChain(1))
    full = client.post("/api/generate", json={"prompt": "abc", "max_tokens": 8, "stream": False}).json["text"]
    stop = full.strip()[2:4] if len(full.strip()) > 4 else None
    if not stop:
        pytest.fail(f"the tiny model's reply {full!r} is too short to test stop strings")
    r = client.post("/api/generate", json={"prompt": "abc", "max_tokens": 8, "stream": False, "stop": stop}).json
    assert r["finish_reason"] == "stop" and stop not in r["text"] and full.startswith(r["text"])


# -- a newcomer's view of failures (issue: failures shown as they happen) ----------------------------

def test_a_failure_mid_reply_is_said_at_once_and_the_partial_reply_is_kept(tiny_model):
    chain = FakeChain(2, fail_at_step=3)
    client, rt = make_client(tiny_model, chain, recovery_wait_s=0.3)

    class DownAfterStep3(FakeChain):  # the failure is seen by the monitor too: worker-2 never comes back
        def forward(self, *args):
            try:
                return chain.forward(*args)
            except Exception:
                rt.cluster.status["worker-2"]["status"] = "down"
                raise

        def release(self, request_id):
            chain.release(request_id)

    rt.engine.chain = DownAfterStep3(2)
    events = sse_events(client.post("/api/generate", json={"prompt": "x", "max_tokens": 10}).get_data(as_text=True))
    kinds = [e for e, _ in events]
    assert kinds == ["start", "token", "token", "token", "worker_down", "error"]
    down = events[4][1]
    assert down["worker"] == "worker-2" and down["wait_s"] == 0.3 and down["tokens_so_far"] == 3
    error = events[-1][1]
    assert error["status"] == 502 and error["worker"] == "worker-2"
    partial = error["partial"]
    # the tokens and metrics it had are kept, marked as failed
    assert partial["finish_reason"] == "error" and len(partial["token_ids"]) == 3
    assert partial["metrics"]["failed"] and partial["metrics"]["completion_tokens"] == 3
    assert partial["metrics"]["ttft_ms"] > 0 and partial["metrics"]["recoveries"] == 0
    assert partial["metrics"]["recovery_wait_ms"] >= 300  # the time it waited in vain is its own figure
    assert rt.active == {} and chain.released
    rt.cluster.status["worker-2"]["status"] = "ready"  # back for the next request, which fails the same way
    r = client.post("/api/generate", json={"prompt": "x", "max_tokens": 10, "stream": False})
    assert r.status_code == 502 and r.json["error"]["partial"]["metrics"]["completion_tokens"] == 3


def test_a_recovered_reply_says_so_and_its_wait_is_its_own_figure(tiny_model):
    chain = FakeChain(2, fail_at_step=3, fail_times=1)
    client, rt = make_client(tiny_model, chain, recovery_wait_s=0.5)
    events = sse_events(client.post("/api/generate", json={"prompt": "abc", "max_tokens": 6}).get_data(as_text=True))
    kinds = [e for e, _ in events]
    assert kinds == ["start"] + ["token"] * 3 + ["worker_down", "recovered"] + ["token"] * 3 + ["done"]
    recovered = events[5][1]
    m = events[-1][1]["metrics"]
    assert recovered["worker"] == "worker-2" and recovered["recoveries"] == 1
    assert recovered["replayed_tokens"] == m["prompt_tokens"] + 3
    assert m["recoveries"] == 1 and m["recovery_wait_ms"] == pytest.approx(recovered["waited_ms"])
    assert m["recovery_wait_ms"] >= 300  # the monitor's first look (min(1 s, wait)) at least
    # "root and the rest" is computed by the server and leaves the wait out
    accounted = m["compute_ms"] + m["transport_ms"] + m["injected_latency_ms"] + m["recovery_wait_ms"]
    # (the fake's timings are made up, so what is left may be clamped at 0)
    assert m["root_other_ms"] == pytest.approx(max(0.0, m["ttlt_ms"] - accounted), abs=1e-6)


def test_tokenize_counts_the_prompt_before_sending(tiny_model):
    client, rt = make_client(tiny_model, FakeChain(1))
    r = client.post("/api/tokenize", json={"prompt": "the lazy dog"})
    assert r.status_code == 200 and r.json["prompt_tokens"] == len(rt.tokenizer("the lazy dog").input_ids)
    for body, message in [({"prompt": 3}, "tokenize needs"), ({"prompt": "x", "chat": "yes"}, "chat must be")]:
        r = client.post("/api/tokenize", json=body)
        assert r.status_code == 400 and message in r.json["error"]["message"]


def test_openai_prompt_lists_and_roles_are_checked(tiny_model):
    client, _ = make_client(tiny_model, FakeChain(1))
    one = client.post("/v1/completions", json={"prompt": ["abc"], "max_tokens": 2})
    assert one.status_code == 200 and one.json["usage"]["completion_tokens"] == 2
    many = client.post("/v1/completions", json={"prompt": ["abc", "def"], "max_tokens": 2})
    assert many.status_code == 400 and "limited to 1 prompt" in many.json["error"]["message"]
    ids = client.post("/v1/completions", json={"prompt": [[1, 2, 3]], "max_tokens": 2})
    assert ids.status_code == 400 and "token-id prompts" in ids.json["error"]["message"]
    bad = client.post("/v1/chat/completions", json={"messages": [{"role": "wizard", "content": "hi"}]})
    assert bad.status_code == 400 and "'wizard' is not one of system, developer, user, assistant" in bad.json["error"]["message"]


def test_both_apis_map_a_timeout_to_the_same_status(tiny_model):
    from backend.chain import WorkerFailure

    class SlowChain(FakeChain):
        def forward(self, *args):
            raise WorkerFailure("worker-1 (http://fake) did not answer within 5 s", "worker-1", 504)

    client, _ = make_client(tiny_model, SlowChain(1))
    native = client.post("/api/generate", json={"prompt": "x", "max_tokens": 2, "stream": False})
    openai = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})
    assert native.status_code == openai.status_code == 504
