"""The DHCPv4 client (RFC 2131/2132) on a real Interface with a fake clock; the server
side is crafted and our messages are dissected by scapy's BOOTP/DHCP layers."""

from __future__ import annotations

import itertools
import random
from ipaddress import IPv4Address, IPv4Interface
from typing import Any, cast

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from netstack.arp import ProbeConfig
from netstack.counters import Counters
from netstack.dhcp import (
    DEFAULT_PARAMETERS,
    DhcpClient,
    DhcpConfig,
    DhcpFormatError,
    DhcpState,
    InterfaceDhcp,
    build_message,
    parse_message,
)
from netstack.interface import UNCONFIGURED, Interface, InterfaceConfig
from tests.unit.frame_util import plain_frames

OUR_MAC = "02:00:00:00:00:02"
SRV_MAC = "02:00:00:00:00:01"
OTHER_MAC = "02:aa:00:00:00:09"
SRV = "10.0.0.1"
YI = "10.0.0.57"
BCAST_MAC = "ff:ff:ff:ff:ff:ff"
ROOT = "iscsi:10.0.0.1::::iqn.2026-11.test:disk"
IQN = "iqn.2026-11.test:client"


def mac(s: str) -> bytes:
    return bytes.fromhex(s.replace(":", ""))


def opts(pkt: Ether) -> dict[Any, Any]:
    return {o[0]: o[1] for o in pkt[DHCP].options if isinstance(o, tuple)}


class Rig:
    """Interface + client + glue, a fake clock, and a scapy DHCP server's hands."""

    def __init__(self, **cfg: Any) -> None:
        cfg.setdefault("probe", ProbeConfig.fast())
        self.counters = Counters()
        self.iface = Interface(InterfaceConfig(mac=mac(OUR_MAC), ip=UNCONFIGURED, mtu=1500,
                                               strict=True), counters=self.counters)
        self.client = DhcpClient(mac(OUR_MAC), DhcpConfig(**cfg), rng=random.Random(7),
                                 counters=self.counters.layer("dhcp"))
        self.dhcp = InterfaceDhcp(self.iface, self.client)
        self.now = 0.0
        self.log: list[tuple[float, Ether]] = []
        self.server_arp = True

    def start(self) -> list[Ether]:
        self.dhcp.start(self.now)
        return self.out()

    def out(self) -> list[Ether]:
        """Frames sent now; ARP requests for the server are answered at once."""
        frames = [Ether(f) for f in plain_frames(self.iface, self.now)]
        self.log += [(self.now, f) for f in frames]
        more: list[Ether] = []
        for f in frames:
            if self.server_arp and ARP in f and f[ARP].op == 1 and f[ARP].pdst == SRV:
                self.iface.receive_frame(bytes(Ether(dst=OUR_MAC, src=SRV_MAC) / ARP(
                    op=2, hwsrc=SRV_MAC, psrc=SRV, hwdst=OUR_MAC, pdst=f[ARP].psrc)),
                    self.now)
                more += self.out()
        return frames + more

    def deadline(self) -> float | None:
        ts = [t for t in (self.iface.next_deadline(), self.dhcp.next_deadline())
              if t is not None]
        return min(ts) if ts else None

    def advance(self, until: float) -> list[Ether]:
        """Fire every deadline up to ``until``; the frames sent meanwhile."""
        got: list[Ether] = []
        for _ in range(10000):
            t = self.deadline()
            if t is None or t > until:
                break
            self.now = max(self.now, t)
            self.iface.on_deadline(self.now)
            self.dhcp.on_deadline(self.now)
            got += self.out()
        self.now = max(self.now, until)
        return got

    def feed(self, frame: bytes) -> list[Ether]:
        self.iface.receive_frame(frame, self.now)
        return self.out()

    def reply(self, req: Ether, mtype: str, yiaddr: str = YI, server: str = SRV,
              extra: list[Any] | None = None, unicast: bool = True,
              xid: int | None = None, lease: int = 100, dst: str | None = None,
              **bootp: Any) -> bytes:
        options: list[Any] = [("message-type", mtype), ("server_id", server)]
        if mtype != "nak":
            options += [("lease_time", lease), ("subnet_mask", "255.255.255.0"),
                        ("router", SRV)]
        options += (extra or []) + ["end"]
        dst_ip = (dst or yiaddr) if unicast else "255.255.255.255"
        dst_mac = OUR_MAC if unicast else BCAST_MAC
        b: dict[str, Any] = {"op": 2, "xid": req[BOOTP].xid if xid is None else xid,
             "yiaddr": yiaddr if mtype != "nak" else "0.0.0.0", "siaddr": server,
             "chaddr": mac(OUR_MAC) + bytes(10)}
        b.update(bootp)
        src_ip = SRV if server == "0.0.0.0" else server
        return bytes(Ether(dst=dst_mac, src=SRV_MAC) / IP(src=src_ip, dst=dst_ip)
                     / UDP(sport=67, dport=68) / BOOTP(**b) / DHCP(options=options))

    def bind(self, lease: int = 100, extra: list[Any] | None = None) -> None:
        """DISCOVER → OFFER → REQUEST → ACK → probe → BOUND."""
        (disc,) = self.start()
        (req,) = self.feed(self.reply(disc, "offer", lease=lease))
        assert self.feed(self.reply(req, "ack", lease=lease, extra=extra)) == []
        self.advance(self.now + 2.0)  # the (fast) ARP probe
        assert self.client.state == DhcpState.BOUND


