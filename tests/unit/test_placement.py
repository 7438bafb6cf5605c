"""Direct data placement (netstack.tcp.placement) against the ordinary receive path.

TCP: two connections in identical states get the same segments from a scripted peer
(the random streams of test_tcp_fastpath: in order, holes, duplicates, window changes,
PAWS, odd options and flags, FIN, RST). One has a placement buffer and receives every
segment the way NetStack._recv_placed does — the link's ``readv`` emulated: the header
of the predicted length, then as much of the rest as fits at the placement target (even
when that is not payload), then the tail — and falls back to the full path when
``receive_placed`` refuses; the other takes the full path only. After every segment both
must be in the same state, have produced the same output and counters, and hold the same
stream, the placed bytes read back from the buffer.

Interface: the Ethernet/IPv4 checks of ``Interface.receive_placed`` accept exactly the
frames the ordinary path would deliver to TCP and count them the same.

Parser and session: ``Placed`` chunks complete Data-In PDUs as copied bytes would (with
padding and data digests); parsing ahead defers processing to the next receive.
"""

from __future__ import annotations

import ipaddress
import random
import struct
from collections import deque
from typing import Any, TypeVar

import pytest

from bootinit.iscsi.digest import crc32c
from bootinit.iscsi.errors import ProtocolError
from bootinit.iscsi.keys import OperationalConfig
from bootinit.iscsi.parser import PduParser
from bootinit.iscsi.pdu import DataIn, Opcode
from bootinit.iscsi.session import SessionState
from bootinit.iscsi.task import ScsiRequest
from bootinit.scsi import cdb
from netstack.interface import Interface, InterfaceConfig
from netstack.tcp import seq as sq
from netstack.tcp.connection import TcpConnection, TcpError
from netstack.tcp.placement import Continuation, Placed
from netstack.tcp.segment import ACK, FIN, PSH, OutSegment
from tests.unit.fake_target import FakeTarget, Harness, TargetSettings
from tests.unit.tcp_sim import A_IP, B_IP
from tests.unit.test_tcp_fastpath import MSS, Twins, counters, random_stream, snapshot

_PLACEMENT_KEYS = ("_rcvq", "_place_buf", "_place_seq", "_placed_any",
                   "placement_refill", "place_then")


def snap(conn: TcpConnection) -> dict[str, Any]:
    """``snapshot`` but for the receive queue and the placement fields (compared as
    streams by the caller)."""
    saved = conn._rcvq
    conn._rcvq = deque()
    try:
        out = snapshot(conn)
    finally:
        conn._rcvq = saved
    for k in _PLACEMENT_KEYS:
        out.pop(k, None)
    return out


def stream_of(conn: TcpConnection, buf: memoryview | None) -> bytes:
    """The bytes waiting in ``conn``'s receive queue, ``Placed`` ones read from ``buf``
    at their stream offset (relative to the connection's placement start)."""
    out = []
    pos = (conn.consumer_seq() - conn._place_seq) & sq.MASK
    for item in conn._rcvq:
        if isinstance(item, Placed):
            assert buf is not None
            out.append(bytes(buf[pos:pos + item.n]))
        else:
            out.append(bytes(item))
        pos += len(item)
    return b"".join(out)


class PlacedTwins(Twins):
    """conns[0]: header prediction and placement, fed as the TAP's readv feeds it;
    conns[1]: the full path only (no header prediction)."""

    def __init__(self, seed: int, region: int, **kw: Any) -> None:
        self.region = region
        self.buf: memoryview | None = None
        self.placed_segments = 0
        super().__init__(seed, **kw)
        self.rearm()

    def rearm(self) -> None:
        """A fresh placement buffer at the consumer's position (queue empty)."""
        self.buf = memoryview(bytearray(self.region))
        self.conns[0].set_placement(self.buf)

    def deliver(self, seg: bytes) -> list[tuple[bytes, OutSegment]]:
        if self.buf is None:  # the handshake, before placement is set
            return super().deliver(seg)
        self.layers[1].receive(B_IP, A_IP, memoryview(seg), self.now)
        conn, layer = self.conns[0], self.layers[0]
        target = conn.placement_target()
        taken = False
        if target is not None:
            hl = 32 if conn.ts_ok else 20
            rest = seg[hl:]
            k = min(len(rest), len(target))
            target[:k] = rest[:k]  # what readv writes there, payload or not
            if k:
                taken = layer.receive_placed(B_IP, memoryview(seg)[:hl], k,
                                             memoryview(rest)[k:], self.now)
                self.placed_segments += taken
        if not taken:
            layer.receive(B_IP, A_IP, memoryview(seg), self.now)
        return self.check()

    def check(self) -> list[tuple[bytes, OutSegment]]:
        for ly in self.layers:
            ly.on_deadline(self.now)
        assert snap(self.conns[0]) == snap(self.conns[1])
        if self.buf is not None:
            full = [x for x in self.conns[1]._rcvq if not isinstance(x, Placed)]
            assert len(full) == len(self.conns[1]._rcvq)  # conns[1] does not place
            assert stream_of(self.conns[0], self.buf) == b"".join(bytes(x) for x in full)
        assert [c is self.conns[0] for c in self.layers[0].take_notified()] == \
            [c is self.conns[1] for c in self.layers[1].take_notified()]
        out = self.output()
        ca, cb = (counters(ly) for ly in self.layers)
        ca.pop("bytes_placed", None)
        assert ca == cb
        return out

    def app_read(self, n: int) -> None:
        """Both applications read everything; placement starts afresh."""
        got0 = stream_of(self.conns[0], self.buf)
        self.conns[0].recv_chunks()
        assert got0 == self.conns[1].recv()
        self.rearm()
        self.check()


