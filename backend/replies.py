"""What both APIs send back for a failure, and how they frame a stream: one mapping, one formatter."""
from __future__ import annotations

import json

from .chain import WorkerFailure


def status_for(failure: WorkerFailure) -> int:
    """The HTTP status of a reply that a worker failure ended.

    429: a worker's KV cache slots are all in use (retry later); 504: a hop timed out; 502 otherwise
    (the root is a gateway to the workers, and one of them failed)."""
    return failure.status if failure.status in (429, 504) else 502


def sse(data: dict | str, event: str | None = None) -> str:
    """One server-sent event; the OpenAI API sends data lines only (event=None), ending with [DONE]."""
    body = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {event}\n" if event else "") + f"data: {body}\n\n"
