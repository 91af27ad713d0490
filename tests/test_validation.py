import pytest

from backend.validation import BadRequest, parse_generate


def test_defaults():
    r = parse_generate({"prompt": "hi"})
    assert (r.max_tokens, r.sampling.temperature, r.sampling.top_p, r.sampling.top_k) == (256, 0.0, 1.0, 0)
    assert r.stream and not r.chat and r.stop == () and not r.ignore_eos


def test_all_fields():
    r = parse_generate({"prompt": "hi", "max_tokens": 1024, "temperature": 0.7, "top_p": 0.9, "top_k": 40,
                        "seed": 3, "stop": ["\n", "."], "chat": True, "stream": False, "ignore_eos": True})
    assert r.max_tokens == 1024 and r.sampling.seed == 3 and r.stop == ("\n", ".") and r.chat and not r.stream


@pytest.mark.parametrize("body,message", [
    ([], "JSON object"),
    ({}, "prompt is required"),
    ({"prompt": 5}, "prompt is required"),
    ({"prompt": "   "}, "must not be empty"),
    ({"prompt": "x", "max_tokens": 0}, "between 1 and 1024"),
    ({"prompt": "x", "max_tokens": 1025}, "between 1 and 1024"),
    ({"prompt": "x", "max_tokens": -3}, "between 1 and 1024"),
    ({"prompt": "x", "max_tokens": 10**30}, "between 1 and 1024"),
    ({"prompt": "x", "max_tokens": "10"}, "whole number"),
    ({"prompt": "x", "max_tokens": 2.5}, "whole number"),
    ({"prompt": "x", "max_tokens": True}, "whole number"),
    ({"prompt": "x", "temperature": -1}, "temperature"),
    ({"prompt": "x", "temperature": "hot"}, "temperature must be a number"),
    ({"prompt": "x", "top_p": 0}, "top_p"),
    ({"prompt": "x", "top_p": 1.5}, "top_p"),
    ({"prompt": "x", "top_k": -1}, "top_k"),
    ({"prompt": "x", "seed": -1}, "seed"),
    ({"prompt": "x", "stop": 3}, "stop must be"),
    ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop must be"),
    ({"prompt": "x", "stop": [""]}, "stop must be"),
    ({"prompt": "x", "chat": "yes"}, "chat must be true or false"),
    ({"prompt": "x", "stream": 1}, "stream must be true or false"),
    ({"prompt": "x", "bogus": 1}, "unknown field"),
    ({"prompt": "x" * 200_001}, "longer than"),
])
def test_bad_input(body, message):
    with pytest.raises(BadRequest, match=message):
        parse_generate(body)
