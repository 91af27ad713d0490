"""The cluster as a Docker Swarm stack, deployed with the README's commands on a single-node swarm.

Run under the shared lock (it takes over the engine's swarm state and port 3001):
    flock /tmp/ddllm-docker.lock scripts/test tests/test_swarm.py
The swarm is left, the stack, secret and volume removed, whatever happens.
"""
import json
import os
import secrets
import shlex
import subprocess
import time
from pathlib import Path

import pytest
import requests

from .sse import read_sse
from .test_docker import N_TOKENS, PROMPT

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parent.parent
STACK = "llm"  # as in the README
URL = "http://127.0.0.1:3001"
ENV = {"MODEL_PRESET": "tiny", "NODES": "2", "WORKERS_PER_NODE": "2", "WORKER_CPUS": "1", "WORKER_MEMORY": "2g",
       "HOP_TIMEOUT_S": "5",
       # the root reads the Docker socket as its group (scripts/prepare.sh exports it; the README says how)
       "DOCKER_GID": os.environ.get("DOCKER_GID") or str(os.stat("/var/run/docker.sock").st_gid)}


def run(*args, check=True, input=None, timeout=600) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), cwd=REPO, env={**os.environ, **ENV}, input=input, capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def readme_block(title: str) -> list[str]:
    """The shell commands of the README's code block that follows the line `title`."""
    text = (REPO / "README.md").read_text()
    after = text[text.index(title):]
    block = after[after.index("```bash\n") + 8:]
    return [line for line in block[:block.index("```")].splitlines() if line and not line.startswith("#")]