ACK_EXTRA = [("name_server", "10.0.0.53"), ("hostname", b"client1"), ("domain", b"lab"),
             ("root_disk_path", ROOT.encode()), ("interface-mtu", 1400),
             ("renewal_time", 40), ("rebinding_time", 80), (203, IQN.encode())]


def test_discover_offer_request_ack_exact_packets() -> None:
    rig = Rig()
    (disc,) = rig.start()
    # DHCPDISCOVER: broadcast from 0.0.0.0, UDP 68 -> 67 (RFC 2131 §4.1, §4.4.1)
    assert disc.dst == BCAST_MAC and disc.src == OUR_MAC
    assert disc[IP].src == "0.0.0.0" and disc[IP].dst == "255.255.255.255"
    assert disc[UDP].sport == 68 and disc[UDP].dport == 67
    again = IP(bytes(disc[IP]))
    del again[UDP].chksum
    assert IP(bytes(again))[UDP].chksum == disc[UDP].chksum  # scapy agrees on it
    b = disc[BOOTP]
    assert (b.op, b.htype, b.hlen, b.hops, b.flags, b.ciaddr) == (1, 1, 6, 0, 0, "0.0.0.0")
    assert b.chaddr[:6] == mac(OUR_MAC) and len(bytes(disc[UDP].payload)) >= 300
    o = opts(disc)
    assert o["message-type"] == 1
    assert o["client_id"] == b"\x01" + mac(OUR_MAC)
    assert list(o["param_req_list"]) == list(DEFAULT_PARAMETERS)
    assert {1, 3, 6, 12, 15, 17, 26, 51, 54, 58, 59, 203} <= set(o["param_req_list"])
    assert o["vendor_class_id"] == b"bootinit" and o["max_dhcp_size"] == 1472
    # DHCPOFFER unicast to the offered address before we own it -> DHCPREQUEST broadcast
    (req,) = rig.feed(rig.reply(disc, "offer"))
    assert req[IP].src == "0.0.0.0" and req[IP].dst == "255.255.255.255"
    assert req[BOOTP].xid == b.xid and req[BOOTP].ciaddr == "0.0.0.0"
    o = opts(req)
    assert o["message-type"] == 3 and o["requested_addr"] == YI and o["server_id"] == SRV
    # DHCPACK -> ARP probes for the address (RFC 5227), nothing else yet
    assert rig.feed(rig.reply(req, "ack", extra=ACK_EXTRA)) == []
    assert rig.client.state == DhcpState.PROBING and not rig.iface.configured
    sent = rig.advance(rig.now + 2.0)
    probes = [f for f in sent if ARP in f and f[ARP].psrc == "0.0.0.0"]
    assert len(probes) == 2 and all(p[ARP].pdst == YI for p in probes)
    announce = [f for f in sent if ARP in f and f[ARP].psrc == YI == f[ARP].pdst]
    assert announce  # RFC 5227 §2.3 after binding
    # cast: mypy keeps the state narrowed by the assert above though the calls change it
    assert cast(DhcpState, rig.client.state) == DhcpState.BOUND
    (ev,) = rig.dhcp.events
    lease = ev.lease
    assert ev.kind == "bound" and lease is not None
    assert lease.address == IPv4Interface(f"{YI}/24")
    assert lease.gateway == IPv4Address(SRV) and lease.server_id == IPv4Address(SRV)
    assert lease.dns == (IPv4Address("10.0.0.53"),)
    assert (lease.hostname, lease.domain, lease.root_path, lease.initiator_name) == (
        "client1", "lab", ROOT, IQN)
    assert (lease.mtu, lease.lease_time, lease.t1, lease.t2) == (1400, 100.0, 40.0, 80.0)
    # the interface took it: address, prefix, gateway, MTU
    assert rig.iface.address == IPv4Interface(f"{YI}/24")
    assert rig.iface.gateway == IPv4Address(SRV) and rig.iface.mtu == 1400


