"""ARP (RFC 826) and RFC 5227 announcements, with a fake clock; frames checked by scapy."""

from __future__ import annotations

from scapy.layers.l2 import ARP, Ether

from netstack.arp import ARP_LEN, OP_REPLY, OP_REQUEST, ArpConfig, ArpLayer, build_arp
from netstack.counters import Counters
from netstack.ethernet import BROADCAST, ETHERTYPE_IPV4, EthernetLayer
from netstack.link.base import OutFrame

OUR_MAC = bytes.fromhex("020000000002")
OUR_IP = bytes([10, 0, 0, 2])
PEER_MAC = bytes.fromhex("020000000001")
PEER_IP = bytes([10, 0, 0, 1])
OTHER_MAC = bytes.fromhex("0200000000aa")
OTHER_IP = bytes([10, 0, 0, 9])


class Rig:
    def __init__(self, config: ArpConfig | None = None,
                 static: dict[bytes, bytes] | None = None) -> None:
        self.c = Counters()
        self.out: list[OutFrame] = []
        self.eth = EthernetLayer(OUR_MAC, self.c.layer("eth"))
        self.arp = ArpLayer(self.eth, OUR_IP, self.c.layer("arp"), self.out, config, static)

    def take(self) -> list[bytes]:
        frames = [f for f in self.out if isinstance(f, bytes)]
        assert len(frames) == len(self.out)  # ARP makes plain frames, never a GsoFrame
        self.out.clear()
        return frames

    def feed(self, frame: bytes, now: float) -> None:
        self.arp.receive(memoryview(frame)[14:], now)

    def n(self, name: str) -> int:
        return self.c.get("arp", name)


def arp_frame(op: str, hwsrc: str, psrc: str, pdst: str, hwdst: str = "00:00:00:00:00:00",
              edst: str = "ff:ff:ff:ff:ff:ff") -> bytes:
    return bytes(Ether(dst=edst, src=hwsrc) /
                 ARP(op=op, hwsrc=hwsrc, psrc=psrc, pdst=pdst, hwdst=hwdst))


def request_from_peer(pdst: str = "10.0.0.2") -> bytes:
    return arp_frame("who-has", "02:00:00:00:00:01", "10.0.0.1", pdst)


def reply_from(hwsrc: str, psrc: str) -> bytes:
    return arp_frame("is-at", hwsrc, psrc, "10.0.0.2", hwdst="02:00:00:00:00:02",
                     edst="02:00:00:00:00:02")


def test_build_arp_matches_scapy() -> None:
    pkt = build_arp(OP_REQUEST, OUR_MAC, OUR_IP, bytes(6), PEER_IP)
    assert len(pkt) == ARP_LEN
    assert pkt == bytes(ARP(op=1, hwsrc="02:00:00:00:00:02", psrc="10.0.0.2",
                            hwdst="00:00:00:00:00:00", pdst="10.0.0.1"))


def test_reply_to_request_for_us_and_learn() -> None:
    r = Rig()
    r.feed(request_from_peer(), 5.0)
    (f,) = r.take()
    e = Ether(f)
    assert e.dst == "02:00:00:00:00:01" and e.src == "02:00:00:00:00:02" and e.type == 0x0806
    a = e[ARP]
    assert (a.op, a.hwsrc, a.psrc, a.hwdst, a.pdst) == (
        2, "02:00:00:00:00:02", "10.0.0.2", "02:00:00:00:00:01", "10.0.0.1")
    # RFC 826: the requester was learned (it targeted us).
    assert r.arp.lookup(PEER_IP, 5.0) == PEER_MAC
    hdr = r.arp.header_for(PEER_IP, 5.0)
    assert hdr == PEER_MAC + OUR_MAC + b"\x08\x00"
    assert r.n("requests_in") == 1 and r.n("replies_out") == 1 and r.n("learned") == 1


def test_request_for_someone_else_is_not_answered_nor_learned() -> None:
    r = Rig()
    r.feed(request_from_peer("10.0.0.77"), 0.0)
    assert r.take() == []
    assert r.arp.lookup(PEER_IP, 0.0) is None
    assert r.n("other_target") == 1


