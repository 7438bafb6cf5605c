"""The fused receive path of :class:`netstack.interface.Interface` against the layered one.

Two interfaces in identical states, each with its own TCP layer (same seed), one with the
fused path (``InterfaceConfig.fast_path``) and one without, are fed the same frames: the
established flow's data in order (the fused case), and frames that must not take it or
that it must hand on unchanged — wrong, broadcast and multicast MAC, 802.1Q tags (VID 0
and others), IPv4 options, fragments, bad IPv4 and TCP checksums, total length longer or
shorter than the frame, truncated frames, other versions and protocols, sources that
RFC 1122 §3.2.1.3 rejects, other destinations, other connections, ARP, random
corruption. After every frame both must hold the same counters (every layer, the fused
path's own TCP ``fast_path`` counters included: the same TCP layer runs behind both),
the same connection state, the same bytes for the application and the same frames to
send: the fused path is a strict subset of RFC 791 / RFC 1122 §3.2.1 / RFC 9293 §3.10.7
as the layered path implements them.
"""

from __future__ import annotations

import ipaddress
import random
import struct
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netstack.counters import Counters
from netstack.ethernet import BROADCAST
from netstack.ethernet import build_header as eth_header
from netstack.interface import UNCONFIGURED, Interface, InterfaceConfig
from netstack.ipv4 import build_header as ip_header
from netstack.tcp import seq as sq
from netstack.tcp.connection import TcpConfig, TcpConnection, TcpState
from netstack.tcp.layer import TcpLayer
from netstack.tcp.segment import ACK, FIN, PSH, RST, SYN, TcpOptions, build, build_options, parse
from tests.unit.test_tcp_fastpath import snapshot

OUR_MAC = bytes.fromhex("020000000002")
PEER_MAC = bytes.fromhex("020000000001")
OUR = bytes([10, 0, 0, 2])
PEER = bytes([10, 0, 0, 1])
OTHER = bytes([10, 0, 0, 3])
NET = ipaddress.IPv4Interface("10.0.0.2/24")
PORT = 3260
LISTEN = 5555
MSS = 1460
STREAM = random.Random(0).randbytes(1 << 20)


def ip_frame(seg: bytes, *, src: bytes = PEER, dst: bytes = OUR, proto: int = 6,
             dst_mac: bytes = OUR_MAC, ident: int = 1, df: bool = True) -> bytes:
    """Ethernet + IPv4 (correct header checksum) around ``seg``."""
    return (eth_header(dst_mac, PEER_MAC, 0x0800)
            + ip_header(src, dst, proto, len(seg), ident, df=df) + seg)


def ip_checksum_fixed(frame: bytearray, off: int = 14) -> bytearray:
    """Recompute the IPv4 header checksum of the header at ``off`` (RFC 1071)."""
    hl = (frame[off] & 0x0F) * 4
    frame[off + 10:off + 12] = b"\0\0"
    s = int.from_bytes(frame[off:off + hl], "big") % 0xFFFF
    frame[off + 10:off + 12] = struct.pack("!H", 0xFFFF - s if s else 0xFFFF)
    return frame


