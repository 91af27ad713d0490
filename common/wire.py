"""The data plane: hidden-state frames over kept-open TCP connections, one message and its reply at a time.

HTTP stays for control (load, health, release). A decode step's frame is a few KB, and an HTTP hop
(request line, headers, WSGI, a thread-pool hand-off, the client library) cost ~1.5 ms here, against
~0.25 ms (framing included) for a length-prefixed message on a kept-open socket with Nagle off.

Message: u32 length (little endian) | a DLM1 frame (common.frame). common/transport.py builds the
cluster's transport on these and says which port is a process's data port.
"""
from __future__ import annotations

import hmac
import logging
import select
import socket
import socketserver
import struct
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .frame import FrameError, encode_frame

if TYPE_CHECKING:
    from .auth import SecretSource

log = logging.getLogger("wire")
_LEN = struct.Struct("<I")
LENGTH = _LEN  # the u32 before every message: worker/mesh_links.py reads and writes messages itself
DATA_PORT_OFFSET = 1
HELLO = b"DLMH"  # the first message of a connection when the cluster has a secret: HELLO + secret


class PeerClosed(ConnectionError):
    """The peer closed the connection (between messages or, worse, in the middle of one)."""


def _recv_exactly(sock: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise PeerClosed(f"connection closed after {got} of {n} bytes")
        got += k
    return buf


def read_message(sock: socket.socket, max_bytes: int) -> bytearray:
    """One message's frame; the length is checked before a byte of the body is read."""
    (n,) = _LEN.unpack(_recv_exactly(sock, _LEN.size))
    if n > max_bytes:
        raise FrameError(f"message of {n} bytes exceeds the limit of {max_bytes}")
    return _recv_exactly(sock, n)


def write_message(sock: socket.socket, frame: bytes) -> None:
    sock.sendall(_LEN.pack(len(frame)) + frame)  # one send: with Nagle off, two would be two packets


def error_frame(status: int, message: str, **fields) -> bytes:
    return encode_frame({"error": {"status": status, "message": message, **fields}}, None)


def hello_message(secret: bytes) -> bytes:
    return HELLO + secret


def hello_accepted(message: bytes, secret: bytes) -> bool:
    """Constant-time check of a connection's first message against the cluster's secret."""
    return message[:len(HELLO)] == HELLO and hmac.compare_digest(bytes(message[len(HELLO):]), secret)


def _tune(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def open_stream(address: tuple[str, int], timeout: float, secret: "SecretSource | None" = None) -> socket.socket:
    """A new connection to a data port, Nagle off, past the HELLO when the cluster has a secret."""
    sock = socket.create_connection(address, timeout=min(timeout, 10.0))
    _tune(sock)
    value = secret.current() if secret is not None else None
    if value is not None:
        write_message(sock, hello_message(value))
    return sock


@dataclass(frozen=True)
class Adopt:
    """A handler's reply that also takes the connection over: the server writes `reply`, then hands the
    socket to `take` and stops reading it (worker/mesh_links.py: a peer's kept-open link)."""
    reply: bytes
    take: Callable[[socket.socket], None]


class StreamClient:
    """One kept-open connection per calling thread to one peer's data port.

    With a secret, each new connection first sends HELLO + secret; the peer answers a wrong one with
    an error frame (401) and closes, which the caller reads as the reply to its first frame."""

    def __init__(self, address: tuple[str, int], max_bytes: int, secret: "SecretSource | None" = None):
        self.address, self.max_bytes, self.secret = address, max_bytes, secret
        self._local = threading.local()

    def call(self, frame: bytes, timeout: float) -> bytearray:
        """Send one frame and wait for the reply frame. Raises OSError (TimeoutError, ConnectionError)."""
        sock = self._connection(timeout)
        try:
            sock.settimeout(timeout)
            write_message(sock, frame)
            return read_message(sock, self.max_bytes)
        except BaseException:
            self.close()  # a half-finished exchange leaves the stream out of step: never reuse it
            raise

    def _connection(self, timeout: float) -> socket.socket:
        sock = getattr(self._local, "sock", None)
        if sock is not None and _dropped(sock):
            self.close()
            sock = None
        if sock is None:
            sock = self._local.sock = open_stream(self.address, timeout, self.secret)
        return sock

    def close(self) -> None:
        sock = getattr(self._local, "sock", None)
        self._local.sock = None
        if sock is not None:
            sock.close()


def _dropped(sock: socket.socket) -> bool:
    """An idle kept-open connection that is readable has been closed by the peer (e.g. it restarted)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class StreamServer:
    """Serve `handle(frame) -> reply frame (or Adopt)` on a TCP port, a thread per connection, a bounded number of them."""

    def __init__(self, host: str, port: int, handle: Callable[[bytearray], "bytes | Adopt"], max_bytes: int,
                 max_connections: int = 64, secret: "SecretSource | None" = None):
        self.handle, self.max_bytes, self.secret = handle, max_bytes, secret
        self._slots = threading.BoundedSemaphore(max_connections)
        # weak: an adopted link stays here (stop() cuts it) until its new owner closes and drops it
        self._open: "weakref.WeakSet[socket.socket]" = weakref.WeakSet()
        self._adopted: "weakref.WeakSet[socket.socket]" = weakref.WeakSet()
        self._open_lock = threading.Lock()
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                outer._serve_connection(self.request)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True
            # socketserver's listen backlog is 5: a burst of new connections (every root thread's first step
            # of a concurrent burst) overflowed it, and each dropped handshake stalled its step 1 s or more
            request_queue_size = max_connections

            def process_request(self, request, client_address):
                if not outer._slots.acquire(blocking=False):
                    try:
                        write_message(request, error_frame(503, f"more than {max_connections} data connections"))
                    except OSError:
                        pass
                    self.shutdown_request(request)
                    return
                super().process_request(request, client_address)

            def shutdown_request(self, request):
                if request not in outer._adopted:  # an adopted link is its new owner's to close
                    super().shutdown_request(request)

            def process_request_thread(self, request, client_address):
                try:
                    super().process_request_thread(request, client_address)
                finally:
                    outer._slots.release()

        self.server = Server((host, port), Handler)
        self.port = self.server.server_address[1]

    def _serve_connection(self, sock: socket.socket) -> None:
        _tune(sock)
        with self._open_lock:
            self._open.add(sock)
        adopted = False
        try:
            adopted = self._exchange(sock)
        finally:
            with self._open_lock:
                if adopted:  # it stays in _open: stop() cuts it, as a process that exits would
                    self._adopted.add(sock)
                else:
                    self._open.discard(sock)

    def _admitted(self, sock: socket.socket) -> bool:
        """Without a secret every peer is admitted; with one, only a peer whose first message proves it."""
        if self.secret is None or not self.secret.configured:
            return True
        try:
            first = read_message(sock, len(HELLO) + 1024)
        except (OSError, FrameError):
            first = b""
        value = self.secret.current()
        if value is not None and hello_accepted(first, value):
            return True
        try:
            write_message(sock, error_frame(401, "this data port serves only its cluster: the peer did not "
                                                 "present the cluster secret (CLUSTER_SECRET)"))
        except OSError:
            pass
        return False

    def _exchange(self, sock: socket.socket) -> bool:
        """Serves the connection until it closes (False) or a handler adopts it (True)."""
        if not self._admitted(sock):
            return False
        while True:
            try:
                frame = read_message(sock, self.max_bytes)
            except FrameError as exc:  # too large: say so, then drop the stream (its body was not read)
                try:
                    write_message(sock, error_frame(400, str(exc)))
                except OSError:
                    pass
                return False
            except OSError:  # closed or reset by the peer: nothing to answer
                return False
            try:
                reply = self.handle(frame)
            except Exception as exc:  # the handler maps expected failures itself; this is the last guard
                log.exception("data plane handler failed")
                reply = error_frame(500, f"{type(exc).__name__}: {exc}")
            adopt = reply if isinstance(reply, Adopt) else None
            try:
                write_message(sock, adopt.reply if adopt else reply)
            except OSError:
                return False
            if adopt is not None:
                adopt.take(sock)
                return True

    def start(self) -> "StreamServer":
        threading.Thread(target=self.server.serve_forever, name="data-plane", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection, as a process that exits would."""
        self.server.shutdown()
        self.server.server_close()
        with self._open_lock:
            for sock in list(self._open):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