def test_merge_updates_existing_entry_from_any_packet() -> None:
    r = Rig()
    r.feed(request_from_peer(), 0.0)
    r.take()
    # The peer asks for someone else with a new MAC: RFC 826 merge updates the entry.
    r.feed(arp_frame("who-has", "02:00:00:00:00:55", "10.0.0.1", "10.0.0.77"), 10.0)
    assert r.take() == []
    assert r.arp.lookup(PEER_IP, 10.0) == bytes.fromhex("020000000055")
    assert r.n("cache_changes") == 1
    assert r.arp.header_for(PEER_IP, 10.0) == bytes.fromhex("020000000055") + OUR_MAC + \
        b"\x08\x00"
    # The same MAC again is a confirmation, not a change.
    r.feed(arp_frame("who-has", "02:00:00:00:00:55", "10.0.0.1", "10.0.0.2"), 11.0)
    assert r.n("cache_changes") == 1


def test_resolution_queue_and_release() -> None:
    r = Rig()
    assert r.arp.header_for(PEER_IP, 0.0) is None
    r.arp.enqueue(PEER_IP, b"packet-1", 0.0)
    r.arp.enqueue(PEER_IP, b"packet-2", 0.1)
    (req,) = r.take()  # one request for two packets
    e = Ether(req)
    assert e.dst == "ff:ff:ff:ff:ff:ff"
    assert (e[ARP].op, e[ARP].psrc, e[ARP].pdst, e[ARP].hwdst) == (
        1, "10.0.0.2", "10.0.0.1", "00:00:00:00:00:00")
    assert r.arp.next_deadline() == 1.0
    r.feed(reply_from("02:00:00:00:00:01", "10.0.0.1"), 0.5)
    hdr = PEER_MAC + OUR_MAC + b"\x08\x00"
    assert r.take() == [hdr + b"packet-1", hdr + b"packet-2"]
    assert r.n("resolved") == 1 and r.n("replies_in") == 1
    assert r.arp.next_deadline() is None
    assert list(r.arp.pending()) == []


def test_retries_then_timeout_drops_queue() -> None:
    r = Rig(ArpConfig(retry_interval=1.0, max_tries=3))
    r.arp.enqueue(PEER_IP, b"p1", 0.0)
    r.arp.enqueue(PEER_IP, b"p2", 0.0)
    assert len(r.take()) == 1
    r.arp.on_deadline(0.5)  # early: harmless
    assert r.take() == []
    times = []
    now = 0.0
    while (d := r.arp.next_deadline()) is not None:
        now = d
        times.append(now)
        r.arp.on_deadline(now)
        for f in r.take():
            assert Ether(f)[ARP].pdst == "10.0.0.1"
            assert Ether(f).dst == "ff:ff:ff:ff:ff:ff"
    assert times == [1.0, 2.0, 3.0]
    assert r.n("requests_out") == 3
    assert r.n("timeouts") == 1 and r.n("queue_dropped") == 2
    # A late reply from the silent host: it did not target an entry or pending.
    r.feed(reply_from("02:00:00:00:00:01", "10.0.0.1"), 4.0)
    assert r.take() == []
    # A new packet starts over.
    r.arp.enqueue(PEER_IP, b"p3", 10.0)
    assert len(r.take()) == 1


def test_queue_bounds() -> None:
    r = Rig(ArpConfig(queue_limit=2, queue_bytes_limit=100, max_pending=1))
    r.arp.enqueue(PEER_IP, b"a", 0.0)
    r.arp.enqueue(PEER_IP, b"b", 0.0)
    r.arp.enqueue(PEER_IP, b"c", 0.0)
    assert r.n("queue_overflow") == 1 and r.n("queued") == 2
    r.arp.enqueue(OTHER_IP, b"x", 0.0)
    assert r.n("pending_overflow") == 1
    r2 = Rig(ArpConfig(queue_bytes_limit=100))
    r2.arp.enqueue(PEER_IP, bytes(60), 0.0)
    r2.arp.enqueue(OTHER_IP, bytes(60), 0.0)  # over the total byte bound
    assert r2.n("queue_overflow") == 1
    r2.feed(reply_from("02:00:00:00:00:01", "10.0.0.1"), 0.1)  # frees its bytes
    r2.arp.enqueue(OTHER_IP, bytes(60), 0.2)
    assert r2.n("queued") == 2