class Twins:
    """Two interfaces, fused path on and off, each with a TCP layer, and a scripted peer."""

    def __init__(self, seed: int, timestamps: bool = True, rcvbuf: int = 64 * 1024,
                 memoryview_frames: bool = False, ip: ipaddress.IPv4Interface = NET) -> None:
        self.now = 100.0
        self.memoryview_frames = memoryview_frames
        self.ifaces: list[Interface] = []
        self.layers: list[TcpLayer] = []
        for fast in (True, False):
            counters = Counters()
            iface = Interface(InterfaceConfig(
                mac=OUR_MAC, ip=ip, mtu=1500, fast_path=fast,
                static_neighbours={ipaddress.IPv4Address(PEER): PEER_MAC}),
                counters=counters)
            layer = TcpLayer(ip.ip.packed, mss=MSS, rng=random.Random(seed),
                             counters=counters)
            iface.attach_tcp(layer)
            layer.listen(LISTEN)
            self.ifaces.append(iface)
            self.layers.append(layer)
        self.read = [b"", b""]
        self.conns: list[TcpConnection] = []
        self.port = 0
        self.irs = random.Random(seed + 1).getrandbits(32)
        self.peer_nxt = sq.add(self.irs, 1)
        self.peer_ts = random.Random(seed + 2).getrandbits(32)
        self.timestamps = timestamps
        self.rcvbuf = rcvbuf

    def connect(self) -> None:
        """Active open on both, answered by the peer: ESTABLISHED."""
        self.conns = [ly.connect(PEER, PORT, self.now, config=TcpConfig(
            rcvbuf=self.rcvbuf, sndbuf=256 * 1024)) for ly in self.layers]
        syn_frame = self.output()[-1]
        syn = parse(memoryview(syn_frame)[34:])
        assert syn.flags == SYN
        self.port = syn.sport
        opts = TcpOptions(mss=MSS, wscale=7, sack_perm=True,
                          ts_val=self.peer_ts if self.timestamps else None,
                          ts_ecr=syn.opts.ts_val or 0)
        self.deliver(ip_frame(build(PEER, OUR, PORT, self.port, self.irs, sq.add(syn.seq, 1),
                                    SYN | ACK, 0xFFFF, build_options(opts))))
        for c in self.conns:
            assert c.state == TcpState.ESTABLISHED

    @property
    def fast(self) -> TcpConnection:
        return self.conns[0]

    def output(self) -> list[bytes]:
        """Both interfaces' frames to send, which must be identical; returns them."""
        outs = [iface.frames_to_send(self.now) for iface in self.ifaces]
        assert outs[0] == outs[1]
        return [bytes(f) for f in outs[0]]  # type: ignore[arg-type]

    def deliver(self, frame: bytes, csum_ok: bool = False) -> list[bytes]:
        """One frame to both, then compare everything."""
        for iface in self.ifaces:
            # A fresh buffer for each: the stack may keep views of it.
            data: bytes | memoryview = bytes(frame)
            if self.memoryview_frames:
                data = memoryview(b"\0" * 10 + frame)[10:]  # as TapLink.recv_offload gives
            iface.receive_frame(data, self.now, csum_ok)
        return self.check()

    def check(self) -> list[bytes]:
        for iface in self.ifaces:
            assert iface.last_error is None
            iface.on_deadline(self.now)
        assert self.ifaces[0].counters_dict() == self.ifaces[1].counters_dict()
        if self.conns:
            assert snapshot(self.conns[0]) == snapshot(self.conns[1])
        assert [(c.local_port, c.remote_port, c.state) for c in self.layers[0].connections()] \
            == [(c.local_port, c.remote_port, c.state) for c in self.layers[1].connections()]
        for i, ly in enumerate(self.layers):
            ly.take_notified()
            if self.conns:
                self.read[i] += self.conns[i].recv()
        assert self.read[0] == self.read[1]
        return self.output()

    def segment(self, seqno: int, n: int, *, flags: int = ACK | PSH, ack: int | None = None,
                sport: int = PORT, dport: int | None = None, src: bytes = PEER,
                dst: bytes = OUR) -> bytes:
        """A peer TCP segment with the stream's bytes at ``seqno`` (correct checksum)."""
        off = sq.diff(seqno, sq.add(self.irs, 1)) % len(STREAM)
        payload = (STREAM + STREAM)[off:off + n]
        opts = b""
        if self.timestamps:
            opts = build_options(TcpOptions(ts_val=self.peer_ts,
                                            ts_ecr=self.fast._ts_now(self.now)))
        return build(src, dst, sport, self.port if dport is None else dport, seqno,
                     self.fast.snd_una if ack is None else ack, flags, 0x7FFF, opts, payload)

    def next_frame(self, n: int = MSS - 12) -> bytes:
        """The next in-order data frame of the flow (does not advance the peer)."""
        return ip_frame(self.segment(self.peer_nxt, n))

    def sent(self, n: int) -> None:
        self.peer_nxt = sq.add(self.peer_nxt, n)
        self.peer_ts = (self.peer_ts + 1) & sq.MASK


def taken(iface: Interface) -> list[int]:
    """Count the datagrams that reach Ipv4Layer.receive (the layered path) on ``iface``."""
    calls = [0]
    inner = iface.ipv4.receive

    def counting(pkt: memoryview, link_broadcast: bool, now: float
                 ) -> tuple[int, bytes, bytes, memoryview, bool] | None:
        calls[0] += 1
        return inner(pkt, link_broadcast, now)

    iface.ipv4.receive = counting  # type: ignore[method-assign]
    return calls


