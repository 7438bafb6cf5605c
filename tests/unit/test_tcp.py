"""Unit tests of the pure TCP core: two of our layers over a simulated network."""

from __future__ import annotations

import hashlib
import itertools
import random
import struct
from typing import cast

import pytest

from netstack.tcp import seq as sq
from netstack.tcp.connection import TcpConfig, TcpConnection, TcpState
from netstack.tcp.layer import TcpLayer
from netstack.tcp.placement import Placed
from netstack.tcp.segment import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    SegmentError,
    TcpOptions,
    build,
    build_options,
    build_ts,
    parse,
    pseudo_header_base,
    verify_checksum,
)
from tests.unit.tcp_sim import A_IP, B_IP, SimNet


def pair(latency: float = 0.0005, cfg_a: TcpConfig | None = None,
         cfg_b: TcpConfig | None = None, **net: float) -> tuple[SimNet, TcpConnection,
                                                                TcpConnection]:
    a = TcpLayer(A_IP, mss=1460, rng=random.Random(1))
    b = TcpLayer(B_IP, mss=1460, rng=random.Random(2))
    sim = SimNet([a, b], latency=latency, **net)  # type: ignore[arg-type]
    lst = b.listen(3260, config=cfg_b)
    ca = a.connect(B_IP, 3260, sim.now, config=cfg_a)
    sim.run_until(lambda: ca.connected and bool(lst.queue))
    cb = lst.accept()
    assert cb is not None
    return sim, ca, cb


def transfer(sim: SimNet, src: TcpConnection, dst: TcpConnection, data: bytes,
             limit: float = 600.0) -> bytes:
    """Send ``data`` from src to dst through the sim; return what dst read."""
    got = bytearray()
    pos = 0

    def pump() -> None:
        nonlocal pos
        if pos < len(data):
            pos += src.send(memoryview(data)[pos:pos + 256 * 1024])
        got.extend(dst.recv())

    src.callback = lambda c: pump()
    dst.callback = lambda c: pump()
    pump()

    def pumped() -> bool:
        pump()
        return len(got) >= len(data)

    sim.run_until(pumped, limit=limit)
    return bytes(got)


def test_seq_arithmetic_across_wrap() -> None:
    assert sq.add(0xFFFFFFFF, 1) == 0
    assert sq.lt(0xFFFFFFF0, 0x10)
    assert sq.gt(0x10, 0xFFFFFFF0)
    assert sq.diff(0x10, 0xFFFFFFF0) == 0x20
    assert sq.diff(0xFFFFFFF0, 0x10) == -0x20
    assert sq.between(0xFFFFFFF0, 0x5, 0x10)
    assert not sq.between(0xFFFFFFF0, 0x10, 0x10)
    assert sq.le(5, 5) and sq.ge(5, 5)


def test_segment_roundtrip_and_checksum() -> None:
    opts = TcpOptions(mss=1460, wscale=7, sack_perm=True, ts_val=123, ts_ecr=456)
    seg = build(A_IP, B_IP, 1234, 3260, 0xFFFFFFFE, 7, SYN, 65535, build_options(opts), b"")
    assert verify_checksum(A_IP, B_IP, memoryview(seg))
    p = parse(memoryview(seg))
    assert (p.sport, p.dport, p.seq, p.ack, p.flags, p.window) == (1234, 3260, 0xFFFFFFFE, 7,
                                                                  SYN, 65535)
    assert (p.opts.mss, p.opts.wscale, p.opts.sack_perm, p.opts.ts_val, p.opts.ts_ecr) == (
        1460, 7, True, 123, 456)
    bad = bytearray(seg)
    bad[-1] ^= 1
    assert not verify_checksum(A_IP, B_IP, memoryview(bytes(bad)))


def test_segment_against_scapy() -> None:
    scapy_all = pytest.importorskip("scapy.all")
    opts = TcpOptions(ts_val=5, ts_ecr=6, sack=[(100, 200), (300, 400)])
    seg = build(A_IP, B_IP, 40000, 3260, 1000, 2000, ACK, 512, build_options(opts), b"hello")
    pkt = scapy_all.IP(src="10.0.0.1", dst="10.0.0.2", proto=6) / scapy_all.TCP(seg)
    tcp = scapy_all.IP(bytes(pkt))[scapy_all.TCP]
    d = dict(tcp.options)
    assert d["Timestamp"] == (5, 6)
    assert d["SAck"] == (100, 200, 300, 400)
    assert bytes(tcp.payload) == b"hello"
    # scapy recomputes the checksum when told to: it must equal ours
    chk = tcp.chksum
    del tcp.chksum
    re = scapy_all.IP(src="10.0.0.1", dst="10.0.0.2") / tcp
    assert scapy_all.IP(bytes(re))[scapy_all.TCP].chksum == chk


