"""IPv6 of our stack against the Linux kernel in a namespace (issue 8): ping -6 answered
(global, link-local, fragmented), TCP both ways, DAD against an address the kernel
holds, SLAAC from radvd and from a crafted Router Advertisement (scapy).

Run: ``sudo python -m pytest tests/integration/test_ipv6.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from netstack.addrconf import AddrState, Ipv6Config
from netstack.harness import Topology
from netstack.ipv6 import eui64_iid
from netstack.loop import Loop, LoopTimeout
from netstack.stack import NetStack, StackConfig
from netstack.tcp.connection import TcpError
from tests.integration.tcp_peer import receive_all, stream

PEER = str(Path(__file__).with_name("tcp_peer.py"))
PORT = 5001
PEER6, OUR6 = "fd00::1/64", "fd00::2/64"


@contextlib.contextmanager
def v6_stack(topo: Topology, cfg: Ipv6Config) -> Iterator[NetStack]:
    assert topo.link is not None
    loop = Loop()
    stack = NetStack(loop, topo.link, StackConfig(mac=topo.our_mac, ip=topo.our_ip,
                                                  ipv6=cfg, seed=5))
    stack.start()
    try:
        yield stack
    finally:
        stack.close()
        loop.close()


def in_thread(stack: NetStack, fn: Callable[[], subprocess.CompletedProcess[str]],
              timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a blocking namespace command while our loop keeps answering."""
    out: list[subprocess.CompletedProcess[str]] = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    stack.loop.run_until(lambda: not t.is_alive(), timeout, "the namespace command")
    return out[0]


def static(**kw: object) -> Ipv6Config:
    base: dict[str, object] = {"addresses": (ipaddress.IPv6Interface(OUR6),),
                               "dad_delay": 0.1}
    base.update(kw)
    return Ipv6Config(**base)  # type: ignore[arg-type]


def our_ll(topo: Topology) -> str:
    iid = eui64_iid(topo.our_mac)
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + iid))


def test_ping6_from_the_namespace(make_topology: Callable[..., Topology]) -> None:
    topo = make_topology(peer_ip6=PEER6)
    with v6_stack(topo, static()) as stack:
        assert str(stack.wait_ipv6(10)) == "fd00::2"
        dev = topo.peer_dev
        assert dev is not None
        for target, size in (("fd00::2", 56), (f"{our_ll(topo)}%{dev}", 56),
                             ("fd00::2", 4000)):
            cp = in_thread(stack, lambda t=target, s=size: topo.run(  # type: ignore[misc]
                ["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", "-s", str(s), t],
                check=False))
            assert cp.returncode == 0, cp.stdout + cp.stderr
            assert " 0% packet loss" in cp.stdout
        c = stack.counters_dict()
        assert c["icmp6"]["echo_out"] == 9
        assert c["ip6"]["reassembled"] == 3 and c["ip6"]["fragmented"] == 3
        # The kernel learnt us by ND: our MAC for both addresses.
        neigh = json.loads(topo.run(["ip", "-j", "-6", "neigh", "show", "dev", dev]).stdout)
        macs = {n["dst"]: n.get("lladdr") for n in neigh}
        mac = ":".join(f"{b:02x}" for b in topo.our_mac)
        assert macs.get("fd00::2") == mac and macs.get(our_ll(topo)) == mac
        # Our own ping to the kernel, answered.
        ip6 = stack.iface.ip6
        assert ip6 is not None
        # One request a second, up to five, as ping(8) does: under load (seen in CI and
        # beside a benchmark, 2 runs in 8) the kernel let one request go unanswered,
        # with our ND exchange and counters all in order.
        for seq in range(1, 6):
            stack.iface.ping(ipaddress.IPv6Address("fd00::1"), 77, seq, b"x" * 100,
                             stack.loop.time())
            try:
                stack.loop.run_until(lambda: any(r.ident == 77 for r in ip6.echo_replies),
                                     1.0, "an echo reply from the kernel")
                break
            except LoopTimeout:
                continue
        else:
            c = stack.counters_dict()
            ns = topo.run(["sh", "-c", "ip -6 addr; ip -6 neigh; nstat -az | grep -Ei "
                           "'icmp6|ip6(in|out)(discards|noroutes|addrerrors)'"],
                          check=False).stdout
            pytest.fail(f"no echo reply to 5 requests in 5 s: ip6={c['ip6']} icmp6={c['icmp6']} "
                        f"nd={c.get('nd')} link={c['link']}\nnamespace:\n{ns}")


def _sha(seed: int, n: int) -> str:
    h = hashlib.sha256()
    for chunk in stream(seed, n):
        h.update(chunk)
    return h.hexdigest()


