"""TapLink against the real kernel, inside namespaces the test creates (needs root).

The kernel side of every TAP lives in a fresh namespace; teardown is asserted to leave
no namespace or device behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from ipaddress import IPv4Interface
from pathlib import Path

import pytest

from netstack import netns as nsh
from netstack.harness import HarnessError, Topology, topology
from netstack.link import FaultLink, FaultSpec, Link, LinkError, PcapLink, TapLink
from netstack.linkopts import LinkOptions, format_mac, open_link
from netstack.loop import Loop

pytestmark = pytest.mark.usefixtures("requires_netns")


def arp_request(our_mac: bytes, our_ip: str, target_ip: str) -> bytes:
    from scapy.layers.l2 import ARP, Ether

    mac = format_mac(our_mac)
    return bytes(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
                 / ARP(op=1, hwsrc=mac, psrc=our_ip, hwdst="00:00:00:00:00:00", pdst=target_ip))


def is_arp_reply(frame: bytes, from_ip: str, to_mac: bytes) -> bool:
    from scapy.layers.l2 import ARP, Ether

    p = Ether(frame)
    return (ARP in p and p[ARP].op == 2 and p[ARP].psrc == from_ip
            and p.dst == format_mac(to_mac) and p[ARP].hwdst == format_mac(to_mac))


def collect(link: Link, want: Callable[[bytes], bool], count: int = 1,
            timeout: float = 5.0, what: str = "frames") -> list[bytes]:
    """Run a loop on ``link`` until ``count`` frames satisfying ``want`` arrived."""
    got: list[bytes] = []
    with Loop() as loop:

        def drain() -> None:
            while (f := link.recv()) is not None:
                if want(f):
                    got.append(f)

        loop.add_link(link, drain)
        loop.run_until(lambda: len(got) >= count, timeout, what=what)
    return got


def arp_roundtrip(topo: Topology, link: Link, count: int = 1) -> list[bytes]:
    peer = str(topo.peer_addr)
    link.send(arp_request(topo.our_mac, str(topo.our_ip.ip), peer))
    replies = collect(link, lambda f: is_arp_reply(f, peer, topo.our_mac), count,
                      what=f"ARP reply from {peer}")
    from scapy.layers.l2 import ARP, Ether

    assert Ether(replies[0])[ARP].hwsrc == format_mac(topo.peer_mac())
    return replies


def root_links() -> str:
    return nsh.run(["ip", "-o", "link", "show"]).stdout


def test_arp_reply_and_clean_teardown() -> None:
    with topology() as topo:
        assert topo.tap is not None and topo.link is topo.tap
        name, ns = topo.tap.name, topo.netns
        assert nsh.link_exists(name, ns) and not nsh.link_exists(name)
        assert "10.77.0.1/24" in topo.run(["ip", "-o", "addr", "show", "dev", name]).stdout
        arp_roundtrip(topo, topo.tap)
        c = topo.tap.counters()
        assert c["tx_frames"] == 1 and c["rx_frames"] >= 1
    assert not nsh.exists(ns)
    assert ns not in nsh.run(["ip", "netns", "list"]).stdout
    assert name not in root_links()


def test_close_deletes_the_tap_we_created(netns_name: str) -> None:
    tap = TapLink(netns=netns_name, peer_ip="10.78.0.1/24", mtu=1400)
    assert tap.created
    out = nsh.run(["ip", "-o", "link", "show", "dev", tap.name], netns=netns_name).stdout
    assert "mtu 1400" in out and ",UP" in out
    tap.close()
    tap.close()
    assert not nsh.link_exists(tap.name, netns_name)
    with pytest.raises(LinkError, match="closed"):
        tap.fileno()


def test_through_fault_and_pcap_checked_with_tshark(tmp_path: Path) -> None:
    cap = tmp_path / "arp.pcap"
    with topology(fault="dup=1,delay_ms=5,seed=1", pcap=cap) as topo:
        assert isinstance(topo.link, PcapLink) and isinstance(topo.link.inner, FaultLink)
        # tx dup: two requests, two kernel replies; rx dup: each reply twice.
        arp_roundtrip(topo, topo.link, count=4)
        c = topo.link.counters()
        assert c["fault.tx_duplicated"] == 1 and c["fault.rx_duplicated"] >= 2
        assert c["tx_frames"] == 2  # the TAP saw both copies
    assert not nsh.exists(topo.netns)
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    cp = subprocess.run(["tshark", "-r", str(cap), "-T", "fields", "-e", "arp.opcode",
                         "-e", "arp.src.proto_ipv4", "-e", "arp.dst.proto_ipv4"],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    rows = [r.split("\t") for r in cp.stdout.splitlines()]
    assert ["1", "10.77.0.2", "10.77.0.1"] in rows
    assert rows.count(["2", "10.77.0.1", "10.77.0.2"]) >= 4
    from scapy.utils import rdpcap

    assert len(rdpcap(str(cap))) == len(rows)


@pytest.mark.parametrize("mtu", [9000, 65520])
def test_jumbo_icmp_echo_in_one_frame(mtu: int) -> None:
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import Ether

    with topology(mtu=mtu) as topo:
        assert topo.tap is not None
        topo.add_neighbor()  # so the kernel can answer without ARP
        payload = bytes(range(256)) * ((mtu - 28) // 256) + b"\x00" * ((mtu - 28) % 256)
        req = bytes(Ether(src=format_mac(topo.our_mac), dst=format_mac(topo.peer_mac()))
                    / IP(src=str(topo.our_ip.ip), dst=str(topo.peer_addr))
                    / ICMP(type=8, id=0x4242, seq=1) / payload)
        assert len(req) == mtu + 14
        topo.tap.send(req)

        def is_reply(f: bytes) -> bool:
            p = Ether(f)
            return ICMP in p and p[ICMP].type == 0 and p[ICMP].id == 0x4242

        (reply,) = collect(topo.tap, is_reply, what=f"ICMP echo reply at MTU {mtu}")
        assert len(reply) == mtu + 14
        assert bytes(Ether(reply)[ICMP].payload) == payload


def test_oversized_and_runt_frames_are_errors() -> None:
    with topology() as topo:
        assert topo.tap is not None
        with pytest.raises(LinkError, match="frame of 1515 bytes"):
            topo.tap.send(b"\x00" * 1515)
        with pytest.raises(LinkError, match="frame of 10 bytes"):
            topo.tap.send(b"\x00" * 10)


def test_send_on_a_down_link_drops_and_counts() -> None:
    with topology() as topo:
        assert topo.tap is not None
        topo.run(["ip", "link", "set", topo.tap.name, "down"])
        topo.tap.send(arp_request(topo.our_mac, "10.77.0.2", "10.77.0.1"))
        assert topo.tap.counters()["tx_drop_link_down"] == 1
        assert topo.tap.recv() is None


def test_bridge_layout() -> None:
    with topology(bridge=True, mtu=9000) as topo:
        assert topo.bridge == "br0" and topo.peer_dev == "br0" and topo.tap is not None
        master = topo.run(["ip", "-o", "link", "show", "dev", topo.tap.name]).stdout
        assert "master br0" in master and "mtu 9000" in master
        arp_roundtrip(topo, topo.tap)


def test_open_link_from_options_wraps_in_order(netns_name: str, tmp_path: Path) -> None:
    opts = LinkOptions(netns=netns_name, peer_ip=IPv4Interface("10.79.0.1/24"),
                       fault=None, pcap=tmp_path / "o.pcap", mtu=2000)
    link = open_link(opts)
    try:
        assert isinstance(link, PcapLink) and isinstance(link.inner, TapLink)
        assert link.mtu == 2000
    finally:
        link.close()
    link = open_link(LinkOptions(netns=netns_name, peer_ip=IPv4Interface("10.79.0.1/24"),
                                 fault=FaultSpec(loss=0.1), pcap=tmp_path / "p.pcap"))
    try:
        assert isinstance(link, PcapLink)
        assert isinstance(link.inner, FaultLink) and isinstance(link.inner.inner, TapLink)
    finally:
        link.close()
    assert "bitap" not in nsh.run(["ip", "-o", "link"], netns=netns_name).stdout


def test_attach_to_existing_tap_inside_the_namespace() -> None:
    with topology(open_tap=False) as topo:
        name = nsh.unique_name("bp")
        topo.run(["ip", "tuntap", "add", "dev", name, "mode", "tap"])
        opts = topo.link_options(tap=name)
        link = open_link(opts)
        try:
            assert isinstance(link, TapLink) and not link.created
            topo.peer_dev = name
            arp_roundtrip(topo, link)
        finally:
            link.close()
        assert nsh.link_exists(name, topo.netns)  # not ours: left in place
        with pytest.raises(LinkError, match="does not exist"):
            TapLink(tap="bi-no-such", netns=topo.netns)
        # a TUN device is refused with a clear message
        tun = nsh.unique_name("bu")
        topo.run(["ip", "tuntap", "add", "dev", tun, "mode", "tun"])
        with pytest.raises(LinkError, match="not a TAP device"):
            TapLink(tap=tun, netns=topo.netns)


def test_attach_to_existing_root_tap_moves_it(netns_name: str) -> None:
    name = nsh.unique_name("br")
    nsh.run(["ip", "tuntap", "add", "dev", name, "mode", "tap"])  # down, no address
    try:
        link = TapLink(tap=name, netns=netns_name, peer_ip="10.80.0.1/24")
        try:
            assert nsh.link_exists(name, netns_name) and not nsh.link_exists(name)
            with pytest.raises(LinkError, match="already open by another process"):
                TapLink(tap=name, netns=netns_name)
        finally:
            link.close()
        assert nsh.link_exists(name, netns_name)
    finally:
        if nsh.link_exists(name):
            nsh.delete_link(name)


def test_harness_processes_and_listening(tmp_path: Path) -> None:
    server = ("import socket,time; s=socket.socket(); s.bind(('0.0.0.0', 3260)); "
              "s.listen(); time.sleep(60)")
    with topology() as topo:
        proc = topo.start([sys.executable, "-c", server])
        topo.wait_listening(3260, proc=proc, timeout=10)
        topo.wait_listening(3260, proc=proc, addr="10.77.0.1")
        with pytest.raises(HarnessError, match="nothing listens on port 3261"):
            topo.wait_listening(3261, timeout=0.2, proc=proc)
        dead = topo.start([sys.executable, "-c", "raise SystemExit(3)"])
        with pytest.raises(HarnessError, match="exited with status 3"):
            topo.wait_listening(3262, proc=dead, timeout=10)
        pid = proc.pid
    assert not proc.alive()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not nsh.exists(topo.netns)


def test_harness_tears_down_on_exception() -> None:
    names: list[str] = []
    with pytest.raises(RuntimeError, match="boom"), topology(bridge=True) as topo:
        assert topo.tap is not None
        names += [topo.netns, topo.tap.name]
        raise RuntimeError("boom")
    assert not nsh.exists(names[0])
    assert names[1] not in root_links()


def test_harness_without_tap_gives_link_argv() -> None:
    with topology(bridge=True, open_tap=False, mtu=9000) as topo:
        assert topo.link is None and topo.tap is None
        argv = topo.link_argv()
        assert argv[:4] == ["--netns", topo.netns, "--bridge", "br0"]
        assert "--mtu" in argv and "9000" in argv
        link = open_link(topo.link_options())
        try:
            arp_roundtrip(topo, link)
        finally:
            link.close()


def test_make_topology_fixture(make_topology: Callable[..., Topology]) -> None:
    a = make_topology()
    b = make_topology(peer_ip="10.66.0.1/24", our_ip="10.66.0.2/24")
    assert a.netns != b.netns
    assert a.tap is not None and b.tap is not None
    arp_roundtrip(b, b.tap)


def test_topo_fixture(topo: Topology) -> None:
    assert topo.tap is not None
    arp_roundtrip(topo, topo.tap)


def test_oversized_frame_from_the_kernel_is_dropped_not_truncated() -> None:
    with topology() as topo:
        assert topo.tap is not None
        topo.add_neighbor()
        topo.run(["ip", "link", "set", topo.tap.name, "mtu", "9000"])  # behind our back
        for size in (3000, 1000):  # one oversized echo request, then one that fits
            topo.run(["ping", "-c", "1", "-W", "0.2", "-s", str(size), "-M", "do",
                      str(topo.our_ip.ip)], check=False)
        got = collect(topo.tap, lambda f: f[12:14] == b"\x08\x00", what="the small ping")
        assert len(got[0]) == 14 + 20 + 8 + 1000
        c = topo.tap.counters()
        assert c["rx_drop_oversize"] == 1 and c["rx_frames"] == 1


def test_namespace_deleted_under_an_open_tap_is_a_link_error() -> None:
    ns = nsh.unique_name("bt")
    nsh.create(ns)
    try:
        tap = TapLink(netns=ns, peer_ip="10.81.0.1/24")
    finally:
        nsh.delete(ns)
    try:
        # The kernel dismantles a deleted namespace asynchronously: wait (bounded).
        deadline = time.monotonic() + 10
        with pytest.raises(LinkError, match="read failed"):
            while time.monotonic() < deadline:
                tap.recv()
                time.sleep(0.01)
        with pytest.raises(LinkError, match="write failed"):
            tap.send(b"\xff" * 60)
    finally:
        tap.close()
    assert tap.name not in root_links()
