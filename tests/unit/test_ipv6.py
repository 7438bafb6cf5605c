"""IPv6 on the Interface (RFC 8200, 4861, 4862, 4443, 2464) with a fake clock; frames
crafted and dissected by scapy, an independent implementation."""

from __future__ import annotations

import math
import random
from ipaddress import IPv4Interface, IPv6Address, IPv6Interface
from typing import Any, cast

import pytest
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import (
    HBHOptUnknown as ScapyHBHOptUnknown,
)
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6MLQuery2,
    ICMPv6MLReport2,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_RS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from netstack import icmpv6
from netstack.addrconf import AddrState, Ipv6Config
from netstack.checksum import transport_checksum
from netstack.interface import Interface, InterfaceConfig
from netstack.ipv6 import (
    eui64_iid,
    is_reserved_iid,
    multicast_mac,
    random_iid,
    solicited_node,
    stable_iid,
)
from netstack.nd import NdConfig, NdState
from netstack.tcp.layer import TcpLayer
from tests.unit.frame_util import plain_frames
from tests.unit.scapy_frag import defragment6, fragment6

OUR_MAC = "02:00:00:00:00:02"
PEER_MAC = "02:00:00:00:00:01"
RTR_MAC = "02:00:00:00:00:fe"
OUR6, PEER6, FAR6, RTR_LL = "fd00::2", "fd00::1", "2001:db8::7", "fe80::fe"
OUR_LL = "fe80::ff:fe00:2"  # modified EUI-64 of 02:00:00:00:00:02


def mac(s: str) -> bytes:
    return bytes.fromhex(s.replace(":", ""))


def b6(s: str) -> bytes:
    return IPv6Address(s).packed


def make(cfg: Ipv6Config | None = None, mtu: int = 1500) -> Interface:
    cfg = cfg or Ipv6Config(addresses=(IPv6Interface(f"{OUR6}/64"),), dad=False)
    iface = Interface(InterfaceConfig(mac=mac(OUR_MAC), ip=IPv4Interface("10.0.0.2/24"),
                                      mtu=mtu, ipv6=cfg, strict=True),
                      rng=random.Random(7))
    iface.attach_tcp(TcpLayer(iface.ip, mss=mtu - 40, rng=random.Random(3),
                              counters=iface.counters))
    iface.start(0.0)
    return iface


def frames6(iface: Interface, now: float, mld: bool = False) -> list[Ether]:
    """Our IPv6 frames (the gratuitous ARPs of the IPv4 side left out; MLD reports too
    unless ``mld``)."""
    return [p for p in (Ether(f) for f in plain_frames(iface, now))
            if IPv6 in p and (mld or ICMPv6MLReport2 not in p)]


def run(iface: Interface, start: float, end: float) -> list[tuple[float, Ether]]:
    """Fire every deadline in [start, end]; the frames with the time they left."""
    got: list[tuple[float, Ether]] = [(start, f) for f in frames6(iface, start, True)]
    now = start
    while True:
        t = iface.next_deadline()
        if t is None or t > end:
            break
        now = max(now, t)
        iface.on_deadline(now)
        got += [(now, f) for f in frames6(iface, now, True)]
    return got


def feed(iface: Interface, pkt: Ether, now: float) -> None:
    iface.receive_frame(bytes(pkt), now)


def c6(iface: Interface) -> dict[str, dict[str, int]]:
    return iface.counters_dict()


def from_peer(payload: object, dst: str = OUR6, src: str = PEER6, hlim: int = 64,
              eth_dst: str = OUR_MAC) -> Ether:
    return Ether(src=PEER_MAC, dst=eth_dst) / IPv6(src=src, dst=dst, hlim=hlim) / payload


# ----------------------------------------------------------------- addresses
def test_address_helpers() -> None:
    assert solicited_node(b6("fd00::2:abcd:ef01")) == b6("ff02::1:ffcd:ef01")
    assert multicast_mac(b6("ff02::1:ffcd:ef01")) == mac("33:33:ff:cd:ef:01")
    assert multicast_mac(b6("ff02::1")) == mac("33:33:00:00:00:01")
    # RFC 4291 Appendix A: invert the U/L bit, insert FFFE.
    assert eui64_iid(mac("00:1b:21:3c:4d:5e")) == bytes.fromhex("021b21fffe3c4d5e")
    a = stable_iid(b6("fd00::")[:8], mac(OUR_MAC), 0, b"secret")
    assert a == stable_iid(b6("fd00::")[:8], mac(OUR_MAC), 0, b"secret")  # stable
    assert a != stable_iid(b6("fd01::")[:8], mac(OUR_MAC), 0, b"secret")  # per prefix
    assert a != stable_iid(b6("fd00::")[:8], mac(OUR_MAC), 1, b"secret")  # DAD_Counter
    assert is_reserved_iid(bytes(8))
    assert is_reserved_iid(bytes.fromhex("fdffffffffffff80"))
    assert not is_reserved_iid(bytes.fromhex("fdffffffffffff7f"))
    rng = random.Random(1)
    assert len({random_iid(rng) for _ in range(50)}) == 50


