"""Playing a slower device (DEVICES): the stretch arithmetic, the device a worker plays and its factor,
a device faster than this host refused, an unknown name refused, and real local clusters whose
workers play a Raspberry Pi: stretch in the metrics, tokens still equal to Hugging Face generate."""
import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest
import requests

from backend.local import REPO, LocalCluster, free_port_pair
from common.profiles import DeviceProfile, Figure, ProfileError
from common.stretch import Stretch, sleep_plan, stretch
from worker.played_device import DeviceRefused, PlayedDevice, StretchClock, play

from .conftest import hf_greedy, start_cluster

PROMPT = "The quick brown fox jumps over the lazy dog"
N_TOKENS = 12
SOURCE = "a test's own figure"


def profile(key: str, gbps: float) -> DeviceProfile:
    return DeviceProfile(key=key, name=f"{key} (test)", cores=4, memory_bytes=8 << 30,
                         memory_bandwidth_gbps=Figure(gbps, SOURCE),
                         matvec_gbps={"bfloat16": Figure(gbps / 2, SOURCE)})


# --- the arithmetic (common/stretch.py): binary-exact values, so == holds --------------------------------

def test_an_unshared_compute_sleeps_the_rest_of_the_devices_time():
    # 0.25 s of one thread's CPU in 0.25 s of wall time, on a device 3x slower: 0.5 s more
    assert stretch(0.25, 0.25, threads=1, factor=3.0) == Stretch(target_s=0.75, sleep_s=0.5, shortfall_s=0.0)


def test_time_spent_waiting_for_a_shared_core_is_not_stretched():
    # the same work waited 0.25 s for a core (wall 0.5): the target is still 3 x the CPU time
    assert stretch(0.5, 0.25, threads=1, factor=3.0) == Stretch(0.75, 0.25, 0.0)


def test_several_threads_count_their_cpu_time_once_per_thread():
    # two threads busy 0.25 s each: 0.5 s of CPU, the compute took 0.25 s with its cores to itself
    assert stretch(0.25, 0.5, threads=2, factor=3.0) == Stretch(0.75, 0.5, 0.0)


def test_a_host_too_slow_to_keep_up_reports_its_shortfall_and_sleeps_nothing():
    # 1.25 s of wall for 0.25 s of CPU (four others on the core): the device needs 0.75 s
    assert stretch(1.25, 0.25, threads=1, factor=3.0) == Stretch(0.75, 0.0, 0.5)


def test_factor_one_on_an_unshared_compute_adds_nothing():
    assert stretch(0.5, 0.5, threads=1, factor=1.0) == Stretch(0.5, 0.0, 0.0)


@pytest.mark.parametrize("args,message", [
    ((0.1, 0.1, 0, 2.0), "threads"), ((0.1, 0.1, 1, 0.0), "factor"), ((-0.1, 0.1, 1, 2.0), "negative"),
    ((0.1, -0.1, 1, 2.0), "negative"),
])
def test_nonsense_inputs_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        stretch(*args)


def test_an_oversleep_is_taken_off_the_next_sleeps():
    assert sleep_plan(0.5, 0.0) == (0.5, 0.0)
    assert sleep_plan(0.5, 0.125) == (0.375, 0.0)      # owed 0.125 s: sleep that much less
    assert sleep_plan(0.125, 0.5) == (0.0, 0.375)     # owed more than this sleep: skip it, still owe the rest
    with pytest.raises(ValueError):
        sleep_plan(-0.5, 0.0)


# --- the records and the reply's metrics carry the stretch ------------------------------------------------

