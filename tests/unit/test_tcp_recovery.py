"""Sender loss recovery on the simulated network: tail loss probe (RFC 8985 §7), Eifel
spurious-RTO detection and undo (RFC 3522, RFC 4015), D-SACK (RFC 2883), and recovery
re-entry right at the recovery point (RFC 6582 §3.2, RFC 6675 §5)."""

from __future__ import annotations

import heapq
import random

from netstack.tcp import seq as sq
from netstack.tcp.connection import TcpConfig, TcpConnection
from netstack.tcp.segment import ACK, TcpOptions, build, build_options, parse
from tests.unit.tcp_sim import A_IP, B_IP, SimNet
from tests.unit.test_tcp import pair, transfer


def _count(c: TcpConnection, name: str) -> int:
    return c.layer.counters.get("tcp", name)


def _warm(sim: SimNet, ca: TcpConnection, cb: TcpConnection) -> None:
    """A first exchange so both ends have an RTT estimate."""
    assert transfer(sim, ca, cb, b"w" * 20_000) == b"w" * 20_000
    sim.run_until(lambda: ca.snd_una == ca.snd_nxt, limit=5)
    assert ca.srtt is not None
    ca.callback = cb.callback = None  # transfer()'s pump would read B's data


def _drop_data_from_a(sim: SimNet, budget: dict[int, int]) -> dict[int, int]:
    """Drop A's data segments starting at a sequence number of ``budget``, each up to
    that many times; the returned dict counts the drops made."""
    dropped: dict[int, int] = {}

    def tap(src: bytes, dst: bytes, seg: bytes) -> bytes | None:
        p = parse(memoryview(seg))
        if src == A_IP and p.payload and dropped.get(p.seq, 0) < budget.get(p.seq, 0):
            dropped[p.seq] = dropped.get(p.seq, 0) + 1
            return None
        return seg

    sim.tap = tap
    return dropped


def _send_until_delivered(sim: SimNet, ca: TcpConnection, cb: TcpConnection,
                          data: bytes) -> None:
    ca.send(data)
    sim.run_until(lambda: cb.available() == len(data) and ca.snd_una == ca.snd_nxt, limit=5)


def test_tail_loss_is_repaired_by_the_probe_not_the_rto() -> None:
    """The last two segments of a flight are lost: no duplicate ACK can follow. The probe
    (2·SRTT later) resends the last one, its SACK shows the other hole, fast recovery
    repairs it — all well before the RTO (RFC 8985 §7)."""
    sim, ca, cb = pair()
    _warm(sim, ca, cb)
    data = random.Random(3).randbytes(8 * 1448)
    tail = {sq.add(ca.snd_nxt, len(data) - k * 1448) for k in (1, 2)}
    dropped = _drop_data_from_a(sim, dict.fromkeys(tail, 1))
    start = sim.now
    _send_until_delivered(sim, ca, cb, data)
    assert dropped == dict.fromkeys(tail, 1)
    assert _count(ca, "tlp_probes") == 1
    assert _count(ca, "fast_retransmits") == 1
    assert _count(ca, "rto_expired") == 0
    assert sim.now - start < ca.config.min_rto / 4  # an RTO could not have fired yet
    assert cb.recv() == data


def test_one_segment_flight_waits_for_the_rto_not_a_probe() -> None:
    """With one segment in flight the peer may be delaying its ACK: PTO adds WCDelAckT
    (RFC 8985 §7.2), which here puts it past the RTO, so no probe is sent."""
    sim, ca, cb = pair()
    _warm(sim, ca, cb)
    dropped: list[int] = []

    def tap(src: bytes, dst: bytes, seg: bytes) -> bytes | None:
        p = parse(memoryview(seg))
        if src == A_IP and p.payload and not dropped:
            dropped.append(p.seq)
            return None
        return seg

    sim.tap = tap
    ca.send(b"o" * 1000)
    sim.run_until(lambda: cb.available() == 1000, limit=5)
    assert _count(ca, "tlp_probes") == 0 and _count(ca, "rto_expired") == 1