TwinsT = TypeVar("TwinsT", bound=PlacedTwins)


def predicting(tw: TwinsT) -> TwinsT:
    """One segment through (the fast path learns the peer's window field), read."""
    tw.deliver(tw.segment(tw.peer_nxt, MSS))
    tw.peer_nxt = sq.add(tw.peer_nxt, MSS)
    tw.app_read(1 << 20)
    return tw


@pytest.mark.parametrize("seed", range(30))
def test_placed_receive_matches_full_path_on_random_streams(seed: int) -> None:
    rng = random.Random(seed)
    tw = PlacedTwins(seed, region=rng.choice((3000, 64 * 1024, 1 << 20)),
                     wscale=rng.choice((0, 7, 14)), timestamps=seed % 4 != 3,
                     sack=seed % 5 != 4, rcvbuf=rng.choice((16 * 1024, 64 * 1024, 1 << 20)))
    random_stream(tw, rng, 400)
    assert tw.placed_segments > 0  # the placed path was taken, not only refused


def test_in_order_stream_is_placed_up_to_the_end_of_the_buffer() -> None:
    """In-order segments go to the buffer until it is full; the segment crossing its end
    is split (placed head, queued tail); after it the ordinary path takes over. The
    placed payloads, contiguous, make one ``Placed`` marker."""
    tw = predicting(PlacedTwins(3, region=5 * MSS + 100))
    for _ in range(8):
        tw.peer_ts += 1
        tw.deliver(tw.segment(tw.peer_nxt, MSS, flags=ACK | PSH))
        tw.peer_nxt = sq.add(tw.peer_nxt, MSS)
    conn = tw.conns[0]
    kinds = [type(x).__name__ for x in conn._rcvq]
    assert kinds[0] == "Placed" and "Placed" not in kinds[1:]
    assert [len(x) for x in conn._rcvq][:2] == [5 * MSS + 100, MSS - 100]
    assert len(kinds) == 4
    assert tw.placed_segments == 6
    assert conn.layer.counters.layer("tcp")["bytes_placed"] == 5 * MSS + 100
    assert conn.placement_target() is None


def test_placed_marker_grows_only_while_it_waits_at_the_queue_end() -> None:
    """Consecutive placed payloads extend the queued marker; a marker the consumer took
    never changes after, and a fresh placement starts a new one."""
    tw = predicting(PlacedTwins(5, region=1 << 20))
    conn = tw.conns[0]

    def one() -> None:
        tw.peer_ts += 1
        tw.deliver(tw.segment(tw.peer_nxt, MSS, flags=ACK | PSH))
        tw.peer_nxt = sq.add(tw.peer_nxt, MSS)

    one()
    one()
    taken = conn.recv_chunks()
    tw.conns[1].recv_chunks()  # the twin's consumer takes the same
    assert [(type(x), len(x)) for x in taken] == [(Placed, 2 * MSS)]
    tw.rearm()
    one()
    assert [len(x) for x in taken] == [2 * MSS]  # the consumer's marker is untouched
    assert [(type(x), len(x)) for x in conn._rcvq] == [(Placed, MSS)]
    assert conn._rcvq[0] is not taken[0]


def test_placed_within_window_while_only_placed_bytes_leave_room() -> None:
    """The consumer may leave queued bytes alone while they are all placed and the window
    is not yet full; anything else in the queue, a full window, no window or another
    state than ESTABLISHED says it has work."""
    tw = predicting(PlacedTwins(8, region=3 * MSS))
    conn = tw.conns[0]

    def one(n: int = MSS, flags: int = ACK | PSH) -> None:
        tw.peer_ts += 1
        tw.deliver(tw.segment(tw.peer_nxt, n, flags=flags))
        tw.peer_nxt = sq.add(tw.peer_nxt, n)

    assert not conn.placed_within_window()  # nothing queued
    one()
    assert conn.placed_within_window()
    one()
    assert conn.placed_within_window()  # the one marker grew
    one()
    assert not conn.placed_within_window()  # the window is full: its PDU may be done
    tw.app_read(3 * MSS)
    one()
    assert conn.placed_within_window()
    conn.set_placement(None)
    assert not conn.placed_within_window()  # no window
    tw.app_read(MSS)
    one()
    assert conn.placed_within_window()
    one(2 * MSS + 100)  # past the window's end: the rest is queued as ordinary bytes
    assert [type(x) for x in conn._rcvq] == [Placed, bytes]
    assert not conn.placed_within_window()
    tw.app_read(3 * MSS + 100)
    one()
    one(10, ACK | PSH | FIN)  # a FIN (and its bytes) come to the consumer at once
    assert not conn.placed_within_window()