def test_the_records_carry_stretch_and_shortfall_both_ways():
    from common.protocol import ProtocolError, StageRecord
    from common.tensor_protocol import TensorRecord
    stage = StageRecord("worker-1", (0, 2), recv_ns=10, sent_ns=20, delay_ms=1.5, compute_ms=12.0, bytes_in=100,
                        stretch_ms=8.5, shortfall_ms=0.25)
    tensor = TensorRecord("worker-2", 1, 10, 20, 0.0, 12.0, 8, 3.0, 0.5, 100, stretch_ms=8.5, shortfall_ms=0.25)
    for record in (stage, tensor):
        assert type(record).from_dict(record.to_dict()) == record
    plain = {k: v for k, v in stage.to_dict().items() if k not in ("stretch_ms", "shortfall_ms")}
    assert StageRecord.from_dict(plain).stretch_ms == 0.0  # a worker that plays no device may leave them out
    with pytest.raises(ProtocolError, match="stage.stretch_ms"):
        StageRecord.from_dict({**stage.to_dict(), "stretch_ms": -1})
    with pytest.raises(ProtocolError, match="tensor_record.shortfall_ms"):
        TensorRecord.from_dict({"tensor_record": {**tensor.to_dict()["tensor_record"], "shortfall_ms": "x"}})


def test_the_reply_sums_each_workers_stretch_inside_its_compute():
    from backend.metrics import StageTotals, step_timings
    from common.protocol import StageRecord
    ms = 1_000_000
    records = (StageRecord("worker-1", (0, 2), 1 * ms, 17 * ms, 0.0, compute_ms=12.0, bytes_in=1, stretch_ms=9.0),
               StageRecord("worker-2", (2, 4), 18 * ms, 30 * ms, 0.0, compute_ms=6.0, bytes_in=1, stretch_ms=0.0,
                           shortfall_ms=1.5))
    step = step_timings(0, records, 31 * ms, 0.0, 1, 1)
    totals = StageTotals(["worker-1", "worker-2"], [[0, 2], [2, 4]])
    totals.add_step(step)
    totals.add_step(step)
    summary = totals.summary()
    assert [(s["compute_ms"], s["stretch_ms"], s["shortfall_ms"]) for s in summary["stages"]] == \
        [(24.0, 18.0, 0.0), (12.0, 0.0, 3.0)]
    assert (summary["compute_ms"], summary["stretch_ms"], summary["shortfall_ms"]) == (36.0, 18.0, 3.0)


def test_the_bench_compares_the_played_compute_with_unshared_compute_times_the_factor():
    from bench.stretch import stretch_error
    # unshared 10 ms x factor 3.5 = 35 predicted; measured 36.75 (real 12.5 + stretch 24.25): +5 %
    err = stretch_error(unshared_ms=10.0, factor=3.5, compute_ms=36.75, stretch_ms=24.25)
    assert err == pytest.approx({"predicted_ms": 35.0, "measured_ms": 36.75, "error_pct": 5.0,
                                 "wall_based_error_pct": 25.0, "sharing_slowdown": 1.25}, rel=1e-12)



def test_the_bench_averages_each_workers_error_over_both_orders_of_start():
    from bench.stretch import both_orders

    def run(errors, shortfall):
        return {"case": "shared", "rows": [{"error_pct": e, "wall_based_error_pct": 4 * e, "shortfall_ms": shortfall,
                                            "stretch_ms": 10.0, "factor": 3.5} for e in errors]}
    out = both_orders([run([8.0, 6.0], 1.0), run([-2.0, -4.0], 0.0)])
    assert out["error_pct_per_worker"] == [3.0, 1.0] and out["mean_error_pct"] == 2.0
    assert (out["max_abs_error_pct"], out["max_abs_wall_based_error_pct"]) == (3.0, 12.0)
    assert (out["shortfall_ms_per_token"], out["stretch_ms_per_token"]) == (1.0, 20.0)

# --- the device a worker plays (worker/played_device.py) -------------------------------------------------

def test_the_factor_is_the_hosts_measured_speed_over_the_devices():
    slow = profile("slow", 4.0)
    played = play("slow", "float32", 1, lookup=lambda name: slow, measure=lambda dtype, threads: 12.0)
    assert played == PlayedDevice("slow", "slow (test)", "float32", 1, 12.0, 4.0, "memory bandwidth")
    assert played.factor == 3.0
    bf16 = play("slow", "bfloat16", 2, lookup=lambda name: slow, measure=lambda dtype, threads: 6.0 * threads)
    assert (bf16.device_gbps, bf16.figure, bf16.factor) == (2.0, "matvec bfloat16", 6.0)  # the dtype's own figure
    assert play("host", "float32", 1, lookup=lambda name: slow, measure=lambda d, t: 1 / 0) is None  # nothing measured


