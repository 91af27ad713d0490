"""Finding the workers: fixed URLs (local mode), a compose project's containers or a swarm stack's tasks."""
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


# -- Docker Swarm: the workers are service tasks, possibly on other hosts ---------------------------
# Workers are addressed by their task's IP on the stack's network, not by name: swarm's DNS
# (`tasks.<service>`, the service VIP) leaves out a task until its healthcheck passes, and a worker is
# healthy only once the root has given it its slice. A rescheduled task gets a new IP, so the URL of
# that slot changes: call swarm_workers again (the root's monitor does, periodically).

STACK_LABEL = "com.docker.stack.namespace"
SERVICE_LABEL = "com.docker.swarm.service.name"


class WorkersMissing(RuntimeError):
    """Some replicas of a worker service have no task with an address yet (starting or rescheduling)."""


def in_swarm(client) -> bool:
    """True when this process runs in a container of a swarm service (the root on a manager)."""
    try:
        me = client.containers.get(socket.gethostname())
    except Exception:  # not a container of this engine (a local process, or no daemon): not in a swarm
        return False
    return bool(me.labels.get(SERVICE_LABEL))


def task_address(task: dict, networks: set[str]) -> str | None:
    """The task's IP on the first of its networks that the root shares ('10.0.1.7/24' -> '10.0.1.7')."""
    for attachment in task.get("NetworksAttachments") or []:
        if attachment.get("Network", {}).get("Spec", {}).get("Name") in networks:
            for address in attachment.get("Addresses") or []:
                return address.split("/")[0]
    return None


def order_swarm_tasks(services: list[tuple[str, int, list[dict]]], networks: set[str],
                      port: int) -> list[tuple[str, str]]:
    """(service name, replicas, its tasks as the API lists them) -> (worker-i, url) in chain order.

    Services in natural order of their names, then tasks by slot; of the tasks of one slot the
    newest one meant to run (a rescheduled slot keeps its number, gets a new task and IP).
    Raises WorkersMissing when a slot in 1..replicas has no such task with an address yet.
    """
    urls, missing = [], []
    for service, replicas, tasks in sorted(services, key=lambda s: natural_key(s[0])):
        newest: dict[int, dict] = {}
        for t in tasks:
            if t.get("DesiredState") != "running" or not isinstance(t.get("Slot"), int):
                continue
            if t["Slot"] not in newest or _version(t) > _version(newest[t["Slot"]]):
                newest[t["Slot"]] = t
        for slot in range(1, replicas + 1):
            address = task_address(newest[slot], networks) if slot in newest else None
            if address is None:
                missing.append(f"{service}.{slot}")
            else:
                urls.append(f"http://{address}:{port}")
    if missing:
        raise WorkersMissing(f"no running task with an address on {sorted(networks)} yet for "
                             f"{', '.join(missing)} (starting, or rescheduled by swarm)")
    return fixed_workers(tuple(urls))


def _version(task: dict) -> int:
    return int(task.get("Version", {}).get("Index", 0))


def swarm_workers(client, port: int) -> list[tuple[str, str]]:
    """Every replica of this stack's services named worker*, as (worker-i, url), from the swarm's
    services/tasks API (the root runs on a manager). Call it again to follow rescheduled tasks."""
    me = client.containers.get(socket.gethostname())
    stack = me.labels.get(STACK_LABEL)
    if not stack:
        raise RuntimeError("the root is not running in a swarm stack (no com.docker.stack.namespace label)")
    networks = {n for n in (me.attrs.get("NetworkSettings", {}).get("Networks") or {}) if n != "ingress"}
    services = []
    for svc in client.services.list(filters={"label": f"{STACK_LABEL}={stack}"}):
        name = svc.name[len(stack) + 1:] if svc.name.startswith(stack + "_") else svc.name
        if not name.startswith(WORKER_SERVICE_PREFIX):
            continue
        mode = svc.attrs.get("Spec", {}).get("Mode", {})
        if "Replicated" not in mode:
            raise RuntimeError(f"service {svc.name} must be replicated (deploy.mode: replicated), not {list(mode)}")
        services.append((name, int(mode["Replicated"].get("Replicas", 1)),
                         svc.tasks(filters={"desired-state": "running"})))
    if not services:
        raise RuntimeError(f"no worker services in stack {stack}")
    return order_swarm_tasks(services, networks, port)


def changed_urls(old: list[tuple[str, str]], new: list[tuple[str, str]]) -> dict[str, str]:
    """{worker name: its new url} for the workers whose URL moved (a task rescheduled elsewhere)."""
    before = dict(old)
    return {name: url for name, url in new if name in before and before[name] != url}
