"""SYNC_TOPOLOGY=mesh on real sockets in one process: workers exchange their partials with each other
(worker/mesh_sync.py over worker/mesh_links.py), the root's TensorChain only broadcasts; the links' rules on
socket pairs; the frames."""
import socket
import threading
import time

import pytest
import torch

from backend.chain import WorkerFailure, WorkerSpec
from backend.control import ControlClient
from backend.local import free_port_pair
from backend.tensor_chain import TensorChain
from common.auth import SecretSource
from common.frame import encode_payload, frame_with
from common.latency import LinkModel
from common.placement import Shard
from common.protocol import LoadAssignment, ProtocolError, StepError
from common.tensor_links import TensorDelays, TensorStepDelays
from common.tensor_protocol import MeshAbort, MeshLink, MeshPartial, TensorRecord
from common.tensor_split import tensor_shares
from common.transport import TcpTransport, data_port
from worker.mesh_links import MeshLinks, SyncFailed

from .inprocess import InProcessWorker
from .test_tensor_chain import HIDDEN, LAYERS, SECRET, delays, stock_layers


def mesh_workers(model, world: int, return_address: str, sync_dtype: str = "float32") -> list[InProcessWorker]:
    ports = [free_port_pair() for _ in range(world)]
    peers = tuple(f"127.0.0.1:{data_port(p)}" for p in ports)
    out = []
    for share, port in zip(tensor_shares(4, 2, 176, world), ports):
        assignment = LoadAssignment(f"worker-{share.rank + 1}", share.rank, Shard(0, LAYERS), "float32", str(model),
                                    return_address, share=share, sync_dtype=sync_dtype, peers=peers)
        assert LoadAssignment.from_dict(assignment.to_dict()) == assignment
        out.append(InProcessWorker(model, assignment, SECRET, hop_timeout_s=3, port=port))
    return out


def mesh_chain(workers, sync_dtype: str = "float32") -> TensorChain:
    secret = SecretSource(SECRET)
    transport = TcpTransport("127.0.0.1", 1 << 22, secret)
    specs = [WorkerSpec(w.name, w.url, Shard(0, LAYERS)) for w in workers]
    return TensorChain(specs, transport, ControlClient(secret), LAYERS, HIDDEN, 1 << 22, hop_timeout_s=3,
                       sync_dtype=sync_dtype, topology="mesh")


@pytest.fixture(params=[2, 4], ids=["2-workers", "4-workers"])
def mesh(request, tiny_model):
    # No root data port at all: in the mesh no partial goes to the root.
    workers = mesh_workers(tiny_model, request.param, f"127.0.0.1:{data_port(free_port_pair())}")
    yield mesh_chain(workers), workers
    for w in workers:
        w.stop()


def mesh_delays(n_workers, broadcast=0.0, up=0.0, back=0.0) -> list[float]:
    return delays(n_workers, broadcast=broadcast, up=up, down=0.0, back=back)


def test_a_mesh_step_equals_the_stock_layers_with_one_crossing_per_sync(mesh, tiny_model):
    chain, workers = mesh
    n = len(workers)
    x = torch.randn(1, 5, HIDDEN)
    out, timings = chain.forward("m1", x, 0, mesh_delays(n))
    torch.testing.assert_close(out, stock_layers(tiny_model, x), rtol=1e-4, atol=1e-5)
    assert timings["sync"]["count"] == 2 * LAYERS
    # every pair of ranks traded its partials of 5 x 64 float32 once per sync, both ways
    pairs = n * (n - 1) // 2
    assert timings["sync"]["bytes"] > 2 * LAYERS * pairs * 2 * 5 * HIDDEN * 4
    assert all(s["compute_ms"] > 0 and s["sync_ms"] > 0 for s in timings["stages"])
    # 3 ms on every crossing: a sync is one crossing on the critical path
    started = time.perf_counter()
    out2, timings = chain.forward("m1", x[:, :1], 5, mesh_delays(n, broadcast=3, up=3, back=3))
    took_ms = (time.perf_counter() - started) * 1e3
    assert took_ms >= 3 + 8 * 3 + 3
    assert timings["sync"]["injected_ms"] == pytest.approx(8 * 3, abs=1.0)
    assert timings["injected_ms"] == pytest.approx(3 + 8 * 3 + 3, abs=1.0)
    assert timings["sync"]["drawn_ms"] == 8 * 3
    full = stock_layers(tiny_model, torch.cat([x, x[:, :1]], dim=1))
    torch.testing.assert_close(out2, full[:, 5:], rtol=1e-4, atol=1e-5)