def test_retransmission_backoff_with_jitter_is_seeded_and_bounded() -> None:
    def times(seed: int) -> list[tuple[float, int, int]]:
        rig = Rig()
        rig.client.rng = random.Random(seed)
        rig.start()
        rig.advance(200.0)
        return [(t, f[BOOTP].xid, f[BOOTP].secs) for t, f in rig.log if BOOTP in f]

    a = times(1)
    assert a == times(1) and a != times(2)
    ts = [t for t, _, _ in a]
    gaps = [y - x for x, y in itertools.pairwise(ts)]
    # RFC 2131 §4.1: 4, 8, 16, 32, 64, 64 ... seconds, each +-1
    for gap, base in zip(gaps, [4, 8, 16, 32, 64, 64], strict=False):
        assert base - 1 <= gap <= base + 1
    assert len({x for _, x, _ in a}) == 1  # one xid for the whole exchange
    assert [s for _, _, s in a] == [int(t) for t in ts]  # secs since the start


def test_nak_in_requesting_restarts_with_a_new_xid() -> None:
    rig = Rig()
    (disc,) = rig.start()
    (req,) = rig.feed(rig.reply(disc, "offer"))
    assert rig.feed(rig.reply(req, "nak", extra=[("error_message", b"no")])) == []
    assert rig.client.state == DhcpState.INIT
    (disc2,) = rig.advance(rig.now + 1.5)
    assert opts(disc2)["message-type"] == 1 and disc2[BOOTP].xid != disc[BOOTP].xid
    assert rig.counters.get("dhcp", "naks") == 1 and not rig.iface.configured


def test_ack_from_another_server_and_request_timeouts() -> None:
    rig = Rig(request_tries=2)
    (disc,) = rig.start()
    (req,) = rig.feed(rig.reply(disc, "offer"))
    assert rig.feed(rig.reply(req, "ack", server="10.0.0.254")) == []
    assert rig.counters.get("dhcp", "wrong_server") == 1
    sent = rig.advance(rig.now + 30)
    kinds = [opts(f)["message-type"] for f in sent if BOOTP in f]
    assert kinds[:2] == [3, 1]  # one retransmitted REQUEST, then back to DISCOVER
    assert rig.counters.get("dhcp", "request_timeouts") == 1


def test_renewal_at_t1_is_unicast_to_the_server() -> None:
    rig = Rig()
    rig.bind(extra=[("renewal_time", 40), ("rebinding_time", 80)])
    start = rig.client.lease.start if rig.client.lease else 0.0
    assert [f for f in rig.advance(start + 39.9) if BOOTP in f] == []
    sent = rig.advance(start + 40.0)
    (ren,) = [f for f in sent if BOOTP in f]
    assert rig.now == pytest.approx(start + 40.0)
    assert ren.dst == SRV_MAC and ren[IP].src == YI and ren[IP].dst == SRV
    assert ren[BOOTP].ciaddr == YI
    o = opts(ren)
    assert o["message-type"] == 3 and "requested_addr" not in o and "server_id" not in o
    assert rig.client.state == DhcpState.RENEWING
    t_req = rig.now
    rig.now += 0.5
    assert rig.feed(rig.reply(ren, "ack", extra=[("renewal_time", 40),
                                                 ("rebinding_time", 80)])) == []
    # cast: mypy keeps the state narrowed by the assert above though the calls change it
    assert cast(DhcpState, rig.client.state) == DhcpState.BOUND
    assert [e.kind for e in rig.dhcp.events] == ["bound", "renewed"]
    lease = rig.client.lease
    assert lease is not None and lease.start == t_req  # counted from the request
    assert lease.t1_at == pytest.approx(t_req + 40)
    assert rig.iface.address == IPv4Interface(f"{YI}/24")


