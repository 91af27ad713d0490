"""Killing a worker of a LocalCluster the way it dies in real life, for the failure tests."""
import os
import signal

from ..conftest import start_cluster


def fragile_cluster(tiny_model, logs_dir, recovery_wait_s: float):
    """Root + 2 workers with a little latency (so a reply can be watched) and the given recovery wait."""
    return start_cluster(tiny_model, logs_dir, workers=2, latency_ms="10,20",
                         extra_env={"RECOVERY_WAIT_S": str(recovery_wait_s)})


def crash_worker(cluster, name: str) -> None:
    """The worker dies at once, as in a crash or an OOM kill (no graceful shutdown); reaped here so
    that `cluster.start_worker` can start its replacement on the same ports."""
    proc = cluster.procs[name]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