def test_a_slow_rank_hides_a_fast_ranks_delay(tiny_model):
    """What the delays add is measured at each barrier: rank 0 waits 20 ms per sync anyway for a slow rank 1,
    so rank 1's 5 ms link adds nothing; measured, not the drawn 5 ms x 8."""
    workers = mesh_workers(tiny_model, 2, f"127.0.0.1:{data_port(free_port_pair())}")
    try:
        chain = mesh_chain(workers)
        slow = workers[0].app.extensions["worker_state"]
        original = slow.slice.forward_steps

        def slowly(*args, **kwargs):
            run = original(*args, **kwargs)
            message = None
            while True:
                time.sleep(0.02)
                try:
                    message = yield (next(run) if message is None else run.send(message))
                except StopIteration as done:
                    return done.value
        slow.slice.forward_steps = slowly
        d = TensorStepDelays((0.0, 0.0), ((0.0, 5.0),) * 8, ((0.0, 0.0),) * 8, 0.0).flat()
        _, timings = chain.forward("m2", torch.randn(1, 1, HIDDEN), 0, d)
        assert timings["sync"]["drawn_ms"] == 8 * 5
        assert timings["sync"]["injected_ms"] < 8  # hidden behind rank 0's 20 ms, but for scheduling noise
    finally:
        for w in workers:
            w.stop()


def test_every_rank_adds_the_same_q80_partials(tiny_model):
    workers = mesh_workers(tiny_model, 2, f"127.0.0.1:{data_port(free_port_pair())}", sync_dtype="q80")
    try:
        chain = mesh_chain(workers, "q80")
        x = torch.randn(1, 4, HIDDEN)
        out, timings = chain.forward("m3", x, 0, mesh_delays(2))
        # q80 on the wire: close to the stock layers, not equal; fewer bytes than float32 partials
        torch.testing.assert_close(out, stock_layers(tiny_model, x), rtol=0.05, atol=0.05)
        assert timings["sync"]["bytes"] < 2 * LAYERS * 2 * 4 * HIDDEN * 4
        # rank 1's output equals rank 0's: both summed the same dequantized partials
        state = workers[1].app.extensions["worker_state"]
        assert state.caches.ids() == ["m3"]
    finally:
        for w in workers:
            w.stop()


def test_a_down_worker_is_named_at_once(mesh):
    chain, workers = mesh
    workers[-1].stop()
    started = time.monotonic()
    with pytest.raises(WorkerFailure) as failure:
        chain.forward("m4", torch.randn(1, 2, HIDDEN), 0, mesh_delays(len(workers)))
    assert failure.value.worker == workers[-1].name and workers[-1].name in str(failure.value)
    assert time.monotonic() - started < 2  # the others, waiting on its partials, were told at once


def test_a_silent_worker_is_named_and_the_mesh_goes_on(tiny_model):
    workers = mesh_workers(tiny_model, 2, f"127.0.0.1:{data_port(free_port_pair())}")
    try:
        chain = mesh_chain(workers)
        state = workers[1].app.extensions["worker_state"]
        state.compute_lock.acquire()  # worker-2 takes the step but cannot compute: it never sends a partial
        try:
            started = time.monotonic()
            with pytest.raises(WorkerFailure) as failure:
                chain.forward("m5", torch.randn(1, 2, HIDDEN), 0, mesh_delays(2))
            waited = time.monotonic() - started
        finally:
            state.compute_lock.release()
        assert failure.value.worker == "worker-2" and failure.value.status == 504
        assert "layer 0 attention" in str(failure.value)
        assert 3 <= waited < 12  # HOP_TIMEOUT_S=3 for the partial, then a short wait for the stuck call
        x = torch.randn(1, 3, HIDDEN)
        out, _ = chain.forward("m6", x, 0, mesh_delays(2))
        torch.testing.assert_close(out, stock_layers(tiny_model, x), rtol=1e-4, atol=1e-5)
    finally:
        for w in workers:
            w.stop()


def test_a_worker_that_cannot_take_the_step_fails_it_on_every_rank_at_once(mesh):
    chain, workers = mesh
    state = workers[0].app.extensions["worker_state"]

    def out_of_step(*args, **kwargs):
        raise ValueError("its cache is out of step")
        yield  # a generator, as forward_steps is
    state.slice.forward_steps = out_of_step
    started = time.monotonic()
    with pytest.raises(WorkerFailure) as failure:
        chain.forward("m7", torch.randn(1, 2, HIDDEN), 0, mesh_delays(len(workers)))
    assert failure.value.worker == "worker-1" and "out of step" in str(failure.value)
    assert time.monotonic() - started < 2  # the others were told at once, not left to time out
    for w in workers[1:]:
        assert w.app.extensions["worker_state"].mesh.failed  # each heard of it


