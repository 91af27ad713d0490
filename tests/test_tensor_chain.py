"""Tensor mode on real sockets in one process: workers' data ports, the root's TensorChain, the link model."""
import time

import pytest
import torch

from backend.chain import WorkerFailure, WorkerSpec
from backend.control import ControlClient
from backend.local import free_port_pair
from backend.tensor_chain import TensorChain
from common.auth import HEADER, SecretSource
from common.latency import LinkModel
from common.placement import Shard
from common.protocol import LoadAssignment, ProtocolError
from common.tensor_links import TensorDelays, TensorStepDelays, leg_delays, realized_ms, syncs_per_step
from common.tensor_split import tensor_shares
from common.transport import TcpTransport, data_port

from .inprocess import InProcessWorker

SECRET = "tensor-secret"
LAYERS, HIDDEN = 4, 64  # the tiny preset


def tensor_worker(model, share, return_address: str, dtype: str = "float32") -> InProcessWorker:
    """A worker loaded with one rank's share of every layer."""
    assignment = LoadAssignment(f"worker-{share.rank + 1}", share.rank, Shard(0, LAYERS), dtype, str(model),
                                return_address, share=share)
    assert LoadAssignment.from_dict(assignment.to_dict()) == assignment
    return InProcessWorker(model, assignment, SECRET, hop_timeout_s=3)


@pytest.fixture()
def star(tiny_model):
    root_port = free_port_pair()
    return_address = f"127.0.0.1:{data_port(root_port)}"
    workers = [tensor_worker(tiny_model, share, return_address) for share in tensor_shares(4, 2, 176, 2)]
    secret = SecretSource(SECRET)
    transport = TcpTransport("127.0.0.1", 1 << 22, secret)
    specs = [WorkerSpec(w.name, w.url, Shard(0, LAYERS)) for w in workers]
    chain = TensorChain(specs, transport, ControlClient(secret), LAYERS, HIDDEN, 1 << 22, hop_timeout_s=3)
    listener = transport.serve(data_port(root_port), chain.arrive)
    yield chain, workers, listener
    for x in (*workers, listener):
        x.stop()


def stock_layers(model_dir, x, start=0):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    with torch.inference_mode():
        pos = torch.arange(start, start + x.shape[1]).unsqueeze(0)
        emb = model.model.rotary_emb(x, pos)
        for layer in model.model.layers:
            x = layer(x, attention_mask=None, position_ids=pos, position_embeddings=emb)
            x = x[0] if isinstance(x, tuple) else x
    return x


def delays(n_workers=2, broadcast=0.0, up=0.0, down=0.0, back=0.0) -> list[float]:
    n_syncs = 2 * LAYERS
    return TensorStepDelays((broadcast,) * n_workers, ((up,) * n_workers,) * n_syncs,
                            ((down,) * n_workers,) * n_syncs, back).flat()


def test_a_step_on_two_workers_equals_the_stock_layers_and_its_delays_are_slept(star, tiny_model):
    chain, workers, _ = star
    x = torch.randn(1, 5, HIDDEN)
    out, timings = chain.forward("r1", x, 0, delays())
    torch.testing.assert_close(out, stock_layers(tiny_model, x), rtol=1e-4, atol=1e-5)
    assert timings["parallelism"] == "tensor" and timings["sync"]["count"] == 2 * LAYERS
    # every partial and every sum crossed a link: 2 workers x 8 syncs x 2 frames of 5 x 64 float32
    assert timings["sync"]["bytes"] > 2 * 8 * 2 * 5 * HIDDEN * 4
    assert [s["name"] for s in timings["stages"]] == ["worker-1", "worker-2"]
    assert all(s["compute_ms"] > 0 and s["sync_ms"] > 0 for s in timings["stages"])
    # 3 ms on every crossing: 8 syncs x (up + down) on the critical path, slept, not counted as transport
    started = time.perf_counter()
    out2, timings = chain.forward("r1", x[:, :1], 5, delays(broadcast=3, up=3, down=3, back=3))
    took_ms = (time.perf_counter() - started) * 1e3
    assert took_ms >= 3 + 8 * 6 + 3
    assert timings["sync"]["injected_ms"] == pytest.approx(8 * 6) and timings["link_out"]["injected_ms"] == 3
    assert timings["sync"]["drawn_ms"] == 8 * 6 and timings["injected_ms"] == pytest.approx(3 + 8 * 6 + 3)
    assert timings["sync"]["transport_ms"] >= 0  # one process: its threads' spinning makes the figure loose
    assert out2.shape == (1, 1, HIDDEN)
    for w in workers:
        assert w.client.get("/v1/info", headers={HEADER: SECRET}).json["caches"] == ["r1"]


