"""The product as users run it: images built, compose cluster up, everything through 127.0.0.1:3001."""
import json
import subprocess
import threading
import time

import pytest
import requests

from .sse import read_sse

pytestmark = pytest.mark.docker

PROMPT = "Distributed inference on edge devices"
N_TOKENS = 20


def stream(url, **body):
    r = requests.post(url + "/api/generate", json={"prompt": PROMPT, "max_tokens": N_TOKENS, **body},
                      stream=True, timeout=60)
    return r, read_sse(r.iter_lines(decode_unicode=True))


def hf_reference_in_container(cluster, prompt_ids):
    """HF generate on the very files the cluster serves, inside the root container."""
    code = ("import json,sys,torch; from transformers import AutoModelForCausalLM; "
            "p=json.loads(sys.argv[1]); m=AutoModelForCausalLM.from_pretrained(p['path'], dtype=torch.float32); "
            "o=m.generate(torch.tensor([p['ids']]), max_new_tokens=p['n'], do_sample=False); "
            "print(json.dumps(o[0, len(p['ids']):].tolist()))")
    path = requests.get(cluster.url + "/api/cluster").json()["model"]["path"]
    arg = json.dumps({"path": path, "ids": prompt_ids, "n": N_TOKENS})
    out = cluster.compose("exec", "-T", "root", "python3", "-c", code, arg).stdout
    return json.loads(out.strip().splitlines()[-1])


def prompt_ids_in_container(cluster):
    code = ("import json,sys; from transformers import AutoTokenizer; "
            "print(json.dumps(AutoTokenizer.from_pretrained(sys.argv[1])(sys.argv[2]).input_ids))")
    path = requests.get(cluster.url + "/api/cluster").json()["model"]["path"]
    return json.loads(cluster.compose("exec", "-T", "root", "python3", "-c", code, path, PROMPT).stdout.strip().splitlines()[-1])


def test_cluster_shape_and_security(compose_cluster):
    info = requests.get(compose_cluster.url + "/api/cluster").json()
    assert info["model"]["synthetic"] is True and info["stats_source"] == "docker"
    assert [w["name"] for w in info["workers"]] == ["worker-1", "worker-2"]
    assert [w["layers"] for w in info["workers"]] == [[0, 2], [2, 4]]
    assert all(w["threads"] == 1 for w in info["workers"])  # from the 1-CPU limit
    ports = json.loads(subprocess.run(["docker", "inspect", compose_cluster.container("root")],
                                      capture_output=True, text=True, check=True).stdout)[0]
    published = ports["HostConfig"]["PortBindings"]
    assert published == {"3001/tcp": [{"HostIp": "127.0.0.1", "HostPort": "3001"}]}
    mounts = {m["Destination"]: m for m in ports["Mounts"]}
    assert mounts["/var/run/docker.sock"]["RW"] is False and mounts["/models"]["RW"] is False
    worker = json.loads(subprocess.run(["docker", "inspect", compose_cluster.container("worker", 1)],
                                       capture_output=True, text=True, check=True).stdout)[0]
    assert not worker["HostConfig"]["PortBindings"]
    # Not root: the image's user; the root with the socket's group (stats_source above being
    # "docker" shows that the group lets it read the socket).
    assert ports["Config"]["User"].startswith("app:") and worker["Config"]["User"] == "app"
    # The runtime image carries no wheel and no test tool: wheels/ is only bind-mounted while pip runs.
    code = ("import glob, importlib.util, json; print(json.dumps("
            "[p for d in ('/tmp', '/opt', '/app', '/home') for p in glob.glob(d + '/**/*.whl', recursive=True)]"
            " + [m for m in ('pytest', 'playwright') if importlib.util.find_spec(m)]))")
    leftovers = compose_cluster.compose("exec", "-T", "root", "python3", "-c", code).stdout
    assert json.loads(leftovers.strip().splitlines()[-1]) == []
    assert "/var/run/docker.sock" not in {m["Destination"] for m in worker["Mounts"]}
    assert worker["HostConfig"]["NanoCpus"] == 1_000_000_000


def test_streamed_greedy_reply_equals_hf_generate_and_stats_are_real(compose_cluster):
    seen: dict[str, dict] = {}
    stop = threading.Event()

    def poll_stats():
        while not stop.is_set():
            for c in requests.get(compose_cluster.url + "/api/stats", timeout=5).json()["containers"]:
                best = seen.setdefault(c["name"], {"cpu": 0.0, "mem": 0})
                best["cpu"] = max(best["cpu"], c["cpu_percent"])
                best["mem"] = max(best["mem"], c["mem_bytes"])
            time.sleep(0.5)

    poller = threading.Thread(target=poll_stats)
    poller.start()
    try:
        r, events = stream(compose_cluster.url)
        # a longer fixed-length reply so that every container is sampled while it works
        long_r, long_events = stream(compose_cluster.url, max_tokens=300, ignore_eos=True)
    finally:
        stop.set()
        poller.join()
    assert r.status_code == 200 and events[0][0] == "start" and events[-1][0] == "done"
    tokens = [d["id"] for e, d in events if e == "token"]
    assert tokens == events[-1][1]["token_ids"]
    assert tokens == hf_reference_in_container(compose_cluster, prompt_ids_in_container(compose_cluster))
    done = long_events[-1][1]
    assert done["metrics"]["completion_tokens"] == 300
    names = {compose_cluster.container("root"), compose_cluster.container("worker", 1),
             compose_cluster.container("worker", 2)}
    assert names <= set(seen), seen
    for name in names:
        assert seen[name]["cpu"] > 0 and seen[name]["mem"] > 0, (name, seen[name])
    stats = requests.get(compose_cluster.url + "/api/stats").json()
    row = next(c for c in stats["containers"] if c["name"] == compose_cluster.container("worker", 1))
    assert row["cpu_limit_cores"] == 1.0 and row["mem_limit_bytes"] == 2 * 1024**3
    containers = done["metrics"]["containers"]
    assert names <= set(containers) and containers[compose_cluster.container("worker", 1)]["cpu_max"] > 0