# ---- the links, on socket pairs ----

PEERS = ("127.0.0.1:1", "127.0.0.1:2")


def linked_pair(spin_s: float = 0.0) -> tuple[MeshLinks, MeshLinks]:
    a, b = MeshLinks(1 << 24, spin_s=spin_s), MeshLinks(1 << 24, spin_s=spin_s)
    s0, s1 = socket.socketpair()
    a.adopt(1, s0)
    b.adopt(0, s1)
    return a, b


def partial_frame(key, rank: int, tensor: torch.Tensor, slept_ms: float = 0.0) -> bytes:
    now = time.time_ns()
    return frame_with(MeshPartial(key[0], key[1], key[2], rank, now, now, slept_ms).to_dict(), encode_payload(tensor))


def both(a: MeshLinks, b: MeshLinks, key, x0: torch.Tensor, x1: torch.Tensor, timeout_s: float = 5):
    """Ranks 0 and 1 trade x0 and x1 at once, as two workers' compute threads do."""
    got = {}

    def rank1():
        got[1] = b.exchange(key, 1, PEERS, partial_frame(key, 1, x1), "worker-2", timeout_s).partials
    t = threading.Thread(target=rank1)
    t.start()
    got[0] = a.exchange(key, 0, PEERS, partial_frame(key, 0, x0), "worker-1", timeout_s).partials
    t.join(timeout_s + 1)
    return got[0][1], got[1][0]


@pytest.mark.parametrize("spin_s", [0.0, 0.002], ids=["asleep", "polling"])
def test_two_ranks_trade_partials_both_ways_even_larger_than_their_socket_buffers(spin_s):
    a, b = linked_pair(spin_s)
    x0, x1 = torch.randn(1, 3, HIDDEN), torch.randn(1, 3, HIDDEN)
    from_1, from_0 = both(a, b, ("r", 0, 0), x0, x1)
    assert torch.equal(from_1.partial, x1) and torch.equal(from_0.partial, x0)
    assert from_1.header.rank == 1 and from_0.header.rank == 0
    big0, big1 = torch.randn(1, 8192, HIDDEN), torch.randn(1, 8192, HIDDEN)  # 2 MB each way at once
    from_1, from_0 = both(a, b, ("r", 0, 1), big0, big1)
    assert torch.equal(from_1.partial, big1) and torch.equal(from_0.partial, big0)


def test_a_frame_of_another_step_is_kept_aside_and_dropped_when_a_new_step_begins():
    a, b = linked_pair()
    stale = partial_frame(("r", 0, 5), 1, torch.zeros(1, 1, HIDDEN))  # a step that failed half-way left it
    ahead = partial_frame(("r", 1, 1), 1, torch.ones(1, 1, HIDDEN))   # and one of the new step's next sync
    b.links[0].sock.sendall(len(stale).to_bytes(4, "little") + stale)
    a.begin("r", 1)
    x1 = torch.randn(1, 1, HIDDEN)
    key = ("r", 1, 0)
    b.links[0].sock.sendall(len(partial_frame(key, 1, x1)).to_bytes(4, "little") + partial_frame(key, 1, x1)
                            + len(ahead).to_bytes(4, "little") + ahead)
    exchanged = a.exchange(key, 0, PEERS, partial_frame(key, 0, torch.zeros(1, 1, HIDDEN)), "worker-1", 2)
    got = exchanged.partials
    assert torch.equal(got[1].partial, x1)
    assert got[1].recv_ns == exchanged.sent_ns  # it was there when rank 0's went out: arrived then, for the barrier
    assert [(p, x.header.step, x.header.sync) for p, x in a.aside] == [(1, 0, 5)]
    got = a.exchange(("r", 1, 1), 0, PEERS, partial_frame(("r", 1, 1), 0, x1), "worker-1", 2).partials
    assert torch.equal(got[1].partial, torch.ones(1, 1, HIDDEN))  # it was read with the one before
    a.begin("r", 2)
    assert a.aside == []


def test_an_abort_wakes_a_rank_waiting_for_partials():
    a, _ = linked_pair()
    a.begin("r", 3)
    errors = []

    def wait():
        try:
            a.exchange(("r", 3, 0), 0, PEERS, partial_frame(("r", 3, 0), 0, torch.zeros(1, 1, HIDDEN)), "worker-1", 10)
        except SyncFailed as exc:
            errors.append(exc.error)
    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.1)
    started = time.monotonic()
    a.abort("r", 3, StepError(502, "worker-3 is gone", "worker-3"))
    t.join(5)
    assert time.monotonic() - started < 1 and [e.worker for e in errors] == ["worker-3"]


