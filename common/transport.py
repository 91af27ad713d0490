"""How frames travel between the processes of the cluster: a small interface and its TCP implementation.

The chain (backend/chain.py) and the worker (worker/app.py) receive a Transport and use only
    transport.peer(address).call(frame, timeout) -> reply frame
    transport.serve(port, handler) -> a Listener (handler: frame -> reply frame)
so a second transport (a collective library for tensor mode, a hop to another host) is one new class.

Addresses are "host:port" data addresses. A process's data port is its HTTP port + 1: that pairing
is written here and nowhere else (`data_address`).
"""
from __future__ import annotations

import socket
import threading
from typing import Callable, Protocol
from urllib.parse import urlsplit

from .auth import SecretSource
from .wire import DATA_PORT_OFFSET, StreamClient, StreamServer

Handler = Callable[[bytearray], bytes]


class Peer(Protocol):
    def call(self, frame: bytes, timeout: float) -> bytearray:
        """Send one frame, wait for the reply frame. Raises OSError (TimeoutError, ConnectionError)."""


class Listener(Protocol):
    port: int

    def stop(self) -> None: ...


class Transport(Protocol):
    def peer(self, address: str) -> Peer: ...

    def serve(self, port: int, handler: Handler) -> Listener: ...


def data_port(http_port: int) -> int:
    return http_port + DATA_PORT_OFFSET


def data_address(url: str) -> str:
    """http://host:port (a process's HTTP address) -> "host:port+1", its data address."""
    parts = urlsplit(url)
    if not parts.hostname or not parts.port:
        raise ValueError(f"{url!r} must be http://host:port")
    return f"{parts.hostname}:{data_port(parts.port)}"


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{address!r} must be host:port")
    return host, int(port)


def reachable_host(peer_host: str) -> str:
    """This process's address as seen from peer_host: the source address the route to it would use.

    A UDP "connect" sends nothing; it only asks the kernel for the route. In compose or a swarm this
    is the container's address on the network it shares with the peer; locally, 127.0.0.1.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((socket.gethostbyname(peer_host), 9))
            return s.getsockname()[0]
    except OSError:
        return socket.gethostname()


class TcpTransport:
    """Length-prefixed frames on kept-open TCP connections (common/wire.py), one client per peer."""

    def __init__(self, host: str, max_frame_bytes: int, secret: SecretSource | None = None):
        self.host, self.max_frame_bytes, self.secret = host, max_frame_bytes, secret
        self._peers: dict[str, StreamClient] = {}
        self._lock = threading.Lock()

    def peer(self, address: str) -> StreamClient:
        with self._lock:
            client = self._peers.get(address)
            if client is None:
                client = self._peers[address] = StreamClient(split_address(address), self.max_frame_bytes,
                                                             self.secret)
            return client

    def serve(self, port: int, handler: Handler) -> StreamServer:
        return StreamServer(self.host, port, handler, self.max_frame_bytes, secret=self.secret).start()