def test_recv_refuses_a_queue_with_placed_bytes() -> None:
    tw = predicting(PlacedTwins(4, region=1 << 16))
    tw.peer_ts += 1
    tw.deliver(tw.segment(tw.peer_nxt, MSS))
    with pytest.raises(TcpError, match="recv_chunks"):
        tw.conns[0].recv()
    with pytest.raises(TcpError, match="recv_chunks"):
        tw.conns[0].recv_into(bytearray(10))
    assert isinstance(tw.conns[0].recv_chunks()[0], Placed)


def test_placement_target_follows_the_consumer_position() -> None:
    """A placement set while bytes still wait in the queue starts after them."""
    tw = predicting(PlacedTwins(6, region=1 << 16))
    conn = tw.conns[0]
    conn.set_placement(None)
    tw.deliver(tw.segment(tw.peer_nxt, 1000))
    tw.peer_nxt = sq.add(tw.peer_nxt, 1000)
    buf = memoryview(bytearray(4000))
    conn.set_placement(buf)
    tw.buf = buf
    assert conn._place_seq == sq.add(conn.rcv_nxt, -1000)
    target = conn.placement_target()
    assert target is not None and len(target) == 3000  # 1000 of it is queued already
    with pytest.raises(ValueError):
        conn.set_placement(memoryview(b"readonly"))


def _raw(item: bytes | memoryview | Placed) -> bytes:
    """A queued item that is not a ``Placed`` marker, as bytes."""
    assert not isinstance(item, Placed)
    return bytes(item)


def _split(tw: PlacedTwins, window: int, gap: int, accept: bool | None
           ) -> tuple[bool, memoryview, memoryview, list[tuple[memoryview, int]]]:
    """One in-order segment of ``window + gap + 300`` bytes, scattered as the stack's
    ``_recv_placed`` does with a continuation: over a fresh window of ``window``
    bytes, a ``gap``-byte header and a continuation buffer; the twin takes it the full
    way. Returns whether the placed path took it, the window, the continuation's
    buffer, and what ``accept`` was asked (``accept`` None: the continuation's answer
    is True but must not be needed)."""
    conn, layer = tw.conns[0], tw.layers[0]
    win = memoryview(bytearray(window))
    nxt = memoryview(bytearray(1000))
    asked: list[tuple[memoryview, int]] = []

    def check(g: memoryview, n: int) -> int:
        asked.append((g, n))
        return 0 if accept is False else 600  # the header's data: 600 of the 1000

    conn.set_placement(win, Continuation(gap, nxt, check))
    tw.buf = None  # the twins' stream check assumes one buffer: done here instead
    size = window + gap + 300
    tw.peer_ts += 1
    seg = tw.segment(tw.peer_nxt, size)
    tw.peer_nxt = sq.add(tw.peer_nxt, size)
    hl = 32 if conn.ts_ok else 20
    payload = seg[hl:]
    win[:] = payload[:window]
    g = memoryview(bytearray(payload[window:window + gap]))
    m = len(payload) - window - gap
    nxt[:m] = payload[window + gap:]
    taken = layer.receive_placed(B_IP, memoryview(seg)[:hl], window, memoryview(b""),
                                 tw.now, g, m)
    if not taken:
        layer.receive(B_IP, A_IP, memoryview(seg), tw.now)
    tw.layers[1].receive(B_IP, A_IP, memoryview(seg), tw.now)
    assert snap(conn) == snap(tw.conns[1])
    return taken, win, nxt, asked


def test_continuation_places_past_the_gap_when_accepted() -> None:
    """A segment running past the window: its first bytes fill the window, the next
    ``gap`` are queued as ordinary bytes (the header the consumer parses), the rest lie
    in the continuation's buffer, which becomes the window as far as ``accept`` said
    the header's payload goes; the stream is the twin's."""
    tw = predicting(PlacedTwins(7, region=1 << 16))
    conn = tw.conns[0]
    taken, win, nxt, asked = _split(tw, 500, 48, True)
    assert taken
    assert [(type(x), len(x)) for x in conn._rcvq] == [(Placed, 500), (bytes, 48),
                                                        (Placed, 300)]
    assert len(asked) == 1 and asked[0][1] == 300
    stream = bytes(win) + _raw(conn._rcvq[1]) + bytes(nxt[:300])
    assert stream == b"".join(_raw(x) for x in tw.conns[1].recv_chunks())
    assert bytes(asked[0][0]) == _raw(conn._rcvq[1])
    target = conn.placement_target()
    assert target is not None and target.obj is nxt.obj and len(target) == 300
    target[0] = 0x77
    assert nxt[300] == 0x77  # the window goes on right behind the placed bytes
    assert conn.place_then is None
    assert conn.layer.counters.layer("tcp")["placed_ahead"] == 1


