"""How long a worker on this machine waits after a compute to play a slower device (pure, no torch).

A worker that plays a device (DEVICES=rpi5) runs its layers for real here, then sleeps so that the
compute lasts what it would on the device: factor = this host's decode throughput for the worker's
dtype and threads / the device's (both GB/s, the host's measured at load by common/host_speed.py).

The base is CPU time, not wall time, so the stretch stays true when workers share cores: a worker
that waited for a core while others ran has a long wall time but the same CPU time, and
busy = cpu / threads is what the compute would have taken with its cores to itself (exact with one
thread; with several it assumes every thread was busy throughout, which a torch op that splits its
work evenly nearly is). The device would take busy x factor: the worker sleeps what is left of that
after the wall time already spent. When the wall time alone exceeds it (this host, shared, was too
slow to keep up), nothing is slept and the excess is reported as the shortfall, never hidden.
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
    target = cpu_s / threads * factor
    return Stretch(target_s=target, sleep_s=max(0.0, target - wall_s), shortfall_s=max(0.0, wall_s - target))


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