def test_tcp_both_ways_with_the_kernel(make_topology: Callable[..., Topology]) -> None:
    topo = make_topology(peer_ip6=PEER6)
    proc = topo.start([sys.executable, PEER, "--port", str(PORT), "--bind", "::"])
    topo.wait_listening(PORT, proc=proc)
    with v6_stack(topo, static()) as stack:
        stack.wait_ipv6(10)
        n = 8 << 20
        s = stack.open_stream("[fd00::1]", PORT, timeout=10)  # brackets are accepted
        s.sendall(b"SINK\n")
        for chunk in stream(3, n):
            s.sendall(chunk)
        s.conn.close(stack.loop.time())
        line = b""
        while not line.endswith(b"\n"):
            line += s.recv_some(30)
        assert line.decode().split() == [_sha(3, n), str(n)]
        s = stack.open_stream("fd00::1", PORT, timeout=10)
        s.sendall(f"SOURCE {n} 9\n".encode())
        sha, got = receive_all(s, 30)
        assert (got, sha) == (n, _sha(9, n))
        # The segments really were IPv6 with the IPv6 MSS (MTU 1500 - 60).
        assert s.conn.mss_local == 1440
        c = stack.counters_dict()
        assert c["tcp"].get("bad_checksum", 0) == 0 and c["ip6"]["too_big"] == 0
        # A connection from the kernel to our listener (passive open over IPv6).
        lst = stack.tcp.listen(7000)
        cp = in_thread(stack, lambda: topo.run(
            [sys.executable, "-c", "import socket; s = socket.create_connection("
             "('fd00::2', 7000), 5); s.sendall(b'hello6'); s.close()"], check=False))
        assert cp.returncode == 0, cp.stderr
        stack.loop.run_until(lambda: bool(lst.queue), 5, "the kernel's connection")
        conn = lst.queue[0]
        stack.loop.run_until(lambda: conn.available() >= 6 or conn.eof, 5, "data")
        assert conn.recv() == b"hello6" and conn.local_ip == ipaddress.IPv6Address(
            "fd00::2").packed


def test_no_ipv6_address_no_connection(make_topology: Callable[..., Topology]) -> None:
    topo = make_topology(peer_ip6=PEER6)
    assert topo.link is not None
    loop = Loop()
    stack = NetStack(loop, topo.link, StackConfig(mac=topo.our_mac, ip=topo.our_ip))
    with stack, pytest.raises(TcpError, match="IPv6 is not enabled"):
        stack.connect("fd00::1", PORT)
    loop.close()


def test_dad_finds_the_kernel_holding_our_address(
        make_topology: Callable[..., Topology]) -> None:
    topo = make_topology(peer_ip6=PEER6)
    topo.run(["ip", "-6", "addr", "add", "fd00::2/64", "dev", str(topo.peer_dev), "nodad"])
    with v6_stack(topo, static()) as stack:
        ip6 = stack.iface.ip6
        assert ip6 is not None
        stack.loop.run_until(lambda: any(a.state is AddrState.DUPLICATE
                                         for a in ip6.addresses), 5, "DAD")
        stack.loop.run_for(1.5)
        states = {str(a.interface.ip): a.state for a in ip6.addresses}
        assert states["fd00::2"] is AddrState.DUPLICATE
        assert states[our_ll(topo)] is AddrState.PREFERRED
        assert ip6.primary is None
        assert stack.counters_dict()["nd"]["dad_duplicates"] == 1
    # Without DAD the clash goes unnoticed (the option exists for fast boots).
    with v6_stack(topo, static(dad=False)) as stack:
        assert stack.iface.ip6 is not None and stack.iface.ip6.primary is not None


RADVD_CONF = """interface {dev} {{
    AdvSendAdvert on;
    MinRtrAdvInterval 3;
    MaxRtrAdvInterval 4;
    AdvDefaultLifetime 600;
    AdvLinkMTU 1400;
    prefix fd00:1::/64 {{ AdvOnLink on; AdvAutonomous on; AdvValidLifetime 3600;
                          AdvPreferredLifetime 1800; }};
}};
"""


@pytest.mark.skipif(shutil.which("radvd") is None, reason="radvd is not installed")
def test_slaac_from_radvd(make_topology: Callable[..., Topology], tmp_path: Path) -> None:
    topo = make_topology(ipv6=True)
    dev = str(topo.peer_dev)
    topo.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"])  # radvd wants it
    conf = tmp_path / "radvd.conf"
    conf.write_text(RADVD_CONF.format(dev=dev))
    pid = tmp_path / "radvd.pid"
    topo.start(["radvd", "-n", "-C", str(conf), "-p", str(pid), "-m", "stderr"])
    with v6_stack(topo, Ipv6Config(slaac=True, dad_delay=0.1, rs_delay=0.1)) as stack:
        addr = stack.wait_ipv6(20)
        assert addr == ipaddress.IPv6Address("fd00:1::" + our_ll(topo)[len("fe80::"):])
        ip6 = stack.iface.ip6
        assert ip6 is not None
        router = ip6.default_router
        kernel_ll = json.loads(topo.run(["ip", "-j", "-6", "addr", "show", "dev", dev,
                                         "scope", "link"]).stdout)[0]["addr_info"][0]
        assert router == ipaddress.IPv6Address(kernel_ll["local"]).packed
        assert ip6.mtu == 1400 and stack.tcp.mss6 == 1340
        c = stack.counters_dict()["nd"]
        assert c["rs_out"] >= 1 and c["ra_in"] >= 1 and c["slaac_addresses"] == 1
        # The kernel reaches the SLAAC address (on-link through the prefix radvd gives).
        topo.run(["ip", "-6", "addr", "add", "fd00:1::1/64", "dev", dev, "nodad"])
        cp = in_thread(stack, lambda: topo.run(["ping", "-6", "-c", "2", "-i", "0.2",
                                                "-W", "2", str(addr)], check=False))
        assert cp.returncode == 0, cp.stdout + cp.stderr