def test_link_local_and_groups_joined() -> None:
    iface = make()
    ip6 = iface.ip6
    assert ip6 is not None
    addrs = {str(a.interface): a.state for a in ip6.addresses}
    assert addrs == {f"{OUR_LL}/64": AddrState.PREFERRED, f"{OUR6}/64": AddrState.PREFERRED}
    assert iface.eth.groups >= {mac("33:33:00:00:00:01"), mac("33:33:ff:00:00:02")}
    assert iface.tcp is not None and iface.tcp.local_ip6 == b6(OUR6)  # type: ignore[attr-defined]
    assert iface.tcp.mss6 == 1440  # type: ignore[attr-defined]
    # A multicast frame for some other group is dropped by the Ethernet filter.
    feed(iface, Ether(src=PEER_MAC, dst="33:33:ff:00:00:99") / IPv6(src=PEER6,
         dst="ff02::1:ff00:99") / ICMPv6EchoRequest(), 1.0)
    assert c6(iface)["eth"]["not_for_us"] == 1


# -------------------------------------------------------------------- echo
def test_echo_answered_from_the_address_asked() -> None:
    iface = make()
    feed(iface, from_peer(ICMPv6ND_NS(tgt=OUR6) / ICMPv6NDOptSrcLLAddr(lladdr=PEER_MAC),
                          dst="ff02::1:ff00:2", hlim=255, eth_dst="33:33:ff:00:00:02"), 1.0)
    frames6(iface, 1.0)
    feed(iface, from_peer(ICMPv6EchoRequest(id=7, seq=3, data=b"hello")), 1.1)
    (rep,) = frames6(iface, 1.1)
    assert rep.dst == PEER_MAC and rep[IPv6].src == OUR6 and rep[IPv6].dst == PEER6
    e = rep[ICMPv6EchoReply]
    assert (e.id, e.seq, e.data) == (7, 3, b"hello")
    assert IPv6(bytes(rep[IPv6]))[ICMPv6EchoReply].cksum == e.cksum  # scapy agrees
    chk = rep[IPv6].copy()
    del chk[ICMPv6EchoReply].cksum
    assert IPv6(bytes(chk))[ICMPv6EchoReply].cksum == e.cksum
    # To all-nodes: answered from a unicast address of ours (RFC 4443 §4.2).
    feed(iface, from_peer(ICMPv6EchoRequest(id=8, seq=1), dst="ff02::1",
                          eth_dst="33:33:00:00:00:01"), 1.2)
    (rep,) = frames6(iface, 1.2)
    assert rep[IPv6].src == OUR6
    # Link-local request: link-local reply.
    feed(iface, from_peer(ICMPv6EchoRequest(id=9), dst=OUR_LL, src="fe80::1"), 1.3)
    out = frames6(iface, 1.3)
    assert out[0].haslayer(ICMPv6ND_NS)  # fe80::1 is resolved first
    feed(iface, from_peer(ICMPv6ND_NA(tgt="fe80::1", S=1, O=1) /
                          ICMPv6NDOptDstLLAddr(lladdr=PEER_MAC), dst=OUR_LL,
                          src="fe80::1", hlim=255), 1.4)
    (rep,) = frames6(iface, 1.4)
    assert rep[IPv6].src == OUR_LL and rep[ICMPv6EchoReply].id == 9
    assert c6(iface)["icmp6"]["echo_out"] == 3


def test_fragmented_echo_reassembled_and_reply_fragmented() -> None:
    iface = make()
    iface.ip6.nc.learn(b6(PEER6), mac(PEER_MAC), 0.5)  # type: ignore[union-attr]
    req = IPv6(src=PEER6, dst=OUR6) / IPv6ExtHdrFragment(id=0x1234) / \
        ICMPv6EchoRequest(id=1, seq=1, data=bytes(range(256)) * 12)
    for frag in fragment6(req, 1280):
        feed(iface, Ether(src=PEER_MAC, dst=OUR_MAC) / frag, 1.0)
    out = frames6(iface, 1.0)
    assert len(out) == 3 and all(len(f) <= 1514 for f in out)
    whole = IPv6(bytes(defragment6([f[IPv6] for f in out])))
    assert whole[ICMPv6EchoReply].data == bytes(range(256)) * 12
    c = c6(iface)["ip6"]
    assert (c["reassembled"], c["fragmented"], c["fragments_out"]) == (1, 1, 3)


