"""How long a worker on this machine waits after a compute to play a slower device (pure, no torch).

A worker that plays a device (DEVICES=rpi5) runs its layers for real here, then sleeps so that the
compute lasts what it would on the device. The host's decode throughput for the worker's dtype and
threads is measured at load (common/host_speed.py); factor = it / the device's (both GB/s). A factor
below 1 (a device faster than this host) is refused on either clock.

Two clocks give each compute's target (PLAY_CLOCK, worker/played_device.py):
- profile (the default): the time the cost model (common/cost_model.py) gives the device for the
  work the compute did (its layers or its segment between syncs, its tokens, its context). Nothing
  this host does moves it: not sharing cores, not sharing the memory bus. Two tensor-parallel workers
  streaming weights at once on this VM each run ~1.3x slower than alone; real Pis do not share a bus,
  and on the cpu clock that slowdown was stretched too (played 2 x Pi 5 in tensor mode 29 % slower than
  the same cluster modelled, bench.validate, 2026-11-26).
- cpu: busy x factor, with busy = CPU time / threads. CPU time, not wall time, so the stretch stays
  true when workers share cores: a worker that waited for a core while others ran has a long wall
  time but the same CPU time (exact with one thread; with several it assumes every thread was busy
  throughout, which a torch op that splits its work evenly nearly is). It keeps the real kernels'
  own proportions (what this host's attention or norms cost beside its products) but counts memory
  stalls as work, so a neighbour on the memory bus slows the played device.
The worker sleeps what is left of the target after the wall time already spent. When the wall time
alone exceeds it (this host, shared, was too slow to keep up), nothing is slept and the excess is
reported as the shortfall, never hidden.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stretch:
    """One compute's stretch, in seconds."""
    target_s: float     # what the compute takes on the played device: busy x factor
    sleep_s: float      # to sleep after the compute so that it lasts target_s
    shortfall_s: float  # how far the compute alone already overran target_s (the host kept no pace)


NONE = Stretch(0.0, 0.0, 0.0)


def stretch(wall_s: float, cpu_s: float, threads: int, factor: float) -> Stretch:
    """wall_s: the compute's wall time; cpu_s: the CPU time its process (or thread) used meanwhile;
    threads: the torch threads it ran on; factor: host speed / device speed (>= 1 to play a slower device)."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, not {threads}")
    if factor <= 0:
        raise ValueError(f"factor must be positive, not {factor}")
    if wall_s < 0 or cpu_s < 0:
        raise ValueError(f"times must not be negative (wall {wall_s}, cpu {cpu_s})")
    return toward(wall_s, cpu_s / threads * factor)


def toward(wall_s: float, target_s: float) -> Stretch:
    """A compute that took wall_s and should last target_s on the device: what to sleep, or the shortfall."""
    if wall_s < 0 or target_s < 0:
        raise ValueError(f"times must not be negative (wall {wall_s}, target {target_s})")
    return Stretch(target_s=target_s, sleep_s=max(0.0, target_s - wall_s), shortfall_s=max(0.0, wall_s - target_s))


def sleep_plan(sleep_s: float, overslept_s: float) -> tuple[float, float]:
    """(what to ask the OS to sleep now, the oversleep still owed afterwards).

    time.sleep wakes late (timer slack: tens of microseconds on bare metal, up to ~1.5 ms on a VM),
    which over the thousands of short computes of a tensor-parallel reply adds up. Each oversleep is
    carried and taken off the next sleeps, so the sum of the stretch stays the sum of the targets;
    a shortfall is not carried (it is reported as it happened)."""
    if sleep_s < 0 or overslept_s < 0:
        raise ValueError("sleep and oversleep must not be negative")
    ask = sleep_s - overslept_s
    return (ask, 0.0) if ask > 0 else (0.0, -ask)