@pytest.mark.parametrize("blob,reason", [
    (b"\x00" * 10, "truncated"),
    (struct.pack("!HHIIBBHHH", 1, 2, 3, 4, 0xF0, ACK, 0, 0, 0), "bad_offset"),
    (struct.pack("!HHIIBBHHH", 1, 2, 3, 4, 0x60, ACK, 0, 0, 0) + b"\x02\x09\x00\x00",
     "bad_option"),
    (struct.pack("!HHIIBBHHH", 1, 2, 3, 4, 0x60, ACK, 0, 0, 0) + b"\x05\x03\x00\x00",
     "bad_option"),
    (struct.pack("!HHIIBBHHH", 1, 2, 3, 4, 0x60, ACK, 0, 0, 0) + b"\x01\x01\x01\x08",
     "bad_option"),
])
def test_malformed_segments_raise_typed_error(blob: bytes, reason: str) -> None:
    with pytest.raises(SegmentError) as ei:
        parse(memoryview(blob))
    assert ei.value.reason == reason


def test_bad_segments_are_counted_not_raised() -> None:
    ly = TcpLayer(A_IP, rng=random.Random(3))
    ly.receive(B_IP, A_IP, memoryview(b"\x01\x02"), 1.0)
    good = build(B_IP, A_IP, 1, 2, 3, 4, ACK, 0)
    bad = bytearray(good)
    bad[5] ^= 0xFF
    ly.receive(B_IP, A_IP, memoryview(bytes(bad)), 1.0)
    opt = build(B_IP, A_IP, 1, 2, 3, 4, ACK, 0, b"\x08\x03\x00\x00")
    ly.receive(B_IP, A_IP, memoryview(opt), 1.0)
    c = ly.counters.as_dict()["tcp"]
    assert c["bad_truncated"] == 1
    assert c["bad_checksum"] == 1
    assert c["bad_option"] == 1  # the SegmentError reason is the counter name


def test_handshake_negotiates_options() -> None:
    sim, ca, cb = pair()
    assert ca.state == TcpState.ESTABLISHED and cb.state == TcpState.ESTABLISHED
    assert ca.ts_ok and ca.sack_ok and cb.ts_ok and cb.sack_ok
    assert ca.mss == 1460 - 12
    # 4 MiB buffers need a shift of 7 (65535 << 6 < 4 MiB <= 65535 << 7)
    assert ca.rcv_wscale == 7 and cb.snd_wscale == 7
    syn = parse(memoryview(sim.sent[0][2]))
    assert syn.flags == SYN and syn.opts.mss == 1460 and syn.opts.wscale == 7
    assert syn.opts.sack_perm and syn.opts.ts_val is not None


def test_window_field_is_scaled() -> None:
    sim, ca, cb = pair()
    cb.send(b"x" * 100)
    sim.run_until(lambda: ca.available() == 100)
    sim.sent.clear()
    sim.run_until(lambda: any(s == A_IP for s, _, _ in sim.sent), limit=5)
    ack = parse(memoryview([seg for s, _, seg in sim.sent if s == A_IP][-1]))
    # advertised window = (rcvbuf - unread) >> 7
    assert ack.window == (4 * 1024 * 1024 - 100) >> 7


@pytest.mark.parametrize("direction", ["a_to_b", "b_to_a"])
def test_bulk_transfer_clean(direction: str) -> None:
    sim, ca, cb = pair()
    data = random.Random(5).randbytes(4 * 1024 * 1024)
    src, dst = (ca, cb) if direction == "a_to_b" else (cb, ca)
    got = transfer(sim, src, dst, data)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert src.layer.counters.get("tcp", "retransmits") == 0


@pytest.mark.parametrize("loss,reorder,dup,seed", [
    (0.01, 0.02, 0.01, 11), (0.05, 0.02, 0.01, 12), (0.20, 0.05, 0.02, 13)])
