"""TCP segmentation offload on the send side, pure: super-segment sizes and bounds,
equality with the segments sent one by one, MSS-sized retransmissions, counters."""

from __future__ import annotations

import hashlib
import itertools
import random

import pytest

from netstack.tcp import seq as sq
from netstack.tcp.connection import TcpConfig, TcpConnection
from netstack.tcp.layer import TcpLayer
from netstack.tcp.segment import (
    ACK,
    CWR,
    FIN,
    PSH,
    SegmentRun,
    TcpOptions,
    TsoSegment,
    build,
    build_options,
    parse,
    split,
    verify_checksum,
)
from tests.unit.tcp_sim import A_IP, B_IP, SimNet
from tests.unit.test_tcp import transfer

TSO_MAX = 65535
MSS = 1448  # 1460 less the timestamps option


def tso_pair(tso: bool = True, both: bool = False, seed: int = 1,
             cfg_a: TcpConfig | None = None, **net: float
             ) -> tuple[SimNet, TcpConnection, TcpConnection]:
    a = TcpLayer(A_IP, mss=1460, rng=random.Random(1))
    b = TcpLayer(B_IP, mss=1460, rng=random.Random(2))
    if tso:
        a.tso_max = TSO_MAX
        if both:
            b.tso_max = TSO_MAX
    sim = SimNet([a, b], seed=seed, **net)  # type: ignore[arg-type]
    lst = b.listen(3260)
    ca = a.connect(B_IP, 3260, sim.now, config=cfg_a)
    sim.run_until(lambda: ca.connected and bool(lst.queue))
    cb = lst.accept()
    assert cb is not None
    return sim, ca, cb


def out_of(conn: TcpConnection, now: float) -> list[bytes | TsoSegment]:
    segs = [seg for _dst, seg in conn.layer.output(now)]
    out = [s for s in segs if not isinstance(s, SegmentRun)]
    assert len(out) == len(segs)  # tx_runs is off: no SegmentRun
    return out


def wire(segs: list[bytes | TsoSegment], src: bytes = A_IP, dst: bytes = B_IP) -> list[bytes]:
    """What the link puts on the wire (the kernel's cut, done by ``split``)."""
    out: list[bytes] = []
    for s in segs:
        out += split(s.data, src, dst, s.gso_size) if isinstance(s, TsoSegment) else [s]
    return out


def payload_len(seg: bytes) -> int:
    return len(parse(memoryview(seg)).payload)


def test_super_segments_are_whole_mss_multiples_up_to_64k() -> None:
    sim, ca, _cb = tso_pair()
    assert ca.mss == MSS and ca.ts_ok
    ca.cwnd = 100 * MSS + 500  # the last 500 bytes of room: sender SWS keeps them
    ca.snd_wnd = 1 << 22  # (the SYN-ACK's unscaled window was 64 KiB)
    ca.send(bytes(1 << 20))
    c0 = dict(ca.layer.counters.as_dict()["tcp"])
    segs = out_of(ca, sim.now)
    assert all(isinstance(s, TsoSegment) for s in segs)
    sizes = [len(s.data) - 32 for s in segs if isinstance(s, TsoSegment)]
    # 45 pieces fit 65535 - 20 (IPv4) - 32 (TCP + timestamps); then cwnd bounds it
    assert sizes == [45 * MSS, 45 * MSS, 10 * MSS]
    for s in segs:
        assert isinstance(s, TsoSegment)
        assert s.gso_size == MSS and not s.partial
        assert 20 + len(s.data) <= TSO_MAX
        p = parse(memoryview(s.data))
        assert p.flags == ACK and not p.opts.sack and p.opts.ts_val is not None
    assert [s.segments for s in segs if isinstance(s, TsoSegment)] == [45, 45, 10]
    c = ca.layer.counters.as_dict()["tcp"]
    assert c["segments_out"] - c0.get("segments_out", 0) == 100  # wire segments
    assert c["tso_out"] - c0.get("tso_out", 0) == 3
    assert c["bytes_out"] - c0.get("bytes_out", 0) == 100 * MSS
    assert sq.diff(ca.snd_nxt, ca.snd_una) == 100 * MSS == sq.diff(ca.snd_max, ca.snd_una)


