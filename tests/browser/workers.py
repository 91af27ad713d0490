"""Killing a worker of a LocalCluster the way it dies in real life, for the failure tests."""
import os
import signal


def crash_worker(cluster, name: str) -> None:
    """The worker dies at once, as in a crash or an OOM kill (no graceful shutdown); reaped here so
    that `cluster.start_worker` can start its replacement on the same ports."""
    proc = cluster.procs[name]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
