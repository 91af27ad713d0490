"""Injected delays of a tensor-parallel step: the same link model as the ring, on the star's links.

In tensor mode link i joins the root and worker i+1, both ways (LINK_OVERRIDES index i). One step:
    broadcast[i]        root -> worker i+1, the step's hidden states
    up[s][i], down[s][i] sync s (2 per layer): worker i+1's partial to the root, the sum back to it
    back                worker 1's output home (link 0)
Every message is drawn from its link's model with its own bytes (hidden states in the compute dtype,
partials and sums in float32), from the request's seeded generator, in the order above.

The links of a step run in parallel: at most, a step is delayed by its drawn critical path
    max(broadcast) + sum over syncs of (max(up[s]) + max(down[s])) + back
(`TensorStepDelays.critical_ms`). What it is delayed by is less when the ranks are uneven: a fast
rank's delay hides behind a slow rank's compute. The root measures that (`realized_ms`, per barrier,
from the arrival times on its own clock) and reports it as the reply's injected_latency_ms. With a fixed delay L
on every link that is (2 + 4 x layers) x L per step for 2 or more workers (2 x L for one).

SYNC_TOPOLOGY=mesh (the workers exchange their partials, common/tensor_protocol.py): link i is worker
i+1's link to the others; its partial of sync s reaches every peer up[s][i] late, and down[s] is 0.
A sync then costs one crossing: (2 + 2 x layers) x L per step with a fixed delay L.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from . import q80
from .latency import LinkModel, RequestDelays, sample_delay_ms

SYNC_ITEMSIZE = 4  # float32 partials and sums


def sync_message_bytes(hidden_size: int, sync_dtype: str = "float32") -> int:
    """One position's partial (or sum) on the wire: float32, or SYNC_DTYPE=q80's blocks of it."""
    return q80.nbytes([hidden_size]) if sync_dtype == "q80" else hidden_size * SYNC_ITEMSIZE


def messages_per_sync(n_workers: int, topology: str = "star") -> int:
    """Partials and sums on the wire in one sync: the star's N partials in and N sums out; the mesh's
    call and answer for each of its N(N-1)/2 pairs. Two workers: 4 against 2; four: 8 against 12."""
    if n_workers < 2:
        return 0
    return n_workers * (n_workers - 1) if topology == "mesh" else 2 * n_workers


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
             sync_bytes: int, mesh: bool = False) -> "TensorStepDelays":
        """mesh: a sync is one crossing, worker i+1's partial to every peer on its own link (up); down is 0."""
        broadcast = tuple(sample_delay_ms(rng, link, hidden_bytes) for link in links)
        up, down = [], []
        for _ in range(n_syncs):
            up.append(tuple(sample_delay_ms(rng, link, sync_bytes) for link in links))
            down.append(tuple(0.0 for _ in links) if mesh else
                        tuple(sample_delay_ms(rng, link, sync_bytes) for link in links))
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


def realized_ms(arrivals_ns: list[int], delays_ms: list[float]) -> float:
    """What per-rank delays added to the moment the last of N messages arrived: the receiver waits for
    all of them, so a rank's delay hides behind a slower rank's compute. arrivals_ns[i] is when rank i's
    message arrived (one clock: the receiver's); delays_ms[i] what rank i slept since the previous
    barrier (a sum's down link plus its partial's up link). Without the delays the last one would have
    arrived at max(arrival - delay) (compute and transport unchanged): the difference is what they cost.
    Equal delays d cost exactly d; the drawn critical path, max(delays), is the upper bound."""
    if len(arrivals_ns) != len(delays_ms) or not arrivals_ns:
        raise ValueError(f"{len(arrivals_ns)} arrivals but {len(delays_ms)} delays")
    first = min(arrivals_ns)  # times since the first arrival: small enough for float64 to keep every ns
    since = [a - first for a in arrivals_ns]
    return (max(since) - max(a - d * 1e6 for a, d in zip(since, delays_ms))) / 1e6


def leg_delays(step: TensorStepDelays, leg: int) -> list[float]:
    """Per rank, what it slept before its message of leg `leg` reached the root: leg s < syncs is sync
    s's partial (after the broadcast for s = 0, else after sync s-1's sum); leg = syncs is the answer
    that ends the step (after the last sum, or the broadcast when there are no syncs)."""
    before = step.broadcast if leg == 0 else step.down[leg - 1]
    after = step.up[leg] if leg < len(step.up) else (0.0,) * len(before)
    return [b + a for b, a in zip(before, after)]


class TensorDelays(RequestDelays):
    """A request's delays in tensor mode: draw_step draws a whole step (see the module docstring)."""

    def __init__(self, links: list[LinkModel], seed: int, request_number: int, n_layers: int,
                 hidden_bytes_per_token: int, sync_bytes_per_token: int, topology: str = "star"):
        super().__init__(links, seed, request_number)
        self.mesh = topology == "mesh"
        self.n_syncs = syncs_per_step(len(links), n_layers)
        self.hidden_bytes_per_token, self.sync_bytes_per_token = hidden_bytes_per_token, sync_bytes_per_token
        self.steps: list[TensorStepDelays] = []

    def draw_step(self, nbytes: int) -> list[float]:
        """nbytes: the step's hidden states, as the engine measures them (its tokens follow from them)."""
        tokens = max(1, nbytes // self.hidden_bytes_per_token)
        step = TensorStepDelays.draw(self.rng, self.links, self.n_syncs, nbytes, tokens * self.sync_bytes_per_token,
                                     self.mesh)
        self.steps.append(step)
        flat = step.flat()
        self.drawn.append(flat)
        return flat

    @property
    def total_ms(self) -> float:
        return sum(step.critical_ms for step in self.steps)