def test_rebinding_at_t2_is_broadcast_then_ack() -> None:
    rig = Rig(min_retransmit=5.0)
    rig.bind(lease=100)  # T1 = 50, T2 = 87.5
    start = rig.client.lease.start if rig.client.lease else 0.0
    sent = (rig.advance(start + 87.0))
    renews = [(t, f) for t, f in rig.log if BOOTP in f and f[BOOTP].ciaddr == YI]
    # RENEWING retransmits at half the time left to T2, at least min_retransmit
    rt = [t - start for t, _ in renews]
    assert rt[0] == pytest.approx(50.0)
    assert rt[1] == pytest.approx(50 + 37.5 / 2)
    assert all(f[IP].dst == SRV for _, f in renews)
    assert sent
    sent = rig.advance(start + 87.5)
    (rebind,) = [f for f in sent if BOOTP in f]
    assert rig.client.state == DhcpState.REBINDING
    assert rebind.dst == BCAST_MAC and rebind[IP].dst == "255.255.255.255"
    assert rebind[IP].src == YI and rebind[BOOTP].ciaddr == YI
    assert rebind[BOOTP].xid != renews[0][1][BOOTP].xid
    rig.feed(rig.reply(rebind, "ack", unicast=False))
    # cast: mypy keeps the state narrowed by the assert above though feed() changes it
    assert (cast(DhcpState, rig.client.state) == DhcpState.BOUND
            and rig.dhcp.events[-1].kind == "renewed")
    assert rig.counters.get("dhcp", "rebinds") == 1


def test_lease_expiry_unconfigures_and_rediscoveres() -> None:
    rig = Rig(min_retransmit=5.0)
    rig.bind(lease=100)
    start = rig.client.lease.start if rig.client.lease else 0.0
    sent = rig.advance(start + 100.0)
    assert rig.dhcp.events[-1].kind == "lost" and not rig.iface.configured
    disc = [f for f in sent if BOOTP in f][-1]
    assert opts(disc)["message-type"] == 1 and disc[IP].src == "0.0.0.0"
    assert rig.counters.get("dhcp", "expired") == 1


def test_nak_while_renewing_loses_the_lease() -> None:
    rig = Rig()
    rig.bind()
    sent = (rig.advance(rig.now + 60))
    (ren,) = [f for f in sent if BOOTP in f]
    rig.feed(rig.reply(ren, "nak"))
    assert [e.kind for e in rig.dhcp.events] == ["bound", "lost"]
    assert not rig.iface.configured and rig.client.state == DhcpState.INIT


def test_renewal_with_a_new_address_reconfigures() -> None:
    rig = Rig()
    rig.bind()
    sent = (rig.advance(rig.now + 60))
    (ren,) = [f for f in sent if BOOTP in f]
    # RFC 2131 §4.1: the server unicasts to ciaddr (our current address)
    rig.feed(rig.reply(ren, "ack", yiaddr="10.0.0.58", dst=YI))
    assert rig.dhcp.events[-1].kind == "bound"
    assert rig.iface.address == IPv4Interface("10.0.0.58/24")


def test_conflict_during_probe_declines_and_restarts() -> None:
    rig = Rig(decline_wait=10.0)
    (disc,) = rig.start()
    (req,) = rig.feed(rig.reply(disc, "offer"))
    rig.feed(rig.reply(req, "ack"))
    rig.advance(rig.now + 0.15)  # first probe out
    owner = Ether(dst=BCAST_MAC, src=OTHER_MAC) / ARP(op=2, hwsrc=OTHER_MAC, psrc=YI,
                                                      hwdst=OUR_MAC, pdst="0.0.0.0")
    rig.feed(bytes(owner))
    sent = rig.advance(rig.now)  # the glue reads the probe result in this iteration
    (dec,) = [f for f in sent if BOOTP in f]
    assert dec[IP].src == "0.0.0.0" and dec[IP].dst == "255.255.255.255"
    o = opts(dec)
    assert o["message-type"] == 4 and o["requested_addr"] == YI and o["server_id"] == SRV
    assert dec[BOOTP].ciaddr == "0.0.0.0"
    assert not rig.iface.configured and rig.dhcp.events == []
    t_dec = rig.now
    sent = rig.advance(t_dec + 9.9)
    assert [f for f in sent if BOOTP in f] == []  # RFC 2131 §3.1.5: wait >= 10 s
    (disc2,) = [f for f in rig.advance(t_dec + 10.0) if BOOTP in f]
    assert opts(disc2)["message-type"] == 1
    assert rig.counters.get("dhcp", "declines") == 1
    assert rig.counters.get("arp", "probe_conflicts") == 1