def test_cache_expiry_with_refresh() -> None:
    cfg = ArpConfig(reachable_time=300.0, retry_interval=1.0, max_tries=3)
    r = Rig(cfg)
    r.feed(request_from_peer(), 0.0)
    r.take()
    assert r.arp.header_for(PEER_IP, 296.9) is not None
    assert r.take() == []
    # In the last 3 s the entry is still used but re-confirmed by unicast.
    assert r.arp.header_for(PEER_IP, 297.0) is not None
    (f,) = r.take()
    assert Ether(f).dst == "02:00:00:00:00:01" and Ether(f)[ARP].pdst == "10.0.0.1"
    assert r.arp.header_for(PEER_IP, 297.1) is not None
    assert r.take() == []  # one refresh at a time
    assert r.arp.next_deadline() == 298.0
    r.feed(reply_from("02:00:00:00:00:01", "10.0.0.1"), 297.5)
    assert r.arp.next_deadline() is None
    assert r.arp.header_for(PEER_IP, 594.4) is not None  # renewed at 297.5
    assert r.take() == []
    # No answer this time: three unicast tries a second apart, then the entry expires.
    assert r.arp.header_for(PEER_IP, 594.5) is not None
    r.arp.on_deadline(595.5)
    r.arp.on_deadline(596.5)
    assert [Ether(f).dst for f in r.take()] == ["02:00:00:00:00:01"] * 3
    assert r.arp.next_deadline() == 597.5
    assert r.arp.header_for(PEER_IP, 597.4) is not None
    r.arp.on_deadline(597.5)
    assert r.take() == []
    assert r.arp.lookup(PEER_IP, 597.5) is None
    assert r.arp.header_for(PEER_IP, 597.5) is None
    assert r.n("expired") == 1 and r.n("refreshes") == 2


def test_unused_entry_expires_lazily() -> None:
    r = Rig(ArpConfig(reachable_time=60.0))
    r.feed(request_from_peer(), 0.0)
    assert r.arp.lookup(PEER_IP, 59.9) == PEER_MAC
    assert r.arp.lookup(PEER_IP, 60.0) is None
    assert r.arp.next_deadline() is None  # idle entries need no timer
    assert r.arp.header_for(PEER_IP, 61.0) is None
    assert r.n("expired") == 1


def test_gratuitous_announcements_at_start() -> None:
    r = Rig(ArpConfig(announce_count=2, announce_interval=2.0))
    r.arp.start(100.0)
    (f,) = r.take()
    e = Ether(f)
    assert e.dst == "ff:ff:ff:ff:ff:ff" and e.src == "02:00:00:00:00:02"
    assert (e[ARP].op, e[ARP].psrc, e[ARP].pdst, e[ARP].hwsrc, e[ARP].hwdst) == (
        1, "10.0.0.2", "10.0.0.2", "02:00:00:00:00:02", "00:00:00:00:00:00")
    assert r.arp.next_deadline() == 102.0
    r.arp.on_deadline(102.0)
    (f2,) = r.take()
    assert f2 == f
    assert r.arp.next_deadline() is None
    assert r.n("announcements_out") == 2
    r0 = Rig(ArpConfig(announce_count=0))
    r0.arp.start(0.0)
    assert r0.take() == []


def test_conflict_counted_and_defended_once_per_interval() -> None:
    r = Rig()
    claim = arp_frame("is-at", "02:00:00:00:00:66", "10.0.0.2", "10.0.0.2")
    r.feed(claim, 0.0)
    (f,) = r.take()
    assert Ether(f)[ARP].psrc == "10.0.0.2" and Ether(f)[ARP].hwsrc == "02:00:00:00:00:02"
    r.feed(claim, 5.0)
    assert r.take() == []
    r.feed(claim, 10.0)
    assert len(r.take()) == 1
    assert r.n("conflicts") == 3 and r.n("defended") == 2
    assert r.arp.lookup(OUR_IP, 10.0) is None


def test_probe_for_our_address_is_answered() -> None:
    r = Rig()
    r.feed(arp_frame("who-has", "02:00:00:00:00:01", "0.0.0.0", "10.0.0.2"), 0.0)
    (f,) = r.take()
    a = Ether(f)[ARP]
    assert a.op == 2 and a.hwdst == "02:00:00:00:00:01" and a.pdst == "0.0.0.0"
    assert r.arp.lookup(bytes(4), 0.0) is None
    assert r.n("probes_in") == 1


