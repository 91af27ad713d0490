"""SYNC_TOPOLOGY=mesh: this rank's kept-open link to every other rank, written and read by the step's own
compute thread.

Why: the first mesh made each sync a call (the lower rank's request, the higher rank's reply built by
its data-plane thread), and on a 2-vCPU VM a sync took 0.69-0.88 ms (p50) after both partials were
ready, in hand-offs between threads and wake-ups, for a 25-45 us loopback round trip (here: 0.30 ms).
Here nothing but the compute thread touches a link during a step: it writes its partial to every peer
and reads theirs, all at once.

A pair's link is one TCP connection: the lower rank opens it on the higher rank's data port with a
MeshLink frame; the higher rank's data-plane thread answers and hands the socket over (common/wire.Adopt).
Per sync a rank writes one frame to each link and reads one from each, in one select loop, so two ranks
sending each other partials larger than their socket buffers (a long prompt's) never wait on each other.
A frame of another step (left by a step that failed half-way) is kept aside, a few at most, and dropped
when a new step begins. Every failure names the peer: a link that closes, a bad frame, a peer silent for
HOP_TIMEOUT_S; the root's MeshAbort wakes a rank that waits (`abort`).

A rank polls its links for SYNC_SPIN_MS before it sleeps on them, as distributed-llama's nodes spin on
theirs: on a 2-vCPU VM a partial reached a rank asleep in select 0.25 ms (p50) after its peer stamped
it, 0.16 ms when the rank polled (the sleeping vCPU must be woken). While it polls it yields the CPU
to any process that has work there.
"""
from __future__ import annotations

import os
import select
import socket
import threading
import time
from dataclasses import dataclass, field

import torch

from common.frame import FrameError, decode_frame, encode_frame
from common.protocol import ProtocolError, StepError
from common.tensor_protocol import MeshLink, MeshPartial, sync_label
from common.transport import split_address
from common.wire import LENGTH as _LEN
from common.wire import Adopt, open_stream, read_message, write_message

MAX_ASIDE = 8  # frames of other steps kept, all links together: a failed step leaves at most a couple on each
Key = tuple[str, int, int]  # (request id, step, sync)


class SyncFailed(Exception):
    """A synchronisation that did not come back with a sum; carries the StepError to answer with."""

    def __init__(self, error: StepError):
        super().__init__(error.message)
        self.error = error


@dataclass(eq=False)
class Arrival:
    """A peer's partial of one sync, as it came off its link."""
    header: MeshPartial
    partial: torch.Tensor
    recv_ns: int         # this worker's clock, when its last byte was read (see Exchanged.sent_ns)
    transport_ms: float  # on the wire while this rank waited for it (0 when it was there already)

    @property
    def key(self) -> Key:
        return self.header.request_id, self.header.step, self.header.sync


@dataclass(eq=False)
class Exchanged:
    """What one sync brought: when this rank's partial went out, and the others' partials by rank."""
    sent_ns: int                    # this worker's clock, its partial written (or queued) on every link
    partials: dict[int, Arrival]    # a partial already there then counts as arrived at sent_ns
    sent_bytes: int                 # what this rank wrote, length prefixes included


@dataclass
class _Link:
    sock: socket.socket
    inbox: bytearray = field(default_factory=bytearray)  # bytes read of the next frames