# ------------------------------------------------------------ validation
@pytest.mark.parametrize(("pkt", "counter"), [
    (Ether(src=PEER_MAC, dst=OUR_MAC, type=0x86DD) / Raw(b"\x60" + bytes(20)), "truncated"),
    (Ether(src=PEER_MAC, dst=OUR_MAC) / IPv6(src="ff02::5", dst=OUR6) / ICMPv6EchoRequest(),
     "bad_src"),
    (Ether(src=PEER_MAC, dst=OUR_MAC) / IPv6(src=OUR6, dst=OUR6) / ICMPv6EchoRequest(),
     "bad_src"),
    (Ether(src=PEER_MAC, dst=OUR_MAC) / IPv6(src=PEER6, dst="fd00::77") / ICMPv6EchoRequest(),
     "not_for_us"),
    (Ether(src=PEER_MAC, dst=OUR_MAC) / IPv6(src=PEER6, dst=OUR6, plen=500) /
     ICMPv6EchoRequest(), "truncated"),
    (Ether(src=PEER_MAC, dst=OUR_MAC) / IPv6(src=PEER6, dst=OUR6) /
     IPv6ExtHdrRouting(segleft=1, addresses=["fd00::9"]) / ICMPv6EchoRequest(),
     "ext_routing_header"),
    (Ether(src=PEER_MAC, dst=OUR_MAC) / IPv6(src=PEER6, dst=OUR6) /
     IPv6ExtHdrHopByHop(options=[ScapyHBHOptUnknown(otype=0x47, optdata=b"ab")]) /
     ICMPv6EchoRequest(), "ext_bad_option"),
    (Ether(src=PEER_MAC, dst=OUR_MAC) / IPv6(src=PEER6, dst=OUR6) / IPv6ExtHdrDestOpt() /
     IPv6ExtHdrHopByHop() / ICMPv6EchoRequest(), "ext_bad_hop_by_hop"),
    (Ether(src=PEER_MAC, dst=OUR_MAC) / IPv6(src=PEER6, dst=OUR6, nh=59), "ext_no_next_header"),
    (Ether(src=PEER_MAC, dst=OUR_MAC) / IPv6(src=PEER6, dst=OUR6, nh=99) / Raw(b"x" * 8),
     "unknown_protocol"),
])
def test_bad_packets_counted_and_dropped(pkt: Ether, counter: str) -> None:
    iface = make()
    feed(iface, pkt, 1.0)
    assert c6(iface)["ip6"][counter] == 1
    assert frames6(iface, 1.0) == []


def test_extension_headers_skipped_and_padding_ignored() -> None:
    iface = make()
    iface.ip6.nc.learn(b6(PEER6), mac(PEER_MAC), 0.5)  # type: ignore[union-attr]
    pkt = Ether(src=PEER_MAC, dst=OUR_MAC) / IPv6(src=PEER6, dst=OUR6) / \
        IPv6ExtHdrHopByHop(options=[ScapyHBHOptUnknown(otype=0x07, optdata=b"abc")]) / \
        IPv6ExtHdrRouting(segleft=0) / IPv6ExtHdrDestOpt() / ICMPv6EchoRequest(id=5)
    feed(iface, Ether(bytes(pkt) + bytes(10)), 1.0)  # Ethernet padding after the packet
    (rep,) = frames6(iface, 1.0)
    assert rep[ICMPv6EchoReply].id == 5
    assert c6(iface)["ip6"]["padded"] == 1


def test_bad_icmpv6_checksum_dropped() -> None:
    iface = make()
    feed(iface, from_peer(ICMPv6EchoRequest(id=1, cksum=0x1234)), 1.0)
    assert c6(iface)["icmp6"]["bad_checksum"] == 1 and frames6(iface, 1.0) == []


# ---------------------------------------------------------------- ND in
def test_ns_answered_with_solicited_override_na() -> None:
    iface = make()
    feed(iface, from_peer(ICMPv6ND_NS(tgt=OUR6) / ICMPv6NDOptSrcLLAddr(lladdr=PEER_MAC),
                          dst="ff02::1:ff00:2", hlim=255, eth_dst="33:33:ff:00:00:02"), 1.0)
    (na,) = frames6(iface, 1.0)
    assert na.dst == PEER_MAC and na[IPv6].hlim == 255
    assert na[IPv6].src == OUR6 and na[IPv6].dst == PEER6
    a = na[ICMPv6ND_NA]
    assert (a.tgt, a.R, a.S, a.O) == (OUR6, 0, 1, 1)
    assert na[ICMPv6NDOptDstLLAddr].lladdr == OUR_MAC
    ent = iface.ip6.nc.entries()[b6(PEER6)]  # type: ignore[union-attr]
    assert ent.mac == mac(PEER_MAC)
    # DAD probe of our address by someone else: answered to all-nodes, S clear.
    feed(iface, from_peer(ICMPv6ND_NS(tgt=OUR6), src="::", dst="ff02::1:ff00:2", hlim=255,
                          eth_dst="33:33:ff:00:00:02"), 2.0)
    (na,) = frames6(iface, 2.0)
    assert na.dst == "33:33:00:00:00:01" and na[IPv6].dst == "ff02::1"
    assert na[ICMPv6ND_NA].S == 0