def test_peer_window_and_data_bound_the_super_segment() -> None:
    sim, ca, _cb = tso_pair()
    ca.cwnd = 1 << 24
    ca.snd_wnd = 7 * MSS + 100
    ca.send(bytes(20 * MSS))
    segs = out_of(ca, sim.now)
    assert len(segs) == 1 and isinstance(segs[0], TsoSegment)
    assert segs[0].segments == 7 and len(segs[0].data) == 32 + 7 * MSS
    # the window opens: 5.5 segments of data are left, a super-segment of 5 with PSH
    # clear and the tail alone with PSH
    sim2, ca2, _ = tso_pair()
    ca2.cwnd = 1 << 24
    ca2.snd_wnd = 1 << 22
    ca2.send(bytes(5 * MSS + 300))
    segs = out_of(ca2, sim2.now)
    assert isinstance(segs[0], TsoSegment) and segs[0].segments == 5
    assert parse(memoryview(segs[0].data)).flags == ACK
    assert isinstance(segs[1], bytes) and payload_len(segs[1]) == 300
    assert parse(memoryview(segs[1])).flags == ACK | PSH
    # exactly whole segments: PSH rides on the super-segment (the kernel keeps it on the
    # last piece only)
    sim3, ca3, _ = tso_pair()
    ca3.cwnd = 1 << 24
    ca3.snd_wnd = 1 << 22
    ca3.send(bytes(3 * MSS))
    (only,) = out_of(ca3, sim3.now)
    assert isinstance(only, TsoSegment) and parse(memoryview(only.data)).flags == ACK | PSH
    assert [parse(memoryview(s)).flags for s in wire([only])] == [ACK, ACK, ACK | PSH]


def test_one_segment_of_room_is_a_plain_segment() -> None:
    sim, ca, _cb = tso_pair()
    ca.cwnd = MSS + 10
    ca.send(bytes(10 * MSS))
    segs = out_of(ca, sim.now)
    assert len(segs) == 1 and isinstance(segs[0], bytes) and payload_len(segs[0]) == MSS


@pytest.mark.parametrize("seed", range(12))
def test_super_segments_cut_into_exactly_the_plain_segments(seed: int) -> None:
    """The same connection state with and without TSO: what the link makes of the
    super-segments is byte for byte what is sent without TSO (sequence numbers, flags,
    window, timestamps, checksums)."""
    cfg = TcpConfig(timestamps=bool(seed % 3))
    runs = []
    for tso in (True, False):
        sim, ca, _cb = tso_pair(tso=tso, cfg_a=cfg)
        r = random.Random(seed)
        ca.cwnd = r.randrange(1, 200) * 700
        ca.snd_wnd = r.randrange(1, 300) * 500
        ca.send(r.randbytes(r.randrange(1, 400_000)))
        if r.random() < 0.3:
            ca.close(sim.now)
        runs.append((ca, out_of(ca, sim.now)))
    (ca_t, with_tso), (ca_p, plain) = runs
    assert wire(with_tso) == plain
    assert all(isinstance(s, bytes) for s in plain)
    for name in ("segments_out", "bytes_out", "fin_out"):
        assert ca_t.layer.counters.get("tcp", name) == ca_p.layer.counters.get("tcp", name)
    assert (ca_t.snd_nxt, ca_t.snd_max, ca_t.state) == (ca_p.snd_nxt, ca_p.snd_max,
                                                         ca_p.state)


def test_tso_off_never_makes_super_segments() -> None:
    sim, ca, cb = tso_pair(tso=False)
    data = random.Random(3).randbytes(2 << 20)
    assert transfer(sim, ca, cb, data) == data
    assert not sim.super_segments
    assert ca.layer.counters.get("tcp", "tso_out") == 0