def test_continuation_refused_sends_the_segment_the_ordinary_way() -> None:
    """``accept`` says no: nothing placed, the segment queued as the full path queues
    it (the caller joins the frame), the placement unchanged."""
    tw = predicting(PlacedTwins(8, region=1 << 16))
    conn = tw.conns[0]
    taken, _win, _nxt, asked = _split(tw, 500, 48, False)
    assert not taken and len(asked) == 1
    assert not any(isinstance(x, Placed) for x in conn._rcvq)
    assert b"".join(_raw(x) for x in conn.recv_chunks()) == \
        b"".join(_raw(x) for x in tw.conns[1].recv_chunks())
    assert conn.place_then is not None  # still waiting for the window to fill
    assert "placed_ahead" not in conn.layer.counters.layer("tcp")


def test_continuation_not_reached_needs_no_accept() -> None:
    """A segment that ends inside the window, or inside the gap, asks nothing: the gap's
    bytes received so far are ordinary ones and the continuation is not taken up."""
    tw = predicting(PlacedTwins(9, region=1 << 16))
    conn = tw.conns[0]
    win = memoryview(bytearray(5000))
    nxt = memoryview(bytearray(100))
    asked: list[int] = []

    def accept(g: memoryview, n: int) -> int:
        asked.append(n)
        return len(nxt)

    then = Continuation(48, nxt, accept)
    conn.set_placement(win, then)
    tw.buf = win
    tw.deliver(tw.segment(tw.peer_nxt, 1000))  # inside the window: the plain placed path
    tw.peer_nxt = sq.add(tw.peer_nxt, 1000)
    assert tw.placed_segments == 1 and conn.place_then is then
    hl = 32 if conn.ts_ok else 20
    tw.peer_ts += 1
    seg = tw.segment(tw.peer_nxt, 4020)  # the window's rest and 20 bytes of the gap
    tw.peer_nxt = sq.add(tw.peer_nxt, 4020)
    win[1000:] = seg[hl:hl + 4000]
    assert tw.layers[0].receive_placed(B_IP, memoryview(seg)[:hl], 4000, memoryview(b""),
                                       tw.now, memoryview(seg)[hl + 4000:], 0)
    tw.layers[1].receive(B_IP, A_IP, memoryview(seg), tw.now)
    assert asked == []
    assert [(type(x), len(x)) for x in conn._rcvq] == [(Placed, 5000), (bytes, 20)]
    assert conn.placement_target() is None  # past the window, the header incomplete
    assert snap(conn) == snap(tw.conns[1])


@pytest.mark.parametrize("span", [0, 200])
def test_continuation_after_a_complete_gap_alone(span: int) -> None:
    """A segment that ends right after the gap places nothing behind it, yet the header
    decides the window from then on: its span when ``accept`` agrees, none when not."""
    tw = predicting(PlacedTwins(11, region=1 << 16))
    conn = tw.conns[0]
    win = memoryview(bytearray(500))
    nxt = memoryview(bytearray(1000))
    conn.set_placement(win, Continuation(48, nxt, lambda g, n: span))
    hl = 32 if conn.ts_ok else 20
    tw.peer_ts += 1
    seg = tw.segment(tw.peer_nxt, 548)
    win[:] = seg[hl:hl + 500]
    assert tw.layers[0].receive_placed(B_IP, memoryview(seg)[:hl], 500, memoryview(b""),
                                       tw.now, memoryview(seg)[hl + 500:], 0)
    tw.layers[1].receive(B_IP, A_IP, memoryview(seg), tw.now)
    assert snap(conn) == snap(tw.conns[1])
    assert [(type(x), len(x)) for x in conn._rcvq] == [(Placed, 500), (bytes, 48)]
    target = conn.placement_target()
    assert (target is None) if not span else (target is not None and len(target) == span
                                              and target.obj is nxt.obj)


def test_continuation_must_follow_a_full_window() -> None:
    """Bytes for the gap while the window is not full are refused (the link never
    scatters so; the check keeps the stream exact)."""
    tw = predicting(PlacedTwins(10, region=1 << 16))
    conn = tw.conns[0]
    conn.set_placement(memoryview(bytearray(600)),
                       Continuation(48, memoryview(bytearray(1000)), lambda g, n: 1000))
    hl = 32 if conn.ts_ok else 20
    tw.peer_ts += 1
    seg = tw.segment(tw.peer_nxt, 500 + 48 + 300)
    assert not tw.layers[0].receive_placed(
        B_IP, memoryview(seg)[:hl], 500, memoryview(b""), tw.now,
        memoryview(seg)[hl + 500:hl + 548], 300)
    assert not conn._rcvq
    with pytest.raises(ValueError):
        Continuation(0, memoryview(bytearray(1)), lambda g, n: 1)
    with pytest.raises(ValueError):
        Continuation(48, memoryview(b"readonly"), lambda g, n: 8)


# ------------------------------------------------------------------ interface

MAC = bytes.fromhex("020000000001")
PEER_MAC = bytes.fromhex("020000000002")