def test_stopped_worker_gives_a_clear_error_fast_and_recovers_when_started(compose_cluster):
    worker2 = compose_cluster.container("worker", 2)
    subprocess.run(["docker", "stop", worker2], check=True, capture_output=True)
    try:
        started = time.monotonic()
        r = requests.post(compose_cluster.url + "/api/generate", json={"prompt": PROMPT, "max_tokens": 5},
                          timeout=30)
        elapsed = time.monotonic() - started
        assert elapsed < 10, elapsed
        assert "worker-2" in r.text and (r.status_code >= 500 or "event: error" in r.text), r.text
        deadline = time.monotonic() + 10
        while requests.get(compose_cluster.url + "/api/cluster").json()["workers"][1]["status"] != "down":
            assert time.monotonic() < deadline
            time.sleep(0.5)
    finally:
        subprocess.run(["docker", "start", worker2], check=True, capture_output=True)
    compose_cluster.wait_healthy(120)
    r, events = stream(compose_cluster.url, max_tokens=5)
    assert events[-1][0] == "done" and events[-1][1]["metrics"]["completion_tokens"] >= 1


# Run inside a container: SIGKILL every child of PID 1 (with `init: true`, tini is PID 1 and its one
# child is the service's python; `docker exec` processes have no parent inside the container).
KILL_MAIN_PROCESS = ("import os, signal\n"
                     "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
                     "    ppid = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[1]\n"
                     "    if ppid == '1':\n"
                     "        os.kill(int(pid), signal.SIGKILL)\n"
                     "        print(pid)")


def inspect(container: str) -> dict:
    return json.loads(subprocess.run(["docker", "inspect", container], capture_output=True, text=True,
                                     check=True).stdout)[0]


def test_crashed_worker_is_restarted_by_its_policy_and_gets_its_slice_again(compose_cluster):
    """A real crash, unlike `docker stop` or `docker kill` (manual stops, which `unless-stopped`
    respects): the worker's python dies inside its container, the container exits, Docker restarts
    it, the root sees it down, hands the fresh process its slice, and replies work again."""
    worker2 = compose_cluster.container("worker", 2)
    before = inspect(worker2)
    pid1 = subprocess.run(["docker", "exec", worker2, "cat", "/proc/1/comm"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert pid1 == "docker-init"  # init: true
    killed = subprocess.run(["docker", "exec", worker2, "python3", "-c", KILL_MAIN_PROCESS],
                            capture_output=True, text=True).stdout.split()
    assert killed, "no process under PID 1 to kill"
    seen: list[str] = []
    deadline = time.monotonic() + 180
    while True:
        workers = requests.get(compose_cluster.url + "/api/cluster", timeout=5).json()["workers"]
        status = next(w["status"] for w in workers if w["name"] == "worker-2")
        if not seen or seen[-1] != status:
            seen.append(status)
        if "down" in seen and status == "ready":
            break
        assert time.monotonic() < deadline, f"worker-2 went {seen}, not down and back to ready"
        time.sleep(0.2)
    after = inspect(worker2)
    assert after["RestartCount"] == before["RestartCount"] + 1, "the restart policy did not restart it"
    assert after["State"]["Running"] and after["State"]["StartedAt"] != before["State"]["StartedAt"]
    r, events = stream(compose_cluster.url, max_tokens=5)
    assert events[-1][0] == "done" and events[-1][1]["metrics"]["completion_tokens"] >= 1, events[-1]


def test_uneven_devices_through_compose():
    """A 2-CPU worker and a 0.5-CPU / 1 GB one (an override file); layers follow the threads."""
    from .conftest import ComposeCluster

    uneven = ComposeCluster("ddllm-uneven", {"NODES": "1", "MODEL_PRESET": "tiny", "WORKER_CPUS": "2",
                                             "WORKER_MEMORY": "2g", "PLACEMENT": "threads", "WEB_PORT": "3002",
                                             "LATENCY_MIN_MS": "0", "LATENCY_MAX_MS": "0"})
    files = ["-f", "docker-compose.yml", "-f", "tests/compose.uneven.yml"]
    uneven.compose(*files, "down", "-v", check=False)
    try:
        uneven.compose(*files, "up", "-d")
        uneven.wait_healthy(300)
        info = requests.get(uneven.url + "/api/cluster").json()
        workers = {w["name"]: w for w in info["workers"]}
        assert [w["threads"] for w in info["workers"]] == [2, 1]
        assert [w["layers"] for w in info["workers"]] == [[0, 3], [3, 4]]  # 4 layers, 2:1
        assert workers["worker-2"]["memory_limit_bytes"] == 1024**3
        assert workers["worker-2"]["url"].endswith("worker-small-1:5100")
        out = requests.post(uneven.url + "/api/generate", json={"prompt": PROMPT, "max_tokens": 4, "stream": False},
                            timeout=60).json()
        assert [s["layers"] for s in out["metrics"]["stages"]] == [[0, 3], [3, 4]]
    finally:
        uneven.compose(*files, "down", "-v", check=False)
