"""The device a worker plays (LoadAssignment.device) and the clock that stretches its computes to it.

A worker that plays a profile (not "host") and runs its layers for real measures, once its slice is
loaded, this machine's decode throughput for its dtype with its own threads (common/host_speed.py,
once per (dtype, threads) per process) and takes factor = host GB/s / device GB/s. A device faster
than what this host gives the worker (factor < 1) cannot be played by sleeping: the load fails with
both figures, and the root's start-up with it. Each compute is then timed (wall and CPU) and
followed by its stretch (common/stretch.py) toward its target on the worker's clock (PLAY_CLOCK):
`profile`, the cost model's time for the device (worker/modelled.SliceCost, the same figures
COMPUTE=modelled sleeps), or `cpu`, its CPU time x factor.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Callable

from common.profiles import HOST, DeviceProfile
from common.profiles import device as catalog_device
from common.stretch import sleep_plan, stretch, toward

from .modelled import SliceCost


class DeviceRefused(ValueError):
    """This host cannot play the device: it is faster than what the host gives this worker."""


@dataclass(frozen=True)
class PlayedDevice:
    key: str            # the profile's name in profiles/devices.yaml
    name: str           # what it is
    dtype: str
    threads: int        # this worker's torch threads: the host's share the figure was measured with
    host_gbps: float    # this host's decode throughput for the dtype with those threads (measured)
    device_gbps: float  # the device's (the profile's figure)
    figure: str         # which of the profile's figures: "matvec float32" or "memory bandwidth"

    @property
    def factor(self) -> float:
        """How many times longer the device takes than this worker's unshared compute."""
        return self.host_gbps / self.device_gbps

    def describe(self) -> dict:
        return {"device": self.key, "name": self.name, "dtype": self.dtype, "threads": self.threads,
                "host_gbps": round(self.host_gbps, 3), "device_gbps": self.device_gbps, "figure": self.figure,
                "factor": round(self.factor, 3)}


def cpu_clock(threads: int) -> Callable[[], float]:
    """One thread: its own CPU time, which other threads of the process (a request spinning out an
    injected delay) do not touch. Several: the process's, since torch's intra-op threads do the work."""
    return time.thread_time if threads == 1 else time.process_time


QUIET_SHARE = 0.95  # a measurement whose threads ran at least this share of its wall time had its cores
QUIET_RUNS = 3      # quiet runs measured; the largest is kept (sharing the memory bus only lowers a figure)


def quiet_measurement(measure: Callable[[], float], threads: int, budget_s: float = 60.0,
                      pause_s: float = 0.25, full_share: float = 1.0) -> float:
    """measure() (a wall-clock figure) again, pausing longer each time, until one run had its cores to
    itself (full_share: below 1 under a CPU quota smaller than the threads); after budget_s, the
    figure of the run that had the largest share of them.

    Workers load side by side: one measures while others still load their weights or measure, and
    its wall-clock figure then counts the time it waited for a core. Measured at /v1/load, when the
    root asks one worker after another, 4 TinyLlama workers on 2 cores read 9-21 GB/s (factors
    1.6-4.2 for one device: the slow figure plays the device twice too fast); measured once the
    slice is in and waiting for a quiet moment, 18-21 (bench/stretch.py). A run with its cores can
    still share the memory bus with a neighbour loading its weights (8.7 GB/s against 19.5 alone,
    which refused rpi5): that only lowers a figure, so the largest of QUIET_RUNS spaced quiet runs
    is taken."""
    clock = cpu_clock(threads)
    deadline = time.perf_counter() + budget_s
    best_share, best, quiet = -1.0, 0.0, []
    while True:
        wall0, cpu0 = time.perf_counter(), clock()
        gbps = measure()
        wall = time.perf_counter() - wall0
        share = (clock() - cpu0) / threads / wall if wall > 0 else 1.0
        if share >= QUIET_SHARE * full_share:
            quiet.append(gbps)
        elif share > best_share:
            best_share, best = share, gbps
        if len(quiet) >= QUIET_RUNS or time.perf_counter() + wall + pause_s > deadline:
            return max(quiet) if quiet else best
        time.sleep(pause_s)
        pause_s = min(2 * pause_s, 2.0)