def _ipv4(src: bytes, dst: bytes, payload_len: int, *, proto: int = 6, ff: int = 0x4000,
          options: bytes = b"", bad_checksum: bool = False) -> bytes:
    """An IPv4 header (RFC 791 §3.1) with its checksum."""
    ihl = 5 + len(options) // 4
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + payload_len, 7, ff,
                              64, proto, 0, src, dst) + options)
    ck = 0xFFFF - (sum(int.from_bytes(h[i:i + 2], "big") for i in range(0, len(h), 2))
                   % 0xFFFF)
    h[10:12] = ((ck + bad_checksum) & 0xFFFF).to_bytes(2, "big")
    return bytes(h)


#: Ways a frame can differ from the deliverable one; each must take the ordinary path.
MUTATIONS = ("mac", "ethertype", "vlan", "options", "fragment", "ip checksum", "padded",
             "src broadcast", "src ours", "dst", "udp", "truncated",
             # the TCP header's connection (Interface.receive_placed tests these too)
             "src other", "src multicast", "sport", "dport")


class IfaceTwins(PlacedTwins):
    """PlacedTwins one level down: segments wrapped in Ethernet and IPv4, sometimes
    changed in one field (MUTATIONS); conns[0]'s interface gets them as
    NetStack._recv_placed does, conns[1]'s through receive_frame. The interfaces'
    counters must match too."""

    def __init__(self, seed: int, region: int, **kw: Any) -> None:
        self.ifaces: list[Interface] = []
        self.mrng = random.Random(seed + 99)
        self.mutation_rate = 0.0
        self.mutated = 0
        self.force: str | None = None  # the mutation of the next frame, if any
        super().__init__(seed, region, **kw)
        cfg = InterfaceConfig(mac=MAC, ip=ipaddress.IPv4Interface("10.0.0.1/24"), mtu=9000)
        self.ifaces = [Interface(cfg, tcp=ly) for ly in self.layers]

    def frame(self, seg: bytes) -> bytes:
        kind = self.mrng.choice(MUTATIONS) if self.mrng.random() < self.mutation_rate else None
        if self.force is not None:
            kind, self.force = self.force, None
        self.mutated += kind is not None
        mac, etype, src, dst, proto = MAC, b"\x08\x00", B_IP, A_IP, 6
        kw: dict[str, Any] = {}
        tail = b""
        if kind == "mac":
            mac = PEER_MAC
        elif kind == "ethertype":
            etype = b"\x86\xdd"
        elif kind == "vlan":
            etype = b"\x81\x00\x00\x05\x08\x00"
        elif kind == "options":
            kw["options"] = b"\x01\x01\x01\x00"
        elif kind == "fragment":
            kw["ff"] = 0x2000
        elif kind == "ip checksum":
            kw["bad_checksum"] = True
        elif kind == "padded":
            tail = b"\0" * 6
        elif kind == "src broadcast":
            src = bytes([10, 0, 0, 255])
        elif kind == "src ours":
            src = A_IP
        elif kind == "dst":
            dst = bytes([10, 0, 0, 9])
        elif kind == "udp":
            proto = 17
        elif kind == "src other":
            src = bytes([10, 0, 0, 7])
        elif kind == "src multicast":
            src = bytes([224, 0, 0, 7])
        elif kind in ("sport", "dport"):
            at = 0 if kind == "sport" else 2
            port = int.from_bytes(seg[at:at + 2], "big") ^ 1
            seg = seg[:at] + port.to_bytes(2, "big") + seg[at + 2:]
        ip = _ipv4(src, dst, len(seg) + (8 if kind == "truncated" else 0), proto=proto, **kw)
        return mac + PEER_MAC + etype + ip + seg + tail

    def deliver(self, seg: bytes) -> list[tuple[bytes, OutSegment]]:
        if not self.ifaces or self.buf is None:
            return super().deliver(seg)
        frame = self.frame(seg)
        self.ifaces[1].receive_frame(frame, self.now, True)
        conn, iface = self.conns[0], self.ifaces[0]
        target = conn.placement_target()
        taken = False
        if target is not None:
            hl = 14 + 20 + (32 if conn.ts_ok else 20)
            rest = frame[hl:]
            k = min(len(rest), len(target))
            target[:k] = rest[:k]
            if k:
                taken = iface.receive_placed(memoryview(frame)[:hl], len(frame), k,
                                             memoryview(rest)[k:], self.now)
                self.placed_segments += taken
        if not taken:
            iface.receive_frame(frame, self.now, True)
        out = self.check()
        a, b = (i.counters.as_dict() for i in self.ifaces)
        a.pop("tcp", None)
        b.pop("tcp", None)
        assert a == b
        return out


@pytest.mark.parametrize("seed", range(12))
def test_interface_placed_path_matches_receive_frame(seed: int) -> None:
    """Only a frame the ordinary path would deliver to TCP is taken; it is counted by
    Ethernet and IPv4 as receive_frame counts it; everything else goes the ordinary way
    (RFC 791 §3.1, RFC 1122 §3.2.1)."""
    rng = random.Random(seed)
    tw = IfaceTwins(seed, region=rng.choice((5000, 1 << 20)), timestamps=seed % 3 != 2)
    predicting(tw)
    tw.mutation_rate = 0.15
    random_stream(tw, rng, 300)
    assert tw.placed_segments > 0 and tw.mutated > 0