CRAFTED_RA = """
import sys
from scapy.all import (Ether, IPv6, ICMPv6ND_RA, ICMPv6NDOptPrefixInfo,
                       ICMPv6NDOptSrcLLAddr, get_if_hwaddr, sendp)
dev = sys.argv[1]
mac = get_if_hwaddr(dev)
ra = (Ether(src=mac, dst="33:33:00:00:00:01") / IPv6(src="fe80::1", dst="ff02::1", hlim=255)
      / ICMPv6ND_RA(routerlifetime=900) / ICMPv6NDOptSrcLLAddr(lladdr=mac)
      / ICMPv6NDOptPrefixInfo(prefix="fd00:2::", prefixlen=64, L=1, A=1,
                              validlifetime=600, preferredlifetime=300))
sendp(ra, iface=dev, count=int(sys.argv[2]), inter=0.5, verbose=False)
"""


def test_slaac_from_a_crafted_ra_with_stable_iids(
        make_topology: Callable[..., Topology]) -> None:
    topo = make_topology(ipv6=True)
    cfg = Ipv6Config(slaac=True, iid="stable", secret=b"k" * 16, dad_delay=0.1,
                     rs_delay=0.1)
    with v6_stack(topo, cfg) as stack:
        ip6 = stack.iface.ip6
        assert ip6 is not None
        proc = topo.start([sys.executable, "-c", CRAFTED_RA, str(topo.peer_dev), "8"])
        addr = stack.wait_ipv6(15)
        assert str(addr).startswith("fd00:2::")
        assert addr.packed[8:] != eui64_iid(topo.our_mac)  # RFC 7217, not EUI-64
        assert ip6.default_router == ipaddress.IPv6Address("fe80::1").packed
        ll = next(a for a in ip6.addresses if a.origin == "link-local")
        assert ll.ip[8:] != eui64_iid(topo.our_mac) and ll.ip[8:] != addr.packed[8:]
        deadline = time.monotonic() + 10
        while proc.alive() and time.monotonic() < deadline:
            stack.loop.run_for(0.2)
    # Same secret, same prefix: the same address on a new run (stable, RFC 7217 §5).
    with v6_stack(topo, cfg) as stack2:
        topo.start([sys.executable, "-c", CRAFTED_RA, str(topo.peer_dev), "6"])
        assert stack2.wait_ipv6(15) == addr


def test_ipv6_literal_errors(make_topology: Callable[..., Topology]) -> None:
    topo = make_topology(peer_ip6=PEER6)
    with v6_stack(topo, static(dad=False)) as stack:
        with pytest.raises(ValueError, match="not an IPv4 or IPv6"):
            stack.connect("fd00::zz", PORT)
        conn = stack.connect("fe80::1%eth0", 9)  # zone ignored, link-local source
        assert conn.local_ip == ipaddress.IPv6Address(our_ll(topo)).packed


def test_mld_reports_reach_a_snooping_bridge(
        make_topology: Callable[..., Topology]) -> None:
    """The TAP on a Linux bridge (MLD snooping on by default): the bridge's multicast
    database shows our port as a listener of our solicited-node group — the kernel
    parsed our MLDv2 reports — and the kernel resolves and pings us through it."""
    topo = make_topology(bridge=True, peer_ip6=PEER6)
    assert topo.tap is not None
    with v6_stack(topo, static()) as stack:
        stack.wait_ipv6(10)
        stack.loop.run_for(0.3)
        mdb = topo.run(["bridge", "mdb", "show", "dev", "br0"]).stdout
        assert f"port {topo.tap.name} grp ff02::1:ff00:2" in mdb, mdb
        cp = in_thread(stack, lambda: topo.run(["ping", "-6", "-c", "2", "-i", "0.2", "-W",
                                                "2", "fd00::2"], check=False))
        assert cp.returncode == 0, cp.stdout + cp.stderr
        assert stack.counters_dict()["icmp6"]["mld_reports_out"] >= 1