def test_a_down_worker_is_named_at_once(star):
    chain, workers, _ = star
    workers[1].stop()
    started = time.monotonic()
    with pytest.raises(WorkerFailure) as failure:
        chain.forward("r2", torch.randn(1, 2, HIDDEN), 0, delays())
    assert failure.value.worker == "worker-2" and "worker-2" in str(failure.value)
    assert time.monotonic() - started < 2  # worker-1, waiting on a sum, was told at once


def test_a_worker_that_cannot_reach_the_root_is_named(star):
    chain, workers, listener = star
    listener.stop()  # the root's data port is gone: no partial can be summed
    with pytest.raises(WorkerFailure, match="cannot send its partial to the root"):
        chain.forward("r3", torch.randn(1, 2, HIDDEN), 0, delays())


def test_the_workers_say_what_they_hold(star):
    _, workers, _ = star
    info = workers[1].client.get("/v1/info", headers={HEADER: SECRET}).json
    assert info["share"] == {"rank": 1, "world": 2, "q_heads": [2, 4], "kv_heads": [1, 2], "ffn": [88, 176]}
    assert info["layers"] == [0, LAYERS]
    assert info["loaded_tensors"] and all(n.startswith("model.layers.") for n in info["loaded_tensors"])


def test_a_step_draws_every_crossing_and_its_critical_path_is_the_injected_latency():
    links = [LinkModel(min_ms=1, max_ms=1), LinkModel(min_ms=5, max_ms=5)]
    d = TensorDelays(links, seed=0, request_number=0, n_layers=LAYERS, hidden_bytes_per_token=HIDDEN * 2,
                     sync_bytes_per_token=HIDDEN * 4)
    flat = d.draw_step(3 * HIDDEN * 2)
    step = TensorStepDelays.from_flat(flat, 2, 2 * LAYERS)
    assert step.flat() == flat and len(flat) == 2 + 2 * 8 * 2 + 1
    assert step.broadcast == (1, 5) and step.up[0] == (1, 5) and step.back == 1  # output home on link 0
    assert d.total_ms == 5 + 8 * (5 + 5) + 1  # the slowest link of each crossing, not the sum of all
    with pytest.raises(ValueError, match="has 35 delays, not 3"):
        TensorStepDelays.from_flat([0.0] * 3, 2, 2 * LAYERS)


def test_what_delays_add_at_a_barrier_is_measured_not_assumed():
    ms = 1_000_000
    # equal delays cost exactly themselves, whatever the arrival times
    assert realized_ms([10 * ms, 14 * ms], [3.0, 3.0]) == pytest.approx(3.0)
    # worker 1 slept 8 ms but was 10 ms ahead of worker 2, which slept 2: only worker 2's 2 ms show
    assert realized_ms([10 * ms, 20 * ms], [8.0, 2.0]) == pytest.approx(2.0)
    # a slow worker's own delay shows in full
    assert realized_ms([30 * ms, 12 * ms], [8.0, 2.0]) == pytest.approx(8.0)
    with pytest.raises(ValueError, match="2 arrivals but 1 delays"):
        realized_ms([1, 2], [1.0])
    step = TensorStepDelays((1.0, 2.0), ((3.0, 4.0),), ((5.0, 6.0),), 7.0)
    assert leg_delays(step, 0) == [4.0, 6.0]   # broadcast + the first partial's up link
    assert leg_delays(step, 1) == [5.0, 6.0]   # the last sum's down link, then the answer
    no_syncs = TensorStepDelays((1.0,), (), (), 7.0)
    assert leg_delays(no_syncs, 0) == [1.0]    # one worker: the broadcast, then its answer


def test_one_worker_has_no_syncs_and_its_step_only_the_broadcast_and_the_output_home():
    assert syncs_per_step(1, LAYERS) == 0 and syncs_per_step(2, LAYERS) == 2 * LAYERS
    d = TensorDelays([LinkModel(min_ms=3, max_ms=3)], seed=0, request_number=0, n_layers=LAYERS,
                     hidden_bytes_per_token=HIDDEN * 2, sync_bytes_per_token=HIDDEN * 4)
    flat = d.draw_step(HIDDEN * 2)
    step = TensorStepDelays.from_flat(flat, 1, 0)
    assert flat == [3, 3] and step.up == () and step.sync_ms == 0 and d.total_ms == 6