def test_a_device_faster_than_the_host_is_refused_with_both_figures():
    fast = profile("fast", 40.0)
    with pytest.raises(DeviceRefused, match=r"cannot play fast \(float32\): the device decodes 40 GB/s "
                                            r"\(memory bandwidth\), faster than the 12 GB/s this host gives a "
                                            r"worker of 1 thread"):
        play("fast", "float32", 1, lookup=lambda name: fast, measure=lambda dtype, threads: 12.0)


def test_an_unknown_device_names_the_catalog():
    with pytest.raises(ProfileError, match=r"unknown device 'nope': profiles/devices.yaml has .*rpi5"):
        play("nope", "float32", 1)


def test_a_measurement_that_waited_for_its_core_is_taken_again():
    from worker.played_device import quiet_measurement
    calls = []

    def disturbed():  # its wall time passes without its CPU time: another process had the core
        calls.append(len(calls))
        time.sleep(0.02)
        return 7.0 + len(calls)
    figure = quiet_measurement(disturbed, threads=1, budget_s=0.3, pause_s=0.01)
    assert len(calls) > 1 and figure in [7.0 + n for n in range(1, len(calls) + 1)]

    def undisturbed():  # all CPU: taken at once (unless this test itself waits for a core)
        calls.append(len(calls))
        deadline = time.thread_time() + 0.05
        while time.thread_time() < deadline:
            pass
        return 9.0
    assert quiet_measurement(undisturbed, threads=1, budget_s=5) == 9.0


def test_a_host_clock_never_sleeps():
    clock = StretchClock(None, threads=1)
    assert clock.finish(clock.start()) == (0.0, 0.0) and clock.describe() == {"device": "host"}


# --- the profile clock: each compute toward the cost model's time for its work ------------------------------

def _slow_cost(tiny_model, share=None):
    """The tiny model's layers on a device of 0.01 GB/s: 18.4 ms a layer in float32, long enough to sleep."""
    from common.cost_model import LayerShape
    from worker.modelled import SliceCost
    shape = LayerShape.from_config(json.loads((tiny_model / "config.json").read_text()))
    return SliceCost(profile("slow", 0.01), "float32", shape, shape.n_layers if share else 2, share)


def test_the_profile_clock_sleeps_each_compute_to_its_modelled_time(tiny_model):
    cost = _slow_cost(tiny_model)
    played = PlayedDevice("slow", "slow (test)", "float32", 1, host_gbps=10.0, device_gbps=0.01, figure="test")
    clock = StretchClock(played, threads=1, cost=cost)
    target_ms = cost.step_s(1, 5) * 1e3
    assert target_ms == pytest.approx(2 * 64 * (2 * 64 + 2 * 32 + 3 * 176) * 4 / 0.01e9 * 1e3, rel=1e-2)  # + KV
    started = time.perf_counter()
    slept, short = clock.finish(clock.start(), tokens=1, start_pos=5)
    assert short == 0.0 and slept >= 0.9 * target_ms and time.perf_counter() - started >= 0.9 * target_ms / 1e3
    assert clock.describe()["clock"] == "profile"
    with pytest.raises(ValueError, match="needs the compute's tokens"):
        clock.finish(clock.start())


def test_the_profile_clock_reports_a_compute_longer_than_its_target_as_shortfall(tiny_model):
    cost = _slow_cost(tiny_model)
    played = PlayedDevice("slow", "slow (test)", "float32", 1, host_gbps=10.0, device_gbps=0.01, figure="test")
    clock = StretchClock(played, threads=1, cost=cost)
    target_s = cost.step_s(1, 0)
    started = clock.start()
    time.sleep(target_s + 0.03)  # a compute that overran by 30 ms (waiting counts: the profile clock is wall time)
    slept, short = clock.finish(started, tokens=1, start_pos=0)
    assert slept == 0.0 and short >= 25.0