# -------------------------------------------------------------- frame mutations
def _vlan(f: bytes, vid: int) -> bytes:
    return f[:12] + struct.pack("!HH", 0x8100, vid) + f[12:]


def _options(f: bytes) -> bytes:
    # IHL 6: one NOP NOP NOP EOL word (RFC 791 §3.1), header checksum corrected.
    b = bytearray(f[:34] + b"\x01\x01\x01\x00" + f[34:])
    b[14] = 0x46
    b[16:18] = struct.pack("!H", len(b) - 14)
    return bytes(ip_checksum_fixed(b))


def _set16(f: bytes, off: int, value: int, fix: bool = True) -> bytes:
    b = bytearray(f)
    b[off:off + 2] = struct.pack("!H", value)
    return bytes(ip_checksum_fixed(b)) if fix else bytes(b)


def _set8(f: bytes, off: int, value: int, fix: bool = True) -> bytes:
    b = bytearray(f)
    b[off] = value
    return bytes(ip_checksum_fixed(b)) if fix else bytes(b)


def _addr(f: bytes, off: int, addr: bytes) -> bytes:
    b = bytearray(f)
    b[off:off + 4] = addr
    return bytes(ip_checksum_fixed(b))


def _flip(f: bytes, off: int) -> bytes:
    b = bytearray(f)
    b[off] ^= 0x10
    return bytes(b)