@pytest.mark.parametrize(("pkt", "counter"), [
    # Not hop limit 255: not from this link (RFC 4861 §7.1.1).
    (from_peer(ICMPv6ND_NS(tgt=OUR6) / ICMPv6NDOptSrcLLAddr(lladdr=PEER_MAC),
               dst="ff02::1:ff00:2", hlim=64, eth_dst="33:33:ff:00:00:02"), "bad_hop_limit"),
    # Multicast target.
    (from_peer(ICMPv6ND_NS(tgt="ff02::1"), hlim=255), "bad_ns"),
    # From :: with a source link-layer address.
    (from_peer(ICMPv6ND_NS(tgt=OUR6) / ICMPv6NDOptSrcLLAddr(lladdr=PEER_MAC), src="::",
               dst="ff02::1:ff00:2", hlim=255, eth_dst="33:33:ff:00:00:02"), "bad_ns"),
    # An option of length zero (RFC 4861 §4.6).
    (from_peer(ICMPv6ND_NS(tgt=OUR6) / Raw(b"\x01\x00" + bytes(6)), hlim=255), "bad_ns"),
    (from_peer(ICMPv6ND_NS(tgt="fd00::99"), hlim=255), "ns_not_ours"),
    # Solicited NA to a multicast destination (RFC 4861 §7.1.2).
    (from_peer(ICMPv6ND_NA(tgt=PEER6, S=1), dst="ff02::1", hlim=255,
               eth_dst="33:33:00:00:00:01"), "bad_na"),
    (from_peer(ICMPv6ND_RA(), src=PEER6, hlim=255), "bad_ra"),  # RA not from link-local
    (from_peer(ICMPv6ND_RS(), dst="ff02::1", hlim=255, eth_dst="33:33:00:00:00:01"),
     "rs_ignored"),
])
def test_bad_nd_counted(pkt: Ether, counter: str) -> None:
    iface = make()
    feed(iface, pkt, 1.0)
    assert c6(iface)["icmp6"][counter] == 1
    assert frames6(iface, 1.0) == []


# -------------------------------------------------------- neighbour cache
def _tcp_to(iface: Interface, dst: str, now: float) -> None:
    tcp = iface.tcp
    assert isinstance(tcp, TcpLayer)
    tcp.connect(b6(dst), 3260, now)


def test_resolution_retries_then_gives_up() -> None:
    iface = make()
    iface.ping(IPv6Address(PEER6), 1, 1, b"x", 1.0)
    sent = run(iface, 1.0, 10.0)
    ns = [(t, f) for t, f in sent if f.haslayer(ICMPv6ND_NS)]
    assert [t for t, _ in ns] == [1.0, 2.0, 3.0]  # RETRANS_TIMER 1 s, 3 tries
    for _, f in ns:
        assert f.dst == "33:33:ff:00:00:01" and f[IPv6].dst == "ff02::1:ff00:1"
        assert f[IPv6].hlim == 255 and f[ICMPv6ND_NS].tgt == PEER6
        assert f[ICMPv6NDOptSrcLLAddr].lladdr == OUR_MAC
    nd = c6(iface)["nd"]
    assert nd["timeouts"] == 1 and nd["queue_dropped"] >= 1
    assert b6(PEER6) not in iface.ip6.nc.entries()  # type: ignore[union-attr]


def test_resolution_then_reachable_stale_delay_probe() -> None:
    iface = make()
    ip6 = iface.ip6
    assert ip6 is not None
    _tcp_to(iface, PEER6, 1.0)
    (ns,) = frames6(iface, 1.0)
    assert ns.haslayer(ICMPv6ND_NS)
    feed(iface, from_peer(ICMPv6ND_NA(tgt=PEER6, S=1, O=1) /
                          ICMPv6NDOptDstLLAddr(lladdr=PEER_MAC), hlim=255), 1.2)
    (syn,) = frames6(iface, 1.2)  # the queued SYN leaves
    assert syn.dst == PEER_MAC and syn[TCP].flags == "S" and syn[TCP].dport == 3260
    chk = syn[IPv6].copy()
    del chk[TCP].chksum
    assert IPv6(bytes(chk))[TCP].chksum == syn[TCP].chksum  # IPv6 pseudo-header
    assert syn[TCP].options[0] == ("MSS", 1440)
    e = ip6.nc.entries()[b6(PEER6)]
    assert e.state is NdState.REACHABLE
    # ReachableTime (15..45 s) passes: STALE on next use -> DELAY -> PROBE (unicast).
    later = 1.2 + ip6.nc.reachable_time + 0.1
    assert ip6.nc.header_for(b6(PEER6), later) is not None
    # cast: mypy keeps e.state narrowed by the assert above though the calls change it
    assert cast(NdState, e.state) is NdState.DELAY
    sent = run(iface, later, later + 5.5)
    probes = [f for _, f in sent if f.haslayer(ICMPv6ND_NS)]
    assert probes and probes[0].dst == PEER_MAC and probes[0][IPv6].dst == PEER6
    assert cast(NdState, e.state) is NdState.PROBE
    feed(iface, from_peer(ICMPv6ND_NA(tgt=PEER6, S=1, O=1), hlim=255), later + 5.6)
    assert e.state is NdState.REACHABLE
    # Silence this time: three unicast probes, then the entry is gone.
    t2 = later + 5.6 + ip6.nc.reachable_time + 0.1
    ip6.nc.header_for(b6(PEER6), t2)
    sent = run(iface, t2, t2 + 20)
    assert sum(1 for _, f in sent if f.haslayer(ICMPv6ND_NS) and f.dst == PEER_MAC) == 3
    assert b6(PEER6) not in ip6.nc.entries()
    assert c6(iface)["nd"]["unreachable"] == 1