def test_bulk_transfer_lossy(loss: float, reorder: float, dup: float, seed: int) -> None:
    sim, ca, cb = pair(loss=loss, reorder=reorder, dup=dup, seed=seed)
    data = random.Random(seed).randbytes(1024 * 1024)
    got = transfer(sim, ca, cb, data, limit=3600)
    assert got == data
    back = transfer(sim, cb, ca, data[::-1], limit=3600)
    assert back == data[::-1]
    tcp_a = ca.layer.counters.as_dict()["tcp"]
    assert tcp_a["retransmits"] > 0
    assert sim.dropped > 0


def test_transfer_across_sequence_wrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TcpLayer, "_isn", lambda self, *a: 0xFFFFFFFF - 5000)
    sim, ca, cb = pair(loss=0.02, seed=4)
    assert sq.gt(0x100, ca.iss)
    data = random.Random(9).randbytes(300_000)
    got = transfer(sim, ca, cb, data)
    assert got == data
    assert ca.snd_una < 0x100000  # wrapped past zero
    back = transfer(sim, cb, ca, data)
    assert back == data


def test_sack_blocks_for_out_of_order_data() -> None:
    sim, ca, cb = pair()
    lost: list[int] = []

    def tap(src: bytes, dst: bytes, seg: bytes) -> bytes | None:
        p = parse(memoryview(seg))
        if src == A_IP and p.payload and not lost:
            lost.append(p.seq)
            return None  # drop the first data segment
        return seg

    sim.tap = tap
    ca.send(b"a" * 1448 * 3)
    sim.sent.clear()
    sim.run_until(lambda: any(s == B_IP and parse(memoryview(g)).opts.sack
                              for s, _, g in sim.sent), limit=5)
    ack = next(parse(memoryview(g)) for s, _, g in sim.sent
               if s == B_IP and parse(memoryview(g)).opts.sack)
    assert ack.ack == lost[0]
    left, right = ack.opts.sack[0]
    assert left == sq.add(lost[0], 1448)
    assert sq.diff(right, left) in (1448, 2896)
    sim.run_until(lambda: cb.available() == 1448 * 3)
    assert cb.recv() == b"a" * 1448 * 3


def test_rto_backoff_and_give_up() -> None:
    cfg = TcpConfig(user_timeout=30.0)
    sim, ca, _cb = pair(cfg_a=cfg)
    sim.tap = lambda s, d, g: None  # the network dies
    ca.send(b"z" * 1000)
    rtos: list[float] = []
    prev = ca.rto
    while ca.error is None:
        assert sim.step()
        if ca.rto != prev:
            rtos.append(ca.rto)
            prev = ca.rto
    assert ca.error.reason == "timeout"
    assert all(b == pytest.approx(2 * a) or b == ca.config.max_rto for a, b in
               itertools.pairwise(rtos))
    assert len(rtos) >= 4
    assert ca.layer.counters.get("tcp", "rto_expired") >= 4


def test_zero_window_persist_then_resume() -> None:
    small = TcpConfig(rcvbuf=64 * 1024)
    sim, ca, cb = pair(cfg_b=small)
    data = random.Random(2).randbytes(300 * 1024)
    ca.send(data)
    # B does not read: A fills the window, then probes
    sim.run_until(lambda: ca.layer.counters.get("tcp", "window_probes") >= 3, limit=120)
    assert cb.available() <= 64 * 1024
    assert ca.error is None
    got = bytearray()

    def reader() -> bool:
        got.extend(cb.recv())
        return len(got) >= len(data)

    sim.run_until(reader, limit=120)  # the consumer reads: the window opens again
    assert bytes(got) == data


def test_active_close_time_wait_then_closed() -> None:
    sim, ca, cb = pair()
    ca.send(b"bye")
    ca.close(sim.now)
    sim.run_until(lambda: cb.eof or (cb.available() == 3 and cb.state == TcpState.CLOSE_WAIT))
    assert cb.recv() == b"bye"
    assert cb.eof
    cb.close(sim.now)
    sim.run_until(lambda: ca.state == TcpState.TIME_WAIT and cb.state == TcpState.CLOSED)
    assert cb.error is None and ca.error is None
    # nothing due yet: TIME_WAIT keeps every timer slot (the 2 MSL one set) and stays
    ca.on_deadline(sim.now)
    assert ca.state == TcpState.TIME_WAIT
    assert ca.next_deadline() == pytest.approx(sim.now + 2 * ca.config.msl, abs=1.0)
    sim.run_until(lambda: ca.state == TcpState.CLOSED, limit=2 * ca.config.msl + 5)
    assert ca.layer.connections() == []