def test_clean_bulk_transfer_counts_wire_segments() -> None:
    sim, ca, cb = tso_pair()
    data = random.Random(4).randbytes(4 << 20)
    got = transfer(sim, ca, cb, data)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    c = ca.layer.counters.as_dict()["tcp"]
    assert c["tso_out"] == len([s for s in sim.super_segments if s[0] == A_IP]) > 10
    assert c["segments_out"] == sum(1 for src, _, _ in sim.sent if src == A_IP)
    assert c["bytes_out"] == len(data) and c.get("retransmits", 0) == 0
    # every super-segment was whole MSS pieces and fit 64 KiB
    for _src, _dst, s in sim.super_segments:
        assert (len(s.data) - 32) % MSS == 0 and 20 + len(s.data) <= TSO_MAX


def test_stretch_acks_grow_the_window_by_the_super_segment() -> None:
    """The peer's ACK of a whole super-segment credits all of it in slow start (a GRO
    receiver ACKs it once); without TSO one MSS per ACK, as before."""
    grown = {}
    for tso in (True, False):
        sim, ca, _cb = tso_pair(tso=tso)
        cw = ca.cwnd
        assert cw == 10 * MSS
        ca.send(bytes(10 * MSS))
        sim.flush()
        assert ca.snd_una != ca.snd_max
        sim.run_until(lambda ca=ca: ca.snd_una == ca.snd_max, limit=5)  # type: ignore[misc]
        acks = ca.layer.counters.get("tcp", "segments_in")
        grown[tso] = (ca.cwnd - cw, acks)
    assert grown[True][0] == 10 * MSS
    assert grown[False][0] == MSS * (grown[False][1] - 1)  # one MSS per ACK (handshake: 1)


def test_retransmission_after_loss_is_mss_sized() -> None:
    sim, ca, cb = tso_pair()
    lost: list[int] = []

    def tap(src: bytes, dst: bytes, seg: bytes) -> bytes | None:
        p = parse(memoryview(seg))
        if src == A_IP and p.payload and len(lost) < 2 and sq.diff(p.seq, ca.iss) > 5 * MSS:
            lost.append(p.seq)  # two pieces out of the first super-segment
            return None
        return seg

    sim.tap = tap
    data = random.Random(6).randbytes(1 << 20)
    assert transfer(sim, ca, cb, data) == data
    assert len(lost) == 2
    resent = [parse(memoryview(g)) for s, _, g in sim.sent if s == A_IP]
    for seqno in lost:
        again = [p for p in resent if p.seq == seqno]
        assert len(again) == 2  # the lost one and its retransmission
        assert all(len(p.payload) == MSS for p in again)
    # no super-segment ever carried data again: their ranges never overlap
    ranges = sorted((sq.diff(parse(memoryview(s.data)).seq, ca.iss), len(s.data) - 32)
                    for src, _, s in sim.super_segments if src == A_IP)
    for (s1, n1), (s2, _n2) in itertools.pairwise(ranges):
        assert s1 + n1 <= s2
    c = ca.layer.counters.as_dict()["tcp"]
    assert c["retransmits"] >= 2
    assert c["segments_out"] == sum(1 for src, _, _ in sim.sent if src == A_IP)


@pytest.mark.parametrize("loss,reorder,dup,seed", [
    (0.01, 0.02, 0.01, 21), (0.05, 0.02, 0.01, 22), (0.10, 0.05, 0.02, 23)])
def test_lossy_bulk_both_ways_with_tso(loss: float, reorder: float, dup: float,
                                        seed: int) -> None:
    sim, ca, cb = tso_pair(both=True, seed=seed, loss=loss, reorder=reorder, dup=dup)
    data = random.Random(seed).randbytes(1 << 20)
    assert transfer(sim, ca, cb, data, limit=3600) == data
    assert transfer(sim, cb, ca, data[::-1], limit=3600) == data[::-1]
    for conn, ip in ((ca, A_IP), (cb, B_IP)):
        c = conn.layer.counters.as_dict()["tcp"]
        assert c["retransmits"] > 0 and c["tso_out"] > 0
        assert c["segments_out"] == sum(1 for src, _, _ in sim.sent if src == ip)