def test_advert_override_rules() -> None:
    iface = make()
    ip6 = iface.ip6
    assert ip6 is not None
    nc = ip6.nc
    nc.enqueue(b6(PEER6), b"x" * 40, 1.0)
    nc.advert(b6(PEER6), mac(PEER_MAC), True, True, False, 1.0)
    e = nc.entries()[b6(PEER6)]
    # Different address without Override: REACHABLE becomes STALE, address kept.
    nc.advert(b6(PEER6), mac("02:00:00:00:00:99"), False, False, False, 2.0)
    assert e.state is NdState.STALE and e.mac == mac(PEER_MAC)
    # With Override, unsolicited: the new address, STALE.
    nc.advert(b6(PEER6), mac("02:00:00:00:00:99"), False, True, False, 3.0)
    assert e.state is NdState.STALE and e.mac == mac("02:00:00:00:00:99")
    # An NA for an address nobody asked about creates nothing.
    nc.advert(b6("fd00::55"), mac(PEER_MAC), True, True, False, 4.0)
    assert b6("fd00::55") not in nc.entries()
    # INCOMPLETE without a target address: ignored.
    nc.enqueue(b6("fd00::56"), b"y" * 40, 5.0)
    nc.advert(b6("fd00::56"), None, True, True, False, 5.0)
    assert nc.entries()[b6("fd00::56")].state is NdState.INCOMPLETE


# ------------------------------------------------------------------- DAD
def _dad_cfg(**kw: object) -> Ipv6Config:
    base: dict[str, object] = {"addresses": (IPv6Interface(f"{OUR6}/64"),),
                               "dad_delay": 0.5}
    base.update(kw)
    return Ipv6Config(**base)  # type: ignore[arg-type]


def test_dad_probes_then_preferred() -> None:
    iface = make(_dad_cfg())
    ip6 = iface.ip6
    assert ip6 is not None
    assert {a.state for a in ip6.addresses} == {AddrState.TENTATIVE}
    assert iface.tcp.local_ip6 is None  # type: ignore[union-attr]
    # A packet to a tentative address is dropped (RFC 4862 §5.4).
    feed(iface, from_peer(ICMPv6EchoRequest()), 0.01)
    assert c6(iface)["ip6"]["tentative_dst"] == 1
    sent = run(iface, 0.0, 3.0)
    probes = [f for _, f in sent if f.haslayer(ICMPv6ND_NS)]
    assert {p[ICMPv6ND_NS].tgt for p in probes} == {OUR6, OUR_LL}
    for p in probes:
        assert p[IPv6].src == "::" and p[IPv6].hlim == 255
        assert p[IPv6].dst == str(IPv6Address(solicited_node(b6(p[ICMPv6ND_NS].tgt))))
        assert not p.haslayer(ICMPv6NDOptSrcLLAddr)
        assert bytes(p[ICMPv6ND_NS].payload)[:1] == b"\x0e"  # the nonce option
    assert {a.state for a in ip6.addresses} == {AddrState.PREFERRED}
    assert iface.tcp.local_ip6 == b6(OUR6)  # type: ignore[union-attr]
    assert c6(iface)["nd"]["dad_ok"] == 2


def test_dad_duplicate_by_na_and_by_foreign_probe_not_by_own_loop() -> None:
    iface = make(_dad_cfg())
    ip6 = iface.ip6
    assert ip6 is not None
    sent = run(iface, 0.0, 0.6)
    probe = next(f for _, f in sent if f.haslayer(ICMPv6ND_NS) and
                 f[ICMPv6ND_NS].tgt == OUR6)
    # Our own probe looped back (same nonce): not a duplicate.
    feed(iface, Ether(bytes(probe)), 0.7)
    assert c6(iface)["nd"]["dad_own_looped"] == 1
    # Another node's probe for the link-local address: duplicate.
    feed(iface, from_peer(ICMPv6ND_NS(tgt=OUR_LL), src="::", dst="ff02::1:ff00:2",
                          hlim=255, eth_dst="33:33:ff:00:00:02"), 0.8)
    # An NA for the static one: duplicate too.
    feed(iface, from_peer(ICMPv6ND_NA(tgt=OUR6, O=1) / ICMPv6NDOptDstLLAddr(
        lladdr=PEER_MAC), dst="ff02::1", hlim=255, eth_dst="33:33:00:00:00:01"), 0.9)
    run(iface, 0.9, 5.0)
    assert {a.state for a in ip6.addresses} == {AddrState.DUPLICATE}
    assert ip6.primary is None and c6(iface)["nd"]["dad_duplicates"] == 2
    # A duplicate is never answered for.
    feed(iface, from_peer(ICMPv6ND_NS(tgt=OUR6) / ICMPv6NDOptSrcLLAddr(lladdr=PEER_MAC),
                          dst="ff02::1:ff00:2", hlim=255, eth_dst="33:33:ff:00:00:02"), 6.0)
    assert frames6(iface, 6.0) == []


def test_stable_iid_regenerated_after_duplicate() -> None:
    iface = make(Ipv6Config(iid="stable", secret=b"k", dad_delay=0.1))
    ip6 = iface.ip6
    assert ip6 is not None
    (ll,) = ip6.addresses
    first = ll.ip
    feed(iface, from_peer(ICMPv6ND_NA(tgt=str(IPv6Address(first)), O=1) /
                          ICMPv6NDOptDstLLAddr(lladdr=PEER_MAC), dst="ff02::1", hlim=255,
                          eth_dst="33:33:00:00:00:01"), 0.05)
    run(iface, 0.05, 3.0)
    (ll2,) = ip6.addresses
    assert ll2.ip != first and ll2.ip[:8] == first[:8] and ll2.dad_counter == 1
    assert ll2.state is AddrState.PREFERRED