def test_rst_exact_resets_and_inexact_challenges() -> None:
    sim, ca, cb = pair()
    # in-window but not exact: challenge ACK, connection survives (RFC 5961 §3.2)
    blind = build(B_IP, A_IP, cb.local_port, ca.local_port, sq.add(ca.rcv_nxt, 100), 0, RST, 0)
    ca.layer.receive(B_IP, A_IP, memoryview(blind), sim.now)
    assert ca.state == TcpState.ESTABLISHED
    assert ca.layer.counters.get("tcp", "challenge_acks") == 1
    # out of window: silently dropped
    far = build(B_IP, A_IP, cb.local_port, ca.local_port, sq.add(ca.rcv_nxt, 1 << 30), 0, RST, 0)
    ca.layer.receive(B_IP, A_IP, memoryview(far), sim.now)
    assert ca.state == TcpState.ESTABLISHED
    # SYN in a synchronized state: challenge ACK
    syn = build(B_IP, A_IP, cb.local_port, ca.local_port, ca.rcv_nxt, 0, SYN, 0)
    ca.layer.receive(B_IP, A_IP, memoryview(syn), sim.now)
    assert ca.state == TcpState.ESTABLISHED
    assert ca.layer.counters.get("tcp", "challenge_acks") == 2
    # exact: reset
    exact = build(B_IP, A_IP, cb.local_port, ca.local_port, ca.rcv_nxt, 0, RST, 0)
    ca.layer.receive(B_IP, A_IP, memoryview(exact), sim.now)
    # cast: mypy keeps ca.state narrowed by the asserts above though receive() changes it
    assert cast(TcpState, ca.state) == TcpState.CLOSED
    assert ca.error is not None and ca.error.reason == "reset"


def test_connection_refused_and_connect_timeout() -> None:
    a = TcpLayer(A_IP, rng=random.Random(1))
    b = TcpLayer(B_IP, rng=random.Random(2))  # nothing listens: B answers RST
    sim = SimNet([a, b])
    c = a.connect(B_IP, 3260, sim.now)
    sim.run_until(lambda: c.error is not None)
    assert c.error is not None and c.error.reason == "refused"
    sim.tap = lambda s, d, g: None
    c2 = a.connect(B_IP, 3260, sim.now, config=TcpConfig(connect_timeout=10))
    sim.run_until(lambda: c2.error is not None, limit=30)
    assert c2.error is not None and c2.error.reason == "timeout"
    assert a.counters.get("tcp", "syn_retransmits") >= 2


def test_keepalive_detects_dead_peer() -> None:
    cfg = TcpConfig(keepalive_idle=5.0, keepalive_interval=1.0, keepalive_probes=3)
    sim, ca, _cb = pair(cfg_a=cfg)
    sim.run_until(lambda: ca.layer.counters.get("tcp", "keepalive_probes") >= 1, limit=10)
    assert ca.error is None  # B answers the probe
    sim.tap = lambda s, d, g: None
    sim.run_until(lambda: ca.error is not None, limit=60)
    assert ca.error is not None and "keepalive" in str(ca.error)


def test_fin_is_retransmitted_when_lost() -> None:
    sim, ca, cb = pair()
    drops = {"fin": 0}

    def tap(src: bytes, dst: bytes, seg: bytes) -> bytes | None:
        if src == A_IP and parse(memoryview(seg)).flags & FIN and drops["fin"] < 2:
            drops["fin"] += 1
            return None
        return seg

    sim.tap = tap
    ca.close(sim.now)
    sim.run_until(lambda: cb.eof, limit=30)
    assert drops["fin"] == 2
    cb.close(sim.now)
    sim.run_until(lambda: cb.state == TcpState.CLOSED, limit=30)


def test_backpressure_window_follows_consumer() -> None:
    small = TcpConfig(rcvbuf=32 * 1024)
    sim, ca, cb = pair(cfg_b=small)
    ca.send(b"q" * 200_000)
    sim.run_until(lambda: cb.available() >= 32 * 1024 - 1448, limit=10)
    for _ in range(50):
        sim.step()
    assert cb.available() <= 32 * 1024  # never more than the buffer
    assert sq.diff(ca.snd_max, ca.snd_una) <= 32 * 1024 + 1448