def test_a_tensor_steps_segments_add_up_to_the_step(tiny_model):
    from common.tensor_split import tensor_shares
    share = tensor_shares(4, 2, 176, 2)[1]  # the tiny model's heads, KV heads and MLP width over 2 ranks
    cost = _slow_cost(tiny_model, share)
    segments = [cost.segment_s(k, 1, 3) for k in range(2 * cost.n_layers + 1)]
    assert sum(segments) == pytest.approx(cost.step_s(1, 3)) and segments[-1] == 0.0
    attention, mlp = segments[0], segments[1]
    q, kv, f = share.n_q_heads * 16, share.n_kv_heads * 16, share.ffn_width
    assert attention / mlp == pytest.approx(2 * (q + kv) / (3 * f))
    with pytest.raises(ValueError, match="outside"):
        cost.segment_s(2 * cost.n_layers + 1, 1, 3)


def test_play_clock_is_profile_or_cpu():
    from common.config import WorkerSettings
    assert WorkerSettings.from_env({}).play_clock == "profile"
    assert WorkerSettings.from_env({"PLAY_CLOCK": "CPU"}).play_clock == "cpu"
    with pytest.raises(ValueError, match="PLAY_CLOCK must be one of profile, cpu, not 'wall'"):
        WorkerSettings.from_env({"PLAY_CLOCK": "wall"})


# --- the worker: a device it cannot play fails its load (a real measurement of this host) ------------------

def _load_body(model, device: str) -> dict:
    return {"name": "worker-1", "index": 0, "start": 0, "end": 2, "dtype": "float32", "model_path": str(model),
            "next_address": "127.0.0.1:9", "device": device}


def fast_worker_app(model):
    """A worker whose catalog gives every device of profiles/devices.yaml a million GB/s: faster than any host."""
    from common.config import WorkerSettings
    from common.profiles import device
    from worker.app import create_app

    def lookup(name):
        return profile(device(name).key, 1e6)  # an unknown name: the real catalog's ProfileError
    settings = WorkerSettings(threads=1, model_roots=(str(model.parent),), max_frame_bytes=1 << 20)
    return create_app(settings, profiles=lookup)


REFUSED = (r"cannot play rpi5 \(float32\): the device decodes 1e\+06 GB/s \(memory bandwidth\), faster than the "
           r"[0-9.]+ GB/s this host gives a worker of 1 thread\(s\)")


def test_the_worker_refuses_a_device_faster_than_this_host(tiny_model):
    client = fast_worker_app(tiny_model).test_client()
    r = client.post("/v1/load", json=_load_body(tiny_model, "nope"))  # an unknown name: at once
    assert r.status_code == 400 and "unknown device 'nope'" in r.json["error"]["message"]
    r = client.post("/v1/load", json=_load_body(tiny_model, "rpi5"))  # the speed: measured once the slice is in
    assert r.status_code == 202, r.json
    deadline = time.monotonic() + 120
    while (health := client.get("/healthz").json)["status"] == "loading":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert health["status"] == "error" and re.match("DeviceRefused: " + REFUSED, health["error"]), health
    assert client.get("/v1/info").json["plays"] == {"device": "host"}  # nothing is played


