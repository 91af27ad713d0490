"""A worker's own stats from its cgroup: fixture cgroup trees (v1 and v2) and a real container
measured beside `docker stats`."""
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from common import selfstats
from common.selfstats import CgroupPaths, Reading, SelfStats, cpu_percent, mem_used, parse_net_dev, parse_proc_stat

REPO = Path(__file__).resolve().parent.parent

PROC_STAT = """cpu  100 5 50 800 10 3 2 7 0 0
cpu0 50 2 25 400 5 1 1 3 0 0
cpu1 50 3 25 400 5 2 1 4 0 0
intr 12345
"""
NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 999999     10    0    0    0     0          0         0   999999      10    0    0    0     0       0          0
  eth0:  1000     10    0    0    0     0          0         0     2000      20    0    0    0     0       0          0
  eth1:   300      3    0    0    0     0          0         0       40       4    0    0    0     0       0          0
"""


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def cgroup_v1(root: Path, usage_ns: int, mem: int, inactive: int, limit: int, quota: int = 150000) -> None:
    write(root / "cpuacct" / "cpuacct.usage", f"{usage_ns}\n")
    write(root / "cpu" / "cpu.cfs_quota_us", f"{quota}\n")
    write(root / "cpu" / "cpu.cfs_period_us", "100000\n")
    write(root / "memory" / "memory.usage_in_bytes", f"{mem}\n")
    write(root / "memory" / "memory.limit_in_bytes", f"{limit}\n")
    write(root / "memory" / "memory.stat", f"cache 5000\ninactive_file 1\ntotal_inactive_file {inactive}\n")


def cgroup_v2(root: Path, usage_us: int, mem: int, inactive: int, limit: str, cpu_max: str = "max 100000") -> None:
    write(root / "cgroup.controllers", "cpu memory\n")
    write(root / "cpu.stat", f"usage_usec {usage_us}\nuser_usec 1\nsystem_usec 2\n")
    write(root / "cpu.max", cpu_max + "\n")
    write(root / "memory.current", f"{mem}\n")
    write(root / "memory.max", limit + "\n")
    write(root / "memory.stat", f"anon 10\nfile 20\ninactive_file {inactive}\n")


def proc_tree(root: Path, stat: str = PROC_STAT) -> Path:
    write(root / "stat", stat)
    write(root / "net" / "dev", NET_DEV)
    return root


def reading(cpu_ns, system_ns, cpus=2, usage=100, inactive=0):
    return Reading(cpu_ns, system_ns, cpus, usage, inactive, None, 0, 0)


def test_cpu_percent_is_dockers_formula():
    # 0.5 s of this cgroup's CPU in 2 s of host CPU time on 2 CPUs (1 s of wall clock): half a core
    assert cpu_percent(reading(1_000_000_000, 10_000_000_000), reading(1_500_000_000, 12_000_000_000)) == 50.0
    assert cpu_percent(reading(0, 0, cpus=4), reading(3_000_000_000, 4_000_000_000, cpus=4)) == 300.0
    assert cpu_percent(reading(5, 10), reading(5, 20)) == 0.0   # idle
    assert cpu_percent(reading(5, 10), reading(9, 10)) == 0.0   # no host time passed: no figure


def test_memory_leaves_out_inactive_page_cache_as_docker_does():
    assert mem_used(reading(0, 0, usage=1000, inactive=300)) == 700
    assert mem_used(reading(0, 0, usage=1000, inactive=1000)) == 1000  # docker's guard: not below zero


def test_proc_parsers():
    ticks, cpus = parse_proc_stat(PROC_STAT)
    assert (ticks, cpus) == (100 + 5 + 50 + 800 + 10 + 3 + 2, 2)  # steal (7) left out, as docker does
    assert parse_net_dev(NET_DEV) == (1300, 2040)                  # lo left out
    with pytest.raises(ValueError, match="no 'cpu' line"):
        parse_proc_stat("intr 1\n")


def test_cgroup_v1_tree(tmp_path):
    cgroup_v1(tmp_path / "cg", usage_ns=2_000_000_000, mem=500 * 2**20, inactive=100 * 2**20, limit=2**30)
    paths = CgroupPaths.find(tmp_path / "cg")
    assert paths.version == 1
    r = selfstats.read(paths, proc_tree(tmp_path / "proc"))
    assert (r.cpu_ns, r.mem_usage, r.mem_inactive_file, r.mem_limit) == (2_000_000_000, 500 * 2**20, 100 * 2**20, 2**30)
    assert r.system_ns == 970 * (1_000_000_000 // os.sysconf("SC_CLK_TCK"))
    assert (r.net_rx, r.net_tx) == (1300, 2040) and mem_used(r) == 400 * 2**20
    assert selfstats.cpu_limit_cores(paths) == 1.5


def test_cgroup_v1_without_limits(tmp_path):
    cgroup_v1(tmp_path / "cg", usage_ns=1, mem=10, inactive=0, limit=9223372036854771712, quota=-1)
    paths = CgroupPaths.find(tmp_path / "cg")
    assert selfstats.read(paths, proc_tree(tmp_path / "proc")).mem_limit is None
    assert selfstats.cpu_limit_cores(paths) is None


def test_cgroup_v2_tree(tmp_path):
    cgroup_v2(tmp_path / "cg", usage_us=3_000_000, mem=800, inactive=300, limit="4096", cpu_max="50000 100000")
    paths = CgroupPaths.find(tmp_path / "cg")
    assert paths.version == 2
    r = selfstats.read(paths, proc_tree(tmp_path / "proc"))
    assert (r.cpu_ns, r.mem_limit, mem_used(r)) == (3_000_000_000, 4096, 500)
    assert selfstats.cpu_limit_cores(paths) == 0.5
    cgroup_v2(tmp_path / "unlimited", usage_us=1, mem=1, inactive=0, limit="max")
    unlimited = CgroupPaths.find(tmp_path / "unlimited")
    assert selfstats.read(unlimited, tmp_path / "proc").mem_limit is None
    assert selfstats.cpu_limit_cores(unlimited) is None


def test_no_cgroup_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no cgroup v1 or v2 counters"):
        CgroupPaths.find(tmp_path)


def test_successive_samples_measure_the_interval_between_them(tmp_path, monkeypatch):
    """Two readings a fixture apart: the row is docker's, with the host the node's name."""
    cg, proc = tmp_path / "cg", proc_tree(tmp_path / "proc")
    cgroup_v1(cg, usage_ns=0, mem=300, inactive=100, limit=2**30, quota=100000)
    monkeypatch.setenv("NODE_HOSTNAME", "rpi5-a")
    meter = SelfStats(CgroupPaths.find(cg), min_interval_s=0.01, proc=proc)
    first = meter.sample()
    assert first["host"] == "rpi5-a" and first["cpu_percent"] == 0.0 and first["mem_bytes"] == 200
    # a quarter core for one host second on 2 CPUs: 0.25 s of cgroup time, 2 s of host time
    tick_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    write(cg / "cpuacct" / "cpuacct.usage", "250000000\n")
    write(proc / "stat", PROC_STAT.replace("cpu  100 5 50 800", f"cpu  100 5 50 {800 + 2_000_000_000 // tick_ns}"))
    time.sleep(0.02)
    second = meter.sample()
    assert second["cpu_percent"] == pytest.approx(25.0)
    assert second["cpu_limit_cores"] == 1.0 and second["cpu_limit_percent"] == pytest.approx(25.0)
    assert set(second) >= {"name", "role", "cpu_percent", "cpu_limit_cores", "cpu_limit_percent", "mem_bytes",
                           "mem_limit_bytes", "net_rx_bytes", "net_tx_bytes", "host"}
    assert meter.sample() is second  # sooner than min_interval_s: the same figures


def test_node_hostname_falls_back_to_the_container():
    assert selfstats.node_hostname({"NODE_HOSTNAME": " pi-3 "}) == "pi-3"
    assert selfstats.node_hostname({}) == socket.gethostname()


# -- the root merges what workers report with its own figures (backend/stats.py)

def test_reported_stats_merge_into_the_history_with_root_names_and_hosts(tmp_path):
    from backend.stats import ReportedSampler, StatsHistory

    history, reports = StatsHistory(), {}
    cg = tmp_path / "cg"
    cgroup_v1(cg, usage_ns=0, mem=300, inactive=100, limit=2**30, quota=100000)
    root_meter = SelfStats(CgroupPaths.find(cg), min_interval_s=0.0, role="root", proc=proc_tree(tmp_path / "proc"))
    sampler = ReportedSampler(lambda: reports, history, own=root_meter.sample)
    reports.update({
        "worker-2": {"name": "c0ffee", "role": "worker", "cpu_percent": 80.0, "cpu_limit_cores": 1.0,
                     "mem_bytes": 700, "mem_limit_bytes": 2**30, "net_rx_bytes": 5, "net_tx_bytes": 6, "host": "rpi5-b"},
        "worker-1": {"cpu_percent": 20.0, "cpu_limit_cores": None, "mem_bytes": 100, "mem_limit_bytes": None,
                     "host": "rpi5-a"},
        "worker-3": {"cpu_percent": "lots", "mem_bytes": 1},  # malformed: left out, the others kept
    })
    sampler.sample_once(t=1000.0)
    rows = {r["name"]: r for r in history.latest()}
    assert [r["name"] for r in history.latest()] == ["root", "worker-1", "worker-2"]
    assert rows["root"]["role"] == "root" and rows["root"]["mem_bytes"] == 200 and rows["root"]["host"]
    assert rows["worker-2"] | {"time": 0} == {
        "name": "worker-2", "role": "worker", "cpu_percent": 80.0, "cpu_limit_cores": 1.0, "cpu_limit_percent": 80.0,
        "mem_bytes": 700, "mem_limit_bytes": 2**30, "net_rx_bytes": 5, "net_tx_bytes": 6, "host": "rpi5-b", "time": 0}
    assert rows["worker-1"]["host"] == "rpi5-a" and rows["worker-1"]["net_rx_bytes"] == 0
    reports["worker-1"] = {**reports["worker-1"], "cpu_percent": 60.0}
    sampler.sample_once(t=1001.0)
    window = history.window(999.5, 1001.5)
    assert window["worker-1"]["cpu_max"] == 60.0 and window["worker-1"]["cpu_mean"] == 40.0
    assert "worker-3" not in window


def test_reported_row_refuses_malformed_figures():
    from backend.stats import reported_row

    good = {"cpu_percent": 1.0, "mem_bytes": 10}
    assert reported_row("worker-1", "worker", good)["host"] is None
    for bad in ({**good, "cpu_percent": -1}, {**good, "mem_bytes": 1.5}, {**good, "mem_bytes": True},
                {**good, "mem_limit_bytes": "8g"}, {"mem_bytes": 10}):
        with pytest.raises(ValueError):
            reported_row("worker-1", "worker", bad)
    with pytest.raises(ValueError, match="must be an object"):
        reported_row("worker-1", "worker", ["not", "a", "dict"])


# -- the real thing: a container that burns CPU (capped at half a core) and holds memory, measured by
# itself and by the engine (`docker stats`) over the same 8 s window

BURNER = """
import json, sys, time
from common.selfstats import container_stats
hold = bytearray(300 * 2**20)           # 300 MiB, touched so it is resident
for i in range(0, len(hold), 4096):
    hold[i] = 1