def test_partial_reads_across_received_segments() -> None:
    sim, ca, cb = pair()
    data = bytes(range(256)) * 40  # 10240 bytes: several segments
    ca.send(data)
    sim.run_until(lambda: cb.available() == len(data))
    assert cb.recv(1) == data[:1]
    assert cb.recv(1500) == data[1:1501]
    buf = bytearray(3000)
    assert cb.recv_into(buf) == 3000
    assert bytes(buf) == data[1501:4501]
    assert cb.available() == len(data) - 4501
    assert cb.recv() == data[4501:]
    assert cb.available() == 0 and cb.recv() == b""


def test_recv_chunks_hands_over_the_pieces() -> None:
    sim, ca, cb = pair()
    data = bytes(range(256)) * 40
    ca.send(data)
    sim.run_until(lambda: cb.available() == len(data))
    chunks = cb.recv_chunks()
    pieces = [c for c in chunks if not isinstance(c, Placed)]
    assert len(pieces) == len(chunks)  # no placement set: no Placed item
    assert len(chunks) > 1 and b"".join(pieces) == data
    assert cb.available() == 0 and cb.recv_chunks() == []


def test_duplicate_after_lost_ack_echoes_the_retransmission_timestamp() -> None:
    """A lost ACK, then the peer's RTO retransmission: our duplicate ACK echoes the
    retransmission's TSval (a true round trip), not the original's (RFC 7323 §4.3 rule
    SEG.SEQ <= Last.ACK.sent; see TcpConnection._old_retransmission)."""
    sim, ca, cb = pair()
    drop_acks = [True]

    def tap(src: bytes, dst: bytes, seg: bytes) -> bytes | None:
        p = parse(memoryview(seg))
        if src == B_IP and not p.payload and drop_acks[0]:
            return None  # every ACK of the first transmission is lost
        return seg

    sim.tap = tap
    ca.send(b"x" * 1000)
    sim.run_until(lambda: cb.available() == 1000 and any(
        s == B_IP and parse(memoryview(g)).ack == sq.add(ca.snd_una, 1000)
        for s, _, g in sim.sent), limit=5)  # B's ACK went out (and was lost)
    first = next(parse(memoryview(g)) for s, _, g in sim.sent
                 if s == A_IP and parse(memoryview(g)).payload)
    sim.sent.clear()
    drop_acks[0] = False
    sim.run_until(lambda: ca.snd_una == ca.snd_nxt, limit=30)  # RTO retransmission, ACKed
    rtx = next(parse(memoryview(g)) for s, _, g in sim.sent
               if s == A_IP and parse(memoryview(g)).payload)
    assert rtx.seq == first.seq and rtx.opts.ts_val is not None and first.opts.ts_val is not None
    assert sq.gt(rtx.opts.ts_val, first.opts.ts_val)  # a later transmission
    ack = next(parse(memoryview(g)) for s, _, g in sim.sent
               if s == B_IP and parse(memoryview(g)).ack == sq.add(first.seq, 1000))
    assert ack.opts.ts_ecr == rtx.opts.ts_val
    assert cb.layer.counters.as_dict()["tcp"]["ts_refreshed_by_duplicate"] >= 1
    assert cb.recv() == b"x" * 1000


def test_forged_old_segment_does_not_move_ts_recent() -> None:
    """Only a plausible retransmission refreshes TS.Recent: an old segment whose ACK
    field is outside RFC 5961 §5.2's bounds, or one from beyond a window back, does not."""
    sim, ca, cb = pair()
    ca.send(b"y" * 3000)
    sim.run_until(lambda: cb.available() == 3000, limit=5)
    before = cb._ts_recent
    now = sim.now
    opts = build_options(TcpOptions(ts_val=(before + 10_000) & sq.MASK, ts_ecr=0))
    old = sq.add(cb.rcv_nxt, -1000)
    for seqno, ack in ((old, sq.add(cb.snd_nxt, 5000)),            # ACK for data never sent
                       (sq.add(cb.rcv_nxt, -(1 << 30)), cb.snd_nxt)):  # far behind
        seg = build(A_IP, B_IP, ca.local_port, cb.local_port, seqno, ack, ACK, 1000, opts,
                    b"z" * 100)
        cb.receive(parse(memoryview(seg)), now)
        assert cb._ts_recent == before
    seg = build(A_IP, B_IP, ca.local_port, cb.local_port, old, cb.snd_nxt, ACK, 1000, opts,
                b"z" * 100)
    cb.receive(parse(memoryview(seg)), now)
    assert cb._ts_recent == (before + 10_000) & sq.MASK