def test_a_root_turns_the_refusal_into_a_start_up_error_naming_the_worker(tiny_model, logs_dir):
    """A real root process, and a worker like the one above behind a real HTTP server in this process."""
    from werkzeug.serving import make_server

    from common.health import wait_healthy
    port = free_port_pair()
    server = make_server("127.0.0.1", port, fast_worker_app(tiny_model), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    root_port = free_port_pair()
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOST": "127.0.0.1", "PORT": str(root_port),
           "WORKER_URLS": f"http://127.0.0.1:{port}", "MODEL_PATH": str(tiny_model), "STATS_SOURCE": "local",
           "DEVICES": "rpi5", "LATENCY_MIN_MS": "0", "LATENCY_MAX_MS": "0", "THREADS": "1"}
    with open(logs_dir / "devices-refused-root.log", "wb") as log:
        root = subprocess.Popen([sys.executable, "-m", "backend"], env=env, cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with pytest.raises(RuntimeError, match="start-up failed: worker-1: DeviceRefused: " + REFUSED):
            wait_healthy(f"http://127.0.0.1:{root_port}", 120, interval_s=0.2)
    finally:
        root.kill()
        root.wait()
        server.shutdown()


# --- unknown names: refused before anything runs ------------------------------------------------------------

def test_an_unknown_device_or_network_is_refused_by_the_local_cluster(tiny_model):
    with pytest.raises(ProfileError, match=r"unknown device 'nope': profiles/devices.yaml has .*rpi5"):
        LocalCluster(str(tiny_model), workers=2, devices="rpi5,nope")
    with pytest.raises(ProfileError, match=r"names 3 devices for 2 workers"):
        LocalCluster(str(tiny_model), workers=2, devices="rpi5,rpi5,rpi5")
    with pytest.raises(ProfileError, match=r"unknown network 'carrier-pigeon'"):
        LocalCluster(str(tiny_model), workers=2, network="carrier-pigeon")


def test_an_unknown_device_stops_the_root_and_the_command_line_with_the_catalog(tiny_model):
    env = {**os.environ, "PYTHONPATH": str(REPO), "DEVICES": "nope", "WORKER_URLS": "http://127.0.0.1:9",
           "MODEL_PATH": str(tiny_model)}
    root = subprocess.run([sys.executable, "-m", "backend"], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    catalog = "unknown device 'nope': profiles/devices.yaml has .*rpi5"
    assert root.returncode != 0 and re.search(catalog, root.stderr)
    cli = subprocess.run([sys.executable, "-m", "backend.local", "--model", str(tiny_model), "--devices", "nope"],
                         env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert cli.returncode == 2 and re.search("error: " + catalog, cli.stderr)


# --- real clusters whose workers play a Raspberry Pi ---------------------------------------------------------

@pytest.fixture(scope="module")
def reference(tiny_model):
    from transformers import AutoTokenizer
    ids = AutoTokenizer.from_pretrained(str(tiny_model))(PROMPT).input_ids
    return hf_greedy(tiny_model, ids, N_TOKENS)


# rpi4b, one name per worker in tensor mode: a Pi 5 (11.6 GB/s) is within 2x of what this host gives a worker
# in float32 (19.5 GB/s quiet, below 11.6 on a loaded machine: refused, as it should be, but not a test's subject).
# The cpu clock stretches the tiny model's real compute by the factor. On the profile clock its layers
# (184 KB each) take a Pi 4B tens of microseconds, less than this host's Python spends on them: every
# compute overruns its target, which is reported as shortfall, never slept away or hidden.
@pytest.mark.parametrize("parallelism,devices,clock", [("pipeline", "rpi4b", "cpu"), ("tensor", "rpi4b,rpi4b", "cpu"),
                                                       ("tensor", "rpi4b", "profile")])
def test_workers_playing_a_pi_stretch_their_compute_and_keep_the_tokens(tiny_model, logs_dir, reference,
                                                                        parallelism, devices, clock):
    with start_cluster(tiny_model, logs_dir, workers=2, parallelism=parallelism, devices=devices,
                       network="gigabit-ethernet", extra_env={"PLAY_CLOCK": clock}) as cluster:
        r = requests.post(cluster.url + "/api/generate", json={"prompt": PROMPT, "max_tokens": N_TOKENS,
                                                               "stream": False}, timeout=120)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["token_ids"] == reference
        m = out["metrics"]
        if clock == "cpu":
            assert m["stretch_ms"] > 0 and m["stretch_ms"] == pytest.approx(sum(s["stretch_ms"] for s in m["stages"]))
            for s in m["stages"]:
                assert s["compute_ms"] > s["stretch_ms"] > 0 and s["shortfall_ms"] >= 0
        else:
            assert m["shortfall_ms"] > 0
            for s in m["stages"]:
                assert s["shortfall_ms"] > 0 and s["compute_ms"] >= s["shortfall_ms"] + s["stretch_ms"]
        names = devices.split(",") * (2 // len(devices.split(",")))
        workers = requests.get(cluster.url + "/api/cluster").json()["workers"]
        for name, w in zip(names, workers):
            plays = w["plays"]
            assert plays["device"] == name and plays["factor"] >= 1 and plays["clock"] == clock
            assert plays["factor"] == pytest.approx(plays["host_gbps"] / plays["device_gbps"], rel=1e-2)
        for i, name in enumerate(names):
            assert cluster.worker_info(i)["plays"]["device"] == name
