"""The data plane on real sockets: framing, limits, kept-open connections, a restarted peer, errors."""
import socket
import struct
import threading
import time

import pytest
import torch

from common.frame import FrameError, decode_frame, encode_frame
from common.transport import data_address
from common.wire import PeerClosed, StreamClient, StreamServer, error_frame, read_message

LIMIT = 1 << 16


def echo_server(max_connections: int = 64) -> StreamServer:
    def handle(frame):
        header, tensor = decode_frame(frame, LIMIT)
        if header.get("boom"):
            raise RuntimeError("boom")
        return encode_frame({"seen": header, "thread": threading.get_ident()}, None if tensor is None else tensor * 2)
    return StreamServer("127.0.0.1", 0, handle, LIMIT, max_connections).start()


@pytest.fixture()
def server():
    s = echo_server()
    yield s
    s.stop()


def test_data_address_is_the_http_port_plus_one():
    assert data_address("http://worker-2:5100") == "worker-2:5101"
    with pytest.raises(ValueError):
        data_address("http://no-port")


def test_a_frame_and_its_reply_over_one_kept_open_connection(server):
    client = StreamClient(("127.0.0.1", server.port), LIMIT)
    x = torch.arange(6, dtype=torch.float32).reshape(1, 2, 3)
    threads = set()
    for i in range(3):
        header, out = decode_frame(client.call(encode_frame({"i": i}, x), timeout=5), LIMIT)
        assert header["seen"]["i"] == i and torch.equal(out, x * 2)
        threads.add(header["thread"])
    assert len(threads) == 1  # one connection, served by one thread, reused for every call


def test_the_handler_failing_gives_an_error_frame_and_the_connection_stays_usable(server):
    client = StreamClient(("127.0.0.1", server.port), LIMIT)
    header, _ = decode_frame(client.call(encode_frame({"boom": True}, None), timeout=5), LIMIT)
    assert header["error"]["status"] == 500 and "boom" in header["error"]["message"]
    header, _ = decode_frame(client.call(encode_frame({"i": 1}, None), timeout=5), LIMIT)
    assert header["seen"] == {"i": 1, "dtype": None, "shape": None}


def test_an_oversized_length_is_refused_before_its_body_is_read(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(struct.pack("<I", LIMIT + 1))  # and no body: the server must not wait for one
        header, _ = decode_frame(read_message(sock, LIMIT), LIMIT)
        assert header["error"]["status"] == 400 and "exceeds the limit" in header["error"]["message"]
        assert sock.recv(1) == b""  # then it closes the stream, whose body it never read


def test_the_client_refuses_an_oversized_reply():
    big = StreamServer("127.0.0.1", 0, lambda frame: b"x" * 100, LIMIT).start()
    try:
        with pytest.raises(FrameError):
            StreamClient(("127.0.0.1", big.port), 50).call(b"hi", timeout=5)
    finally:
        big.stop()


def test_a_restarted_peer_is_reconnected_to_without_an_error():
    first = echo_server()
    port = first.port
    client = StreamClient(("127.0.0.1", port), LIMIT)
    assert "seen" in decode_frame(client.call(encode_frame({}, None), timeout=5), LIMIT)[0]
    first.stop()  # cuts the kept-open connection, as a worker that restarts does
    time.sleep(0.1)
    second = StreamServer("127.0.0.1", port, first.handle, LIMIT).start()
    try:
        assert "seen" in decode_frame(client.call(encode_frame({}, None), timeout=5), LIMIT)[0]
    finally:
        second.stop()


def test_a_peer_that_is_gone_raises_connection_errors():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        StreamClient(("127.0.0.1", port), LIMIT).call(b"x", timeout=2)


def test_a_peer_that_closes_mid_reply_raises_peer_closed():
    listener = socket.create_server(("127.0.0.1", 0))

    def half_reply():
        conn, _ = listener.accept()
        read_message(conn, LIMIT)
        conn.sendall(struct.pack("<I", 100) + b"only part")
        conn.close()
    threading.Thread(target=half_reply, daemon=True).start()
    with pytest.raises(PeerClosed):
        StreamClient(listener.getsockname()[:2], LIMIT).call(b"x", timeout=5)
    listener.close()


def test_a_silent_peer_times_out():
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        with pytest.raises(TimeoutError):
            StreamClient(listener.getsockname()[:2], LIMIT).call(b"x", timeout=0.3)
    finally:
        listener.close()


def test_connections_are_bounded():
    server = echo_server(max_connections=1)
    try:
        held = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as second:
            header, _ = decode_frame(read_message(second, LIMIT), LIMIT)
            assert header["error"]["status"] == 503 and "data connections" in header["error"]["message"]
        held.close()
        time.sleep(0.2)  # the slot comes back when the held connection ends
        client = StreamClient(("127.0.0.1", server.port), LIMIT)
        assert "seen" in decode_frame(client.call(encode_frame({}, None), timeout=5), LIMIT)[0]
    finally:
        server.stop()


def test_a_burst_of_new_connections_is_queued_not_dropped():
    # Nothing accepts yet: every handshake that completes waits in the listen backlog. socketserver's
    # default (5) let 6 through and dropped the rest's handshakes, each retried by the kernel after 1 s.
    server = StreamServer("127.0.0.1", 0, lambda frame: frame, LIMIT, max_connections=32)
    opened = []
    try:
        for _ in range(32):
            opened.append(socket.create_connection(("127.0.0.1", server.port), timeout=0.5))
        assert len(opened) == 32
    finally:
        for s in opened:
            s.close()
        server.server.server_close()  # never started: stop() would wait for a serving loop that never ran


def test_error_frames_carry_status_message_and_fields():
    header, tensor = decode_frame(error_frame(502, "gone", worker="worker-2"), LIMIT)
    assert tensor is None and header["error"] == {"status": 502, "message": "gone", "worker": "worker-2"}