class Swarm:
    def __init__(self, secret: str):
        self.secret = secret
        self.node = run("docker", "info", "--format", "{{.Name}}").stdout.strip()

    def tasks(self, service: str) -> list[dict]:
        ids = run("docker", "service", "ps", "-q", "--filter", "desired-state=running", f"{STACK}_{service}").stdout.split()
        return sorted((json.loads(run("docker", "inspect", i).stdout)[0] for i in ids), key=lambda t: t["Slot"])

    def container(self, service: str, slot: int = 1) -> str:
        """The container of this slot's task meant to run (state "starting" until its healthcheck passes)."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for t in self.tasks(service):
                cid = t.get("Status", {}).get("ContainerStatus", {}).get("ContainerID")
                if t["Slot"] == slot and t["Status"]["State"] in ("starting", "running") and cid:
                    return cid
            time.sleep(1)
        raise AssertionError(f"no running container for {service}.{slot}")

    def exec_python(self, service: str, code: str, *args: str) -> str:
        return run("docker", "exec", self.container(service), "python3", "-c", code, *args).stdout.strip().splitlines()[-1]

    def wait_healthy(self, timeout_s: float) -> None:
        deadline, last = time.monotonic() + timeout_s, "no answer"
        while time.monotonic() < deadline:
            try:
                r = requests.get(URL + "/healthz", timeout=3)
                if r.status_code == 200:
                    return
                last = r.text
            except requests.RequestException as exc:
                last = type(exc).__name__
            time.sleep(1)
        logs = run("docker", "service", "logs", "--tail", "40", f"{STACK}_root", check=False)
        raise TimeoutError(f"stack not healthy in {timeout_s:g} s: {last}\n{logs.stdout}{logs.stderr}\n"
                           + run("docker", "service", "ps", "--no-trunc", f"{STACK}_worker", check=False).stdout)


@pytest.fixture(scope="module")
def swarm():
    """A single-node swarm playing every device, the stack deployed as the README says."""
    if run("docker", "info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip() != "inactive":
        pytest.fail("this engine is already in a swarm: the test will not take it over (docker swarm leave --force)")
    run("docker", "image", "inspect", "docker-distributed-llm:local")  # stack deploy does not build
    try:  # the stack publishes 3001: anything answering there now would be mistaken for it
        taken = requests.get(URL + "/healthz", timeout=2)
    except requests.RequestException:
        taken = None
    if taken is not None:
        pytest.fail(f"{URL} already answers ({taken.status_code}): stop what holds port 3001 first")
    secret = secrets.token_hex(32)
    try:
        run("docker", "swarm", "init", "--advertise-addr", "127.0.0.1")
        node = run("docker", "node", "ls", "-q").stdout.split()[0]
        run("docker", "node", "update", "--label-add", "device=rpi5", node)
        run("docker", "secret", "create", "cluster_secret", "-", input=secret)  # the README pipes openssl's
        deploy = next(line for line in readme_block("Deploy the stack") if "docker stack deploy" in line)
        run(*shlex.split(deploy, comments=True))  # the README's own command; settings come from ENV
        cluster = Swarm(secret)
        cluster.wait_healthy(600)
        yield cluster
    finally:
        logs = run("docker", "service", "logs", "--no-task-ids", f"{STACK}_root", check=False)
        (REPO / "artifacts").mkdir(exist_ok=True)
        (REPO / "artifacts" / "swarm-root.log").write_text(logs.stdout + logs.stderr)
        run("docker", "stack", "rm", STACK, check=False)
        deadline = time.monotonic() + 60  # the stack's containers and network go away asynchronously
        while time.monotonic() < deadline and run(
                "docker", "ps", "-aq", "--filter", f"label=com.docker.stack.namespace={STACK}", check=False).stdout.strip():
            time.sleep(1)
        run("docker", "secret", "rm", "cluster_secret", check=False)
        run("docker", "swarm", "leave", "--force", check=False)
        for volume in ("synthetic", "cluster-secret"):  # the stack's named volumes (docker-compose.yml)
            run("docker", "volume", "rm", f"{STACK}_{volume}", check=False)


def stream(**body):
    r = requests.post(URL + "/api/generate", json={"prompt": PROMPT, "max_tokens": N_TOKENS, **body},
                      stream=True, timeout=120)
    return r, read_sse(r.iter_lines(decode_unicode=True))


HF_GENERATE = ("import json,sys,torch; from transformers import AutoModelForCausalLM, AutoTokenizer; "
               "p=sys.argv[1]; ids=AutoTokenizer.from_pretrained(p)(sys.argv[2]).input_ids; "
               "m=AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32); "
               "o=m.generate(torch.tensor([ids]), max_new_tokens=int(sys.argv[3]), do_sample=False); "
               "print(json.dumps(o[0, len(ids):].tolist()))")

DISCOVER = ("import json,docker; from backend.discovery import in_swarm, swarm_workers; c=docker.from_env(); "
            "print(json.dumps([in_swarm(c), swarm_workers(c, 5100)]))")


def test_discovery_finds_the_tasks_in_slot_order(swarm):
    found, workers = json.loads(swarm.exec_python("root", DISCOVER))
    tasks = swarm.tasks("worker")
    ips = [next(a["Addresses"][0].split("/")[0] for a in t["NetworksAttachments"]
                if a["Network"]["Spec"]["Name"] == f"{STACK}_default") for t in tasks]
    assert found is True
    assert workers == [[f"worker-{i + 1}", f"http://{ip}:5100"] for i, ip in enumerate(ips)]
    info = requests.get(URL + "/api/cluster").json()
    assert [[w["name"], w["url"]] for w in info["workers"]] == workers
    assert [w["layers"] for w in info["workers"]] == [[0, 2], [2, 4]]
    assert info["latency"]["min_ms"] == 0 and info["latency"]["max_ms"] == 0  # the overlay's default


def test_stack_is_what_the_overlay_says(swarm):
    root = json.loads(run("docker", "service", "inspect", f"{STACK}_root").stdout)[0]["Spec"]
    worker = json.loads(run("docker", "service", "inspect", f"{STACK}_worker").stdout)[0]["Spec"]
    ports = root["EndpointSpec"]["Ports"]
    assert ports == [{"Protocol": "tcp", "TargetPort": 3001, "PublishedPort": 3001, "PublishMode": "host"}]
    assert "Ports" not in worker.get("EndpointSpec", {})
    assert worker["TaskTemplate"]["Placement"]["Constraints"] == ["node.labels.device == rpi5"]
    assert worker["TaskTemplate"]["Placement"]["MaxReplicas"] == 2
    assert root["TaskTemplate"]["Placement"]["Constraints"] == ["node.role == manager"]
    for spec in (root, worker):  # patience before swarm replaces a task that is not ready
        assert spec["TaskTemplate"]["ContainerSpec"]["Healthcheck"]["Retries"] == 200
    for spec in (root, worker):
        [s] = spec["TaskTemplate"]["ContainerSpec"]["Secrets"]
        assert s["SecretName"] == "cluster_secret" and s["File"]["Name"] == "cluster_secret"
    network = json.loads(run("docker", "network", "inspect", f"{STACK}_default").stdout)[0]
    assert network["Driver"] == "overlay" and "encrypted" in network["Options"]


def test_streamed_reply_equals_hf_generate_and_every_container_has_stats(swarm):
    r, events = stream()
    assert r.status_code == 200 and events[-1][0] == "done", events[-3:]
    tokens = [d["id"] for e, d in events if e == "token"]
    path = requests.get(URL + "/api/cluster").json()["model"]["path"]
    assert tokens == json.loads(swarm.exec_python("root", HF_GENERATE, path, PROMPT, str(N_TOKENS)))
    long_r, _ = stream(max_tokens=200, ignore_eos=True)  # every container works while stats are sampled
    assert long_r.status_code == 200
    deadline, rows = time.monotonic() + 30, {}
    while time.monotonic() < deadline:
        rows = {c["name"]: c for c in requests.get(URL + "/api/stats").json()["containers"]}
        if {"root", "worker-1", "worker-2"} <= set(rows):
            break
        time.sleep(1)
    assert {"root", "worker-1", "worker-2"} <= set(rows), rows
    for name in ("root", "worker-1", "worker-2"):
        assert rows[name]["mem_bytes"] > 0 and rows[name]["host"] == swarm.node, rows[name]
    assert rows["worker-1"]["cpu_limit_cores"] == 1.0 and rows["worker-1"]["mem_limit_bytes"] == 2 * 1024**3
    worked = requests.get(URL + "/api/stats").json()
    assert all(c["cpu_percent"] >= 0 for c in worked["containers"])


def test_a_killed_worker_task_gives_an_error_then_swarm_reschedules_it_and_the_root_follows(swarm):
    before, root_task = {t["Slot"]: t for t in swarm.tasks("worker")}, swarm.tasks("root")[0]["ID"]
    old_url = dict(json.loads(swarm.exec_python("root", DISCOVER))[1])["worker-2"]
    run("docker", "kill", swarm.container("worker", 2))
    r = requests.post(URL + "/api/generate", json={"prompt": PROMPT, "max_tokens": 5}, timeout=60)
    assert "worker-2" in r.text and (r.status_code >= 500 or "event: error" in r.text), r.text
    # swarm replaces the task (restart_policy: any), with a new task id and a new address in slot 2
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        after = {t["Slot"]: t for t in swarm.tasks("worker")}
        if after.get(2, before[2])["ID"] != before[2]["ID"]:
            break
        time.sleep(1)
    assert after[2]["ID"] != before[2]["ID"] and after[1]["ID"] == before[1]["ID"]
    swarm.container("worker", 2)  # a container again, empty until the root gives it its layers
    swarm.wait_healthy(300)
    new_url = dict(json.loads(swarm.exec_python("root", DISCOVER))[1])["worker-2"]
    info = requests.get(URL + "/api/cluster").json()
    assert dict((w["name"], w["url"]) for w in info["workers"])["worker-2"] == new_url, (old_url, new_url, info)
    r, events = stream(max_tokens=5)
    assert events[-1][0] == "done" and events[-1][1]["metrics"]["completion_tokens"] >= 1
    assert swarm.tasks("root")[0]["ID"] == root_task  # the root followed; swarm did not replace it


REFUSED = """
import json, socket, sys, urllib.request, urllib.error
from common.frame import decode_frame, encode_frame
from common.wire import read_message, write_message
url, secret = sys.argv[1], sys.argv[2]
out = {}
def http(path, body=None, header=None):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json", **(header or {})})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
out["load"] = http("/v1/load", {"name": "x", "index": 0, "start": 0, "end": 1, "dtype": "float32", "model_path": "/models"})
out["load_wrong"] = http("/v1/load", {}, {"X-Cluster-Secret": "not-the-secret"})
out["health"] = http("/healthz")
out["health_with"] = http("/healthz", header={"X-Cluster-Secret": secret})
host, port = url.split("//")[1].split(":")
s = socket.create_connection((host, int(port) + 1), timeout=5)
write_message(s, encode_frame({"request_id": "intruder", "start_pos": 0, "delays_ms": [0, 0, 0]}, None))
header, _ = decode_frame(read_message(s, 1 << 20), 1 << 20)
out["data"] = header
out["data_closed"] = s.recv(1) == b""
print(json.dumps(out))
"""


def test_a_client_without_the_secret_is_refused_by_the_control_and_data_ports(swarm):
    """From inside the overlay network (the root's container, without sending the secret)."""
    url = dict(json.loads(swarm.exec_python("root", DISCOVER))[1])["worker-1"]
    out = json.loads(swarm.exec_python("root", REFUSED, url, swarm.secret))
    for key in ("load", "load_wrong"):
        status, body = out[key]
        assert status == 401 and "error" in body, out[key]
    status, body = out["health"]
    assert set(body) == {"status"}, body  # nothing about the model, the layers or the machine
    status, body = out["health_with"]
    assert status == 200 and body["stats"]["host"] == swarm.node and body["stats"]["mem_bytes"] > 0, body
    assert out["data"]["error"]["status"] == 401, out["data"]
    assert out["data_closed"] is True
    # and the cluster still serves its own root
    r, events = stream(max_tokens=3)
    assert events[-1][0] == "done"


def test_images_reach_a_host_through_the_script(tmp_path):
    """scripts/swarm-images.sh copy, with `ssh` replaced by a local shell: the architecture check,
    save | load and the tag on the receiving engine (here the same one)."""
    fake_ssh = tmp_path / "ssh"
    fake_ssh.write_text('#!/bin/sh\nshift\nexec sh -c "$*"\n')
    fake_ssh.chmod(0o755)
    result = subprocess.run(["scripts/swarm-images.sh", "copy", "pi@rpi5-a"], cwd=REPO, capture_output=True,
                            text=True, timeout=900, env={**os.environ, "SWARM_SSH": str(fake_ssh)})
    assert result.returncode == 0, result.stderr
    machine = run("docker", "info", "--format", "{{.Architecture}}").stdout.strip()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}[machine]
    assert f"docker-distributed-llm:local -> pi@rpi5-a ({arch})" in result.stderr
    assert "Loaded image: docker-distributed-llm:local" in result.stderr