@pytest.mark.parametrize("timestamps", [True, False])
@pytest.mark.parametrize("kind", MUTATIONS)
def test_interface_placed_path_refuses_each_mutation(kind: str, timestamps: bool) -> None:
    """An in-order segment the placed path would take, changed in one field that
    Interface.receive_placed tests, goes the ordinary way (with the same outcome); the
    same segment unchanged is placed."""
    tw = predicting(IfaceTwins(1, region=1 << 20, timestamps=timestamps))
    tw.peer_ts += 1
    tw.force = kind
    tw.deliver(tw.segment(tw.peer_nxt, MSS, flags=ACK | PSH))
    assert tw.mutated == 1 and tw.placed_segments == 0
    tw.peer_nxt = tw.conns[1].rcv_nxt  # past it when it was acceptable ("options", "padded")
    tw.peer_ts += 1
    tw.deliver(tw.segment(tw.peer_nxt, MSS, flags=ACK | PSH))
    assert tw.placed_segments == 1


# --------------------------------------------------------------------- parser


def _data_in(itt: int, offset: int, data: bytes, *, status: bool = False,
             digest: bool = False) -> bytes:
    """A raw Data-In PDU (RFC 7143 §11.7) carrying ``data`` at ``offset``."""
    bhs = bytearray(48)
    bhs[0] = int(Opcode.DATA_IN)
    bhs[1] = 0x80 | (0x01 if status else 0)
    bhs[5:8] = len(data).to_bytes(3, "big")
    bhs[16:20] = itt.to_bytes(4, "big")
    bhs[20:24] = b"\xff\xff\xff\xff"
    bhs[40:44] = offset.to_bytes(4, "big")
    pad = b"\0" * (-len(data) % 4)
    out = bytes(bhs) + data + pad
    if digest:
        out += crc32c(data + pad).to_bytes(4, "little")
    return out


@pytest.mark.parametrize("digest", [False, True])
@pytest.mark.parametrize("length", [4096, 4093])
def test_parser_takes_placed_bytes_as_copied_ones(digest: bool, length: int) -> None:
    data = random.Random(length).randbytes(length)
    pdu = _data_in(7, 512, data, digest=digest)
    buf = bytearray(8192)
    p = PduParser(max_recv_data_segment_length=1 << 16, pause_after_login=False)
    p.set_digests(False, digest)
    p.place(7, buf)
    assert p.placement_window() is None
    assert p.feed(pdu[:48 + 100]) == []
    window = p.placement_window()
    assert window is not None and len(window) == length - 100
    window[:3000] = data[100:3100]  # what the link's readv puts there
    assert p.feed(Placed(3000)) == []
    window = p.placement_window()
    assert window is not None and len(window) == length - 3100
    out = p.feed(pdu[48 + 3100:])
    assert len(out) == 1 and isinstance(out[0], DataIn) and out[0].placed
    assert bytes(buf[512:512 + length]) == data
    assert p.placement_window() is None


def test_placed_bytes_that_end_the_pdu_complete_it() -> None:
    data = bytes(range(256)) * 16
    buf = bytearray(len(data))
    p = PduParser(max_recv_data_segment_length=1 << 16, pause_after_login=False)
    p.place(9, buf)
    assert p.feed(_data_in(9, 0, data)[:48]) == []
    window = p.placement_window()
    assert window is not None
    window[:] = data
    out = p.feed(Placed(len(data)))
    assert len(out) == 1 and isinstance(out[0], DataIn) and out[0].placed
    assert bytes(buf) == data


def test_placed_bytes_where_none_are_expected_stop_the_parser() -> None:
    p = PduParser(max_recv_data_segment_length=1 << 16, pause_after_login=False)
    p.place(9, bytearray(100))
    with pytest.raises(ProtocolError, match="placed bytes"):
        p.feed(Placed(10))
    assert p.broken is not None
    p2 = PduParser(max_recv_data_segment_length=1 << 16, pause_after_login=False)
    p2.place(9, bytearray(100))
    p2.feed(_data_in(9, 0, b"a" * 100)[:48])
    with pytest.raises(ProtocolError, match="expects 100"):
        p2.feed(Placed(101))


def _data_in_more(itt: int, offset: int, data: bytes) -> bytes:
    """A Data-In without the F bit (more data of the task follows, §11.7.1)."""
    pdu = bytearray(_data_in(itt, offset, data))
    pdu[1] = 0
    return bytes(pdu)


def _predicting_parser(**kw: Any) -> PduParser:
    p = PduParser(max_recv_data_segment_length=1 << 16, pause_after_login=False, **kw)
    p.data_in_order = True
    return p