def test_sack_blocks_never_ride_on_super_segments() -> None:
    """With out-of-order data queued, SACK blocks ride on our short segments only (a
    full-sized one has no room for them, RFC 6691): super-segments go on without."""
    sim, ca, cb = tso_pair(both=True)
    dropped: list[int] = []

    def tap(src: bytes, dst: bytes, seg: bytes) -> bytes | None:
        p = parse(memoryview(seg))
        if src == B_IP and p.payload and not dropped:
            dropped.append(p.seq)
            return None
        return seg

    sim.tap = tap
    cb.send(bytes(3 * MSS))
    sim.run_until(lambda: bool(ca._ooo), limit=5)
    sim.tap = None
    ca.cwnd = 1 << 24
    ca.send(bytes(20 * MSS + 100))
    # (a duplicate ACK owed to the first out-of-order segment may still be queued)
    segs = [s for s in out_of(ca, sim.now) if isinstance(s, TsoSegment) or payload_len(s)]
    assert len(segs) == 2 and isinstance(segs[0], TsoSegment) and isinstance(segs[1], bytes)
    assert segs[0].segments == 20
    assert all(not parse(memoryview(p)).opts.sack for p in wire(segs[:1]))
    assert parse(memoryview(segs[1])).opts.sack  # the 100-byte tail has room
    sim.run_until(lambda: cb.available() == 20 * MSS + 100 and ca.available() == 3 * MSS)


def test_ipv6_super_segments_leave_room_for_the_larger_header() -> None:
    lay = TcpLayer(A_IP, mss=1460, rng=random.Random(1))
    lay.tso_max = TSO_MAX
    conn = TcpConnection(lay, b"\x20" + bytes(15), 1000, b"\x21" + bytes(15), 80, 1, 1440,
                         TcpConfig(), lay.counters, 0.0)
    conn.mss, conn.ts_ok = 1428, True
    assert conn._tso_bytes() == 45 * 1428  # 45 * 1428 + 32 <= 65535 - 40
    conn.mss = 1460
    conn.ts_ok = False
    assert conn._tso_bytes() == 44 * 1460
    conn.mss = 33000
    assert conn._tso_bytes() == 0  # two would not fit: no TSO
    lay.tso_max = 0
    conn.mss = 1000
    assert conn._tso_bytes() == 0


def test_split_moves_flags_and_checksums_like_the_kernel() -> None:
    opts = build_options(TcpOptions(ts_val=7, ts_ecr=9))
    payload = bytes(range(256)) * 20  # 5120 bytes
    seg = build(A_IP, B_IP, 1234, 80, 0xFFFFF000, 99, ACK | PSH | FIN | CWR, 500, opts,
                payload)
    pieces = split(seg, A_IP, B_IP, 1448)
    assert [payload_len(p) for p in pieces] == [1448, 1448, 1448, 776]
    parsed = [parse(memoryview(p)) for p in pieces]
    assert [p.seq for p in parsed] == [sq.add(0xFFFFF000, i * 1448) for i in range(4)]
    assert [p.flags for p in parsed] == [ACK | CWR, ACK, ACK, ACK | PSH | FIN]
    assert b"".join(bytes(p.payload) for p in parsed) == payload
    assert all(verify_checksum(A_IP, B_IP, memoryview(p)) for p in pieces)
    assert all(p.window == 500 and p.opts.ts_val == 7 for p in parsed)
    # partial: the field is the pseudo-header sum, what build(partial=True) leaves
    part = split(seg, A_IP, B_IP, 1448, partial=True)
    assert part[0] == build(A_IP, B_IP, 1234, 80, 0xFFFFF000, 99, ACK | CWR, 500, opts,
                            payload[:1448], partial=True)
    # a segment that fits is itself, checksum redone
    small = build(A_IP, B_IP, 1, 2, 3, 4, ACK, 5, b"", b"abc")
    assert split(small, A_IP, B_IP, 1448) == [small]
    with pytest.raises(ValueError):
        split(small, A_IP, B_IP, 0)