def test_a_peer_that_closes_its_link_is_named_at_once_and_a_silent_one_after_the_timeout():
    a, b = linked_pair(spin_s=0.05)  # polling first changes neither
    key = ("r", 0, 0)
    frame = partial_frame(key, 0, torch.zeros(1, 1, HIDDEN))
    started = time.monotonic()
    with pytest.raises(SyncFailed) as silent:
        a.exchange(key, 0, PEERS, frame, "worker-1", 0.3)
    assert 0.3 <= time.monotonic() - started < 2
    assert silent.value.error.status == 504 and "from rank 1 to worker-1" in silent.value.error.message
    assert silent.value.error.failed_next == PEERS[1]
    b.links[0].sock.close()
    started = time.monotonic()
    with pytest.raises(SyncFailed) as closed:
        a.exchange(("r", 0, 1), 0, PEERS, frame, "worker-1", 5)
    assert time.monotonic() - started < 1
    assert closed.value.error.status == 502 and "rank 1 (127.0.0.1:2)" in closed.value.error.message
    assert 1 not in a.links  # dropped: out of step, opened again at the next sync


def test_a_new_step_ends_a_sync_left_waiting_on_an_old_one_and_refuses_its_later_syncs():
    a, _ = linked_pair()
    a.begin("r", 1)
    errors = []

    def wait():
        try:
            a.exchange(("r", 1, 0), 0, PEERS, partial_frame(("r", 1, 0), 0, torch.zeros(1, 1, HIDDEN)), "worker-1", 10)
        except SyncFailed as exc:
            errors.append(exc.error)
    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.1)
    started = time.monotonic()
    a.begin("r", 2)  # the root gave up on step 1 and sent step 2
    t.join(5)
    assert time.monotonic() - started < 1 and errors[0].status == 409 and "over" in errors[0].message
    with pytest.raises(SyncFailed, match="over"):  # step 1's next sync sends nothing
        a.exchange(("r", 1, 1), 0, PEERS, partial_frame(("r", 1, 1), 0, torch.zeros(1, 1, HIDDEN)), "worker-1", 10)


def test_a_sync_that_fails_half_way_through_writing_its_partial_drops_that_link():
    a, _ = linked_pair()
    key = ("r", 0, 0)
    big = partial_frame(key, 0, torch.zeros(1, 8192, HIDDEN))  # 2 MB: more than the peer's buffer takes unread
    with pytest.raises(SyncFailed) as silent:
        a.exchange(key, 0, PEERS, big, "worker-1", 0.3)
    assert silent.value.error.status == 504
    assert 1 not in a.links  # the next step opens a clean one rather than finish half a frame


def test_a_frame_over_the_limit_or_not_a_partial_fails_the_sync_naming_the_peer():
    for junk, message in [((1 << 30).to_bytes(4, "little"), "over the limit"),
                          (b"\x05\x00\x00\x00hello", "bad partial")]:
        a, b = linked_pair()
        b.links[0].sock.sendall(junk)
        key = ("r", 0, 0)
        with pytest.raises(SyncFailed) as bad:
            a.exchange(key, 0, PEERS, partial_frame(key, 0, torch.zeros(1, 1, HIDDEN)), "worker-1", 2)
        assert bad.value.error.status == 502 and message in bad.value.error.message


# ---- frames and the link model ----

def test_mesh_frames_round_trip_and_bad_ones_are_refused():
    mp = MeshPartial("r1", 4, 7, 1, 123, 100, 2.5)
    assert MeshPartial.from_dict(mp.to_dict()) == mp
    abort = MeshAbort("r1", 4, StepError(504, "worker-2 is silent", "worker-2"))
    assert MeshAbort.from_dict(abort.to_dict()) == abort
    assert MeshLink.from_dict(MeshLink(1, 4).to_dict()) == MeshLink(1, 4)
    with pytest.raises(ProtocolError, match="not a rank of a world of 2"):
        MeshLink.from_dict({"mesh_link": {"rank": 2, "world": 2}})
    with pytest.raises(ProtocolError):
        MeshPartial.from_dict({"mesh_partial": {**mp.to_dict()["mesh_partial"], "slept_ms": -1}})
    record = TensorRecord("worker-1", 0, 1, 2, 0.0, 1.0, 8, 1.0, 0.5, 10, sync_bytes=99, sync_injected_ms=4.0)
    assert TensorRecord.from_dict(record.to_dict()) == record