def test_probe_after_lost_acks_is_reported_by_dsack_and_keeps_the_window() -> None:
    sim, ca, cb = pair()
    _warm(sim, ca, cb)
    data = b"q" * (4 * 1448)
    blocking = [True]

    def tap(src: bytes, dst: bytes, seg: bytes) -> bytes | None:
        p = parse(memoryview(seg))
        if src == B_IP and blocking[0] and not p.payload:
            return None  # every ACK of the flight is lost; the data all arrives
        return seg

    sim.tap = tap
    ca.send(data)
    sim.run_until(lambda: _count(ca, "tlp_probes") == 1, limit=5)
    blocking[0] = False
    cwnd = ca.cwnd
    sim.sent.clear()
    sim.run_until(lambda: ca.snd_una == ca.snd_nxt, limit=5)
    # B saw the probe as a duplicate and reported it with a D-SACK block (RFC 2883 §4)
    acks = [parse(memoryview(g)) for s, _, g in sim.sent if s == B_IP]
    dsack = [a for a in acks if a.opts.sack and sq.le(a.opts.sack[0][1], a.ack)]
    assert dsack, acks
    assert _count(cb, "dsack_out") >= 1
    assert _count(ca, "tlp_spurious") == 1 and _count(ca, "tlp_recoveries") == 0
    assert ca.cwnd >= cwnd
    assert _count(ca, "rto_expired") == 0


def test_spurious_rto_is_detected_by_timestamps_and_undone() -> None:
    sim, ca, cb = pair(cfg_a=TcpConfig(tail_loss_probe=False))
    _warm(sim, ca, cb)
    held: list[bytes] = []
    blocking = [True]

    def tap(src: bytes, dst: bytes, seg: bytes) -> bytes | None:
        if src == B_IP and blocking[0]:
            held.append(seg)  # B's ACKs are late, not lost
            return None
        return seg

    sim.tap = tap
    ca.send(b"s" * (6 * 1448))
    cwnd = ca.cwnd
    sim.run_until(lambda: _count(ca, "rto_expired") == 1, limit=5)
    assert ca.cwnd == ca.mss  # the RTO collapsed the window
    blocking[0] = False
    first = held[0]  # it echoes the original transmission's timestamp
    heapq.heappush(sim.queue, (sim.now, -1, B_IP, A_IP, first))
    sim.run_until(lambda: ca.snd_una == ca.snd_nxt, limit=5)
    assert _count(ca, "spurious_rto") == 1
    assert ca.cwnd >= cwnd  # RFC 4015: the window before the timeout comes back


def test_genuine_rto_is_not_undone() -> None:
    sim, ca, cb = pair(cfg_a=TcpConfig(tail_loss_probe=False))
    _warm(sim, ca, cb)
    blocking = [True]

    def tap(src: bytes, dst: bytes, seg: bytes) -> bytes | None:
        return None if src == A_IP and blocking[0] and parse(memoryview(seg)).payload else seg

    sim.tap = tap
    ca.send(b"g" * (6 * 1448))
    sim.run_until(lambda: _count(ca, "rto_expired") == 1, limit=5)
    blocking[0] = False  # the retransmissions arrive; the originals never did
    sim.run_until(lambda: ca.snd_una == ca.snd_nxt, limit=10)
    assert _count(ca, "spurious_rto") == 0
    assert cb.recv()[-6 * 1448:] == b"g" * (6 * 1448)


def test_recovery_starts_again_right_at_the_recovery_point() -> None:
    """Recovery ends with SND.UNA == recover; a loss of the very next segment must start
    fast retransmit again (SND.UNA >= recover), not wait for the RTO."""
    sim, ca, cb = pair(cfg_a=TcpConfig(tail_loss_probe=False))
    _warm(sim, ca, cb)
    first = sq.add(ca.snd_nxt, 2 * 1448)
    dropped: list[int] = []
    second: list[int] = []

    def tap(src: bytes, dst: bytes, seg: bytes) -> bytes | None:
        p = parse(memoryview(seg))
        if src != A_IP or not p.payload:
            return seg
        if p.seq == first and not dropped:
            dropped.append(p.seq)
            return None
        if dropped and not second and _count(ca, "fast_retransmits") == 1 and \
                p.seq == ca._recover:
            second.append(p.seq)  # the first segment beyond the recovery point
            return None
        return seg

    sim.tap = tap
    data = random.Random(5).randbytes(400_000)
    got = transfer(sim, ca, cb, data)
    assert got[-len(data):] == data
    assert dropped and second
    assert _count(ca, "fast_retransmits") == 2
    assert _count(ca, "rto_expired") == 0


def test_dsack_block_for_an_old_duplicate() -> None:
    sim, ca, cb = pair()
    _warm(sim, ca, cb)
    old = sq.add(cb.rcv_nxt, -2000)
    opts = build_options(TcpOptions(ts_val=(cb._ts_recent + 1) & sq.MASK, ts_ecr=0))
    seg = build(A_IP, B_IP, ca.local_port, cb.local_port, old, cb.snd_nxt, ACK, 1000, opts,
                b"d" * 1000)
    sim.sent.clear()
    cb.receive(parse(memoryview(seg)), sim.now)
    sim.flush()
    ack = next(parse(memoryview(g)) for s, _, g in sim.sent if s == B_IP)
    assert ack.opts.sack == [(old, sq.add(old, 1000))]
    assert ack.ack == cb.rcv_nxt
    sim.sent.clear()
    cb._send_ack_now()
    sim.flush()
    again = next(parse(memoryview(g)) for s, _, g in sim.sent if s == B_IP)
    assert not again.opts.sack  # reported once