MUTATIONS: dict[str, Callable[[bytes], bytes]] = {
    "plain": lambda f: f,
    "wrong_mac": lambda f: bytes.fromhex("020000000009") + f[6:],
    "broadcast_mac": lambda f: BROADCAST + f[6:],
    "multicast_mac": lambda f: bytes.fromhex("01005e000001") + f[6:],
    "vlan_priority_tag": lambda f: _vlan(f, 0),
    "vlan_5": lambda f: _vlan(f, 5),
    "ip_options": _options,
    "more_fragments": lambda f: _set16(f, 20, 0x2000),
    "fragment_offset": lambda f: _set16(f, 20, 0x0001),
    "reserved_flag": lambda f: _set16(f, 20, 0xC000),
    "no_df": lambda f: _set16(f, 20, 0x0000),
    "bad_ip_checksum": lambda f: _set16(f, 24, int.from_bytes(f[24:26], "big") ^ 1,
                                        fix=False),
    "bad_tcp_checksum": lambda f: _flip(f, len(f) - 1),
    "total_too_long": lambda f: _set16(f, 16, len(f) - 14 + 1),
    "total_too_short": lambda f: _set16(f, 16, len(f) - 14 - 1),
    "total_below_header": lambda f: _set16(f, 16, 19),
    "padded": lambda f: f + b"\0" * 6,
    "truncated": lambda f: f[:len(f) // 2],
    "short_headers": lambda f: f[:50],
    "ihl_4": lambda f: _set8(f, 14, 0x44),
    "version_6": lambda f: _set8(f, 14, 0x65),
    "ethertype_ipv6": lambda f: f[:12] + b"\x86\xdd" + f[14:],
    "udp": lambda f: _set8(f, 23, 17),
    "icmp": lambda f: _set8(f, 23, 1),
    "proto_99": lambda f: _set8(f, 23, 99),
    "src_ours": lambda f: _addr(f, 26, OUR),
    "src_multicast": lambda f: _addr(f, 26, bytes([224, 0, 0, 1])),
    "src_broadcast": lambda f: _addr(f, 26, bytes([10, 0, 0, 255])),
    "src_limited_broadcast": lambda f: _addr(f, 26, b"\xff\xff\xff\xff"),
    "dst_other": lambda f: _addr(f, 30, OTHER),
    "dst_broadcast": lambda f: _addr(f, 30, bytes([10, 0, 0, 255])),
    "ttl_tos": lambda f: _set8(_set8(f, 22, 1), 15, 0xB8),
}


@pytest.fixture
def tw() -> Twins:
    t = Twins(1)
    t.connect()
    return t


def test_in_order_bulk_takes_the_fused_path(tw: Twins) -> None:
    fast_calls, slow_calls = taken(tw.ifaces[0]), taken(tw.ifaces[1])
    tw.deliver(tw.next_frame())  # the first moves the window: full TCP path, fused IP
    tw.sent(MSS - 12)
    for _ in range(50):
        tw.deliver(tw.next_frame())
        tw.sent(MSS - 12)
    assert fast_calls == [0]
    assert slow_calls == [51]
    c = tw.ifaces[0].counters_dict()
    assert c["tcp"]["fast_path"] == 50
    assert c["ip"]["in"] == c["ip"]["delivered"] >= 51
    assert tw.read[0] == STREAM[:51 * (MSS - 12)]


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_mutated_frames_agree(tw: Twins, name: str) -> None:
    """Each kind of frame, at the point of the flow where the plain one is predicted."""
    tw.deliver(tw.next_frame())
    tw.sent(MSS - 12)
    fast_calls = taken(tw.ifaces[0])
    tw.deliver(MUTATIONS[name](tw.next_frame()))
    # Fused: the plain frame, fields both paths ignore, and a bad TCP checksum (the TCP
    # layer checks it, behind either path); dropped by Ethernet (IPv4 never sees them):
    # foreign unicast and multicast MACs, a foreign VLAN, another EtherType; everything
    # else reaches the layered IPv4 path.
    fused = {"plain", "no_df", "reserved_flag", "ttl_tos", "bad_tcp_checksum"}
    ethernet_drops = {"wrong_mac", "multicast_mac", "vlan_5", "ethertype_ipv6"}
    assert fast_calls == [0 if name in fused | ethernet_drops else 1]
    # And the flow goes on (after a drop the same data comes again).
    tw.sent(0)
    tw.peer_nxt = tw.fast.rcv_nxt
    for _ in range(3):
        tw.deliver(tw.next_frame())
        tw.sent(MSS - 12)


def test_offload_vouched_checksum_and_memoryview_frames() -> None:
    tw = Twins(3, memoryview_frames=True)
    tw.connect()
    for i in range(20):
        frame = tw.next_frame()
        if i % 3 == 0:
            frame = MUTATIONS["bad_tcp_checksum"](frame)
        tw.deliver(frame, csum_ok=i % 2 == 0)
        tw.sent(MSS - 12)
        tw.peer_nxt = tw.fast.rcv_nxt
    assert tw.ifaces[0].counters_dict()["tcp"]["fast_path"] > 0


def test_other_connections_syn_and_arp(tw: Twins) -> None:
    # A segment for no connection (RST back), another peer's, a SYN to a listener.
    tw.deliver(ip_frame(tw.segment(12345, 10, sport=999)))
    other = bytes([10, 0, 0, 7])
    tw.deliver(ip_frame(tw.segment(12345, 10, src=other), src=other))
    out = tw.deliver(ip_frame(build(PEER, OUR, 4000, LISTEN, 777, 0, SYN, 0xFFFF,
                                    build_options(TcpOptions(mss=MSS)))))
    assert any(parse(memoryview(f)[34:]).flags == SYN | ACK for f in out)
    arp = (BROADCAST + PEER_MAC + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
           + PEER_MAC + PEER + b"\0" * 6 + OUR)
    tw.deliver(arp)
    assert tw.ifaces[0].counters_dict()["arp"] == tw.ifaces[1].counters_dict()["arp"]


def test_unconfigured_interface_leaves_tcp_to_the_layered_path() -> None:
    tw = Twins(4, ip=UNCONFIGURED)
    calls = taken(tw.ifaces[0])
    zero = b"\0\0\0\0"
    seg = build(PEER, zero, PORT, 1000, 1, 0, SYN, 0xFFFF)
    tw.deliver(ip_frame(seg, dst=zero))
    assert tw.ifaces[0].counters_dict()["ip"]["unconfigured"] == 1
    assert calls == [1]
    # Configured at runtime (DHCP): the fused path follows the new address.
    for iface, ly in zip(tw.ifaces, tw.layers, strict=True):
        iface.set_address(NET, None, tw.now)
        ly.local_ip = OUR
    tw.output()
    tw.connect()
    fast_calls = taken(tw.ifaces[0])
    for _ in range(3):
        tw.deliver(tw.next_frame())
        tw.sent(MSS - 12)
    assert fast_calls == [0]
    for iface in tw.ifaces:
        iface.clear_address()
    tw.deliver(tw.next_frame())
    assert fast_calls == [1]
    assert tw.ifaces[0].counters_dict()["ip"]["unconfigured"] == 2


def test_vlan_interface_never_fuses() -> None:
    ifaces = []
    for fast in (True, False):
        iface = Interface(InterfaceConfig(mac=OUR_MAC, ip=NET, vlan=5, fast_path=fast),
                          counters=Counters())
        iface.attach_tcp(TcpLayer(OUR, rng=random.Random(1), counters=iface.counters))
        ifaces.append(iface)
    frame = ip_frame(build(PEER, OUR, PORT, 1000, 1, 1, ACK, 100, b"", b"x" * 100))
    for f in (frame, _vlan(frame, 5)):
        for iface in ifaces:
            iface.receive_frame(f, 0.0)
        assert ifaces[0].counters_dict() == ifaces[1].counters_dict()
    assert ifaces[0].counters_dict()["eth"]["vlan"] == 1


def random_frames(tw: Twins, rng: random.Random, steps: int) -> None:
    """Mostly the flow's data in order, mixed with every mutation, random corruption,
    holes, retransmissions, FIN and RST near the end."""
    names = sorted(MUTATIONS)
    for step in range(steps):
        conn = tw.fast
        if conn.state != TcpState.ESTABLISHED:
            return
        tw.now += rng.choice((0.0, 0.0, 0.001, 0.3))
        if sq.gt(tw.peer_nxt, conn._rcv_adv) or rng.random() < 0.05:
            tw.peer_nxt = conn.rcv_nxt  # go back N
        n = rng.choice((1, 100, MSS - 12, MSS - 12, MSS - 12))
        r = rng.random()
        if r < 0.5:
            tw.deliver(tw.next_frame(n), csum_ok=rng.random() < 0.1)
            tw.sent(n)
        elif r < 0.75:
            tw.deliver(MUTATIONS[rng.choice(names)](tw.next_frame(n)))
            tw.sent(n)
        elif r < 0.85:  # random corruption of one byte, the IPv4 checksum fixed or not
            b = bytearray(tw.next_frame(n))
            b[rng.randrange(len(b))] = rng.randrange(256)
            if rng.random() < 0.5 and len(b) >= 34 and b[14] >> 4 == 4:
                ip_checksum_fixed(b)
            tw.deliver(bytes(b))
            tw.sent(n)
        elif r < 0.88:  # a hole
            tw.sent(n)
        elif r < 0.92:  # pure ACK
            tw.deliver(ip_frame(tw.segment(tw.peer_nxt, 0, flags=ACK)))
        elif r < 0.95:
            data = bytes([step & 0xFF]) * rng.choice((1, 3000))
            assert tw.conns[0].send(data) == tw.conns[1].send(data)
            tw.check()
        elif r < 0.99 or step < steps * 3 // 4:
            tw.deliver(ip_frame(tw.segment(sq.add(tw.peer_nxt, -MSS), MSS)))  # duplicate
        elif r < 0.995:
            tw.deliver(ip_frame(tw.segment(tw.peer_nxt, 0, flags=ACK | FIN)))
            tw.sent(1)
        else:
            tw.deliver(ip_frame(tw.segment(conn.rcv_nxt, 0, flags=RST)))


@pytest.mark.parametrize("seed", range(12))
def test_random_frames_agree(seed: int) -> None:
    tw = Twins(seed, timestamps=seed % 3 != 2, rcvbuf=(16 << 10, 64 << 10, 1 << 20)[seed % 3],
               memoryview_frames=seed % 4 == 1)
    tw.connect()
    random_frames(tw, random.Random(seed), 300)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), timestamps=st.booleans(),
       steps=st.integers(1, 150))
def test_random_frames_agree_property(seed: int, timestamps: bool, steps: int) -> None:
    tw = Twins(seed % 1000, timestamps=timestamps)
    tw.connect()
    random_frames(tw, random.Random(seed), steps)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_arbitrary_header_bytes_agree(data: st.DataObject) -> None:
    """Any values in the Ethernet and IPv4 header fields (the checksum kept correct or
    not) and any length: the fused and the layered path agree."""
    tw = Twins(7)
    tw.connect()
    frame = bytearray(tw.next_frame(data.draw(st.integers(0, MSS - 12))))
    for _ in range(data.draw(st.integers(1, 4))):
        off = data.draw(st.integers(0, 33))
        frame[off] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        ip_checksum_fixed(frame)
    cut = data.draw(st.integers(0, 8))
    tw.deliver(bytes(frame[:len(frame) - cut] if cut < 8 else frame + b"\0" * 4))
