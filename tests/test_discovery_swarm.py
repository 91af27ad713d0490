"""Swarm discovery: task lists shaped as the Docker API returns them, in chain order, with the
reschedules and half-started states swarm goes through. The real swarm is in tests/test_swarm.py."""
import pytest

from backend.discovery import (WorkersMissing, changed_urls, in_swarm, order_swarm_tasks, swarm_workers,
                               task_address)

NET = {"llm_default"}


def task(slot, ip, desired="running", state="running", index=10, network="llm_default"):
    """A task as GET /tasks lists it (the fields discovery reads, plus some it must ignore)."""
    return {"ID": f"t{slot}-{index}", "Version": {"Index": index}, "Slot": slot, "NodeID": "n1",
            "DesiredState": desired, "Status": {"State": state, "ContainerStatus": {"ContainerID": "c"}},
            "NetworksAttachments": [
                {"Network": {"ID": "ing", "Spec": {"Name": "ingress"}}, "Addresses": ["10.0.0.9/24"]},
                {"Network": {"ID": "n", "Spec": {"Name": network}}, "Addresses": [f"{ip}/24"]}]}


def test_tasks_in_slot_order_named_worker_1_to_n():
    tasks = [task(3, "10.0.1.30"), task(1, "10.0.1.10"), task(2, "10.0.1.20")]
    assert order_swarm_tasks([("worker", 3, tasks)], NET, 5100) == [
        ("worker-1", "http://10.0.1.10:5100"), ("worker-2", "http://10.0.1.20:5100"),
        ("worker-3", "http://10.0.1.30:5100")]


def test_services_in_natural_order_then_slots():
    services = [("worker-small", 1, [task(1, "10.0.1.50")]), ("worker", 2, [task(2, "10.0.1.2"), task(1, "10.0.1.1")]),
                ("worker-big", 1, [task(1, "10.0.1.40")])]
    assert [url for _, url in order_swarm_tasks(services, NET, 5100)] == [
        "http://10.0.1.1:5100", "http://10.0.1.2:5100", "http://10.0.1.40:5100", "http://10.0.1.50:5100"]


def test_rescheduled_slot_takes_the_newest_task_meant_to_run():
    """A killed task stays listed (desired shutdown) beside its replacement in the same slot."""
    tasks = [task(1, "10.0.1.10"), task(2, "10.0.1.20", desired="shutdown", state="failed", index=10),
             task(2, "10.0.1.23", index=55, state="starting")]
    assert order_swarm_tasks([("worker", 2, tasks)], NET, 5100)[1] == ("worker-2", "http://10.0.1.23:5100")
    # two tasks meant to run in one slot (an update, start-first): the newer one
    tasks = [task(1, "10.0.1.10", index=90), task(1, "10.0.1.11", index=91)]
    assert order_swarm_tasks([("worker", 1, tasks)], NET, 5100) == [("worker-1", "http://10.0.1.11:5100")]


def test_a_slot_without_a_task_or_address_is_named():
    with pytest.raises(WorkersMissing, match=r"worker\.2"):
        order_swarm_tasks([("worker", 2, [task(1, "10.0.1.10")])], NET, 5100)
    with pytest.raises(WorkersMissing, match=r"worker\.1.*worker\.2|worker\.2.*worker\.1"):
        order_swarm_tasks([("worker", 2, [task(1, "10.0.1.10", desired="shutdown"),
                                          task(2, "10.0.1.20", network="other_net")])], NET, 5100)


def test_address_on_the_network_the_root_shares():
    t = task(1, "10.0.1.10")
    assert task_address(t, {"llm_default"}) == "10.0.1.10"
    assert task_address(t, {"ingress", "llm_default"}) == "10.0.0.9"  # the first shared one, as listed
    assert task_address(t, {"elsewhere"}) is None
    assert task_address({"Slot": 1}, NET) is None  # not allocated yet


def test_changed_urls_names_the_moved_workers():
    old = [("worker-1", "http://10.0.1.10:5100"), ("worker-2", "http://10.0.1.20:5100")]
    new = [("worker-1", "http://10.0.1.10:5100"), ("worker-2", "http://10.0.1.23:5100")]
    assert changed_urls(old, new) == {"worker-2": "http://10.0.1.23:5100"}
    assert changed_urls(old, old) == {}


# -- swarm_workers and in_swarm over an SDK-shaped client (the real engine: tests/test_swarm.py)

class Container:
    def __init__(self, labels, networks):
        self.labels, self.attrs = labels, {"NetworkSettings": {"Networks": {n: {} for n in networks}}}


class Service:
    def __init__(self, name, replicas, tasks, mode=None):
        self.name, self._tasks = name, tasks
        self.attrs = {"Spec": {"Name": name, "Mode": mode or {"Replicated": {"Replicas": replicas}}}}

    def tasks(self, filters=None):
        assert filters == {"desired-state": "running"}
        return [t for t in self._tasks if t["DesiredState"] == "running"]


class Client:
    def __init__(self, me, services):
        self.containers = type("Containers", (), {"get": staticmethod(lambda _id: me)})()
        self.services = type("Services", (), {"list": staticmethod(lambda filters: [
            s for s in services if filters == {"label": "com.docker.stack.namespace=llm"}])})()


ROOT_LABELS = {"com.docker.stack.namespace": "llm", "com.docker.swarm.service.name": "llm_root"}


def test_swarm_workers_reads_the_stacks_worker_services_only():
    services = [Service("llm_root", 1, [task(1, "10.0.1.2")]),
                Service("llm_worker", 2, [task(2, "10.0.1.6"), task(1, "10.0.1.5")])]
    client = Client(Container(ROOT_LABELS, ["llm_default", "ingress"]), services)
    assert in_swarm(client)
    assert swarm_workers(client, 5100) == [("worker-1", "http://10.0.1.5:5100"), ("worker-2", "http://10.0.1.6:5100")]


def test_swarm_workers_says_what_is_wrong():
    compose_root = Container({"com.docker.compose.project": "distributed-llm"}, ["distributed-llm_default"])
    assert not in_swarm(Client(compose_root, []))
    with pytest.raises(RuntimeError, match="not running in a swarm stack"):
        swarm_workers(Client(compose_root, []), 5100)
    with pytest.raises(RuntimeError, match="no worker services in stack llm"):
        swarm_workers(Client(Container(ROOT_LABELS, ["llm_default"]), []), 5100)
    global_worker = Service("llm_worker", 0, [], mode={"Global": {}})
    with pytest.raises(RuntimeError, match="must be replicated"):
        swarm_workers(Client(Container(ROOT_LABELS, ["llm_default"]), [global_worker]), 5100)


def test_in_swarm_is_false_outside_any_container():
    class NoSuchContainer:
        class containers:
            @staticmethod
            def get(_id):
                raise LookupError("No such container")
    assert not in_swarm(NoSuchContainer())
