"""A hostile network against the interface and a live TCP connection (pure, fake clock).

Frames go into :meth:`Interface.receive_frame` exactly as they would come off the TAP
(the rig is the fuzz target's: an established connection with data in flight, see
``fuzz/targets.py``). Each attack is visible in the counters, and the connection
survives where RFC 5961 / RFC 5227 / RFC 791 say it should: blind RST and SYN (in and
out of the window: challenge ACK, rate limited), ACKs for data never sent, spoofed ARP
replies (a static neighbour is never changed), overlapping, endless and flooding IP
fragments (bounded, timed out), TCP options with bad lengths.

The same attacks against a live connection to the Linux kernel through a real TAP are in
``tests/integration/test_faults_network.py``.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest

from fuzz.targets import (
    LISTEN_PORT,
    OUR_IP,
    OUR_MAC,
    PEER_IP,
    PEER_MAC,
    PEER_PORT,
    FrameRig,
    _ip_header,
    eth,
    tcp_frame,
)
from netstack.arp import OP_REPLY, OP_REQUEST, build_arp
from netstack.tcp.segment import ACK, FIN, PSH, RST, SYN

ATTACKER_MAC = bytes.fromhex("02badbadbad0")


def tcp_out(frames: list[bytes]) -> list[tuple[int, int, int, bytes]]:
    """(flags, seq, ack, payload) of every TCP segment among our output frames."""
    out = []
    for f in frames:
        if f[12:14] != b"\x08\x00" or f[23] != 6:
            continue
        ihl = (f[14] & 0x0F) * 4
        tcp = f[14 + ihl:]
        seq, ack = struct.unpack_from("!II", tcp, 4)
        off = (tcp[12] >> 4) * 4
        out.append((tcp[13], seq, ack, bytes(tcp[off:])))
    return out


def to_conn(rig: FrameRig, flags: int, seq_off: int = 0, ack_off: int = 0, *,
            payload: bytes = b"", options: bytes = b"", window: int = 65535) -> bytes:
    """A segment from the peer to the live connection, offsets from RCV.NXT/SND.UNA."""
    c = rig.conn
    return tcp_frame(PEER_PORT, c.local_port, c.rcv_nxt + seq_off, c.snd_una + ack_off,
                     flags, window, options, payload)


def tcp_count(rig: FrameRig, name: str) -> int:
    return rig.iface.counters.get("tcp", name)


def data_still_flows(rig: FrameRig) -> None:
    """In-order data from the peer is taken and acknowledged; our data gets out."""
    c = rig.conn
    start = c.rcv_nxt
    rig.iface.receive_frame(to_conn(rig, ACK | PSH, payload=b"still alive"), rig.now)
    acks = tcp_out(rig.output())
    assert c.connected and c.recv() == b"still alive"
    assert any(fl & ACK and ack == (start + 11) & 0xFFFFFFFF for fl, _s, ack, _p in acks)


# ---------------------------------------------------------------- RFC 5961


@pytest.mark.parametrize("where", [1, 1000, 60000])
def test_blind_rst_in_window_gets_a_challenge_ack_and_the_connection_survives(
        where: int) -> None:
    rig = FrameRig()
    c = rig.conn
    rig.iface.receive_frame(to_conn(rig, RST, where), rig.now)
    out = tcp_out(rig.output())
    assert c.connected
    assert tcp_count(rig, "rst_challenged") == 1 and tcp_count(rig, "challenge_acks") == 1
    # the challenge ACK carries our real SND.NXT / RCV.NXT (RFC 5961 §3.2)
    assert [(fl & (ACK | RST), ack) for fl, _s, ack, _p in out] == [(ACK, c.rcv_nxt)]
    data_still_flows(rig)


@pytest.mark.parametrize("where", [-1, -70000, 70000, 1 << 30, -(1 << 31)])
def test_blind_rst_out_of_window_is_dropped_silently(where: int) -> None:
    rig = FrameRig()
    rig.iface.receive_frame(to_conn(rig, RST, where), rig.now)
    assert tcp_out(rig.output()) == []
    assert rig.conn.connected and tcp_count(rig, "rst_out_of_window") == 1
    data_still_flows(rig)


def test_rst_at_exactly_rcv_nxt_resets_as_the_rfc_requires() -> None:
    rig = FrameRig()
    rig.iface.receive_frame(to_conn(rig, RST, 0), rig.now)
    assert not rig.conn.connected and rig.conn.error is not None
    assert rig.conn.error.reason == "reset"


@pytest.mark.parametrize("where", [0, 5, 50000, -5, 1 << 30])
@pytest.mark.parametrize("with_ack", [False, True])
def test_blind_syn_anywhere_gets_an_ack_and_the_connection_survives(where: int,
                                                                     with_ack: bool) -> None:
    rig = FrameRig()
    flags = SYN | (ACK if with_ack else 0)
    rig.iface.receive_frame(to_conn(rig, flags, where), rig.now)
    out = tcp_out(rig.output())
    assert rig.conn.connected
    assert tcp_count(rig, "syn_challenged") + tcp_count(rig, "out_of_window") == 1
    assert len(out) == 1 and out[0][0] & (ACK | RST | SYN) == ACK
    data_still_flows(rig)


def test_challenge_acks_are_rate_limited() -> None:
    rig = FrameRig()
    sent = 0
    for i in range(1000):
        rig.iface.receive_frame(to_conn(rig, RST, 1 + i), rig.now)
        rig.iface.receive_frame(to_conn(rig, SYN, 1 + i), rig.now)
        sent += len(tcp_out(rig.output()))
    assert rig.conn.connected
    limit = rig.tcp_config.challenge_ack_per_second
    assert sent <= limit and tcp_count(rig, "challenge_acks") == limit
    rig.now += 1.5  # a new second: challenges again
    rig.iface.receive_frame(to_conn(rig, RST, 7), rig.now)
    assert len(tcp_out(rig.output())) == 1
    data_still_flows(rig)


@pytest.mark.parametrize("ack_off,counter", [(100000, "ack_too_new"),
                                             (-(1 << 20), "ack_too_old")])
def test_blind_data_with_a_bogus_ack_is_not_taken(ack_off: int, counter: str) -> None:
    rig = FrameRig()
    rig.iface.receive_frame(to_conn(rig, ACK | PSH, 0, ack_off, payload=b"injected"), rig.now)
    rig.output()
    assert rig.conn.available() == 0 and tcp_count(rig, counter) == 1
    data_still_flows(rig)


def test_out_of_window_data_is_not_taken() -> None:
    rig = FrameRig()
    rig.iface.receive_frame(to_conn(rig, ACK | PSH, 1 << 20, payload=b"far away"), rig.now)
    rig.output()
    assert rig.conn.available() == 0 and tcp_count(rig, "out_of_window") == 1
    data_still_flows(rig)


# ------------------------------------------------------------- TCP options


@pytest.mark.parametrize("options", [
    b"\x02\x00\x05\xb4",          # MSS with length 0
    b"\x02\x01",                  # length 1 (below the minimum of 2)
    b"\x08\x20" + bytes(6),       # timestamps claiming 32 bytes in an 8-byte header
    b"\x02\x03\x05\x01",          # MSS with length 3
    b"\x03\x04\x07\x01",          # window scale with length 4
    b"\x08\x09" + bytes(7) + b"\x01",  # timestamps with length 9
    b"\x05\x09" + bytes(7) + b"\x01",  # SACK with length 9
    b"\x04\x03\x01\x01",          # SACK-permitted with length 3
    b"\x01\x01\x01\xfe",          # unknown option kind with no length byte left
])
def test_tcp_options_with_bad_lengths_are_counted_and_dropped(options: bytes) -> None:
    rig = FrameRig()
    c = rig.conn
    rig.iface.receive_frame(to_conn(rig, ACK | PSH, payload=b"x" * 10, options=options),
                            rig.now)
    rig.output()
    assert tcp_count(rig, "bad_option") == 1
    assert c.available() == 0 and c.connected
    assert rig.iface.counters.get("eth", "internal_errors") == 0
    data_still_flows(rig)


def test_bad_data_offset_is_counted() -> None:
    rig = FrameRig()
    f = bytearray(to_conn(rig, ACK, payload=b"abc"))
    f[14 + 20 + 12] = 0xF0  # 60-byte header in a 23-byte segment (checksum is fixed below)
    f[14 + 20 + 16:14 + 20 + 18] = b"\0\0"
    from netstack.checksum import transport_checksum

    seg = memoryview(f)[34:]
    f[50:52] = transport_checksum(PEER_IP, OUR_IP, 6, seg).to_bytes(2, "big")
    rig.iface.receive_frame(bytes(f), rig.now)
    assert tcp_count(rig, "bad_offset") == 1 and rig.conn.connected


# ----------------------------------------------------------------------- ARP


def arp_frame(op: int, sha: bytes, spa: bytes, tha: bytes, tpa: bytes) -> bytes:
    return eth(build_arp(op, sha, spa, tha, tpa), 0x0806, src=sha)


def dst_macs(frames: list[bytes]) -> set[bytes]:
    return {f[:6] for f in frames if f[12:14] == b"\x08\x00"}


def test_spoofed_arp_reply_for_the_peer_is_counted() -> None:
    rig = FrameRig()
    rig.iface.receive_frame(arp_frame(OP_REPLY, ATTACKER_MAC, PEER_IP, OUR_MAC, OUR_IP),
                            rig.now)
    # a dynamic entry follows the newest answer (RFC 826 merge): visible in the counter
    assert rig.iface.counters.get("arp", "cache_changes") == 1
    assert rig.iface.arp.lookup(PEER_IP, rig.now) == ATTACKER_MAC


def test_static_neighbour_is_never_changed_by_spoofed_arp() -> None:
    rig = FrameRig()
    rig.iface.arp.add_static(PEER_IP, PEER_MAC)
    for op in (OP_REPLY, OP_REQUEST):
        rig.iface.receive_frame(arp_frame(op, ATTACKER_MAC, PEER_IP, OUR_MAC, OUR_IP), rig.now)
        rig.iface.receive_frame(arp_frame(op, ATTACKER_MAC, PEER_IP, bytes(6), PEER_IP),
                                rig.now)
    assert rig.iface.counters.get("arp", "static_conflicts") == 4
    assert rig.iface.arp.lookup(PEER_IP, rig.now + 1e6) == PEER_MAC
    rig.iface.receive_frame(to_conn(rig, ACK | PSH, payload=b"data"), rig.now)
    assert dst_macs(rig.output()) == {PEER_MAC}
    assert rig.conn.connected


def test_arp_claiming_our_address_is_a_conflict_defended_at_a_bounded_rate() -> None:
    rig = FrameRig()
    for _ in range(100):
        rig.iface.receive_frame(arp_frame(OP_REPLY, ATTACKER_MAC, OUR_IP, bytes(6), OUR_IP),
                                rig.now)
    announcements = [f for f in rig.output() if f[12:14] == b"\x08\x06"]
    arp = rig.iface.counters.layer("arp")
    assert arp["conflicts"] == 100 and arp["defended"] == 1 and len(announcements) == 1
    assert rig.conn.connected


def test_arp_flood_of_strangers_stays_bounded() -> None:
    rig = FrameRig()
    for i in range(5000):
        ip = bytes([10, 77, 1 + (i >> 8) % 200, i & 0xFF])
        rig.iface.receive_frame(arp_frame(OP_REQUEST, bytes([2, 0, 0, 0, i >> 8 & 0xFF,
                                                             i & 0xFF]), ip, bytes(6), OUR_IP),
                                rig.now)
        rig.output()
    cfg = rig.iface.arp.config
    assert len(rig.iface.arp.entries()) <= cfg.max_entries
    assert rig.iface.counters.get("arp", "evicted") > 0
    rig.check()


def test_stack_config_neighbors_become_static_entries() -> None:
    from netstack.link.wire import wire_pair
    from netstack.loop import Loop
    from netstack.stack import NetStack, StackConfig

    a, b = wire_pair()
    with Loop() as loop:
        stack = NetStack(loop, a, StackConfig(
            mac=OUR_MAC, ip=ipaddress.IPv4Interface("10.77.0.2/24"),
            neighbors={ipaddress.IPv4Address("10.77.0.1"): PEER_MAC}))
        e = stack.iface.arp.entries()[PEER_IP]
        assert e.static and e.mac == PEER_MAC
    a.close()
    b.close()


# ----------------------------------------------------------------- fragments


def frag(ident: int, offset: int, more: bool, payload: bytes, proto: int = 6) -> bytes:
    ff = (0x2000 if more else 0) | (offset >> 3)
    return eth(_ip_header(PEER_IP, OUR_IP, proto, len(payload), ident, ff) + payload)


def segment_bytes(rig: FrameRig, payload: bytes) -> bytes:
    """The TCP segment (header + payload) of an in-order data segment to the connection."""
    return to_conn(rig, ACK | PSH, payload=payload)[34:]


def test_fragmented_segment_is_reassembled_and_delivered() -> None:
    rig = FrameRig()
    seg = segment_bytes(rig, b"F" * 100)
    rig.iface.receive_frame(frag(9, 64, False, seg[64:]), rig.now)
    rig.iface.receive_frame(frag(9, 0, True, seg[:64]), rig.now)
    rig.output()
    assert rig.conn.recv() == b"F" * 100
    assert rig.iface.counters.get("ip", "reassembled") == 1


@pytest.mark.parametrize("second", [(32, True, 40), (8, False, 92), (56, False, 72)])
def test_overlapping_fragments_drop_the_datagram(second: tuple[int, bool, int]) -> None:
    rig = FrameRig()
    seg = segment_bytes(rig, b"A" * 100)
    rig.iface.receive_frame(frag(11, 0, True, seg[:64]), rig.now)
    off, more, n = second
    evil = bytes(b ^ 0x55 for b in seg[off:off + n])
    rig.iface.receive_frame(frag(11, off, more, evil), rig.now)
    rig.iface.receive_frame(frag(11, 64, False, seg[64:]), rig.now)
    rig.output()
    assert rig.iface.counters.get("ip", "reassembly_overlap") == 1
    assert rig.conn.available() == 0 and rig.conn.connected
    # the poisoned datagram is forgotten at its timeout; a clean one then goes through
    rig.now += rig.iface.ipv4.reassembler.config.timeout + 1
    rig.iface.on_deadline(rig.now)
    assert len(rig.iface.ipv4.reassembler) == 0
    data_still_flows(rig)


def test_fragments_that_never_complete_are_timed_out() -> None:
    rig = FrameRig()
    r = rig.iface.ipv4.reassembler
    for ident in range(5):
        rig.iface.receive_frame(frag(100 + ident, 0, True, bytes(1024)), rig.now)
    assert len(r) == 5 and r.bytes_held > 5 * 1024
    d = rig.iface.next_deadline()
    assert d is not None and d <= rig.now + r.config.timeout
    rig.now += r.config.timeout + 0.1
    rig.iface.on_deadline(rig.now)
    assert len(r) == 0 and r.bytes_held == 0
    assert rig.iface.counters.get("ip", "reassembly_timeouts") == 5
    assert rig.conn.connected


def test_fragment_flood_is_bounded() -> None:
    rig = FrameRig()
    r = rig.iface.ipv4.reassembler
    for ident in range(2000):
        rig.iface.receive_frame(frag(ident, 8 * (ident % 50), True, bytes(1400)), rig.now)
        assert r.bytes_held <= r.config.max_bytes and len(r) <= r.config.max_datagrams
    assert rig.iface.counters.get("ip", "reassembly_overflow") > 0
    data_still_flows(rig)


def test_ping_of_death_is_refused() -> None:
    rig = FrameRig()
    rig.iface.receive_frame(frag(5, 65528, False, bytes(100), proto=1), rig.now)
    assert rig.iface.counters.get("ip", "bad_fragment") == 1
    assert len(rig.iface.ipv4.reassembler) == 0


# --------------------------------------------------------------- SYN flood


def test_syn_flood_on_a_listener_is_bounded() -> None:
    rig = FrameRig()
    for i in range(3000):
        f = tcp_frame(10000 + i, LISTEN_PORT, 5000 + i, 0, SYN, 65535, b"\x02\x04\x05\xb4")
        rig.iface.receive_frame(f, rig.now)
        rig.output()
    half_open = [c for c in rig.tcp.connections() if c.local_port == LISTEN_PORT]
    assert len(half_open) <= rig.tcp.max_half_open
    assert rig.iface.counters.get("tcp", "syn_dropped") > 0
    assert rig.conn.connected
    data_still_flows(rig)


def test_fin_then_data_from_a_spoofer_does_not_break_the_stream() -> None:
    rig = FrameRig()
    rig.iface.receive_frame(to_conn(rig, ACK | FIN, 500), rig.now)  # FIN beyond a hole
    rig.output()
    assert rig.conn.connected and not rig.conn.eof
    data_still_flows(rig)


# ------------------------------------------------------- loss in both directions


def test_data_segments_with_sack_blocks_fit_the_mtu() -> None:
    """Regression: with out-of-order data held (loss on the way in) our full-size data
    segments carried SACK blocks on top of the payload and came out larger than the
    MTU; the interface dropped them (``ip.too_big``) and the connection stalled until
    the iSCSI NOP timeout (found by the 20 % loss test against tgtd)."""
    rig = FrameRig()
    c = rig.conn
    rig.output()
    for k in (3000, 6000, 9000):  # three holes: three SACK blocks wanted
        rig.iface.receive_frame(to_conn(rig, ACK, k, payload=b"o" * 100), rig.now)
    assert len(c._ooo) == 3
    rig.output()
    c.send(bytes(64 * 1024))
    rig.now += 1.0
    rig.iface.on_deadline(rig.now)  # retransmission timer too
    frames = rig.output()
    assert frames and max(len(f) - 14 for f in frames) <= rig.iface.mtu
    assert rig.iface.counters.get("ip", "too_big") == 0
    segs = tcp_out(frames)
    assert max(len(p) for _f, _s, _a, p in segs) == c.mss  # still full-size segments
    # pure ACKs still carry the SACK blocks
    rig.iface.receive_frame(to_conn(rig, ACK, 12000, payload=b"p" * 10), rig.now)
    acks = [f for f in rig.output() if len(f) < 120]
    assert acks and any(b"\x01\x01\x05" in f[34:] for f in acks)


def test_out_of_order_data_behind_a_hole_grows_one_block_in_place() -> None:
    """Regression: every segment behind a hole was merged into the out-of-order block by
    copying the whole block (quadratic: seconds of CPU for one loss in a 4 MiB window).
    It is now appended in place; the data is still delivered exactly."""
    rig = FrameRig()
    c = rig.conn
    chunks = [bytes([i]) * 1000 for i in range(40)]
    rig.iface.receive_frame(to_conn(rig, ACK, 1000, payload=chunks[1]), rig.now)
    block = c._ooo[0][1]
    for i in range(2, 40):
        rig.iface.receive_frame(to_conn(rig, ACK, 1000 * i, payload=chunks[i]), rig.now)
        rig.output()
        assert len(c._ooo) == 1 and c._ooo[0][1] is block  # the same object, grown
    assert c._ooo_bytes == 39 * 1000 and c.available() == 0
    # a segment overlapping the tail and one further out take the general path
    rig.iface.receive_frame(to_conn(rig, ACK, 39500, payload=b"z" * 1000), rig.now)
    rig.iface.receive_frame(to_conn(rig, ACK, 60000, payload=b"y" * 100), rig.now)
    assert len(c._ooo) == 2 and c._ooo_bytes == 39 * 1000 + 500 + 100
    rig.iface.receive_frame(to_conn(rig, ACK, 0, payload=chunks[0]), rig.now)
    # (overlapping bytes: the newer copy wins, as before; a real peer resends the same)
    assert c.recv() == b"".join(chunks[:39]) + chunks[39][:500] + b"z" * 1000
    assert len(c._ooo) == 1 and c._ooo_bytes == 100


def test_out_of_window_pure_acks_and_syns_are_answered_at_a_bounded_rate() -> None:
    """Spoofed out-of-window ACKs (or SYNs) must not get one ACK each: two stacks doing
    that to each other loop forever (RFC 5961 §7 rate limit, as Linux does)."""
    rig = FrameRig()
    sent = 0
    for i in range(500):
        rig.iface.receive_frame(to_conn(rig, ACK, -(5000 + i)), rig.now)
        rig.iface.receive_frame(to_conn(rig, SYN, 1 << 24), rig.now)
        sent += len(tcp_out(rig.output()))
    assert tcp_count(rig, "out_of_window") == 1000
    assert sent <= rig.tcp_config.challenge_ack_per_second
    # old data again (our ACK was lost) is always answered at once
    for _ in range(20):
        rig.iface.receive_frame(to_conn(rig, ACK | PSH, -100, payload=b"x" * 50), rig.now)
        assert len(tcp_out(rig.output())) == 1
    assert rig.conn.connected
    data_still_flows(rig)
