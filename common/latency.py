"""Injected link delays: what a message on one link costs, drawn from a seeded generator.

A link's delay = latency (uniform [min, max] by default, or normal / pareto)
               + bytes / bandwidth (0 = unlimited)
               + a retransmission timeout each time the message is lost (probability `loss`).
"""
from __future__ import annotations

import ctypes
import random
import time
from dataclasses import dataclass, replace

DISTRIBUTIONS = ("uniform", "normal", "pareto")
def _fine_timer_slack() -> None:
    """Linux rounds a sleep's wake-up up by the thread's timer slack (50 us by default): 1 ns instead.
    Threads started later inherit it from the one that imports this module."""
    try:
        ctypes.CDLL(None).prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK
    except (OSError, AttributeError):  # not Linux/glibc: the default slack
        pass


def _wake_up_lateness_s(samples: int = 20, nap_s: float = 0.0005) -> float:
    """How late time.sleep wakes on this machine (the 90th percentile of `samples` short naps)."""
    late = []
    for _ in range(samples):
        start = time.perf_counter()
        time.sleep(nap_s)
        late.append(time.perf_counter() - start - nap_s)
    return sorted(late)[int(0.9 * (samples - 1))]


_fine_timer_slack()
# The end of a delay is waited for awake: twice the measured wake-up lateness, between 0.2 and 2 ms.
# On one VM time.sleep woke ~1.5 ms late (hence the 2 ms cap); on another 0.1 ms, where a 2 ms spin only
# burnt CPU that the processes sharing the cores needed. Measured once per process, ~12 ms at import.
SPIN_S = min(0.002, max(0.0002, 2 * _wake_up_lateness_s()))


def sleep_exactly(seconds: float) -> None:
    """Wait an injected delay to within microseconds: sleep until SPIN_S before its end, then spin.

    time.sleep wakes late (timer slack, and on a VM an idle vCPU that must be woken): ~1.5 ms per link
    measured on one VM, which over 80 links of a 16-token reply on 4 workers was a 2 % error in TTLT.
    The spin costs at most SPIN_S of CPU per link.
    """
    deadline = time.perf_counter() + seconds
    if seconds > SPIN_S:
        time.sleep(seconds - SPIN_S)
    while time.perf_counter() < deadline:
        pass


@dataclass(frozen=True)
class LinkModel:
    min_ms: float = 0.0          # uniform: lower bound; normal/pareto: floor of the latency
    max_ms: float = 0.0          # uniform: upper bound; normal/pareto: cap of the latency
    distribution: str = "uniform"
    mean_ms: float = 0.0         # normal only
    std_ms: float = 0.0          # normal only
    pareto_alpha: float = 3.0    # pareto only: heavier tail when smaller; scale is min_ms
    bandwidth_mbps: float = 0.0  # megabits per second; 0 = unlimited, no size term
    loss: float = 0.0            # probability that one transmission is lost
    rto_ms: float = 200.0        # what a lost transmission costs before the resend

    def __post_init__(self):
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"latency distribution must be one of {DISTRIBUTIONS}, not {self.distribution!r}")
        if self.min_ms < 0 or self.max_ms < self.min_ms:
            raise ValueError(f"latency range {self.min_ms},{self.max_ms} ms must satisfy 0 <= min <= max")
        if not 0 <= self.loss < 1:
            raise ValueError("loss must be in [0, 1)")
        if self.bandwidth_mbps < 0 or self.std_ms < 0 or self.rto_ms < 0 or self.pareto_alpha <= 0:
            raise ValueError("bandwidth, deviation, rto and pareto alpha must be positive")

    @property
    def is_zero(self) -> bool:
        return (self.max_ms == 0 and self.mean_ms == 0 and self.bandwidth_mbps == 0
                and self.loss == 0)

    def describe(self) -> dict:
        return {"distribution": self.distribution, "min_ms": self.min_ms, "max_ms": self.max_ms,
                "mean_ms": self.mean_ms, "std_ms": self.std_ms, "bandwidth_mbps": self.bandwidth_mbps,
                "loss": self.loss, "rto_ms": self.rto_ms}


def parse_range(text: str) -> tuple[float, float]:
    """'10,50' -> (10.0, 50.0); a single number means a fixed delay."""
    try:
        parts = [float(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError:
        raise ValueError(f"latency {text!r} must be MIN,MAX in milliseconds, like 10,50") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise ValueError(f"latency {text!r} must be MIN,MAX in milliseconds, like 10,50")
    return parts[0], parts[1]


def sample_latency_ms(rng: random.Random, link: LinkModel) -> float:
    if link.distribution == "normal":
        value = rng.gauss(link.mean_ms, link.std_ms)
    elif link.distribution == "pareto":
        value = link.min_ms * rng.paretovariate(link.pareto_alpha)
    elif link.max_ms == link.min_ms:
        return link.min_ms  # fixed delay (0,0 included): draw nothing, so no randomness is consumed
    else:
        value = rng.uniform(link.min_ms, link.max_ms)
    upper = link.max_ms if link.max_ms > 0 else float("inf")
    return min(max(value, link.min_ms), upper)


def sample_delay_ms(rng: random.Random, link: LinkModel, nbytes: int) -> float:
    delay = sample_latency_ms(rng, link)
    if link.bandwidth_mbps > 0:
        delay += nbytes * 8 / (link.bandwidth_mbps * 1e6) * 1e3
    if link.loss > 0:
        while rng.random() < link.loss:
            delay += link.rto_ms
    return delay


class RequestDelays:
    """The delays of one request's links, from a generator seeded by (seed, request number).

    One generator per request keeps a run repeatable even when requests interleave.
    """

    def __init__(self, links: list[LinkModel], seed: int, request_number: int):
        self.links = links
        self.rng = random.Random(f"{seed}:{request_number}")
        self.drawn: list[list[float]] = []  # one list per step, one delay per link

    def draw_step(self, nbytes: int) -> list[float]:
        step = [sample_delay_ms(self.rng, link, nbytes) for link in self.links]
        self.drawn.append(step)
        return step

    @property
    def total_ms(self) -> float:
        return sum(sum(step) for step in self.drawn)


def links_for(n_workers: int, default: LinkModel, overrides: dict[int, dict] | None = None) -> list[LinkModel]:
    """N+1 links for N workers: link i enters worker i+1; link N returns to the root."""
    overrides = overrides or {}
    return [replace(default, **overrides.get(i, {})) for i in range(n_workers + 1)]
