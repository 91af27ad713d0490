"""The OpenAI-compatible API with the official openai client, and /metrics, on a real local cluster."""
import openai
import pytest
import requests

PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def client(local_cluster):
    return openai.OpenAI(base_url=local_cluster.url + "/v1", api_key="not-needed", max_retries=0)


def native_greedy(url, **body):
    return requests.post(url + "/api/generate", json={"prompt": PROMPT, "stream": False, **body}, timeout=60).json()


def test_models(client, local_cluster):
    models = client.models.list().data
    assert [m.id for m in models] == [local_cluster.model_name]


def test_completions_match_the_native_api(client, local_cluster):
    native = native_greedy(local_cluster.url, max_tokens=12, ignore_eos=False)
    out = client.completions.create(model="x", prompt=PROMPT, max_tokens=12, temperature=0)
    assert out.choices[0].text == native["text"]
    assert out.usage.completion_tokens == len(native["token_ids"])
    assert out.usage.prompt_tokens == native["metrics"]["prompt_tokens"]
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    assert out.choices[0].finish_reason in ("length", "stop")
    streamed = client.completions.create(model="x", prompt=PROMPT, max_tokens=12, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == native["text"]


def test_chat_completions_stream_and_usage(client):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    whole = client.chat.completions.create(model="x", messages=msgs, max_tokens=10, temperature=0)
    assert whole.choices[0].message.role == "assistant" and whole.usage.completion_tokens >= 1
    chunks = list(client.chat.completions.create(model="x", messages=msgs, max_tokens=10, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)


def test_unsupported_options_are_clear_400s(client):
    with pytest.raises(openai.BadRequestError, match="n must be 1"):
        client.completions.create(model="x", prompt=PROMPT, max_tokens=2, n=2)
    with pytest.raises(openai.BadRequestError, match="max_tokens must be between"):
        client.completions.create(model="x", prompt=PROMPT, max_tokens=5000)
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="x", messages=[], max_tokens=2)


def test_prometheus_metrics(local_cluster):
    native_greedy(local_cluster.url, max_tokens=3, ignore_eos=True)
    text = requests.get(local_cluster.url + "/metrics").text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples['dllm_requests_total{finish_reason="length"}'] >= 1
    assert samples["dllm_ttft_seconds_count"] >= 1 and samples["dllm_ttlt_seconds_sum"] > 0
    assert samples['dllm_worker_compute_seconds_total{worker="worker-1"}'] > 0
    assert samples['dllm_link_seconds_total{kind="injected",link="into-worker-2"}'] > 0
    assert samples['dllm_link_bytes_total{link="to-root"}'] > 0
    assert samples["dllm_active_requests"] == 0
