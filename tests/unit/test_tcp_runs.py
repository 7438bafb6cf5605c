"""Runs of full-sized segments (SegmentRun, framed by Interface._send_run) against the
segment-by-segment send path.

The same seeded transfer between two sans-IO interfaces (fake clock, seeded loss and
reordering) runs twice: once with runs (``TcpLayer.tx_runs``, what the interface sets)
and once without (every segment built alone by ``build_ts`` and framed by
``Interface.send_ip``). Every frame the sender writes must be byte-for-byte the same
(Ethernet and IPv4 headers, identifications, checksums, options, sequence numbers), and
so must every counter. Scapy recomputes the checksums of sampled frames.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Interface

import pytest

from netstack.arp import ArpConfig, build_arp
from netstack.counters import Counters
from netstack.interface import Interface, InterfaceConfig
from netstack.tcp.connection import TcpConfig
from netstack.tcp.layer import TcpLayer
from netstack.tcp.segment import ACK, PSH, SegmentRun, build_ts, pseudo_header_base

A_MAC = b"\x02\x00\x00\x00\x00\x01"
B_MAC = b"\x02\x00\x00\x00\x00\x02"
A_IP = "10.0.0.1"
B_IP = "10.0.0.2"
PORT = 3260


@dataclass(frozen=True)
class Scenario:
    """One transfer: sizes, MTUs, faults, options."""

    size: int = 600_000
    mtu: int = 1500
    peer_mtu: int = 1500
    loss: float = 0.0
    reorder: float = 0.0
    seed: int = 1
    vlan: int | None = None
    ip_ident: int = 0
    iss: int | None = None
    partial: bool = False
    reachable: float = 300.0
    peer_rcvbuf: int = 256 * 1024
    app_chunk: int = 100_000
    sack: bool = True
    timestamps: bool = True


def _node(ip: str, mac: bytes, mtu: int, sc: Scenario, seed: int) -> Interface:
    counters = Counters()
    tcp = TcpLayer(IPv4Address(ip).packed, mss=mtu - 40, rng=random.Random(seed),
                   counters=counters)
    cfg = InterfaceConfig(mac=mac, ip=IPv4Interface(ip + "/24"), mtu=mtu, vlan=sc.vlan,
                          ip_ident=sc.ip_ident, strict=True,
                          arp=ArpConfig(reachable_time=sc.reachable))
    return Interface(cfg, counters=counters, tcp=tcp)


def transfer(sc: Scenario, runs: bool) -> tuple[list[bytes], dict[str, dict[str, int]], int]:
    """Send ``sc.size`` bytes from A to B; A's frames, A's counters and how many runs A's
    interface framed."""
    a = _node(A_IP, A_MAC, sc.mtu, sc, sc.seed)
    b = _node(B_IP, B_MAC, sc.peer_mtu, sc, sc.seed + 100)
    ta, tb = a.tcp, b.tcp
    assert isinstance(ta, TcpLayer) and isinstance(tb, TcpLayer)
    assert ta.tx_runs  # the interface frames runs
    ta.tx_runs = runs
    ta.tx_csum_partial = sc.partial
    tb.verify_checksums = not sc.partial
    if sc.iss is not None:
        iss = sc.iss
        ta._isn = lambda *_: iss  # type: ignore[method-assign]
    framed = 0
    send_run = a._send_run

    def counting(dst: bytes, run: SegmentRun, now: float) -> None:
        nonlocal framed
        framed += 1
        send_run(dst, run, now)

    a._send_run = counting  # type: ignore[method-assign]
    rng = random.Random(sc.seed + 7)
    now = 100.0
    a.start(now)
    b.start(now)
    listener = tb.listen(PORT, TcpConfig(rcvbuf=sc.peer_rcvbuf, sack=sc.sack))
    conn = ta.connect(IPv4Address(B_IP).packed, PORT, now,
                      config=TcpConfig(sndbuf=512 * 1024, sack=sc.sack,
                                       timestamps=sc.timestamps))
    data = random.Random(sc.seed).randbytes(sc.size)
    sent = 0
    got = bytearray()
    peer = None
    wire: list[tuple[float, int, Interface, bytes]] = []
    n = 0
    frames_a: list[bytes] = []
    for _ in range(2_000_000):
        if peer is None:
            peer = listener.accept()
        if peer is not None:
            got += peer.recv()
        if sent < sc.size and conn.connected:
            sent += conn.send(data[sent:sent + sc.app_chunk])
            if sent == sc.size:
                conn.close(now)
        if len(got) == sc.size and conn.closed:
            break
        for src, dst in ((a, b), (b, a)):
            for f in src.frames_to_send(now):
                assert isinstance(f, bytes)
                if src is a:
                    frames_a.append(f)
                if rng.random() < sc.loss:
                    continue
                delay = 0.001 + (0.003 if rng.random() < sc.reorder else 0.0)
                n += 1
                heapq.heappush(wire, (now + delay, n, dst, f))
        nexts = [t for t in (a.next_deadline(), b.next_deadline()) if t is not None]
        if wire:
            nexts.append(wire[0][0])
        assert nexts, "idle before the transfer finished"
        now = max(now, min(nexts))
        while wire and wire[0][0] <= now:
            _, _, dst_if, f = heapq.heappop(wire)
            dst_if.receive_frame(f, now)
        for ifc in (a, b):
            d = ifc.next_deadline()
            if d is not None and d <= now:
                ifc.on_deadline(now)
    else:
        raise AssertionError("transfer did not finish")
    assert bytes(got) == data
    return frames_a, a.counters_dict(), framed


SCENARIOS = {
    "clean": Scenario(),
    "lossy": Scenario(loss=0.02, reorder=0.05, seed=3),
    "lossy_nosack": Scenario(loss=0.03, reorder=0.02, seed=4, sack=False),
    "vlan": Scenario(vlan=42, mtu=1496, peer_mtu=1496),
    "odd_mss": Scenario(peer_mtu=1499, seed=5),
    "wraps": Scenario(ip_ident=0xFFF0, iss=0xFFFFFFFF - 100_000, seed=6),
    "partial_csum": Scenario(partial=True, seed=8),
    "arp_expiry": Scenario(reachable=0.02, loss=0.01, seed=9),
    "small_window": Scenario(peer_rcvbuf=20_000, app_chunk=7_777, seed=10),
    # go-back-N over segments cut short by the application's writes
    "lossy_odd_chunks": Scenario(loss=0.03, sack=False, app_chunk=7_777, seed=11),
    "lossy_odd_chunks_sack": Scenario(loss=0.03, reorder=0.05, app_chunk=3_001, seed=12),
    # a go-back-N run that starts below SND.MAX by a non-multiple of the MSS
    "gbn_partial": Scenario(loss=0.1, sack=False, app_chunk=3_001, seed=30, size=300_000),
    "no_timestamps": Scenario(timestamps=False, size=200_000),
    # jumbo segments (the payload's residue takes the long-buffer path)
    "jumbo": Scenario(mtu=9000, peer_mtu=9000, size=400_000),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_runs_put_the_same_frames_on_the_wire(name: str) -> None:
    sc = SCENARIOS[name]
    frames_runs, counters_runs, framed = transfer(sc, runs=True)
    frames_plain, counters_plain, framed_plain = transfer(sc, runs=False)
    assert framed_plain == 0
    if sc.timestamps:
        assert framed > 0  # the run path was taken
    else:
        assert framed == 0  # runs need the timestamps layout
    assert len(frames_runs) == len(frames_plain)
    for i, (x, y) in enumerate(zip(frames_runs, frames_plain, strict=True)):
        assert x == y, f"frame {i} differs"
    assert counters_runs == counters_plain


def test_scapy_agrees_with_the_checksums_of_run_frames() -> None:
    scapy = pytest.importorskip("scapy.all")
    frames, _, framed = transfer(replace(SCENARIOS["wraps"], size=300_000), runs=True)
    assert framed
    data = [f for f in frames if len(f) > 1000]
    assert len(data) > 100
    for f in data[::7] + data[-3:]:
        pkt = scapy.Ether(f)
        ip, tcp = pkt[scapy.IP], pkt[scapy.TCP]
        want_ip, want_tcp = ip.chksum, tcp.chksum
        del ip.chksum
        del tcp.chksum
        again = scapy.Ether(bytes(pkt))
        assert again[scapy.IP].chksum == want_ip
        assert again[scapy.TCP].chksum == want_tcp


@pytest.mark.parametrize("mss", [1448, 1447, 536])
@pytest.mark.parametrize("psh", [False, True])
@pytest.mark.parametrize("partial", [False, True])
def test_run_frames_are_the_segments_with_ip_headers(mss: int, psh: bool,
                                                     partial: bool) -> None:
    """SegmentRun.frames against segments() framed by Interface.send_ip, with SEQ and the
    identification wrapping inside the run and an 802.1Q-tagged Ethernet header."""
    counters = Counters()
    cfg = InterfaceConfig(mac=A_MAC, ip=IPv4Interface(A_IP + "/24"), ip_ident=0xFFFD,
                          vlan=7, static_neighbours={IPv4Address(B_IP): B_MAC})
    iface = Interface(cfg, counters=counters)
    src, dst = iface.ip, IPv4Address(B_IP).packed
    payload = random.Random(mss).randbytes(5 * mss)
    run = SegmentRun(pseudo_header_base(src, dst), 49152, PORT, 0xFFFFFFFF - mss, 77,
                     0xFFFF, 123, 0xFFFFFFFF, payload, mss, psh, partial)
    segs = run.segments()
    assert len(segs) == run.count == 5
    for i, seg in enumerate(segs):
        flags = ACK | PSH if psh and i == 4 else ACK
        assert seg == build_ts(run.pseudo_base, 49152, PORT, (run.seq + i * mss) & 0xFFFFFFFF,
                               77, flags, 0xFFFF, 123, 0xFFFFFFFF,
                               payload[i * mss:(i + 1) * mss], partial)
        iface.send_ip(dst, 6, seg, 0.0)
    plain = iface.frames_to_send(0.0)
    eh = iface.arp.header_for(dst, 0.0)
    assert eh is not None and len(eh) == 18
    assert run.frames(eh, src, dst, 0xFFFE) == plain


def test_run_rejects_partial_segments() -> None:
    with pytest.raises(ValueError):
        SegmentRun(0, 1, 2, 0, 0, 0, 0, 0, b"x" * 1000, 600, False, False)


@pytest.mark.parametrize("gateway", [None, "10.0.0.254"])
def test_run_waits_for_arp_like_its_segments(gateway: str | None) -> None:
    """No ARP entry for the next hop (or no route at all, to 10.9.9.9 without a
    gateway): the run takes the segment-by-segment path, queued behind ARP, and is
    released, framed and counted as its segments would be."""
    dst = IPv4Address("10.9.9.9").packed
    outs = []
    for runs in (True, False):
        cfg = InterfaceConfig(mac=A_MAC, ip=IPv4Interface(A_IP + "/24"), strict=True,
                              gateway=None if gateway is None else IPv4Address(gateway))
        iface = Interface(cfg, counters=Counters())
        payload = random.Random(1).randbytes(4 * 1448)
        run = SegmentRun(pseudo_header_base(iface.ip, dst), 50000, PORT, 7, 9, 100, 1, 2,
                         payload, 1448, True, False)
        if runs:
            iface._send_run(dst, run, 1.0)
        else:
            for seg in run.segments():
                iface.send_ip(dst, 6, seg, 1.0)
        frames = iface.frames_to_send(1.0)
        if gateway is not None:
            gw = IPv4Address(gateway).packed
            reply = B_MAC + b"\x02\x00\x00\x00\x00\x09" + b"\x08\x06" + build_arp(
                2, b"\x02\x00\x00\x00\x00\x09", gw, A_MAC, iface.ip)
            iface.receive_frame(reply.replace(B_MAC, A_MAC, 1), 1.5)
            frames += iface.frames_to_send(1.5)
        outs.append((frames, iface.counters_dict()))
    assert outs[0] == outs[1]
    frames, counters = outs[0]
    if gateway is None:
        assert counters["ip"]["no_route"] == 4 and not frames
    else:
        assert counters["ip"]["out"] == 4
        assert sum(len(f) > 1000 for f in frames) == 4