def test_no_dad() -> None:
    iface = make(Ipv6Config(addresses=(IPv6Interface(f"{OUR6}/64"),), dad=False))
    assert frames6(iface, 0.0) == []
    assert iface.ip6 is not None and iface.ip6.primary == b6(OUR6)


# ------------------------------------------------------------ RS, RA, SLAAC
def _ra(**kw: Any) -> Ether:
    prefix = kw.pop("prefix", "fd00:1::")
    plen = kw.pop("plen", 64)
    valid = kw.pop("valid", 86400)
    preferred = kw.pop("preferred", 14400)
    lifetime = kw.pop("routerlifetime", 1800)
    hlim = kw.pop("hlim", 255)
    opts = ICMPv6NDOptSrcLLAddr(lladdr=RTR_MAC) / ICMPv6NDOptMTU(mtu=kw.pop("mtu", 1500)) / \
        ICMPv6NDOptPrefixInfo(prefix=prefix, prefixlen=plen, L=kw.pop("L", 1),
                              A=kw.pop("A", 1), validlifetime=valid,
                              preferredlifetime=preferred)
    return Ether(src=RTR_MAC, dst="33:33:00:00:00:01") / IPv6(
        src=RTR_LL, dst="ff02::1", hlim=hlim) / ICMPv6ND_RA(
        routerlifetime=lifetime, chlim=kw.pop("chlim", 0), **kw) / opts


def _slaac(**kw: object) -> Interface:
    return make(Ipv6Config(slaac=True, dad_delay=0.1, rs_delay=0.2, **kw))  # type: ignore[arg-type]


def test_slaac_from_router_advertisement() -> None:
    iface = _slaac()
    ip6 = iface.ip6
    assert ip6 is not None
    sent = run(iface, 0.0, 1.5)
    rs = [f for _, f in sent if f.haslayer(ICMPv6ND_RS)]
    assert len(rs) == 1 and rs[0][IPv6].dst == "ff02::2" and rs[0].dst == "33:33:00:00:00:02"
    assert rs[0][IPv6].hlim == 255
    feed(iface, _ra(chlim=32, mtu=1400), 1.5)
    slaac = [a for a in ip6.addresses if a.origin == "slaac"]
    assert len(slaac) == 1 and slaac[0].state is AddrState.TENTATIVE
    assert slaac[0].interface == IPv6Interface("fd00:1::ff:fe00:2/64")  # EUI-64
    sent = run(iface, 1.5, 12.0)
    assert not any(f.haslayer(ICMPv6ND_RS) for _, f in sent)  # RS stopped by the RA
    assert ip6.primary == b6("fd00:1::ff:fe00:2")
    assert ip6.default_router == b6(RTR_LL)
    assert ip6.hop_limit == 32 and ip6.mtu == 1400
    assert iface.tcp.mss6 == 1340  # type: ignore[union-attr]
    # Off-link destinations go to the router (resolved from the RA's SLLA).
    _tcp_to(iface, FAR6, 12.0)
    (syn,) = frames6(iface, 12.0)
    assert syn.dst == RTR_MAC and syn[IPv6].dst == FAR6 and syn[IPv6].hlim == 32
    assert syn[IPv6].src == "fd00:1::ff:fe00:2"
    # On-link prefix: direct.
    assert ip6.next_hop(b6("fd00:1::99")) == b6("fd00:1::99")
    # Router lifetime 0: no default router any more.
    feed(iface, _ra(routerlifetime=0), 13.0)
    assert ip6.default_router is None
    assert ip6.next_hop(b6(FAR6)) is None


def test_slaac_lifetimes() -> None:
    iface = _slaac()
    ip6 = iface.ip6
    assert ip6 is not None
    feed(iface, _ra(valid=100, preferred=50), 0.5)
    run(iface, 0.5, 5.0)
    (a,) = [x for x in ip6.addresses if x.origin == "slaac"]
    assert a.state is AddrState.PREFERRED
    run(iface, 5.0, 60.0)
    # cast: mypy keeps a.state narrowed by the assert above though run() changes it
    assert cast(AddrState, a.state) is AddrState.DEPRECATED and ip6.primary is None
    # Still ours to receive on.
    assert ip6.is_ours(a.ip)
    # RFC 4862 §5.5.3 e): a short valid lifetime cannot cut a remaining one below 2 h
    # unless the remaining one is already shorter; here it is (40 s left): ignored.
    feed(iface, _ra(valid=10, preferred=5), 60.0)
    assert a.valid_until == pytest.approx(100.5)
    run(iface, 60.0, 200.0)
    assert a not in ip6.addresses and c6(iface)["nd"]["addresses_expired"] == 1


