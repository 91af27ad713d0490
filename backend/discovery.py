"""Finding the workers: a fixed list of URLs (local mode) or the compose project's containers."""
from __future__ import annotations

import re
import socket

WORKER_SERVICE_PREFIX = "worker"


def natural_key(text: str) -> list:
    """'worker10' sorts after 'worker2'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def order_workers(entries: list[tuple[str, int, str]]) -> list[str]:
    """(service, replica number, container name) -> container names in chain order."""
    return [name for _, _, name in sorted(entries, key=lambda e: (natural_key(e[0]), e[1]))]


def fixed_workers(urls: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(f"worker-{i + 1}", url) for i, url in enumerate(urls)]


def docker_workers(client, port: int) -> list[tuple[str, str]]:
    """Every container of this compose project whose service name starts with 'worker'."""
    me = client.containers.get(socket.gethostname())
    project = me.labels.get("com.docker.compose.project")
    if not project:
        raise RuntimeError("the root is not running in a compose project: set WORKER_URLS instead")
    entries = []
    for c in client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"}):
        service = c.labels.get("com.docker.compose.service", "")
        if service.startswith(WORKER_SERVICE_PREFIX):
            entries.append((service, int(c.labels.get("com.docker.compose.container-number", "1")), c.name))
    return [(f"worker-{i + 1}", f"http://{name}:{port}") for i, name in enumerate(order_workers(entries))]
