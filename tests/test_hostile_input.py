"""No input crashes the root or makes it hang: every rejection is a 4xx with a message."""
import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from backend.app import create_app

from .fakes import FakeChain, fake_runtime

FIELDS = ["prompt", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "chat", "stream", "ignore_eos"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)
small_max_tokens = st.one_of(st.integers(-3, 6), st.integers(1025, 2**70), st.floats(), st.text(max_size=3), st.none())


@pytest.fixture(scope="module")
def client(tiny_model):
    rt = fake_runtime(tiny_model, FakeChain(2))
    return create_app(rt.settings, runtime=rt).test_client(), rt


def _check(resp, rt):
    assert resp.status_code in (200, 400, 413, 429), resp.status_code
    if resp.status_code != 200:
        assert resp.json["error"]["message"]
    assert rt.active == {}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.dictionaries(st.sampled_from(FIELDS + ["bogus"]), json_values, max_size=6), max_tokens=small_max_tokens)
def test_random_json_bodies(client, body, max_tokens):
    c, rt = client
    body = {**body, "max_tokens": max_tokens, "stream": False}
    _check(c.post("/api/generate", data=json.dumps(body), content_type="application/json"), rt)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
def test_random_bytes(client, raw):
    c, rt = client
    _check(c.post("/api/generate", data=raw, content_type="application/json"), rt)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=json_values)
def test_random_openai_bodies(client, body):
    c, rt = client
    for path in ("/v1/completions", "/v1/chat/completions"):
        if isinstance(body, dict):
            body = {**body, "stream": False, "max_tokens": 2}
        _check(c.post(path, data=json.dumps(body), content_type="application/json"), rt)


@pytest.mark.parametrize("raw,status", [
    (b"[" * 50_000 + b"]" * 50_000, 400),                     # deep JSON
    (b'{"prompt": "' + b"a" * (2 << 20) + b'"}', 413),          # huge body
    (b'{"prompt": "\xed\xa0\x80"}', 400),                       # invalid UTF-8 (a lone surrogate)
    (json.dumps({"prompt": "x", "max_tokens": 10**400}).encode(), 400),
    (json.dumps({"prompt": "x", "temperature": -1e308}).encode(), 400),
    (json.dumps({"prompt": "x", "unknown": 1}).encode(), 400),
    (json.dumps({"prompt": ["x"]}).encode(), 400),
])
def test_named_hostile_bodies(client, raw, status):
    c, rt = client
    resp = c.post("/api/generate", data=raw, content_type="application/json")
    assert resp.status_code == status and resp.json["error"]["message"]
    assert c.post("/api/generate", json={"prompt": "still fine", "max_tokens": 2, "stream": False}).status_code == 200