@pytest.mark.parametrize("share,message", [
    ({"rank": 2, "world": 2, "q_heads": [0, 2], "kv_heads": [0, 1], "ffn": [0, 88]}, "rank 2 must be below"),
    ({"rank": 0, "world": 2, "q_heads": [2, 2], "kv_heads": [0, 1], "ffn": [0, 88]}, "q_heads must be"),
    ({"rank": 0, "world": 2, "q_heads": [0, 2], "kv_heads": "0-1", "ffn": [0, 88]}, "kv_heads must be a list"),
])
def test_a_bad_share_on_the_load_message_is_refused(share, message):
    raw = LoadAssignment("worker-1", 0, Shard(0, 4), "float32", "/m", "127.0.0.1:9").to_dict() | {"share": share}
    with pytest.raises(ProtocolError, match=message):
        LoadAssignment.from_dict(raw)


def test_a_silent_worker_is_named_by_the_sync_it_holds_up(star):
    chain, workers, _ = star
    state = workers[1].app.extensions["worker_state"]
    state.compute_lock.acquire()  # worker-2 takes the step but cannot compute: it never sends a partial
    try:
        started = time.monotonic()
        with pytest.raises(WorkerFailure) as failure:
            chain.forward("r4", torch.randn(1, 2, HIDDEN), 0, delays())
        waited = time.monotonic() - started
    finally:
        state.compute_lock.release()
    assert failure.value.worker == "worker-2" and failure.value.status == 504
    assert "worker-2 did not send its partial of layer 0 attention" in str(failure.value)
    assert 3 <= waited < 10  # the round's timeout (HOP_TIMEOUT_S=3), then a short wait for the stuck call
    # the cluster goes on: worker-2's late partial was refused, and the next step runs on both
    x = torch.randn(1, 3, HIDDEN)
    out, _ = chain.forward("r5", x, 0, delays())
    assert out.shape == (1, 3, HIDDEN)


def contribute_all(rnd, sync: int, partials: list[torch.Tensor]) -> list:
    """Every rank's partial of one sync from a thread of its own (as the root's data port calls it)."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(len(partials)) as pool:
        futures = [pool.submit(rnd.contribute, sync, rank, p, time.time_ns()) for rank, p in enumerate(partials)]
        return [f.result(timeout=10) for f in futures]


@pytest.mark.parametrize("as_q80", [False, True])
def test_each_sum_is_encoded_once_for_every_worker(monkeypatch, as_q80):
    """The root sums a sync's partials and encodes the sum once (q80 quantises it once, as distributed-llama's
    sync buffer does), not once per worker it answers."""
    import backend.tensor_chain as tc
    from backend.tensor_chain import _Round
    from common.frame import decode_frame, frame_with
    calls = []
    real = tc.encode_payload
    monkeypatch.setattr(tc, "encode_payload", lambda t, q: calls.append(q) or real(t, q))
    names = ["worker-1", "worker-2", "worker-3"]
    delays = TensorStepDelays.from_flat([0.0] * (len(names) * 5 + 1), len(names), 2)  # no delay on any crossing
    rnd = _Round("r", 0, names, 2, delays, timeout_s=5, as_q80=as_q80)
    partials = [torch.full((1, 1, 64), float(rank + 1)) for rank in range(len(names))]
    for sync in range(2):
        answers = contribute_all(rnd, sync, partials)
        assert all(a is answers[0] for a in answers)  # one payload, shared
        _, total = decode_frame(frame_with({"kind": "sum"}, answers[0]), 1 << 20)
        want = torch.full((1, 1, 64), 6.0)  # 1 + 2 + 3; q80's float16 scale 6/127 rounds it to 5.9996
        assert torch.allclose(total, want, rtol=1e-3) if as_q80 else torch.equal(total, want)
    assert calls == [as_q80, as_q80]


def test_a_sum_q80_cannot_carry_fails_the_round_naming_the_sync():
    from backend.tensor_chain import _Round
    names = ["worker-1", "worker-2"]
    delays = TensorStepDelays.from_flat([0.0] * (len(names) * 3 + 1), len(names), 1)
    rnd = _Round("r", 0, names, 1, delays, timeout_s=5, as_q80=True)
    with pytest.raises(WorkerFailure, match="cannot travel"):
        contribute_all(rnd, 0, [torch.full((1, 1, 64), float("inf")), torch.zeros(1, 1, 64)])
