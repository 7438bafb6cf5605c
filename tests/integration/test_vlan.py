"""802.1Q: our stack on VLAN 100 against the kernel's stack in the namespace.

The TAP's kernel side keeps an untagged address; ``v100`` holds the VLAN's. Ping both
ways, a TCP transfer with the kernel's TCP (tests/integration/tcp_peer.py) and an iSCSI
login with tgtd all run over VLAN 100; the pcap (PcapLink, our side) shows every frame
we sent tagged with VID 100, and untagged frames from the kernel are dropped
(``eth.vlan``).

This kernel has no 802.1Q support (no CONFIG_VLAN_8021Q: ``ip link add link TAP name
v100 type vlan id 100`` fails with "Unknown device type"; no bridge VLAN filtering, no
tc classifiers), so ``v100`` is one end of a veth pair and the tagging on the TAP side
is done by a user-space 802.1Q access port (tests/integration/vlan_port.py) inside the
namespace. Where the kernel has 8021q, a real ``type vlan`` sub-interface is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.utils import rdpcap

from bootinit.initiator import Initiator
from bootinit.targets import Tgtd
from firmware_tables.target import TargetSpec
from netstack.arp import ProbeConfig
from netstack.dhcp import DhcpConfig
from netstack.harness import Topology
from netstack.loop import Loop
from netstack.stack import NetStack, StackConfig
from tests.integration.tcp_peer import stream

PEER = str(Path(__file__).with_name("tcp_peer.py"))
VLAN_PORT = str(Path(__file__).with_name("vlan_port.py"))
VID = 100
IQN = "iqn.2026-11.org.bootinit:vlan"


@dataclass
class VlanEnv:
    topo: Topology
    stack: NetStack
    loop: Loop
    vlan_peer: IPv4Interface
    ours: IPv4Interface
    pcap: Path


@dataclass
class VlanTopo:
    topo: Topology
    vlan_peer: IPv4Interface
    ours: IPv4Interface
    pcap: Path


@pytest.fixture
def vlan_topo(make_topology: Callable[..., Topology], tmp_path: Path) -> VlanTopo:
    n = os.getpid() % 200 + 20
    pcap = tmp_path / "vlan.pcap"
    topo = make_topology(peer_ip=f"10.82.{n}.1/24", our_ip=f"10.82.{n}.2/24", pcap=pcap,
                         prefix="bvl")
    assert topo.tap is not None and topo.link is not None
    vlan_peer = IPv4Interface(f"10.84.{n}.1/24")
    ours = IPv4Interface(f"10.84.{n}.2/24")
    kernel_vlan = topo.run(["ip", "link", "add", "link", topo.tap.name, "name", "v100",
                            "type", "vlan", "id", str(VID)], check=False).returncode == 0
    if not kernel_vlan:
        # No 8021q: a veth pair and the user-space access port (module docstring).
        topo.run(["ip", "link", "add", "vacc", "type", "veth", "peer", "name", "v100"])
        topo.run(["ip", "link", "set", "vacc", "up"])
        # veth leaves TCP/UDP checksums to "hardware" (CHECKSUM_PARTIAL); a packet socket
        # relay would forward them unfinished, so the kernel computes them here.
        topo.run(["ethtool", "-K", "v100", "tx", "off"])
        port = topo.start([sys.executable, VLAN_PORT, "--trunk", topo.tap.name,
                           "--access", "vacc", "--vid", str(VID)], stdout=subprocess.PIPE)
        assert port.proc.stdout is not None
        assert port.proc.stdout.readline() == b"ready\n"
    # The VLAN's IP MTU on a 1500-byte TAP is 1496 on our side (the tag's 4 bytes).
    topo.run(["ip", "link", "set", "v100", "mtu", "1496"])
    topo.run(["ip", "addr", "add", str(vlan_peer), "dev", "v100"])
    topo.run(["ip", "link", "set", "v100", "up"])
    return VlanTopo(topo, vlan_peer, ours, pcap)


@pytest.fixture
def vlan_env(vlan_topo: VlanTopo) -> Iterator[VlanEnv]:
    topo = vlan_topo.topo
    assert topo.link is not None
    loop = Loop()
    stack = NetStack(loop, topo.link, StackConfig(mac=topo.our_mac, ip=vlan_topo.ours,
                                                  vlan=VID))
    stack.start()
    try:
        yield VlanEnv(topo, stack, loop, vlan_topo.vlan_peer, vlan_topo.ours,
                      vlan_topo.pcap)
    finally:
        with contextlib.suppress(Exception):
            stack.close()
        loop.close()


def test_dhcp_over_the_vlan(vlan_topo: VlanTopo, tmp_path: Path) -> None:
    """DISCOVER/OFFER/REQUEST/ACK tagged with VID 100, dnsmasq on the VLAN interface."""
    topo = vlan_topo.topo
    assert topo.link is not None
    net = vlan_topo.vlan_peer.network
    log = tmp_path / "dnsmasq.log"
    dnsmasq = topo.start([
        "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
        "--interface=v100", "--bind-interfaces", "--user=root",
        f"--dhcp-range={net.network_address + 100},{net.network_address + 150},2m",
        f"--dhcp-leasefile={tmp_path / 'leases'}", f"--pid-file={tmp_path / 'pid'}",
        "--log-dhcp", f"--log-facility={log}"])
    loop = Loop()
    stack = NetStack(loop, topo.link, StackConfig(
        mac=topo.our_mac, vlan=VID, seed=3, dhcp=DhcpConfig(probe=ProbeConfig.fast())))
    try:
        stack.start()
        lease = stack.wait_configured(30)
        assert lease is not None and lease.address.network == net
        assert dnsmasq.alive() and "DHCPACK(v100)" in log.read_text()
        stack.iface.ping(vlan_topo.vlan_peer.ip, 9, 1, b"x", loop.time())
        loop.run_until(lambda: len(stack.iface.icmp.echo_replies) > 0, 5, "echo reply")
    finally:
        with contextlib.suppress(Exception):
            stack.close()
        loop.close()
    topo.link.close()
    ours = topo.our_mac.hex(":")
    dhcp_out = [f for f in rdpcap(str(vlan_topo.pcap))
                if f[Ether].src == ours and UDP in f and f[UDP].dport == 67]
    assert len(dhcp_out) >= 2  # DISCOVER and REQUEST
    assert all(Dot1Q in f and f[Dot1Q].vlan == VID for f in dhcp_out)


def test_ping_both_ways_and_untagged_frames_are_dropped(vlan_env: VlanEnv) -> None:
    env = vlan_env
    stack, loop = env.stack, env.loop
    assert stack.iface.mtu == 1496  # the tag takes 4 bytes of the TAP's 1500
    stack.iface.ping(env.vlan_peer.ip, 0x77, 1, b"over-vlan", loop.time())
    loop.run_until(lambda: any(r.ident == 0x77 for r in stack.iface.icmp.echo_replies), 5,
                   "echo reply over VLAN 100")
    # The kernel pings us on the VLAN (loop runs while ping waits: run it in the background)
    proc = env.topo.start(["ping", "-c", "3", "-i", "0.2", "-W", "2", str(env.ours.ip)])
    loop.run_until(lambda: not proc.alive(), 10, "kernel ping over VLAN 100")
    assert proc.proc.returncode == 0
    # Untagged: the kernel's ARP for an address on the untagged subnet is not for us
    untagged = env.topo.start(["ping", "-c", "1", "-W", "1", str(env.topo.our_ip.ip)])
    loop.run_until(lambda: not untagged.alive(), 10, "untagged ping to give up")
    assert untagged.proc.returncode != 0
    c = stack.counters_dict()
    assert c["eth"]["vlan"] >= 1 and c["icmp"]["echo_out"] >= 3
    assert c["link"].get("rx_drop_oversize", 0) == 0


def test_tcp_transfer_and_iscsi_login_over_vlan(vlan_env: VlanEnv) -> None:
    env = vlan_env
    stack = env.stack
    peer = env.topo.start([sys.executable, PEER, "--port", "5001"])
    env.topo.wait_listening(5001, proc=peer)
    # 4 MiB from the kernel (full-size segments: MSS from our VLAN MTU) ...
    s = stack.open_stream(env.vlan_peer.ip, 5001)
    n = 4 << 20
    s.sendall(f"SOURCE {n} 5\n".encode())
    h = hashlib.sha256()
    got = 0
    while True:
        data = s.recv_some(30)
        if not data:
            break
        h.update(data)
        got += len(data)
    want = hashlib.sha256()
    for chunk in stream(5, n):
        want.update(chunk)
    assert got == n and h.hexdigest() == want.hexdigest()
    s.close()
    # ... and 2 MiB to it
    s = stack.open_stream(env.vlan_peer.ip, 5001)
    s.sendall(b"SINK\n")
    payload = os.urandom(2 << 20)
    s.sendall(payload)
    s.conn.close(env.loop.time())
    line = b""
    while not line.endswith(b"\n"):
        more = s.recv_some(30)
        assert more, "peer closed without the digest"
        line += more
    assert line.split() == [hashlib.sha256(payload).hexdigest().encode(),
                            str(len(payload)).encode()]
    # iSCSI: tgtd on the VLAN address
    with Tgtd(env.topo.netns, listen=(str(env.vlan_peer.ip), 3260), lun_dir="/dev/shm") as t:
        t.add_target(IQN, ["8M"])
        ini = Initiator(stack)
        sess = ini.login(TargetSpec(host=str(env.vlan_peer.ip), name=IQN, lun=1))
        dev = sess.block_device()
        block = os.urandom(dev.block_size * 16)
        dev.write(3, block)
        assert dev.read(3, 16) == block
        sess.logout()
    stack.close()
    env.topo.link.close()  # type: ignore[union-attr]  # flush the pcap
    # Every frame we sent is tagged with VID 100; the kernel's tagged frames came back.
    ours = env.topo.our_mac.hex(":")
    frames = rdpcap(str(env.pcap))
    sent = [f for f in frames if f[Ether].src == ours]
    got_tagged = [f for f in frames if f[Ether].src != ours and Dot1Q in f]
    assert sent and got_tagged
    assert all(Dot1Q in f and f[Dot1Q].vlan == VID for f in sent)
    assert any(TCP in f and f[TCP].dport == 3260 for f in sent)
    assert any(TCP in f and f[TCP].dport == 5001 for f in sent)
    assert any(ARP in f for f in sent)
    assert all(f[Dot1Q].vlan == VID for f in got_tagged)
    assert all(IP not in f or f[IP].dst == str(env.ours.ip) or ICMP in f or ARP in f
               for f in got_tagged)
    assert IPv4Address(env.ours.ip)
