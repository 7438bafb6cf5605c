"""The Interface (Ethernet + ARP + IPv4 + ICMP) end to end with a fake transport and a
fake clock; frames crafted and dissected by scapy."""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from netstack.arp import ArpConfig
from netstack.counters import Counters
from netstack.interface import Interface, InterfaceConfig, TransportLayer
from netstack.ipv4 import ReassemblyConfig
from netstack.tcp.segment import OutSegment
from tests.unit.frame_util import plain_frames
from tests.unit.scapy_frag import defragment, fragment

OUR_MAC = "02:00:00:00:00:02"
PEER_MAC = "02:00:00:00:00:01"
GW_MAC = "02:00:00:00:00:fe"
OUR_IP, PEER_IP, GW_IP, FAR_IP = "10.0.0.2", "10.0.0.1", "10.0.0.254", "192.168.7.7"
OUR = IPv4Address(OUR_IP).packed
PEER = IPv4Address(PEER_IP).packed
FAR = IPv4Address(FAR_IP).packed


def mac(s: str) -> bytes:
    return bytes.fromhex(s.replace(":", ""))


class FakeTransport:
    """Records what it receives; sends what the test puts in ``pending``."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, bytes, bytes, float]] = []
        self.pending: list[tuple[bytes, OutSegment]] = []
        self.deadline: float | None = None
        self.fired: list[float] = []
        self.raise_on_receive = False

    def receive(self, src: bytes, dst: bytes, segment: memoryview, now: float,
                csum_ok: bool = False) -> None:
        if self.raise_on_receive:
            raise RuntimeError("transport bug")
        self.received.append((src, dst, bytes(segment), now))

    def output(self, now: float) -> list[tuple[bytes, OutSegment]]:
        out, self.pending = self.pending, []
        return out

    def next_deadline(self) -> float | None:
        return self.deadline

    def on_deadline(self, now: float) -> None:
        self.fired.append(now)


def make(gateway: str | None = GW_IP, mtu: int = 1500, strict: bool = True,
         static: dict[IPv4Address, bytes] | None = None, arp: ArpConfig | None = None,
         reassembly: ReassemblyConfig | None = None, tcp: bool = True
         ) -> tuple[Interface, FakeTransport]:
    t = FakeTransport()
    cfg = InterfaceConfig(mac=mac(OUR_MAC), ip=IPv4Interface(OUR_IP + "/24"),
                          gateway=IPv4Address(gateway) if gateway else None, mtu=mtu,
                          static_neighbours=static or {}, arp=arp or ArpConfig(),
                          reassembly=reassembly or ReassemblyConfig(), strict=strict)
    iface = Interface(cfg, counters=Counters(), tcp=t if tcp else None)
    return iface, t


def to_us(payload: object, src_mac: str = PEER_MAC, dst_mac: str = OUR_MAC) -> bytes:
    return bytes(Ether(dst=dst_mac, src=src_mac) / payload)


def arp_request(src_mac: str = PEER_MAC, src_ip: str = PEER_IP) -> bytes:
    return to_us(ARP(op=1, hwsrc=src_mac, psrc=src_ip, pdst=OUR_IP), src_mac,
                 "ff:ff:ff:ff:ff:ff")


def arp_reply(src_mac: str = PEER_MAC, src_ip: str = PEER_IP) -> bytes:
    return to_us(ARP(op=2, hwsrc=src_mac, psrc=src_ip, hwdst=OUR_MAC, pdst=OUR_IP), src_mac)


def ping(seq: int = 1, data: bytes = b"abcdefgh", src: str = PEER_IP,
         dst: str = OUR_IP) -> IP:
    return IP(src=src, dst=dst) / ICMP(type=8, id=0x4242, seq=seq) / Raw(data)


def tcp_segment(src: str, dst: str, payload: bytes = b"", **kw: Any) -> bytes:
    """A TCP segment with a correct checksum (scapy computes it)."""
    return bytes(IP(src=src, dst=dst) / TCP(**kw) / Raw(payload))[20:]


def checks_ok(frame: bytes) -> None:
    """Our IPv4/ICMP/TCP checksums equal what scapy computes from scratch."""
    e = Ether(frame)
    ip = e[IP]
    fresh = IP(bytes(ip))
    del fresh.chksum
    for layer in (ICMP, TCP):
        if layer in fresh and not (ip.flags.MF or ip.frag):
            del fresh[layer].chksum
    again = IP(bytes(fresh))
    assert again.chksum == ip.chksum
    for layer in (ICMP, TCP):
        if layer in ip and not (ip.flags.MF or ip.frag):
            assert again[layer].chksum == ip[layer].chksum


def resolved(iface: Interface, now: float = 0.0) -> Interface:
    iface.receive_frame(arp_request(), now)
    iface.receive_frame(arp_request(GW_MAC, GW_IP), now)
    iface.frames_to_send(now)
    return iface


# ---------------------------------------------------------------------- tests
def test_transport_protocol_is_satisfied_by_fake() -> None:
    t: TransportLayer = FakeTransport()
    assert t.next_deadline() is None


def test_start_sends_gratuitous_arp() -> None:
    iface, _ = make()
    iface.start(0.0)
    (f,) = plain_frames(iface, 0.0)
    e = Ether(f)
    assert e.dst == "ff:ff:ff:ff:ff:ff" and e.src == OUR_MAC and e.type == 0x0806
    assert (e[ARP].op, e[ARP].psrc, e[ARP].pdst) == (1, OUR_IP, OUR_IP)
    assert iface.next_deadline() == 2.0
    iface.on_deadline(2.0)
    assert len(iface.frames_to_send(2.0)) == 1
    assert iface.frames_to_send(2.0) == []
    assert iface.counters_dict()["eth"]["frames_out"] == 2


def test_arp_request_answered() -> None:
    iface, _ = make()
    iface.receive_frame(arp_request(), 0.0)
    (f,) = plain_frames(iface, 0.0)
    a = Ether(f)[ARP]
    assert Ether(f).dst == PEER_MAC
    assert (a.op, a.hwsrc, a.psrc, a.hwdst, a.pdst) == (2, OUR_MAC, OUR_IP, PEER_MAC, PEER_IP)


def test_ping_answered_after_arp() -> None:
    iface, _ = resolved(make()[0]), None
    iface.receive_frame(to_us(ping(seq=9, data=b"0123456789")), 1.0)
    (f,) = plain_frames(iface, 1.0)
    e = Ether(f)
    assert (e.dst, e.src, e.type) == (PEER_MAC, OUR_MAC, 0x0800)
    ip = e[IP]
    assert (ip.src, ip.dst, ip.ttl, ip.proto) == (OUR_IP, PEER_IP, 64, 1)
    assert (ip[ICMP].type, ip[ICMP].id, ip[ICMP].seq) == (0, 0x4242, 9)
    assert bytes(ip[ICMP].payload) == b"0123456789"
    checks_ok(f)
    c = iface.counters_dict()
    assert c["icmp"]["echo_in"] == 1 and c["icmp"]["echo_out"] == 1


def test_ping_from_unknown_host_resolves_first() -> None:
    iface, _ = make()
    iface.receive_frame(to_us(ping()), 0.0)
    (req,) = plain_frames(iface, 0.0)
    assert Ether(req)[ARP].op == 1 and Ether(req)[ARP].pdst == PEER_IP
    iface.receive_frame(arp_reply(), 0.2)
    (f,) = plain_frames(iface, 0.2)
    assert Ether(f).dst == PEER_MAC and Ether(f)[ICMP].type == 0
    checks_ok(f)


def test_vlan_priority_tagged_ping_answered() -> None:
    iface = resolved(make()[0])
    frame = bytes(Ether(dst=OUR_MAC, src=PEER_MAC) / Dot1Q(vlan=0) / ping())
    iface.receive_frame(frame, 0.0)
    (f,) = plain_frames(iface, 0.0)
    assert Ether(f)[ICMP].type == 0
    tagged = bytes(Ether(dst=OUR_MAC, src=PEER_MAC) / Dot1Q(vlan=3) / ping())
    iface.receive_frame(tagged, 0.0)
    assert iface.frames_to_send(0.0) == []
    assert iface.counters_dict()["eth"]["vlan"] == 1


def test_big_ping_reassembled_and_reply_fragmented() -> None:
    iface = resolved(make()[0])
    data = random.Random(5).randbytes(4000)
    for frag in fragment(ping(data=data), fragsize=1480)[::-1]:
        iface.receive_frame(to_us(frag), 1.0)
    frames = plain_frames(iface, 1.0)
    assert len(frames) == 3
    ips = [Ether(f)[IP] for f in frames]
    assert all(len(f) - 14 <= 1500 for f in frames)
    assert [bool(i.flags.MF) for i in ips] == [True, True, False]
    for f in frames:
        checks_ok(f)
    (whole,) = defragment([IP(bytes(i)) for i in ips])
    assert whole[ICMP].type == 0 and bytes(whole[ICMP].payload) == data
    fresh = IP(bytes(whole))
    del fresh[ICMP].chksum
    assert IP(bytes(fresh))[ICMP].chksum == whole[ICMP].chksum
    c = iface.counters_dict()["ip"]
    assert c["reassembled"] == 1 and c["fragments"] == 3 and c["fragments_out"] == 3


def test_tcp_delivered_to_transport() -> None:
    iface, t = make()
    seg = tcp_segment(PEER_IP, OUR_IP, b"payload", sport=3260, dport=40000, flags="PA")
    frame = bytes(Ether(dst=OUR_MAC, src=PEER_MAC) / IP(src=PEER_IP, dst=OUR_IP, proto=6)
                  / Raw(seg))
    iface.receive_frame(frame + bytes(7), 2.5)  # trailing padding is not the segment's
    assert t.received == [(PEER, OUR, seg, 2.5)]


def test_tcp_output_on_link() -> None:
    iface, t = make()
    resolved(iface)
    seg1 = tcp_segment(OUR_IP, PEER_IP, b"x" * 1460, sport=40000, dport=3260, flags="A")
    seg2 = tcp_segment(OUR_IP, PEER_IP, b"", sport=40000, dport=3260, flags="A")
    t.pending = [(PEER, seg1), (PEER, seg2)]
    f1, f2 = plain_frames(iface, 3.0)
    assert len(f1) == 14 + 1500
    ids = []
    for f, seg in ((f1, seg1), (f2, seg2)):
        e = Ether(f)
        assert (e.dst, e.src) == (PEER_MAC, OUR_MAC)
        ip = e[IP]
        assert (ip.src, ip.dst, ip.ttl, ip.proto, ip.ihl) == (OUR_IP, PEER_IP, 64, 6, 5)
        assert ip.flags.DF and not ip.flags.MF and ip.frag == 0
        assert bytes(ip.payload) == seg
        checks_ok(f)
        ids.append(ip.id)
    assert ids[1] == (ids[0] + 1) & 0xFFFF


def test_tcp_output_via_gateway_waits_for_arp() -> None:
    iface, t = make()
    seg = tcp_segment(OUR_IP, FAR_IP, b"hi", sport=1, dport=2)
    t.pending = [(FAR, seg)]
    (req,) = plain_frames(iface, 0.0)
    assert Ether(req)[ARP].pdst == GW_IP  # the next hop is the gateway
    assert iface.next_deadline() == 1.0
    iface.receive_frame(arp_reply(GW_MAC, GW_IP), 0.3)
    (f,) = plain_frames(iface, 0.3)
    e = Ether(f)
    assert e.dst == GW_MAC and e[IP].dst == FAR_IP and bytes(e[IP].payload) == seg
    checks_ok(f)
    assert iface.next_deadline() is None


def test_static_gateway_needs_no_arp() -> None:
    iface, t = make(static={IPv4Address(GW_IP): mac(GW_MAC)})
    t.pending = [(FAR, tcp_segment(OUR_IP, FAR_IP, sport=1, dport=2))]
    (f,) = plain_frames(iface, 0.0)
    assert Ether(f).dst == GW_MAC and TCP in Ether(f)


def test_no_route_without_gateway() -> None:
    iface, t = make(gateway=None)
    t.pending = [(FAR, tcp_segment(OUR_IP, FAR_IP, sport=1, dport=2))]
    assert iface.frames_to_send(0.0) == []
    assert iface.counters_dict()["ip"]["no_route"] == 1


def test_arp_timeout_drops_queued_segments() -> None:
    iface, t = make(arp=ArpConfig(retry_interval=1.0, max_tries=3))
    t.pending = [(PEER, tcp_segment(OUR_IP, PEER_IP, sport=1, dport=2)) for _ in range(3)]
    assert len(iface.frames_to_send(0.0)) == 1  # one ARP request
    now = 0.0
    requests = 1
    while (d := iface.next_deadline()) is not None:
        now = d
        iface.on_deadline(now)
        requests += len(iface.frames_to_send(now))
    assert now == 3.0 and requests == 3
    c = iface.counters_dict()["arp"]
    assert c["timeouts"] == 1 and c["queue_dropped"] == 3 and c["queued"] == 3


def test_too_big_with_df_is_dropped() -> None:
    iface, t = make(mtu=576)
    resolved(iface)
    t.pending = [(PEER, bytes(600))]
    assert iface.frames_to_send(0.0) == []
    assert iface.counters_dict()["ip"]["too_big"] == 1


def test_unknown_protocol_ethertype_broadcast_tcp_and_no_transport() -> None:
    iface, t = make()
    iface.receive_frame(to_us(IP(src=PEER_IP, dst=OUR_IP, proto=47) / Raw(b"gre")), 0.0)
    iface.receive_frame(to_us(IP(src=PEER_IP, dst=OUR_IP) / UDP(sport=1, dport=2)), 0.0)
    iface.receive_frame(to_us(IPv6() / Raw(b"x")), 0.0)
    iface.receive_frame(bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=PEER_MAC)
                              / IP(src=PEER_IP, dst="255.255.255.255") / TCP()), 0.0)
    c = iface.counters_dict()
    assert c["ip"]["unknown_protocol"] == 1
    assert c["udp"]["no_port"] == 1  # UDP is known, but no port is bound
    assert c["eth"]["unknown_ethertype"] == 1
    assert c["ip"]["broadcast_tcp"] == 1
    assert t.received == []
    bare, _ = make(tcp=False)
    bare.receive_frame(to_us(IP(src=PEER_IP, dst=OUR_IP) / TCP()), 0.0)
    assert bare.counters_dict()["ip"]["no_transport"] == 1
    bare.attach_tcp(t)
    bare.receive_frame(to_us(IP(src=PEER_IP, dst=OUR_IP) / TCP()), 0.0)
    assert len(t.received) == 1


def test_broadcast_send_needs_no_arp() -> None:
    iface, _ = make()
    iface.send_ip(b"\xff\xff\xff\xff", 17, b"\0\x44\0\x43\0\x08\0\0", 0.0, df=False)
    iface.send_ip(bytes([10, 0, 0, 255]), 17, b"\0\x44\0\x43\0\x08\0\0", 0.0, df=False)
    f1, f2 = plain_frames(iface, 0.0)
    assert Ether(f1).dst == "ff:ff:ff:ff:ff:ff" and Ether(f1)[IP].dst == "255.255.255.255"
    assert Ether(f2).dst == "ff:ff:ff:ff:ff:ff" and Ether(f2)[IP].dst == "10.0.0.255"


def test_ping_api_and_reply_recorded() -> None:
    iface = resolved(make()[0])
    iface.ping(IPv4Address(PEER_IP), 77, 1, b"probe", 5.0)
    (f,) = plain_frames(iface, 5.0)
    assert Ether(f)[ICMP].type == 8 and Ether(f)[ICMP].id == 77
    checks_ok(f)
    reply = IP(src=PEER_IP, dst=OUR_IP) / ICMP(type=0, id=77, seq=1) / Raw(b"probe")
    iface.receive_frame(to_us(reply), 5.1)
    (r,) = iface.icmp.echo_replies
    assert (r.src, r.ident, r.seq, r.data) == (PEER, 77, 1, b"probe")


def test_deadlines_include_transport() -> None:
    iface, t = make()
    assert iface.next_deadline() is None
    t.deadline = 7.5
    assert iface.next_deadline() == 7.5
    iface.start(0.0)
    assert iface.next_deadline() == 2.0
    iface.on_deadline(2.0)
    assert t.fired == [2.0]
    assert iface.next_deadline() == 7.5
    frags = fragment(ping(data=bytes(3000)), fragsize=1480)
    iface.receive_frame(to_us(frags[0]), 4.0)
    assert iface.next_deadline() == 7.5
    t.deadline = None
    assert iface.next_deadline() == 34.0


def test_counters_dict_layers_and_mss() -> None:
    iface, _ = make(mtu=9000)
    assert iface.mss == 8960
    c = iface.counters_dict()
    assert {"eth", "arp", "ip", "icmp"} <= set(c)
    assert c["eth"]["short"] == 0 and c["arp"]["timeouts"] == 0 and c["ip"]["bad_checksum"] == 0


def test_frames_to_send_returns_a_fresh_list() -> None:
    iface, _ = make()
    iface.start(0.0)
    frames = iface.frames_to_send(0.0)
    frames.clear()
    iface.receive_frame(arp_request(), 0.0)
    assert len(iface.frames_to_send(0.0)) == 1


def test_internal_errors_counted_unless_strict() -> None:
    iface, t = make(strict=False)
    t.raise_on_receive = True
    iface.receive_frame(to_us(IP(src=PEER_IP, dst=OUR_IP) / TCP()), 0.0)
    assert iface.counters_dict()["eth"]["internal_errors"] == 1
    assert isinstance(iface.last_error, RuntimeError)
    strict, t2 = make(strict=True)
    t2.raise_on_receive = True
    with pytest.raises(RuntimeError):
        strict.receive_frame(to_us(IP(src=PEER_IP, dst=OUR_IP) / TCP()), 0.0)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        Interface(InterfaceConfig(mac=b"\x01" * 6, ip=IPv4Interface("10.0.0.2/24")))
    with pytest.raises(ValueError):
        Interface(InterfaceConfig(mac=mac(OUR_MAC), ip=IPv4Interface("10.0.0.2/24"), mtu=60))


# ----------------------------------------------------------------------- fuzz
def corpus() -> list[bytes]:
    frames = [
        arp_request(), arp_reply(), arp_reply(GW_MAC, GW_IP),
        to_us(ping()), to_us(ping(data=bytes(600))),
        to_us(IP(src=PEER_IP, dst=OUR_IP, options=[]) / TCP(flags="S") / Raw(b"abc")),
        to_us(IP(src=PEER_IP, dst=OUR_IP) / UDP() / Raw(b"x" * 30)),
        bytes(Ether(dst=OUR_MAC, src=PEER_MAC) / Dot1Q(vlan=0) / ping()),
        to_us(ICMP(type=3, code=1) / IP(src=OUR_IP, dst=FAR_IP) / UDP()),
    ]
    frames += [to_us(f) for f in fragment(ping(data=bytes(range(256)) * 12), fragsize=512)]
    return frames


def _fix_ip_checksum(b: bytearray) -> None:
    """Recompute the IPv4 header checksum after a mutation, so the mutation gets past
    the checksum and exercises the length, option and fragment checks behind it."""
    if len(b) < 34 or b[12:14] != b"\x08\x00":
        return
    hl = (b[14] & 0x0F) * 4
    if hl < 20 or 14 + hl > len(b):
        return
    b[24:26] = b"\0\0"
    s = int.from_bytes(b[14:14 + hl], "big")
    r = s % 0xFFFF or (0xFFFF if s else 0)
    b[24:26] = (0xFFFF - r).to_bytes(2, "big")


def test_fuzz_never_raises() -> None:
    rng = random.Random(20240601)
    iface, t = make(strict=True, reassembly=ReassemblyConfig(max_datagrams=4,
                                                             max_bytes=16384))
    frames = corpus()
    now = 0.0
    n = 20000
    for i in range(n):
        now += 0.01
        kind = i % 5
        if kind == 0:
            frame = rng.randbytes(rng.randrange(0, 120))
            if rng.random() < 0.5:  # make the Ethernet header plausible
                frame = mac(OUR_MAC) + mac(PEER_MAC) + rng.choice(
                    [b"\x08\x00", b"\x08\x06", b"\x81\x00"]) + frame[14:]
        elif kind == 1:
            base = rng.choice(frames)
            frame = base[:rng.randrange(0, len(base) + 1)]
        elif kind == 2:
            b = bytearray(rng.choice(frames))
            for _ in range(rng.randrange(1, 6)):
                b[rng.randrange(12, len(b))] = rng.randrange(256)
            frame = bytes(b)
        else:
            b = bytearray(rng.choice(frames))
            # Header fields most likely to confuse: version/IHL, lengths, ident,
            # flags/offset, protocol, addresses; then a valid header checksum.
            for _ in range(rng.randrange(1, 3)):
                pos = 14 + rng.choice([0, 2, 3, 4, 5, 6, 7, 9, 15, 19, 20, 21, 22])
                if pos < len(b):
                    b[pos] = rng.randrange(256)
            if kind == 4:
                b = b[:rng.randrange(14, len(b) + 1)]
            _fix_ip_checksum(b)
            frame = bytes(b)
        iface.receive_frame(frame, now)
        if i % 50 == 0:
            iface.on_deadline(now)
            iface.frames_to_send(now)
    iface.on_deadline(now + 1000.0)
    iface.frames_to_send(now + 1000.0)
    c = iface.counters_dict()
    assert c["eth"].get("internal_errors", 0) == 0
    assert c["eth"]["frames_in"] == n
    assert iface.ipv4.reassembler.bytes_held == 0
    assert len(iface.ipv4.reassembler) == 0
    # The mutations reached the deep checks, and valid frames still got through.
    for name in ("bad_checksum", "truncated", "bad_length", "bad_header", "fragments",
                 "bad_fragment", "reassembly_overlap", "not_for_us", "delivered"):
        assert c["ip"].get(name, 0) > 0, name
    assert c["arp"]["requests_in"] > 0 and c["icmp"]["echo_out"] > 0
    assert t.received


def test_fuzz_receive_accepts_all_bytes_like_types() -> None:
    iface, _ = make()
    for frame in corpus():
        iface.receive_frame(bytearray(frame), 0.0)
        iface.receive_frame(memoryview(frame), 0.0)
        iface.receive_frame(memoryview(bytearray(frame))[0:len(frame)], 0.0)
    assert iface.counters_dict()["eth"].get("internal_errors", 0) == 0