def test_two_hour_rule() -> None:
    iface = _slaac()
    ip6 = iface.ip6
    assert ip6 is not None
    feed(iface, _ra(valid=0xFFFFFFFF, preferred=0xFFFFFFFF), 0.5)
    (a,) = [x for x in ip6.addresses if x.origin == "slaac"]
    assert a.valid_until == math.inf
    feed(iface, _ra(valid=60, preferred=30), 1.0)
    assert a.valid_until == pytest.approx(1.0 + 7200)


@pytest.mark.parametrize(("ra", "why"), [
    (_ra(plen=48), "prefix_ignored"),  # prefix + 64-bit IID must be 128 bits
    (_ra(prefix="fe80::"), "prefix_ignored"),
    (_ra(valid=10, preferred=20), "prefix_ignored"),
])
def test_prefixes_refused(ra: Ether, why: str) -> None:
    iface = _slaac()
    feed(iface, ra, 0.5)
    assert iface.ip6 is not None
    assert not [a for a in iface.ip6.addresses if a.origin == "slaac"]
    assert c6(iface)["nd"][why] == 1


def test_ra_with_wrong_hop_limit_ignored_and_slaac_off_keeps_router_only() -> None:
    iface = _slaac()
    feed(iface, _ra(hlim=64), 0.5)
    assert c6(iface)["icmp6"]["bad_hop_limit"] == 1
    iface = make()  # static address, no SLAAC: the router is learnt, no address made
    feed(iface, _ra(), 0.5)
    assert iface.ip6 is not None
    assert [a.origin for a in iface.ip6.addresses] == ["link-local", "static"]
    assert iface.ip6.default_router == b6(RTR_LL)


def test_static_gateway_preferred_to_ra_router() -> None:
    iface = make(Ipv6Config(addresses=(IPv6Interface(f"{OUR6}/64"),), dad=False,
                            gateway=IPv6Address("fd00::fe")))
    feed(iface, _ra(), 0.5)
    assert iface.ip6 is not None and iface.ip6.default_router == b6("fd00::fe")


def test_mtu_below_1280_refused() -> None:
    with pytest.raises(ValueError, match="1280"):
        make(mtu=1200)


# --------------------------------------------------------------------- UDP
def test_udp_over_ipv6() -> None:
    iface = make()
    got: list[tuple[bytes, bytes]] = []
    iface.udp.bind(5000, lambda d, now: got.append((d.src, bytes(d.payload))))
    feed(iface, from_peer(UDP(sport=1234, dport=5000) / b"hi"), 1.0)
    assert got == [(b6(PEER6), b"hi")]
    # A zero checksum is not allowed over IPv6 (RFC 8200 §8.1).
    pkt = from_peer(UDP(sport=1234, dport=5000, chksum=0) / b"x")
    raw = bytearray(bytes(pkt))
    raw[14 + 40 + 6:14 + 40 + 8] = b"\0\0"
    iface.receive_frame(bytes(raw), 1.1)
    assert len(got) == 1 and c6(iface)["udp"]["zero_checksum_v6"] == 1
    iface.ip6.nc.learn(b6(PEER6), mac(PEER_MAC), 1.2)  # type: ignore[union-attr]
    iface.send_udp(b6(PEER6), 5000, 1234, b"back", 1.2)
    (f,) = frames6(iface, 1.2)
    chk = f[IPv6].copy()
    del chk[UDP].chksum
    assert IPv6(bytes(chk))[UDP].chksum == f[UDP].chksum and f[UDP].load == b"back"


def test_icmpv6_codec_roundtrip() -> None:
    body = icmpv6.build_ra(router_lifetime=600, slla=mac(RTR_MAC), mtu=1400,
                           prefixes=(icmpv6.PrefixInfo(b6("fd00:1::"), 64, True, True,
                                                       100, 50),))
    msg = icmpv6.build(b6(RTR_LL), b6("ff02::1"), icmpv6.ROUTER_ADVERT, 0, body)
    assert icmpv6.verify(b6(RTR_LL), b6("ff02::1"), msg)
    ra = icmpv6.parse_ra(memoryview(msg))
    assert ra is not None and ra.router_lifetime == 600 and ra.opts.mtu == 1400
    assert ra.opts.slla == mac(RTR_MAC)
    assert ra.opts.prefixes == [icmpv6.PrefixInfo(b6("fd00:1::"), 64, True, True, 100, 50)]
    sc = IPv6(src=RTR_LL, dst="ff02::1") / ICMPv6ND_RA(bytes(msg))
    assert sc[ICMPv6NDOptPrefixInfo].prefix == "fd00:1::"
    assert sc[ICMPv6NDOptMTU].mtu == 1400
    assert icmpv6.parse_ra(memoryview(msg[:10])) is None
    assert NdConfig().max_multicast_solicit == 3