def test_static_entries() -> None:
    r = Rig(static={PEER_IP: PEER_MAC})
    assert r.arp.header_for(PEER_IP, 1e9) == PEER_MAC + OUR_MAC + b"\x08\x00"
    r.feed(reply_from("02:00:00:00:00:77", "10.0.0.1"), 1.0)
    assert r.arp.lookup(PEER_IP, 1.0) == PEER_MAC
    assert r.n("static_conflicts") == 1 and r.n("cache_changes") == 0
    assert r.take() == []
    # A request from the static neighbour is still answered.
    r.feed(request_from_peer(), 2.0)
    assert len(r.take()) == 1
    # add_static releases packets waiting for that address.
    r.arp.enqueue(OTHER_IP, b"w", 3.0)
    r.take()
    r.arp.add_static(OTHER_IP, OTHER_MAC)
    assert r.take() == [OTHER_MAC + OUR_MAC + b"\x08\x00w"]


def test_reply_changing_mac_is_counted() -> None:
    r = Rig()
    r.feed(reply_from("02:00:00:00:00:01", "10.0.0.1"), 0.0)  # unsolicited, targets us
    assert r.arp.lookup(PEER_IP, 0.0) == PEER_MAC
    r.feed(reply_from("02:00:00:00:00:02".replace("02", "0a", 1), "10.0.0.1"), 1.0)
    assert r.n("cache_changes") == 1
    assert r.arp.lookup(PEER_IP, 1.0) == bytes.fromhex("0a0000000002")


def test_gratuitous_from_pending_host_resolves() -> None:
    r = Rig()
    r.arp.enqueue(PEER_IP, b"p", 0.0)
    r.take()
    r.feed(arp_frame("who-has", "02:00:00:00:00:01", "10.0.0.1", "10.0.0.1"), 0.2)
    assert r.take() == [PEER_MAC + OUR_MAC + b"\x08\x00p"]


def test_malformed_and_odd_packets() -> None:
    r = Rig()
    good = request_from_peer()
    r.feed(good[:14 + 27], 0.0)
    assert r.n("short") == 1
    bad_hw = bytearray(good)
    bad_hw[14 + 1] = 6  # hardware type IEEE 802
    r.feed(bytes(bad_hw), 0.0)
    bad_len = bytearray(good)
    bad_len[14 + 4] = 8  # hardware address length
    r.feed(bytes(bad_len), 0.0)
    assert r.n("bad_header") == 2
    r.feed(bytes(Ether() / ARP(op=3, hwsrc="02:00:00:00:00:01", psrc="10.0.0.1",
                               pdst="10.0.0.2")), 0.0)
    assert r.n("bad_op") == 1
    r.feed(arp_frame("who-has", "ff:ff:ff:ff:ff:ff", "10.0.0.1", "10.0.0.2"), 0.0)
    r.feed(arp_frame("who-has", "00:00:00:00:00:00", "10.0.0.1", "10.0.0.2"), 0.0)
    r.feed(arp_frame("who-has", "02:00:00:00:00:01", "224.0.0.1", "10.0.0.2"), 0.0)
    assert r.n("bad_sender") == 3
    r.feed(arp_frame("who-has", "02:00:00:00:00:02", "10.0.0.1", "10.0.0.2"), 0.0)
    assert r.n("own") == 1
    assert r.take() == []
    assert r.arp.entries() == {}
    # Ethernet padding after the 28 bytes is ignored.
    r.feed(good + bytes(18), 0.0)
    assert len(r.take()) == 1


def test_eviction_when_full() -> None:
    r = Rig(ArpConfig(max_entries=2))
    for i, t in ((1, 0.0), (3, 1.0), (4, 2.0)):
        r.feed(arp_frame("who-has", f"02:00:00:00:00:{i:02x}", f"10.0.0.{i}", "10.0.0.2"), t)
    assert set(r.arp.entries()) == {bytes([10, 0, 0, 3]), bytes([10, 0, 0, 4])}
    assert r.n("evicted") == 1


def test_header_uses_ipv4_ethertype() -> None:
    r = Rig()
    r.feed(request_from_peer(), 0.0)
    hdr = r.arp.header_for(PEER_IP, 0.0)
    assert hdr is not None and int.from_bytes(hdr[12:14], "big") == ETHERTYPE_IPV4
    assert BROADCAST not in hdr
    assert OP_REPLY == 2