def test_parser_predicts_the_same_tasks_next_data_in() -> None:
    """Inside (and right after) a Data-In without F: the task's next Data-In, its data at
    this one's end; accept checks the header the frame brings field by field."""
    buf = bytearray(3 * 4096)
    p = _predicting_parser()
    p.place(5, buf)
    first = _data_in_more(5, 0, b"a" * 4096)
    assert p.placement_next() is None  # nothing parsed yet
    p.feed(first[:100])
    then = p.placement_next()
    assert then is not None and then.gap == 48
    assert then.buf.obj is memoryview(buf).obj and len(then.buf) == 8192
    then.buf[0] = 0x55
    assert buf[4096] == 0x55  # a view of the task's buffer at offset 4096
    good = _data_in(5, 4096, b"b" * 4096)[:48]
    assert then.accept(memoryview(good), 4096) == 4096  # the window: its data
    assert then.accept(memoryview(good), 1) == 4096
    short = _data_in(5, 4096, b"b" * 1000)[:48]
    assert then.accept(memoryview(short), 1000) == 1000  # not the whole buffer
    assert not then.accept(memoryview(good), 4097)  # more placed than its data
    assert not then.accept(memoryview(good[:47]), 1)
    for bad in (_data_in(6, 4096, b"b" * 4096), _data_in(5, 0, b"b" * 4096),
                _data_in(5, 8192 - 512, b"b" * 4096),  # runs past the buffer
                b"\x21" + good[1:48],  # a SCSI Response
                good[:4] + b"\x01" + good[5:48]):  # with an AHS
        assert not then.accept(memoryview(bad[:48]), 1), bad[:1]
    p.feed(first[100:])
    after = p.placement_next()  # between the PDUs: the same prediction, the same object
    assert after is then and len(after.buf) == 8192
    assert after.accept(memoryview(good), 10)
    p.unplace(5)
    assert not after.accept(memoryview(good), 10)  # the task's buffer was given back
    assert p.placement_next() is None


def test_parser_after_the_status_predicts_the_oldest_other_task() -> None:
    """A Data-In with the status ends its task: next, the task placed first among the
    others, at the offset its data has reached."""
    p = _predicting_parser()
    bufs = {itt: bytearray(8192) for itt in (3, 1, 2)}
    for itt, b in bufs.items():
        p.place(itt, b)
    p.feed(_data_in_more(1, 0, b"x" * 4096))  # task 1 got its first half
    p.feed(_data_in(3, 0, b"y" * 8192, status=True)[:60])
    then = p.placement_next()
    assert then is not None and then.buf.obj is memoryview(bufs[1]).obj
    assert then.accept(memoryview(_data_in(1, 4096, b"z" * 4096)[:48]), 8)
    assert not then.accept(memoryview(_data_in(1, 0, b"z" * 4096)[:48]), 8)
    p.feed(_data_in(3, 0, b"y" * 8192, status=True)[60:])
    after = p.placement_next()  # task 3 is done: still task 1
    assert after is not None and after.accept(
        memoryview(_data_in(1, 4096, b"z" * 4096)[:48]), 8)


def test_parser_keeps_no_view_of_a_finished_tasks_buffer() -> None:
    """The continuation handed out again holds a view of its task's buffer; once the
    task's status is parsed (or it is unplaced) the parser lets go of it, so the owner
    may resize the buffer."""
    for finish in ("status", "unplace"):
        buf = bytearray(8192)
        p = _predicting_parser()
        p.place(5, buf)
        p.feed(_data_in_more(5, 0, b"a" * 4096))
        then = p.placement_next()
        assert then is not None and p.placement_next() is then
        del then
        if finish == "status":
            p.feed(_data_in(5, 4096, b"b" * 4096, status=True))
        else:
            p.unplace(5)
        buf.extend(b"x")  # BufferError while any view of it is alive
        assert len(buf) == 8193


@pytest.mark.parametrize("case", ["not in order", "digest", "padding", "final no status",
                                  "unplaced", "held"])
def test_parser_predicts_nothing_it_cannot_vouch_for(case: str) -> None:
    p = _predicting_parser()
    p.place(5, bytearray(16384))
    data = b"a" * (4093 if case == "padding" else 4096)
    pdu = _data_in_more(5, 0, data)
    if case == "not in order":
        p.data_in_order = False
    elif case == "digest":
        p.set_digests(False, True)
    elif case == "final no status":
        pdu = _data_in(5, 0, data)
    elif case == "unplaced":
        pdu = _data_in_more(6, 0, data)
    p.feed(pdu[:100])
    if case == "held":
        p.feed(pdu[100:] + _data_in(5, 4096, data)[:10])  # in the middle of a header
    assert p.placement_next() is None


def test_unplace_in_the_middle_of_a_data_in_leaves_the_buffer_alone() -> None:
    """The session gives a task's buffer back (abort, timeout) while its Data-In is
    being parsed: the rest of that data goes elsewhere."""
    buf = bytearray(4096)
    p = PduParser(max_recv_data_segment_length=1 << 16, pause_after_login=False)
    p.place(5, buf)
    pdu = _data_in(5, 0, b"q" * 4096)
    p.feed(pdu[:1000])
    p.unplace(5)
    assert p.placement_window() is None
    out = p.feed(pdu[1000:])
    assert len(out) == 1 and isinstance(out[0], DataIn) and not out[0].placed
    assert bytes(buf[952:]) == bytes(4096 - 952)


# -------------------------------------------------------------------- session


