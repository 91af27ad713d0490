"""Injected delays of a tensor-parallel step: the same link model as the ring, on the star's links.

In tensor mode link i joins the root and worker i+1, both ways (LINK_OVERRIDES index i). One step:
    broadcast[i]        root -> worker i+1, the step's hidden states
    up[s][i], down[s][i] sync s (2 per layer): worker i+1's partial to the root, the sum back to it
    back                worker 1's output home (link 0)
Every message is drawn from its link's model with its own bytes (hidden states in the compute dtype,
partials and sums in float32), from the request's seeded generator, in the order above.

The links of a step run in parallel, so what a step is delayed by is its critical path:
    max(broadcast) + sum over syncs of (max(up[s]) + max(down[s])) + back
which is what `TensorDelays.total_ms` (the reply's injected_latency_ms) adds up. With a fixed delay L
on every link that is (2 + 4 x layers) x L per step, whatever the number of workers.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from .latency import LinkModel, RequestDelays, sample_delay_ms

SYNC_ITEMSIZE = 4  # float32 partials and sums


def syncs_per_step(n_workers: int, n_layers: int) -> int:
    """2 per layer (after attention, after the MLP); none with one worker, which holds every head and
    the whole MLP width: a single device has nobody to sum with (distributed-llama's 1 node neither)."""
    return 0 if n_workers == 1 else 2 * n_layers


@dataclass(frozen=True)
class TensorStepDelays:
    broadcast: tuple[float, ...]          # one per worker
    up: tuple[tuple[float, ...], ...]     # [sync][worker]
    down: tuple[tuple[float, ...], ...]   # [sync][worker]
    back: float

    @classmethod
    def draw(cls, rng: random.Random, links: list[LinkModel], n_syncs: int, hidden_bytes: int,
             sync_bytes: int) -> "TensorStepDelays":
        broadcast = tuple(sample_delay_ms(rng, link, hidden_bytes) for link in links)
        up, down = [], []
        for _ in range(n_syncs):
            up.append(tuple(sample_delay_ms(rng, link, sync_bytes) for link in links))
            down.append(tuple(sample_delay_ms(rng, link, sync_bytes) for link in links))
        return cls(broadcast, tuple(up), tuple(down), sample_delay_ms(rng, links[0], hidden_bytes))

    def flat(self) -> list[float]:
        """broadcast, then up[s] and down[s] sync by sync, then back: what Chain.forward's delays_ms carries."""
        out = list(self.broadcast)
        for up, down in zip(self.up, self.down):
            out += list(up) + list(down)
        return out + [self.back]

    @classmethod
    def from_flat(cls, flat: list[float], n_workers: int, n_syncs: int) -> "TensorStepDelays":
        want = n_workers + 2 * n_syncs * n_workers + 1
        if len(flat) != want:
            raise ValueError(f"a tensor step of {n_workers} workers and {n_syncs} syncs has {want} delays, "
                             f"not {len(flat)}")
        n = n_workers
        syncs = [flat[n + 2 * n * s: n + 2 * n * (s + 1)] for s in range(n_syncs)]
        return cls(tuple(flat[:n]), tuple(tuple(s[:n]) for s in syncs), tuple(tuple(s[n:]) for s in syncs),
                   flat[-1])

    @property
    def sync_ms(self) -> float:
        """The syncs' part of the critical path: each waits for the slowest partial, then the slowest sum."""
        return sum(max(up) + max(down) for up, down in zip(self.up, self.down))

    @property
    def critical_ms(self) -> float:
        return max(self.broadcast) + self.sync_ms + self.back


class TensorDelays(RequestDelays):
    """A request's delays in tensor mode: draw_step draws a whole step (see the module docstring)."""

    def __init__(self, links: list[LinkModel], seed: int, request_number: int, n_layers: int,
                 hidden_bytes_per_token: int, sync_bytes_per_token: int):
        super().__init__(links, seed, request_number)
        self.n_syncs = syncs_per_step(len(links), n_layers)
        self.hidden_bytes_per_token, self.sync_bytes_per_token = hidden_bytes_per_token, sync_bytes_per_token
        self.steps: list[TensorStepDelays] = []

    def draw_step(self, nbytes: int) -> list[float]:
        """nbytes: the step's hidden states, as the engine measures them (its tokens follow from them)."""
        tokens = max(1, nbytes // self.hidden_bytes_per_token)
        step = TensorStepDelays.draw(self.rng, self.links, self.n_syncs, nbytes, tokens * self.sync_bytes_per_token)
        self.steps.append(step)
        flat = step.flat()
        self.drawn.append(flat)
        return flat

    @property
    def total_ms(self) -> float:
        return sum(step.critical_ms for step in self.steps)
