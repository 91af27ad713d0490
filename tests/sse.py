"""Reading the root's server-sent events in tests."""
import json


def parse_sse(body: str) -> list[tuple[str, dict]]:
    """A whole SSE body -> [(event, data)]."""
    return read_sse(body.splitlines())


def read_sse(lines) -> list[tuple[str, dict]]:
    """SSE lines (e.g. requests' iter_lines) -> [(event, data)]."""
    events, event = [], None
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            events.append((event, json.loads(line[6:])))
    return events


def skip_tokens(lines, n: int) -> None:
    """Reads SSE lines until n token events have gone by (the stream stays open after them)."""
    seen = 0
    for line in lines:
        if line == "event: token":
            seen += 1
            if seen == n:
                return
    raise AssertionError(f"the stream ended after {seen} of {n} tokens")
