"""The JSON body of POST /api/generate, checked field by field: a clear message for anything off."""
from __future__ import annotations

from dataclasses import dataclass

from .sampling import SamplingParams

MAX_TOKENS_LIMIT = 1024
MAX_PROMPT_CHARS = 200_000
MAX_STOPS = 4
MAX_STOP_CHARS = 100
KNOWN_FIELDS = {"prompt", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "chat", "stream",
                "ignore_eos"}


class BadRequest(ValueError):
    """The request is invalid; the message says what to change."""


@dataclass(frozen=True)
class GenerateRequest:
    prompt: str
    max_tokens: int = 256
    sampling: SamplingParams = SamplingParams()
    stop: tuple[str, ...] = ()
    chat: bool = False
    stream: bool = True
    ignore_eos: bool = False  # fixed-length replies for benchmarks


def _number(body, name, default, lo, hi, integer=False):
    value = body.get(name, default)
    if value is None:
        return default
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise BadRequest(f"{name} must be {'a whole number' if integer else 'a number'}")
    if not lo <= value <= hi:
        raise BadRequest(f"{name} must be between {lo} and {hi}, not {value}")
    return value


def _flag(body, name, default):
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false")
    return value


def parse_generate(body) -> GenerateRequest:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = sorted(set(body) - KNOWN_FIELDS)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown[:5])}")
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise BadRequest("prompt is required and must be a string")
    if not prompt.strip():
        raise BadRequest("prompt must not be empty")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise BadRequest(f"prompt is longer than {MAX_PROMPT_CHARS} characters")
    stop = body.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    if (not isinstance(stop, (list, tuple)) or len(stop) > MAX_STOPS
            or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in stop)):
        raise BadRequest(f"stop must be a string or a list of up to {MAX_STOPS} non-empty strings "
                         f"of at most {MAX_STOP_CHARS} characters")
    sampling = SamplingParams(
        temperature=float(_number(body, "temperature", 0.0, 0.0, 5.0)),
        top_p=float(_number(body, "top_p", 1.0, 0.0, 1.0)),
        top_k=_number(body, "top_k", 0, 0, 1000, integer=True),
        seed=_number(body, "seed", None, 0, 2**63 - 1, integer=True),
    )
    if sampling.top_p == 0:
        raise BadRequest("top_p must be greater than 0")
    return GenerateRequest(
        prompt=prompt,
        max_tokens=_number(body, "max_tokens", 256, 1, MAX_TOKENS_LIMIT, integer=True),
        sampling=sampling, stop=tuple(stop),
        chat=_flag(body, "chat", False), stream=_flag(body, "stream", True),
        ignore_eos=_flag(body, "ignore_eos", False),
    )
