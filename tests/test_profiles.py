"""The device and network catalogs (profiles/*.yaml, common/profiles.py) and this host's speed figures.

All but the last test need no torch: the root and the settings read the catalogs without it.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import yaml

from common.latency import LinkModel
from common.profiles import (HOST, MATMUL_DTYPES, MODELLED_WEIGHT_BYTES, ProfileError, device, devices,
                             devices_for, network, networks)

REQUIRED_DEVICES = {"host", "rpi4b", "rpi5", "jetson-orin-nano", "intel-n100", "snapdragon-8-gen-2"}
REQUIRED_NETWORKS = {"gigabit-ethernet", "wifi-5", "wifi-6", "4g", "5g", "wan"}

GOOD_DEVICE = {"name": "Test board", "cores": 4, "memory_gb": 8,
               "memory_bandwidth_gbps": {"value": 10.0, "source": "a benchmark page"},
               "matvec_gbps": {"q40": {"value": 8.0, "source": "a README", "note": "bytes x tokens/s"}},
               "matmul_gflops": {"float64": {"value": 30.0, "source": "an HPL run"}}}
GOOD_NETWORK = {"name": "Test link", "distribution": "normal", "min_ms": 1.0, "max_ms": 9.0, "mean_ms": 4.0,
                "std_ms": 1.5, "bandwidth_mbps": 100.0, "loss": 0.01, "rto_ms": 150.0, "source": "a ping write-up"}


def write_catalog(directory: Path, devices_: dict | None = None, networks_: dict | None = None) -> Path:
    (directory / "devices.yaml").write_text(yaml.safe_dump({"devices": devices_ or {"ok": GOOD_DEVICE}}))
    (directory / "networks.yaml").write_text(yaml.safe_dump({"networks": networks_ or {"ok": GOOD_NETWORK}}))
    return directory


DELETE = object()  # with_changes: remove the field


def with_changes(entry: dict, path: tuple, value) -> dict:
    """A deep copy of entry with the field at `path` set to value (or removed when value is DELETE)."""
    out = copy.deepcopy(entry)
    node = out
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


# --- the shipped catalogs ---------------------------------------------------------------------------

def test_shipped_devices_load_with_sourced_figures():
    catalog = devices()
    assert REQUIRED_DEVICES <= set(catalog)
    for key, profile in catalog.items():
        assert profile.key == key and profile.name and profile.cores >= 1 and profile.memory_bytes > 0
        figures = [profile.memory_bandwidth_gbps, *profile.matvec_gbps.values(), *profile.matmul_gflops.values()]
        for figure in figures:
            assert figure.value > 0 and math.isfinite(figure.value), key
            assert figure.source.strip(), f"{key}: a figure without a source"


def test_shipped_host_has_every_measured_figure():
    host = device(HOST)
    assert host.cores == 1
    assert set(host.matvec_gbps) == {"float32", "bfloat16", "int8"}
    assert set(host.matmul_gflops) == {"float32", "bfloat16", "int8"}
    assert all("common.host_speed" in f.source for f in host.matvec_gbps.values())


def test_shipped_pis_keep_the_distributed_llama_q40_figures():
    # bench.validate calibrates on these: 3.716 GB of Q40 weights per token over the README's ms/token
    assert device("rpi5").matvec_gbps["q40"].value == 8.43
    assert device("rpi4b").matvec_gbps["q40"].value == 2.83
    assert "3bbc9f0" in device("rpi5").matvec_gbps["q40"].source


def test_shipped_networks_load_with_sources():
    catalog = networks()
    assert REQUIRED_NETWORKS <= set(catalog)
    for key, profile in catalog.items():
        link = profile.link()
        assert profile.source.strip() and profile.name, key
        assert link.bandwidth_mbps > 0, f"{key}: every shipped network names its achieved throughput"
        assert 0 <= link.min_ms <= link.max_ms, key


# --- malformed catalogs are refused, naming the entry ------------------------------------------------

@pytest.mark.parametrize("path,value,message", [
    (("speed",), 3, "unknown fields ['speed']"),
    (("memory_bandwidth_gbps", "source"), DELETE, "memory_bandwidth_gbps must be {value"),
    (("memory_bandwidth_gbps", "source"), "  ", "source must be a non-empty text"),
    (("memory_bandwidth_gbps", "value"), -1.0, "must be a positive number"),
    (("memory_bandwidth_gbps", "value"), "fast", "must be a positive number"),
    (("memory_bandwidth_gbps", "value"), True, "must be a positive number"),
    (("memory_bandwidth_gbps", "value"), float("nan"), "must be a positive number"),
    (("memory_bandwidth_gbps", "unit"), "GB/s", "unknown fields ['unit']"),
    (("matvec_gbps", "fp8"), {"value": 1.0, "source": "x"}, "matvec_gbps.fp8: dtype must be one of"),
    (("matvec_gbps", "float64"), {"value": 1.0, "source": "x"}, "matvec_gbps.float64: dtype must be one of"),
    (("matmul_gflops", "float64", "source"), DELETE, "matmul_gflops.float64 must be {value"),
    (("cores",), 0, "cores must be a whole number >= 1"),
    (("cores",), 2.5, "cores must be a whole number >= 1"),
    (("memory_gb",), -8, "memory_gb must be a positive number"),
    (("memory_bandwidth_gbps",), DELETE, "lacks memory_bandwidth_gbps"),
    (("name",), "", "name must be a non-empty text"),
])
def test_malformed_device_is_refused_naming_the_entry(tmp_path, path, value, message):
    write_catalog(tmp_path, devices_={"ok": GOOD_DEVICE, "bad-board": with_changes(GOOD_DEVICE, path, value)})
    with pytest.raises(ProfileError) as err:
        devices(tmp_path)
    assert "devices.bad-board" in str(err.value) and message in str(err.value)


@pytest.mark.parametrize("path,value,message", [
    (("jitter",), 3, "unknown fields ['jitter']"),
    (("source",), DELETE, "needs a name and a source"),
    (("distribution",), "gamma", "distribution must be one of uniform, normal, pareto"),
    (("min_ms",), -1.0, "min_ms must be a number >= 0"),
    (("bandwidth_mbps",), "fast", "bandwidth_mbps must be a number >= 0"),
    (("loss",), 1.5, "loss must be in [0, 1)"),
    (("max_ms",), 0.5, "latency range"),
])
def test_malformed_network_is_refused_naming_the_entry(tmp_path, path, value, message):
    write_catalog(tmp_path, networks_={"ok": GOOD_NETWORK, "bad-link": with_changes(GOOD_NETWORK, path, value)})
    with pytest.raises(ProfileError) as err:
        networks(tmp_path)
    assert "networks.bad-link" in str(err.value) and message in str(err.value)


def test_a_catalog_with_another_top_level_key_is_refused(tmp_path):
    (tmp_path / "devices.yaml").write_text(yaml.safe_dump({"devices": {"ok": GOOD_DEVICE}, "device": {}}))
    with pytest.raises(ProfileError, match="unknown top-level keys"):
        devices(tmp_path)


def test_unreadable_yaml_is_refused(tmp_path):
    (tmp_path / "devices.yaml").write_text("devices: [unclosed\n")
    with pytest.raises(ProfileError, match="cannot read"):
        devices(tmp_path)


def test_float64_is_a_matmul_dtype_only():
    assert "float64" in MATMUL_DTYPES and "float64" not in MODELLED_WEIGHT_BYTES


# --- names ---------------------------------------------------------------------------------------------

def test_unknown_device_lists_the_catalog():
    with pytest.raises(ProfileError) as err:
        device("rpi9")
    assert "unknown device 'rpi9'" in str(err.value)
    assert all(name in str(err.value) for name in REQUIRED_DEVICES)


def test_unknown_network_lists_the_catalog():
    with pytest.raises(ProfileError) as err:
        network("carrier-pigeon")
    assert "unknown network 'carrier-pigeon'" in str(err.value)
    assert all(name in str(err.value) for name in REQUIRED_NETWORKS)


def test_devices_for_one_name_for_all_one_per_worker_or_none():
    assert devices_for((), 3) == [HOST, HOST, HOST]
    assert devices_for(("rpi5",), 3) == ["rpi5", "rpi5", "rpi5"]
    assert devices_for(("rpi5", "rpi5", "rpi4b", "rpi4b"), 4) == ["rpi5", "rpi5", "rpi4b", "rpi4b"]
    assert devices_for(("host", "rpi4b"), 2) == ["host", "rpi4b"]


def test_devices_for_a_wrong_count_is_refused():
    with pytest.raises(ProfileError, match="names 2 devices for 3 workers"):
        devices_for(("rpi5", "rpi4b"), 3)


def test_devices_for_an_unknown_name_is_refused():
    with pytest.raises(ProfileError, match="unknown device 'rpi9'"):
        devices_for(("rpi5", "rpi9"), 2)


def test_network_link_is_the_link_model_of_the_file(tmp_path):
    write_catalog(tmp_path)
    expected = LinkModel(min_ms=1.0, max_ms=9.0, distribution="normal", mean_ms=4.0, std_ms=1.5,
                         bandwidth_mbps=100.0, loss=0.01, rto_ms=150.0)
    profile = network("ok", tmp_path)
    assert profile.link() == expected
    assert (profile.name, profile.source) == ("Test link", "a ping write-up")


def test_device_figures_keep_source_and_note(tmp_path):
    write_catalog(tmp_path)
    board = device("ok", tmp_path)
    assert board.decode_gbps("q40") == (8.0, "matvec q40")
    assert board.decode_gbps("float32") == (10.0, "memory bandwidth")
    assert board.matvec_gbps["q40"].note == "bytes x tokens/s"
    assert board.memory_bytes == 8 * 1024 ** 3


# --- this host's figures (torch) ------------------------------------------------------------------------

def test_host_speed_returns_positive_finite_figures():
    torch = pytest.importorskip("torch")
    from common import host_speed
    before = torch.get_num_threads()
    figures = [host_speed.measure_decode_gbps(d, 1, matrix_bytes=1 << 20, repeats=2)
               for d in ("float32", "bfloat16", "int8")]
    figures.append(host_speed.measure_memory_gbps(1, nbytes=1 << 20, repeats=2))
    figures += [host_speed.measure_matmul_gflops(d, 1, size=64, repeats=2) for d in ("float32", "bfloat16", "int8")]
    assert all(f > 0 and math.isfinite(f) for f in figures), figures
    assert torch.get_num_threads() == before  # the caller's thread count is put back
    for modelled_only in ("q40", "fp8"):
        with pytest.raises(ValueError, match="dtype must be one of float32, bfloat16, float16, int8"):
            host_speed.measure_decode_gbps(modelled_only, 1)
    with pytest.raises(ValueError, match="threads must be"):
        host_speed.measure_memory_gbps(0)