def test_malformed_and_unexpected_replies_are_ignored_and_counted() -> None:
    rig = Rig()
    (disc,) = rig.start()
    good = rig.reply(disc, "offer")

    def mutate(offset_from_dhcp: int, value: bytes) -> bytes:
        b = bytearray(good)
        base = 14 + 20 + 8
        b[base + offset_from_dhcp:base + offset_from_dhcp + len(value)] = value
        # fix the UDP checksum: zero means "none" (RFC 768)
        b[14 + 20 + 6:14 + 20 + 8] = b"\0\0"
        return bytes(b)

    bad: dict[str, bytes] = {
        "xid_mismatch": rig.reply(disc, "offer", xid=disc[BOOTP].xid ^ 1),
        "chaddr_mismatch": rig.reply(disc, "offer", chaddr=mac(OTHER_MAC) + bytes(10)),
        "bad_op": mutate(0, b"\x01"),
        "bad_htype": mutate(1, b"\x06"),
        "bad_cookie": mutate(236, b"\x63\x82\x53\x64"),
        "missing_server_id": rig.reply(disc, "offer", server="0.0.0.0"),
        "bad_yiaddr": rig.reply(disc, "offer", yiaddr="255.255.255.255"),
        "bad_subnet_mask": bytes(Ether(good)[Ether].copy()),
        "no_message_type": b"",
        "bad_options": b"",
        "short": b"",
        "unexpected_ack": rig.reply(disc, "ack"),
    }
    e = Ether(good)
    e[DHCP].options = [("message-type", "offer"), ("server_id", SRV), ("lease_time", 100),
                       ("subnet_mask", "255.0.255.0"), "end"]
    del e[IP].len, e[IP].chksum, e[UDP].len, e[UDP].chksum
    bad["bad_subnet_mask"] = bytes(e)
    e = Ether(good)
    e[DHCP].options = [("server_id", SRV), ("lease_time", 100), "end"]
    del e[IP].len, e[IP].chksum, e[UDP].len, e[UDP].chksum
    bad["no_message_type"] = bytes(e)
    e = Ether(good)
    e[DHCP].options = [("message-type", "offer"), ("server_id", SRV), "end"]
    del e[IP].len, e[IP].chksum, e[UDP].len, e[UDP].chksum
    bad["missing_lease_time"] = bytes(e)
    raw_bootp = bytes(e[BOOTP])
    cut = raw_bootp[:240] + b"\x35\x05\x02"  # option 53 claims 5 bytes, has 1
    bad["bad_options"] = bytes(Ether(dst=OUR_MAC, src=SRV_MAC) / IP(src=SRV, dst=YI)
                               / UDP(sport=67, dport=68) / Raw(cut))
    bad["short"] = bytes(Ether(dst=OUR_MAC, src=SRV_MAC) / IP(src=SRV, dst=YI)
                         / UDP(sport=67, dport=68) / Raw(raw_bootp[:200]))
    for frame in bad.values():
        assert rig.feed(frame) == []
    wrong_port = bytes(Ether(good)[Ether].copy())
    e = Ether(wrong_port)
    e[UDP].sport = 6700
    del e[UDP].chksum
    rig.feed(bytes(e))
    c = rig.counters.as_dict()["dhcp"]
    for name in bad:
        assert c.get(name) == 1, (name, c)
    assert c["bad_sport"] == 1
    assert rig.client.state == DhcpState.SELECTING
    assert isinstance(rig.client.last_error, DhcpFormatError)
    # the real offer still works afterwards
    (req,) = rig.feed(good)
    assert opts(req)["message-type"] == 3


def test_parse_message_overload_concatenation_and_errors() -> None:
    msg = parse_message(bytes(BOOTP(op=2, xid=5, chaddr=mac(OUR_MAC),
                                    file=bytes((17, 3)) + b"abc" + b"\xff",
                                    sname=bytes((17, 2)) + b"de" + b"\xff")
                              / DHCP(options=[("message-type", "ack"), (52, b"\x03"),
                                              (12, b"ho"), (12, b"st"), "end"])))
    assert msg.options[17] == b"abcde"  # RFC 3396: file first, then sname
    assert msg.options[12] == b"host" and msg.file == b"" and msg.sname == b""
    assert msg.message_type == 5 and msg.chaddr == mac(OUR_MAC)
    with pytest.raises(DhcpFormatError) as ei:
        parse_message(bytes(BOOTP(op=2) / DHCP(options=[(52, b"\x07"), "end"])))
    assert ei.value.field == "option 52 (overload)" and ei.value.value == "07"
    # round trip of our own encoder, long values split in 255-byte pieces
    from netstack.dhcp import DhcpMessage
    long = b"x" * 600
    out = build_message(DhcpMessage(op=1, xid=9, chaddr=mac(OUR_MAC), options={17: long}))
    assert parse_message(out).options[17] == long
    assert DHCP in BOOTP(out)