@pytest.mark.parametrize("peers,message", [
    (["127.0.0.1:5001"], "one address per rank"),
    (["127.0.0.1:5001", "not an address"], "host:port"),
    ("127.0.0.1:5001", "list"),
])
def test_a_bad_peer_list_on_the_load_message_is_refused(peers, message):
    share = tensor_shares(4, 2, 176, 2)[0]
    raw = LoadAssignment("worker-1", 0, Shard(0, LAYERS), "float32", "/m", "127.0.0.1:5001", share=share).to_dict()
    with pytest.raises(ProtocolError, match=message):
        LoadAssignment.from_dict({**raw, "peers": peers})
    without_share = {k: v for k, v in raw.items() if k != "share"}
    with pytest.raises(ProtocolError, match="needs a tensor share"):
        LoadAssignment.from_dict({**without_share, "peers": ["127.0.0.1:5001"]})


def test_a_mesh_draws_one_crossing_per_sync():
    link = LinkModel(min_ms=4, max_ms=4)
    star = TensorDelays([link, link], seed=1, request_number=0, n_layers=LAYERS, hidden_bytes_per_token=256,
                        sync_bytes_per_token=256)
    mesh = TensorDelays([link, link], seed=1, request_number=0, n_layers=LAYERS, hidden_bytes_per_token=256,
                        sync_bytes_per_token=256, topology="mesh")
    star.draw_step(256)
    mesh.draw_step(256)
    assert star.total_ms == 4 * (2 + 4 * LAYERS)
    assert mesh.total_ms == 4 * (2 + 2 * LAYERS)
    assert all(d == 0.0 for down in mesh.steps[0].down for d in down)


def test_the_worker_reads_how_long_it_polls_its_links_once_and_refuses_a_bad_figure():
    from common.config import WorkerSettings
    assert WorkerSettings.from_env({}).sync_spin_ms == 2.0
    assert WorkerSettings.from_env({"SYNC_SPIN_MS": "0"}).sync_spin_ms == 0.0
    with pytest.raises(ValueError, match="SYNC_SPIN_MS must be between 0 and 1000"):
        WorkerSettings.from_env({"SYNC_SPIN_MS": "-1"})


def test_the_root_reads_sync_topology_once_and_refuses_an_unknown_one():
    from common.config import RootSettings
    assert RootSettings.from_env({}).sync_topology == "star"
    assert RootSettings.from_env({"SYNC_TOPOLOGY": "Mesh"}).sync_topology == "mesh"
    with pytest.raises(ValueError, match="SYNC_TOPOLOGY must be one of star, mesh, not 'ring'"):
        RootSettings.from_env({"SYNC_TOPOLOGY": "ring"})


def test_a_bad_link_request_or_partial_on_a_workers_data_port_gets_a_clear_error_and_the_step_after_runs(tiny_model):
    from common.frame import decode_frame, encode_frame
    workers = mesh_workers(tiny_model, 2, f"127.0.0.1:{data_port(free_port_pair())}")
    try:
        transport = TcpTransport("127.0.0.1", 1 << 22, SecretSource(SECRET))

        def send(header: dict, tensor, rank: int = 1) -> dict:
            peer = transport.peer(f"127.0.0.1:{data_port(workers[rank].port)}")
            return decode_frame(peer.call(encode_frame(header, tensor), 5), 1 << 22)[0]
        # rank 0 takes no link (the lower rank of a pair opens it), nor one from another world
        err = send(MeshLink(1, 2).to_dict(), None, rank=0)["error"]
        assert err["status"] == 400 and "lower rank of a pair opens it" in err["message"]
        assert send(MeshLink(0, 3).to_dict(), None)["error"]["status"] == 400
        assert send({"mesh_link": {"rank": 3, "world": 2}}, None)["error"]["status"] == 400
        # a partial comes only on a link, never as a call
        assert send(MeshPartial("x1", 0, 0, 0, 1, 1, 0.0).to_dict(), torch.zeros(1, 1, HIDDEN))["error"]["status"] == 400
        assert send({"mesh_abort": {"request_id": "?"}}, None)["error"]["status"] == 400
        x = torch.randn(1, 2, HIDDEN)
        out, _ = mesh_chain(workers).forward("x2", x, 0, mesh_delays(2))
        torch.testing.assert_close(out, stock_layers(tiny_model, x), rtol=1e-4, atol=1e-5)
    finally:
        for w in workers:
            w.stop()