def test_build_ts_is_byte_identical_to_build() -> None:
    """The send path's one-pack builder equals the general one (IPv4 and IPv6 pseudo
    headers, odd and even payloads, complete and partial checksums)."""
    rng = random.Random(9)
    v6a, v6b = bytes(range(16)), bytes(range(16, 32))
    for i in range(300):
        src, dst = (A_IP, B_IP) if i % 2 else (v6a, v6b)
        size = rng.choice([0, 1, 2, 1447, 1448, 9000, 65000, rng.randrange(70000)])
        payload = rng.randbytes(size)
        args = (rng.randrange(1, 65536), rng.randrange(1, 65536), rng.getrandbits(32),
                rng.getrandbits(32), ACK | rng.choice([0, PSH]), rng.randrange(65536))
        ts = (rng.getrandbits(32), rng.getrandbits(32))
        partial = bool(rng.getrandbits(1))
        want = build(src, dst, *args, build_options(TcpOptions(ts_val=ts[0], ts_ecr=ts[1])),
                     memoryview(payload), partial)
        got = build_ts(pseudo_header_base(src, dst), *args, *ts, memoryview(payload), partial)
        assert got == want
        if not partial and len(src) == 4:
            assert verify_checksum(src, dst, memoryview(got))



def test_pure_ack_fast_build_equals_segment() -> None:
    """The pure ACK output() makes goes the way _segment packs at once (timestamps, no
    SACK block): byte for byte what the general builder makes of the same fields, and
    no ACK owed after it; with SACK blocks to carry, _segment takes the general way and
    they ride on the ACK."""
    sim, ca, cb = pair()
    transfer(sim, ca, cb, b"x" * 5000)
    assert cb.ts_ok
    now = sim.now + 0.25
    cb._ack_pending = True
    out: list[object] = []
    cb.output(now, out)  # type: ignore[arg-type]
    assert len(out) == 1 and not cb._ack_pending and not cb._ack_now
    cb._ack_pending = True
    want = cb._segment(cb.snd_nxt, cb.rcv_nxt, ACK, b"", now)
    assert out[0] == want
    seg = parse(memoryview(want))
    assert seg.flags == ACK and seg.ack == cb.rcv_nxt and seg.opts.ts_ecr == cb._ts_recent
    assert seg.opts.ts_val == cb._ts_now(now)
    assert want == build(cb.local_ip, cb.remote_ip, cb.local_port, cb.remote_port, seg.seq,
                         seg.ack, ACK, seg.window, build_options(TcpOptions(
                             ts_val=seg.opts.ts_val, ts_ecr=seg.opts.ts_ecr)), b"",
                         cb.layer.tx_csum_partial)
    # out of order data held: the ACK carries SACK blocks (the general builder)
    cb._ooo.append((sq.add(cb.rcv_nxt, 100), bytearray(b"y" * 10)))
    cb._ack_pending = True
    out.clear()
    cb.output(now, out)  # type: ignore[arg-type]
    assert parse(memoryview(out[0])).opts.sack == [
        (sq.add(cb.rcv_nxt, 100), sq.add(cb.rcv_nxt, 110))]

def test_receive_checksum_check_matches_verify_checksum() -> None:
    """The layer's inlined check accepts exactly what verify_checksum accepts: IPv4 and
    IPv6 pseudo-headers, odd and even lengths, short and long (chunked) segments, one
    flipped bit anywhere."""
    rng = random.Random(11)
    v6a, v6b = bytes(range(1, 17)), bytes(range(17, 33))
    for i in range(200):
        src, dst = (B_IP, A_IP) if i % 2 else (v6b, v6a)
        size = rng.choice([0, 1, 7, 1447, 2029, 2030, 4001, rng.randrange(9000)])
        seg = bytearray(build(src, dst, 1000 + i, 2, 3, 4, ACK, 0, b"",
                              rng.randbytes(size)))
        if i % 3:
            seg[rng.randrange(len(seg))] ^= 1 << rng.randrange(8)
        ly = TcpLayer(dst, rng=random.Random(3))
        ly.receive(src, dst, memoryview(bytes(seg)), 1.0)
        bad = ly.counters.get("tcp", "bad_checksum")
        assert bad == (0 if verify_checksum(src, dst, memoryview(bytes(seg))) else 1)