@functools.lru_cache(maxsize=None)
def measured_gbps(dtype: str, threads: int) -> float:
    """This host's decode throughput for `threads` threads (common/host_speed.py), measured in a quiet
    moment, once per (dtype, threads) per process."""
    from common.device import read_cgroup_quota
    from common.host_speed import measure_decode_gbps
    quota, period = read_cgroup_quota()
    full_share = min(1.0, quota / period / threads) if quota and period else 1.0
    return quiet_measurement(lambda: measure_decode_gbps(dtype, threads), threads, full_share=full_share)


def play(device: str, dtype: str, threads: int, lookup: Callable[[str], DeviceProfile] = catalog_device,
         measure: Callable[[str, int], float] = measured_gbps) -> PlayedDevice | None:
    """The device to play, or None for "host" (the worker is its own share of this machine).
    Raises ProfileError for an unknown name and DeviceRefused for a device faster than this host."""
    if device == HOST:
        return None
    profile = lookup(device)
    device_gbps, figure = profile.decode_gbps(dtype)
    played = PlayedDevice(profile.key, profile.name, dtype, threads, measure(dtype, threads), device_gbps, figure)
    if played.factor < 1:
        raise DeviceRefused(
            f"cannot play {device} ({dtype}): the device decodes {device_gbps:g} GB/s ({figure}), faster than the "
            f"{played.host_gbps:.3g} GB/s this host gives a worker of {threads} thread(s), so its compute cannot be "
            f"slowed to it; give the workers more THREADS, pick a slower device, or COMPUTE=modelled")
    return played


class StretchClock:
    """Times each compute of a worker and, when it plays a device, sleeps the compute's stretch.

    cost set: the profile clock, each compute toward its modelled time on the device; None: the cpu
    clock, CPU time (as cpu_clock() reads it) x factor. Computes of one worker do not overlap (its
    compute lock), so the oversleep carried from one to the next (common/stretch.sleep_plan) is the
    worker's own.
    """

    def __init__(self, played: PlayedDevice | None, threads: int, cost: SliceCost | None = None):
        self.played, self.threads, self.cost = played, threads, cost
        self.cpu_clock = cpu_clock(threads)
        self.overslept_s = 0.0
        self.slept_ms = self.shortfall_ms = 0.0  # since load, for /v1/info

    def start(self) -> tuple[float, float]:
        return time.perf_counter(), self.cpu_clock()

    @property
    def kind(self) -> str:
        return "profile" if self.cost is not None else "cpu"

    def finish(self, started: tuple[float, float], tokens: int | None = None, start_pos: int | None = None,
               segment: int | None = None) -> tuple[float, float]:
        """After a compute that began at start(): sleeps its stretch; (ms slept, ms of shortfall). The profile
        clock needs the work done: `tokens` after `start_pos` cached ones, and in tensor mode which
        `segment` of the step (SliceCost.segment_s); the cpu clock ignores them."""
        if self.played is None:
            return 0.0, 0.0
        wall0, cpu0 = started
        now = time.perf_counter()
        if self.cost is not None:
            if tokens is None or start_pos is None:
                raise ValueError("the profile clock needs the compute's tokens and start position")
            target = (self.cost.step_s(tokens, start_pos) if segment is None
                      else self.cost.segment_s(segment, tokens, start_pos))
            s = toward(now - wall0, target)
        else:
            s = stretch(now - wall0, max(0.0, self.cpu_clock() - cpu0), self.threads, self.played.factor)
        ask, self.overslept_s = sleep_plan(s.sleep_s, self.overslept_s)
        slept = 0.0
        if ask > 0:
            # A plain sleep, not sleep_exactly's spin: workers that share cores would spin on each
            # other's time. Its late wake is carried to the next stretch instead.
            time.sleep(ask)
            slept = time.perf_counter() - now
            self.overslept_s += max(0.0, slept - ask)
        slept_ms, shortfall_ms = slept * 1e3, s.shortfall_s * 1e3
        self.slept_ms += slept_ms
        self.shortfall_ms += shortfall_ms
        return slept_ms, shortfall_ms

    def describe(self) -> dict:
        if self.played is None:
            return {"device": HOST}
        return {**self.played.describe(), "clock": self.kind, "stretch_ms": round(self.slept_ms, 3),
                "shortfall_ms": round(self.shortfall_ms, 3)}