container_stats()
for window_s in (2.0, float(sys.argv[1])):
    end = time.monotonic() + window_s
    while time.monotonic() < end:
        sum(range(20000))               # CPU-bound: the quota (--cpus 0.5) caps it
    print(json.dumps(container_stats()), flush=True)  # the second: CPU over the last window_s
    time.sleep(0.5)                     # idle while the test asks the engine
time.sleep(5)
"""


def engine_stats(container: str) -> dict:
    """The engine's counters now (one_shot: no waiting for a second sample)."""
    import docker
    return docker.from_env().api.stats(container, stream=False, one_shot=True)


@pytest.mark.docker
def test_selfstats_agree_with_docker_stats_of_a_real_container():
    """The container's own figures against docker's formula on the engine's counters, read right
    after each of its two readings (some ms apart on an 8 s window): CPU within 3 points, memory
    within 2 % + 4 MiB (the burner allocates nothing between the readings)."""
    from backend.stats import docker_cpu_percent, docker_mem_used

    name = f"ddllm-selfstats-{os.getpid()}"
    proc = subprocess.Popen(
        ["docker", "run", "--rm", "--name", name, "--cpus", "0.5", "--memory", "1g", "-e", "NODE_HOSTNAME=node-a",
         "-v", f"{REPO}:{REPO}:ro", "-w", str(REPO), "-e", "PYTHONDONTWRITEBYTECODE=1",
         "docker-distributed-llm:dev", "python3", "-c", BURNER, "8"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        rows, engine = [], []
        for line in proc.stdout:
            engine.append(engine_stats(name))
            rows.append(json.loads(line))
            if len(rows) == 2:
                break
        assert len(rows) == 2, proc.stderr.read()
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        proc.wait(timeout=30)
    ours = rows[1]
    theirs = docker_cpu_percent({"cpu_stats": engine[1]["cpu_stats"], "precpu_stats": engine[0]["cpu_stats"]})
    assert 5 < theirs < 55, theirs                   # it worked, within its quota (the machine is shared)
    assert abs(ours["cpu_percent"] - theirs) < 3, (ours, theirs)
    mem = docker_mem_used(engine[1])
    assert abs(ours["mem_bytes"] - mem) < 0.02 * mem + 4 * 2**20, (ours, mem)
    assert ours["mem_bytes"] > 300 * 2**20
    assert ours["mem_limit_bytes"] == engine[1]["memory_stats"]["limit"] == 2**30
    assert ours["cpu_limit_cores"] == 0.5 and ours["host"] == "node-a"