# --------------------------------------------------------------------- MLD
def test_mld_reports_our_groups_and_answers_queries() -> None:
    iface = make(_dad_cfg())
    (rep,) = frames6(iface, 0.0, mld=True)  # at start: join, before any DAD probe
    assert rep.dst == "33:33:00:00:00:16" and rep[IPv6].dst == "ff02::16"
    assert rep[IPv6].hlim == 1 and rep[IPv6].src == "::"  # no link-local address yet
    assert rep[IPv6ExtHdrHopByHop].options[0].otype == 5  # Router Alert (RFC 2711)
    recs = {(r.rtype, r.dst) for r in rep[ICMPv6MLReport2].records}
    assert recs == {(4, "ff02::1:ff00:2")}  # CHANGE_TO_EXCLUDE; all-nodes never reported
    chk = rep[IPv6].copy()
    del chk[ICMPv6MLReport2].cksum
    assert IPv6(bytes(chk))[ICMPv6MLReport2].cksum == rep[ICMPv6MLReport2].cksum
    sent = run(iface, 0.0, 3.0)
    reports = [f for _, f in sent if ICMPv6MLReport2 in f]
    assert [r[ICMPv6MLReport2].records_number for r in reports] == [1]  # the repeat
    # A general query (from a link-local router) is answered with the current state.
    q = Ether(src=RTR_MAC, dst="33:33:00:00:00:01") / IPv6(
        src=RTR_LL, dst="ff02::1", hlim=1) / IPv6ExtHdrHopByHop(
        options=[]) / ICMPv6MLQuery2()
    feed(iface, q, 4.0)
    (ans,) = frames6(iface, 4.0, mld=True)
    assert ans[IPv6].src == OUR_LL
    assert {(r.rtype, r.dst) for r in ans[ICMPv6MLReport2].records} == {(2, "ff02::1:ff00:2")}
    assert c6(iface)["icmp6"]["mld_query_in"] == 1


def test_ns_from_an_address_outside_our_prefixes_answered_directly() -> None:
    iface = make()
    feed(iface, from_peer(ICMPv6ND_NS(tgt=OUR6) / ICMPv6NDOptSrcLLAddr(lladdr=PEER_MAC),
                          src="2001:db8::99", dst="ff02::1:ff00:2", hlim=255,
                          eth_dst="33:33:ff:00:00:02"), 1.0)
    (na,) = frames6(iface, 1.0)
    assert na.dst == PEER_MAC and na[IPv6].dst == "2001:db8::99"


# ---------------------------------------------------------------- robustness
def _seeds() -> list[bytes]:
    ns = from_peer(ICMPv6ND_NS(tgt=OUR6) / ICMPv6NDOptSrcLLAddr(lladdr=PEER_MAC),
                   dst="ff02::1:ff00:2", hlim=255, eth_dst="33:33:ff:00:00:02")
    frags = fragment6(IPv6(src=PEER6, dst=OUR6) / IPv6ExtHdrFragment(id=9) /
                      ICMPv6EchoRequest(data=b"z" * 3000), 1280)
    return [bytes(p) for p in (
        ns, _ra(), from_peer(ICMPv6EchoRequest(id=1, data=b"abc")),
        from_peer(ICMPv6ND_NA(tgt=PEER6, S=1, O=1) / ICMPv6NDOptDstLLAddr(lladdr=PEER_MAC),
                  hlim=255),
        from_peer(IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / UDP(dport=5000) / b"x"),
        from_peer(TCP(dport=3260, flags="S")),
        *(Ether(src=PEER_MAC, dst=OUR_MAC) / f for f in frags))]


def _fix_icmpv6_checksum(frame: bytearray) -> None:
    """Make a mangled ICMPv6 message's checksum right again, so that the mangling reaches
    the ND/echo parsers instead of stopping at the checksum."""
    if len(frame) < 58 or frame[12:14] != b"\x86\xdd" or frame[20] != 58:
        return
    plen = int.from_bytes(frame[18:20], "big")
    end = 54 + plen
    if end > len(frame) or plen < 4:
        return
    frame[56:58] = b"\0\0"
    ck = transport_checksum(bytes(frame[22:38]), bytes(frame[38:54]), 58,
                            bytes(frame[54:end]))
    frame[56:58] = ck.to_bytes(2, "big")


def test_mutated_frames_never_raise() -> None:
    """strict=True re-raises internal errors: every mangled frame must be counted and
    dropped (or handled), never crash the interface."""
    rng = random.Random(2026)
    iface = _slaac()
    iface.udp.bind(5000, lambda d, now: None)
    seeds = _seeds()
    now = 1.0
    for i in range(4000):
        frame = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 6)):
            what = rng.random()
            if what < 0.6 and len(frame) > 14:
                pos = rng.randrange(14, len(frame))
                frame[pos] = rng.randrange(256)
            elif what < 0.8:
                del frame[rng.randrange(14, max(15, len(frame))):]
            else:
                frame += rng.randbytes(rng.randrange(1, 40))
        if rng.random() < 0.7:
            _fix_icmpv6_checksum(frame)
        now += 0.01
        iface.receive_frame(bytes(frame), now)
        if i % 50 == 0:
            run(iface, now, now + 0.5)
            now += 0.5
        iface.frames_to_send(now)
    assert iface.last_error is None
    c = c6(iface)
    assert c["ip6"]["in"] > 3000
    # The mangling reached the ND parsers, not only the checksum.
    assert c["icmp6"]["ns_in"] + c["icmp6"]["na_in"] + c["icmp6"]["ra_in"] > 100
    assert c["icmp6"].get("bad_ns", 0) + c["icmp6"].get("bad_ra", 0) > 10