@pytest.mark.parametrize("digests", [False, True])
@pytest.mark.parametrize("in_order", [True, False])
@pytest.mark.parametrize("chunk", [97, 5000, 70000])
def test_session_with_placement_same_as_batched(digests: bool, in_order: bool,
                                                chunk: int) -> None:
    """Reads of several Data-In PDUs each (in or out of order, queue depth 8, with and
    without digests), received as the placing stack delivers them — heads of pieces
    written straight into the placement window, pieces parsed ahead — give the same
    data and counters as plain batches, and most bytes were placed."""
    results = []
    for place in (False, True):
        settings = TargetSettings(header_digest=digests, data_digest=digests,
                                  data_pdu_in_order=in_order)
        t = FakeTarget(settings=settings)
        op = OperationalConfig(header_digest=("CRC32C", "None"),
                               data_digest=("CRC32C", "None"), data_pdu_in_order=in_order,
                               max_recv_data_segment_length=16384)
        h = Harness(t, chunk=chunk, batch=True, place=place, operational=op,
                    queue_depth=8)
        s = h.login()
        data = bytes(random.Random(5).randbytes(512 * 512))
        t.luns[0].write(0, data)
        t.datain_reverse = not in_order
        reads = [h.session.submit(ScsiRequest(cdb.read_cdb(lba, 32), lun=0,
                                              read_into=bytearray(32 * 512)), now=h.now)
                 for lba in range(0, 512, 32)]
        h.run_until(lambda reads=reads: all(r.done for r in reads))  # type: ignore[misc]
        assert [bytes(r.request.read_into or b"") for r in reads] == \
            [data[i * 32 * 512:(i + 1) * 32 * 512] for i in range(16)]
        assert t.violations == []
        if place:  # pieces larger than a PDU place only up to its end
            assert h.placed > (len(data) // 2 if chunk < 16384 else 0)
            # in order and without digests the next Data-In is placed too
            assert (h.placed_ahead > 0) == (in_order and not digests)
            assert h.missed_ahead == 0  # the target sends in command order
        c = s.counters.as_dict()
        results.append((c["commands"], c["pdus_in"], c.get("errors", {})))
    assert results[0] == results[1]


@pytest.mark.parametrize("chunk", [5000, 70000])
def test_wrong_predictions_leave_the_data_right(chunk: int) -> None:
    """The target answers queued reads newest first: the prediction after each status
    (the oldest other task) is wrong, the continuation refuses, and what the stack's
    readv wrote into that task's buffer is overwritten by the task's own data."""
    t = FakeTarget()
    op = OperationalConfig(max_recv_data_segment_length=16384)
    h = Harness(t, chunk=chunk, batch=True, place=True, operational=op, queue_depth=8)
    h.login()
    data = bytes(random.Random(9).randbytes(512 * 512))
    t.luns[0].write(0, data)
    t.hold = True
    reads = [h.session.submit(ScsiRequest(cdb.read_cdb(lba, 64), lun=0,
                                          read_into=bytearray(64 * 512)), now=h.now)
             for lba in range(0, 512, 64)]  # two Data-In each
    h.settle()
    assert len(t.held) == 8
    t.held.reverse()
    t.release()
    h.run_until(lambda: all(r.done for r in reads))
    assert [bytes(r.request.read_into or b"") for r in reads] == \
        [data[i * 64 * 512:(i + 1) * 64 * 512] for i in range(8)]
    assert h.missed_ahead > 0 and h.placed_ahead > 0


def test_parse_ahead_is_processed_by_the_next_receive() -> None:
    """PDUs parsed ahead complete their task only when the batch is received; a fatal
    parse error found ahead is reported then, after the PDUs before it."""
    t = FakeTarget()
    h = Harness(t)
    s = h.login()
    data = bytes(range(256)) * 16
    t.luns[0].write(0, data)
    r = h.session.submit(ScsiRequest(cdb.read_cdb(0, 8), lun=0,
                                     read_into=bytearray(8 * 512)), now=h.now)
    t.receive(s.data_to_send())
    back = t.take_output()
    s.parse_ahead([back])
    assert s.has_parsed_ahead() and not r.done
    s.receive_chunks([], h.now)
    assert r.done and bytes(r.request.read_into or b"") == data
    assert not s.has_parsed_ahead()
    r2 = h.session.submit(ScsiRequest(cdb.read_cdb(0, 8), lun=0,
                                      read_into=bytearray(8 * 512)), now=h.now)
    t.receive(s.data_to_send())
    back = t.take_output()
    s.parse_ahead([back, b"\x01" + bytes(47)])  # an initiator opcode: fatal
    assert not r2.done and s.transport_action() is None
    s.receive_chunks([], h.now)
    assert r2.done  # the good PDUs were processed before the error ended the connection
    assert s.transport_action() is not None and s.state is not SessionState.FULL_FEATURE


def test_parse_ahead_outside_the_full_feature_phase_is_refused() -> None:
    h = Harness(FakeTarget())
    with pytest.raises(ProtocolError):
        h.session.parse_ahead([b"x"])
    assert h.session.placement_window() is None