def test_each_out_of_order_segment_of_a_batch_gets_its_own_duplicate_ack() -> None:
    """A batch of segments behind a hole is answered by one duplicate ACK per segment
    (RFC 5681 §4.2), each with the SACK block as it stood after its segment (RFC 2018
    §4), not by one ACK for the batch: at 20% ACK loss a single ACK per batch lost a
    batch's SACK news until the sender's next RTO."""
    sim, ca, cb = pair()
    _warm(sim, ca, cb)
    data = random.Random(5).randbytes(6 * 1448)
    first = ca.snd_nxt
    held: list[tuple[bytes, bytes, bytes]] = []

    def tap(src: bytes, dst: bytes, seg: bytes) -> bytes | None:
        p = parse(memoryview(seg))
        if src == A_IP and p.payload:
            held.append((src, dst, seg))
            return None
        return seg

    sim.tap = tap
    ca.send(data)
    sim.flush()
    assert len(held) == 6
    sent_before = len(sim.sent)
    dup_before = _count(cb, "dupacks_out")
    # Segments 2..6 arrive in one receive batch; segment 1 is lost.
    for src, dst, seg in held[1:]:
        cb.layer.receive(src, dst, memoryview(seg), sim.now)
    sim.tap = None
    sim.flush()
    acks = [parse(memoryview(s)) for src, _, s in sim.sent[sent_before:] if src == B_IP]
    assert len(acks) == 5
    assert all(a.ack == first and not a.payload for a in acks)
    assert [a.opts.sack for a in acks] == [
        [(sq.add(first, 1448), sq.add(first, k * 1448))] for k in range(2, 7)]
    assert _count(cb, "dupacks_out") - dup_before == 4  # the fifth is the batch's own


def test_a_lost_retransmission_is_resent_by_the_recovery_timer_not_the_rto() -> None:
    """The first segment of a flight is lost, and so is its fast retransmission; the rest
    of the flight was delivered and SACKed, so no further ACK comes. The recovery timer
    (RACK's reordering timer, RFC 8985 §6.3) resends it once its gate has passed, well
    before the RTO."""
    sim, ca, cb = pair()
    _warm(sim, ca, cb)
    data = random.Random(4).randbytes(8 * 1448)
    first = ca.snd_nxt
    # the original and the first retransmission
    drops = _drop_data_from_a(sim, {first: 2})
    start = sim.now
    _send_until_delivered(sim, ca, cb, data)
    assert drops == {first: 2}
    assert _count(ca, "fast_retransmits") == 1
    assert _count(ca, "rack_timeouts") >= 1
    assert _count(ca, "rto_expired") == 0
    assert sim.now - start < ca.config.min_rto / 2  # an RTO could not have fired yet
    assert cb.recv() == data


def test_a_dead_path_in_recovery_is_not_flooded_by_the_recovery_timer() -> None:
    """The path dies after loss recovery started: without ACKs the recovery timer backs
    off (it is never armed past the RTO), so per RTO period only a few segments go out,
    and the RTO's own backoff governs."""
    sim, ca, cb = pair(cfg_a=TcpConfig(user_timeout=30.0))
    _warm(sim, ca, cb)
    data = random.Random(5).randbytes(16 * 1448)
    first = ca.snd_nxt
    dead = [False]
    sent_dead = [0]

    def tap(src: bytes, dst: bytes, seg: bytes) -> bytes | None:
        p = parse(memoryview(seg))
        if dead[0]:
            sent_dead[0] += src == A_IP
            return None
        if src == A_IP and p.payload and p.seq == first:
            return None  # the hole that starts recovery
        if src == B_IP and ca._in_recovery:
            dead[0] = True  # ... and the path dies with this ACK
        return seg

    sim.tap = tap
    ca.send(data)
    sim.run_until(lambda: ca.error is not None, limit=60)
    assert dead[0] and ca.error is not None and ca.error.reason == "timeout"
    rtos = _count(ca, "rto_expired")
    assert rtos >= 3
    # each RTO resends what is not SACKed (a few segments at one-segment cwnd); the
    # recovery timer adds at most a handful of resends in all, not one per gate
    assert _count(ca, "rack_timeouts") <= 2 * rtos
    assert sent_dead[0] <= 4 * rtos + 8, (sent_dead[0], rtos)