class MeshLinks:
    """This worker's links to the other ranks of its share, and what the root said failed."""

    def __init__(self, max_frame_bytes: int, secret=None, spin_s: float = 0.0):
        self.max_frame_bytes, self.secret = max_frame_bytes, secret
        self.spin_s = spin_s  # poll this long before sleeping in select: see the module docstring
        self.cond = threading.Condition()
        self.links: dict[int, _Link] = {}
        self.failed: dict[tuple[str, int], StepError] = {}
        self.current: tuple[str, int] | None = None  # the step begun last: an older one still syncing is over
        self.aside: list[tuple[int, Arrival]] = []  # (peer rank, its frame of another step)
        self._busy = threading.Lock()  # one step's exchange at a time
        self._buf = bytearray(1 << 18)  # what one recv reads, then appended to its link's inbox
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    # ---- called by other threads ----

    def adopt(self, rank: int, sock: socket.socket) -> None:
        """A lower rank's link, from the data-plane thread that answered its MeshLink."""
        with self.cond:
            old = self.links.pop(rank, None)
            if old is not None:
                old.sock.close()
            sock.setblocking(False)  # only select waits on a link
            self.links[rank] = _Link(sock)
            self.cond.notify_all()

    def abort(self, request_id: str, step: int, error: StepError) -> None:
        with self.cond:
            self.failed[(request_id, step)] = error
            self.cond.notify_all()
        self._wake()

    def _wake(self) -> None:
        """Wakes an exchange asleep in select, to look at `current` and `failed` again."""
        try:
            self._wake_w.send(b"!")
        except OSError:  # the wake-up socket is full: a wake-up is pending anyway
            pass

    def reset(self) -> None:
        """A new assignment: the peers may be others; every link is opened again when needed."""
        with self.cond:
            for link in self.links.values():
                link.sock.close()
            self.links.clear()
            self.aside.clear()

    # ---- the step's compute thread ----

    def begin(self, request_id: str, step: int) -> None:
        """A new step: any other step still syncing here is over (the root gave up on it), and so are the
        failures and frames kept aside of other steps."""
        with self.cond:
            self.current = (request_id, step)
            self.failed = {k: v for k, v in self.failed.items() if k == (request_id, step)}
            self.aside = [(p, a) for p, a in self.aside if a.key[:2] == (request_id, step)]
            self.cond.notify_all()
        self._wake()

    def exchange(self, key: Key, rank: int, peers: tuple[str, ...], frame: bytes, who: str,
                 timeout_s: float) -> Exchanged:
        """Writes `frame` (this rank's partial of sync key) to every other rank and returns theirs, by rank.
        Raises SyncFailed naming the peer that failed, or carrying the root's abort."""
        deadline = time.monotonic() + timeout_s
        with self._busy:
            self._check_failed(key)  # before a byte goes out: an older step's partial is nobody's
            links = {p: self._link(p, rank, peers, who, deadline, key) for p in range(len(peers)) if p != rank}
            message = _LEN.pack(len(frame)) + frame
            out = {}
            for p, link in links.items():  # first of all: the peers wait for it
                out[p] = memoryview(message)
                self._send(p, link, out, peers, who)
            waiting_from = time.time_ns()
            got = self._take_aside(key, waiting_from)
            try:
                self._loop(key, links, out, got, peers, who, deadline, waiting_from, timeout_s)
            except SyncFailed:
                for p, rest in out.items():  # half a message on a link would put its stream out of step
                    if 0 < len(rest) < len(message):
                        self._drop(p)
                raise
            return Exchanged(waiting_from, got, len(message) * len(links))

    def _send(self, p: int, link: _Link, out: dict[int, memoryview], peers: tuple[str, ...], who: str) -> None:
        """As much of rank p's message as its link takes now."""
        try:
            n = link.sock.send(out[p])
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(p, peers, who, f"cannot send its partial: {type(exc).__name__}")
        out[p] = out[p][n:]

    def _loop(self, key: Key, links: dict[int, _Link], out: dict[int, memoryview], got: dict[int, Arrival],
              peers: tuple[str, ...], who: str, deadline: float, waiting_from: int, timeout_s: float) -> None:
        by_sock = {link.sock: p for p, link in links.items()}
        spin_until = time.monotonic() + self.spin_s
        # The first pass does not wait: what it finds was there when this rank's partial went out, and
        # counts as arrived then (when it came while this rank computed or opened a link is unknown).
        for p, link in links.items():  # frames already read into an inbox (a peer ahead of this rank)
            self._frames(p, link, key, got, peers, who, waiting_from, early=True)
        first = True
        while any(out.values()) or len(got) < len(links):
            self._check_failed(key)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = [p for p in links if p not in got] or [p for p in links if out[p]]
                raise SyncFailed(StepError(
                    504, f"no partial of {sync_label(key[2])} (step {key[1]}) came from rank "
                         f"{', '.join(map(str, missing))} to {who} within {timeout_s:g} s", who, peers[missing[0]]))
            readers = [links[p].sock for p in links if p not in got] + [self._wake_r]
            writers = [links[p].sock for p in links if out[p]]
            spinning = first or time.monotonic() < spin_until
            readable, writable, _ = select.select(readers, writers, [], 0 if spinning else remaining)
            early, first = first, False
            if spinning and not readable and not writable:
                os.sched_yield()  # a process that has work on this CPU gets it; this one stays awake
                continue
            for sock in writable:
                p = by_sock[sock]
                self._send(p, links[p], out, peers, who)
            for sock in readable:
                if sock is self._wake_r:
                    self._drain_wake()
                    continue
                p = by_sock[sock]
                try:
                    n = sock.recv_into(self._buf)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    self._lost(p, peers, who, f"its link failed: {type(exc).__name__}")
                if not n:
                    self._lost(p, peers, who, "it closed its link")
                links[p].inbox += memoryview(self._buf)[:n]
                self._frames(p, links[p], key, got, peers, who, waiting_from, early)

    def _frames(self, p: int, link: _Link, key: Key, got: dict[int, Arrival], peers: tuple[str, ...], who: str,
                waiting_from: int, early: bool) -> None:
        """Takes every whole frame out of a link's inbox: the current sync's into `got`, others aside.
        early: the frames were there before this rank waited (they arrived, for the barrier, at waiting_from)."""
        box = link.inbox
        while len(box) >= _LEN.size and p not in got:
            (n,) = _LEN.unpack_from(box)
            if n > self.max_frame_bytes:
                self._lost(p, peers, who, f"it sent a frame of {n} bytes, over the limit of {self.max_frame_bytes}")
            if len(box) < _LEN.size + n:
                return
            frame = bytes(box[_LEN.size:_LEN.size + n])
            del box[:_LEN.size + n]
            arrival = self._arrival(p, frame, peers, who, waiting_from if early else time.time_ns(), waiting_from)
            if arrival.key == key:
                got[p] = arrival
            else:
                self.aside = (self.aside + [(p, arrival)])[-MAX_ASIDE:]

    def _arrival(self, p: int, frame: bytes, peers: tuple[str, ...], who: str, now: int, waiting_from: int) -> Arrival:
        try:
            raw, partial = decode_frame(frame, self.max_frame_bytes)
            if "error" in raw:
                raise SyncFailed(StepError.from_dict(raw))
            header = MeshPartial.from_dict(raw)
            if header.rank != p:
                raise ProtocolError(f"rank {p}'s link carries rank {header.rank}'s partial")
            if partial is None or partial.dtype != torch.float32 or partial.dim() != 3:
                raise ProtocolError("a partial must be float32 of shape (1, T, hidden)")
        except (FrameError, ProtocolError) as exc:
            self._lost(p, peers, who, f"it sent a bad partial: {exc}")
        transport_ms = max(0.0, (now - max(header.sent_ns, waiting_from)) / 1e6)
        return Arrival(header, partial, now, transport_ms)

    def _take_aside(self, key: Key, waiting_from: int) -> dict[int, Arrival]:
        """This sync's frames read during an earlier one (a peer ahead): arrived, for the barrier, at waiting_from."""
        with self.cond:
            mine = {p: a for p, a in self.aside if a.key == key}
            self.aside = [(p, a) for p, a in self.aside if a.key != key]
        for a in mine.values():
            a.recv_ns, a.transport_ms = waiting_from, 0.0
        return mine

    def _link(self, p: int, rank: int, peers: tuple[str, ...], who: str, deadline: float, key: Key) -> _Link:
        """The link to rank p, opened (p above this rank) or waited for (p below) if there is none or it closed."""
        with self.cond:
            link = self.links.get(p)
            if link is not None and _closed(link.sock):
                link.sock.close()
                self.links.pop(p, None)
                link = None
            if link is not None:
                return link
            if p < rank:  # the lower rank opens it, at its first sync after its start
                while p not in self.links:
                    self._check_failed_locked(key)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise SyncFailed(StepError(504, f"rank {p} ({peers[p]}) did not open its link to {who} "
                                                        "within the hop timeout", who, peers[p]))
                    self.cond.wait(remaining)
                return self.links[p]
        link = _Link(self._open(p, rank, peers, who, deadline))
        with self.cond:
            self.links[p] = link
        return link

    def _open(self, p: int, rank: int, peers: tuple[str, ...], who: str, deadline: float) -> socket.socket:
        timeout = max(0.1, deadline - time.monotonic())
        try:
            sock = open_stream(split_address(peers[p]), timeout, self.secret)
        except OSError as exc:
            raise SyncFailed(StepError(502, f"{who}: cannot reach rank {p} ({peers[p]}) for its link: "
                                            f"{type(exc).__name__}", who, peers[p])) from None
        try:
            sock.settimeout(timeout)
            write_message(sock, encode_frame(MeshLink(rank, len(peers)).to_dict(), None))
            raw, _ = decode_frame(read_message(sock, self.max_frame_bytes), self.max_frame_bytes)
            if "error" in raw:
                raise SyncFailed(StepError.from_dict(raw))
            MeshLink.from_dict(raw)
            sock.setblocking(False)  # only select waits on a link
            return sock
        except SyncFailed:
            sock.close()
            raise
        except (OSError, FrameError, ProtocolError) as exc:
            sock.close()
            raise SyncFailed(StepError(502, f"{who}: rank {p} ({peers[p]}) did not take its link: "
                                            f"{type(exc).__name__}: {exc}", who, peers[p])) from None

    def _lost(self, p: int, peers: tuple[str, ...], who: str, why: str):
        """Drops rank p's link (out of step now) and fails the sync, naming it."""
        self._drop(p)
        raise SyncFailed(StepError(502, f"{who}: rank {p} ({peers[p]}): {why}", who, peers[p]))

    def _drop(self, p: int) -> None:
        with self.cond:
            link = self.links.pop(p, None)
        if link is not None:
            link.sock.close()

    def _check_failed(self, key: Key) -> None:
        with self.cond:
            self._check_failed_locked(key)

    def _check_failed_locked(self, key: Key) -> None:
        error = self.failed.get(key[:2])
        if error is not None:
            raise SyncFailed(error)
        if self.current is not None and key[:2] != self.current:
            raise SyncFailed(StepError(409, f"step {key[1]} of {key[0]} is over: the root began another"))

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(64):
                pass
        except (BlockingIOError, OSError):
            pass


def _closed(sock: socket.socket) -> bool:
    """A link whose peer closed it (a restart) reads as end of file; pending frames do not count."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def link_request(links: MeshLinks, raw: dict, own_rank: int, world: int, name: str):
    """A lower rank's MeshLink on this worker's data port: the answer, and this connection becomes its link."""
    try:
        hello = MeshLink.from_dict(raw)
        if not hello.rank < own_rank or hello.world != world:
            raise ProtocolError(f"rank {hello.rank} of {hello.world} cannot open a link to rank {own_rank} of {world} "
                                "(the lower rank of a pair opens it, both of one world)")
    except ProtocolError as exc:
        return encode_frame(StepError(400, f"{name} got a bad link request: {exc}", name).to_dict(), None)
    return Adopt(encode_frame(MeshLink(own_rank, world).to_dict(), None), lambda sock: links.adopt(hello.rank, sock))
