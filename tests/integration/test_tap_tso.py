"""TCP segmentation offload on our send path, against the Linux kernel (needs root).

Our TCP hands the TAP super-segments (``VIRTIO_NET_HDR_GSO_TCPV4/6``); the kernel takes
each as one large segment when it is for itself, and cuts it into MTU-sized segments
with their own checksums when it forwards it through a device without TSO (here a
bridge port: a veth with ``tso``, ``gso`` and ``tx`` checksumming off). Captures with
tshark on both sides show the super-frames going into the TAP and the wire segments
coming out of the veth, every checksum verified.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import itertools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from netstack import netns as nsh
from netstack.addrconf import Ipv6Config
from netstack.harness import Topology
from netstack.link import LinkError, PcapLink, TapLink
from netstack.link import tap as tap_mod
from netstack.link.gso import VNET_HLEN
from netstack.linkopts import LinkOptions, open_link
from netstack.loop import Loop
from netstack.netns import listening_ports
from netstack.stack import NetStack, StackConfig
from tests.integration.test_kernel_tcp import PEER, PORT, expected_sha, send_stream

MiB = 1 << 20


def kernel_tcp_stats(run: Callable[[list[str]], subprocess.CompletedProcess[str]]
                     ) -> dict[str, int]:
    snmp = run(["cat", "/proc/net/snmp"]).stdout
    rows = [ln.split() for ln in snmp.splitlines() if ln.startswith("Tcp:")]
    return {k: int(v) for k, v in zip(rows[0][1:], rows[1][1:], strict=True)}


class OffloadStack:
    """A bridge topology with an offload TAP and our stack on it, the SINK peer up."""

    def __init__(self, topo: Topology, link: TapLink, **stack_kw: Any) -> None:
        self.topo = topo
        self.link = link
        self.loop = Loop()
        self.stack = NetStack(self.loop, link, StackConfig(mac=topo.our_mac, ip=topo.our_ip,
                                                           **stack_kw))
        self.stack.start()

    def close(self) -> None:
        self.stack.close()
        self.loop.close()
        self.link.close()


def offload_stack(make_topology: Callable[..., Topology], mtu: int,
                  peer_args: tuple[str, ...] = ()) -> OffloadStack:
    topo = make_topology(mtu=mtu, open_tap=False, bridge=True)
    proc = topo.start([sys.executable, PEER, "--port", str(PORT), *peer_args])
    topo.wait_listening(PORT, proc=proc)
    link = TapLink(mtu=mtu, netns=topo.netns, bridge=topo.bridge, offload=True)
    return OffloadStack(topo, link)


@pytest.mark.parametrize("mtu,mib", [(1500, 128), (9000, 64), (65520, 64)])
def test_bulk_send_with_tso(make_topology: Callable[..., Topology], mtu: int,
                            mib: int) -> None:
    env = offload_stack(make_topology, mtu)
    try:
        stack, link = env.stack, env.link
        assert link.gso_max_size == 65535 and stack.tcp.tso_max == 65535
        before = kernel_tcp_stats(env.topo.run)
        n = mib * MiB
        s = stack.open_stream(env.topo.peer_addr, PORT)
        s.sendall(b"SINK\n")
        assert send_stream(s, 31, n, 120) == expected_sha(31, n)
        c = stack.counters_dict()
        lc, tcp = c["link"], c["tcp"]
        mss = s.conn.mss
        if mtu == 65520:
            # one MSS already fills a 64 KiB datagram: nothing to gain, none made
            assert tcp.get("tso_out", 0) == 0 and lc["tx_gso_frames"] == 0
        else:
            # most data left in super-segments of whole MSS pieces
            assert tcp["tso_out"] == lc["tx_gso_frames"] > n // (2 * 65535)
            assert lc["tx_gso_segments"] > 0.9 * n / mss
            assert lc["tx_gso_refused"] == 0 and lc["tx_gso_split"] == 0
        # counters count wire segments: at least one per MSS of data
        assert tcp["segments_out"] >= n // mss
        assert c["ip"]["out"] == tcp["segments_out"]
        assert c["ip"].get("too_big", 0) == 0 and tcp.get("retransmits", 0) == 0
        after = kernel_tcp_stats(env.topo.run)
        assert after["InCsumErrors"] == before["InCsumErrors"]
    finally:
        env.close()


def _wait_capturing(path: Path, proc: nsh.NetnsProcess, timeout: float = 15.0) -> None:
    """tshark writes its file header once the capture runs."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size > 0):
        if not proc.alive():
            raise AssertionError(f"{' '.join(proc.argv)} exited")
        if time.monotonic() > deadline:
            raise AssertionError(f"tshark did not start capturing into {path}")
        time.sleep(0.05)
    time.sleep(0.3)


def _tshark_fields(path: Path, display_filter: str, *fields: str) -> list[list[str]]:
    cp = subprocess.run(["tshark", "-n", "-r", str(path), "-o", "ip.check_checksum:TRUE",
                         "-o", "tcp.check_checksum:TRUE", "-Y", display_filter, "-T",
                         "fields", *[a for f in fields for a in ("-e", f)]],
                        capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    return [line.split("\t") for line in cp.stdout.splitlines()]


def test_kernel_cuts_our_super_segments_into_valid_wire_segments(
        make_topology: Callable[..., Topology], tmp_path: Path) -> None:
    """Into the TAP: super-frames (> MTU). Out of a bridge port without TSO or checksum
    offload: the kernel's cut, MTU-sized frames whose IPv4 and TCP checksums tshark
    verifies, IPv4 identifications consecutive, the data intact (sha256 at the peer)."""
    if shutil.which("tshark") is None or shutil.which("ethtool") is None:
        pytest.skip("needs tshark and ethtool")
    mtu, n = 1500, 4 * MiB
    topo = make_topology(mtu=mtu, open_tap=False, bridge=True)
    ns = topo.netns
    with nsh.namespace("bitso") as ns2:
        topo.run(["ip", "link", "add", "vtso0", "mtu", str(mtu), "type", "veth", "peer",
                  "name", "vtso1", "netns", ns2])
        topo.run(["ethtool", "-K", "vtso0", "tso", "off", "gso", "off", "tx", "off"])
        nsh.enslave(ns, "vtso0", "br0")
        nsh.link_up("vtso0", ns)
        nsh.run(["ip", "link", "set", "vtso1", "mtu", str(mtu)], netns=ns2)
        nsh.add_address(ns2, "vtso1", "10.77.0.3/24")
        nsh.link_up("vtso1", ns2)
        nsh.link_up("lo", ns2)
        procs: list[nsh.NetnsProcess] = []
        link = TapLink(mtu=mtu, netns=ns, bridge="br0", offload=True)
        env = OffloadStack(topo, link)
        try:
            sink = nsh.NetnsProcess(ns2, [sys.executable, PEER, "--port", str(PORT)])
            procs.append(sink)
            wire_cap, tap_cap = tmp_path / "wire.pcapng", tmp_path / "tap.pcapng"
            # A 64 MiB capture buffer each: a loaded machine must not drop frames here
            # (the wire capture keeps whole frames, its TCP checksums are checked).
            for where, dev, path, extra in ((ns2, "vtso1", wire_cap, ("-B", "64")),
                                            (ns, link.name, tap_cap,
                                             ("-B", "64", "-s", "128"))):
                p = nsh.NetnsProcess(where, ["tshark", "-q", "-i", dev, *extra, "-f", "tcp",
                                             "-w", str(path)])
                procs.append(p)
                _wait_capturing(path, p)
            deadline = time.monotonic() + 10
            while not any(p == PORT for _a, p in listening_ports(ns2)):
                assert time.monotonic() < deadline and sink.alive(), "no sink listening"
                time.sleep(0.05)
            s = env.stack.open_stream(ipaddress.IPv4Address("10.77.0.3"), PORT)
            s.sendall(b"SINK\n")
            assert send_stream(s, 41, n, 60) == expected_sha(41, n)
            mss = s.conn.mss
            assert env.stack.counters_dict()["link"]["tx_gso_frames"] > 0
            time.sleep(0.5)
        finally:
            for p in reversed(procs):
                p.stop()
            env.close()
    ours = str(topo.our_ip.ip)
    # into the TAP: super-frames of whole MSS pieces, larger than the MTU allows
    big = [(int(ln), int(tl)) for ln, tl in
           _tshark_fields(tap_cap, f"ip.src == {ours} && frame.len > {mtu + 14}",
                          "frame.len", "tcp.len")]
    assert len(big) >= n // 65535 and all(tl % mss == 0 and tl > mss for _, tl in big)
    # out of the bridge port: only wire-sized frames from us, every checksum good
    rows = _tshark_fields(wire_cap, f"ip.src == {ours}", "frame.len", "tcp.len",
                          "ip.checksum.status", "tcp.checksum.status", "ip.id",
                          "ip.flags.df")
    assert rows and all(int(r[0]) <= mtu + 14 for r in rows)
    assert all(r[2] == "1" and r[3] == "1" for r in rows), "a bad checksum on the wire"
    data = [r for r in rows if int(r[1]) > 0]
    assert sum(int(r[1]) for r in data) >= n
    assert sum(1 for r in data if int(r[1]) == mss) >= n // mss - 2  # full-sized pieces
    assert all(r[5] in ("1", "True") for r in rows)  # DF on every piece
    ids = [int(r[4], 16) for r in data]
    steps = sum(1 for a, b in itertools.pairwise(ids) if (b - a) & 0xFFFF == 1)
    assert steps >= 0.95 * (len(ids) - 1)  # consecutive IDs, as reserved
    assert not _tshark_fields(wire_cap, f"ip.src == {ours} && _ws.expert.severity >= "
                              '"Error"', "frame.number")


def test_ipv6_bulk_send_with_tso(make_topology: Callable[..., Topology]) -> None:
    topo = make_topology(mtu=1500, open_tap=False, ipv6=True)
    proc = topo.start([sys.executable, PEER, "--port", str(PORT), "--bind", "::"])
    link = TapLink(mtu=1500, netns=topo.netns, peer_ip=topo.peer_ip, offload=True)
    topo.run(["ip", "-6", "addr", "add", "fd00::1/64", "dev", link.name, "nodad"])
    topo.wait_listening(PORT, proc=proc)
    cfg = Ipv6Config(addresses=(ipaddress.IPv6Interface("fd00::2/64"),), dad_delay=0.1)
    env = OffloadStack(topo, link, ipv6=cfg, seed=3)
    try:
        env.stack.wait_ipv6(10)
        n = 64 * MiB
        s = env.stack.open_stream("fd00::1", PORT, timeout=10)
        s.sendall(b"SINK\n")
        assert send_stream(s, 43, n, 120) == expected_sha(43, n)
        c = env.stack.counters_dict()
        assert s.conn.mss == 1440 - 12 and len(s.conn.remote_ip) == 16
        assert c["ip6"]["gso_out"] == c["tcp"]["tso_out"] == c["link"]["tx_gso_frames"] > 0
        assert c["ip6"].get("too_big", 0) == 0
        assert c["tcp"]["segments_out"] >= n // s.conn.mss
    finally:
        env.close()


def test_tso_refused_by_the_kernel_falls_back_to_plain_segments(
        make_topology: Callable[..., Topology], monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: TUNSETOFFLOAD refuses the TSO flags (as a kernel without them
    would). The TAP keeps checksum offload, TCP sends MSS-sized segments only."""
    real_ioctl = fcntl.ioctl

    def ioctl(fd: int, request: int, arg: Any = 0, *rest: Any) -> Any:
        if request == tap_mod.TUNSETOFFLOAD and isinstance(arg, int) and \
                arg & (tap_mod.TUN_F_TSO4 | tap_mod.TUN_F_TSO6):
            raise OSError(errno.EINVAL, "TSO refused (injected)")
        return real_ioctl(fd, request, arg, *rest)

    monkeypatch.setattr(fcntl, "ioctl", ioctl)  # the module TapLink calls
    env = offload_stack(make_topology, 1500)
    try:
        assert env.link.offload and env.link.gso_max_size == 0
        assert env.stack.tcp.tso_max == 0 and env.stack.tcp.tx_csum_partial
        n = 16 * MiB
        s = env.stack.open_stream(env.topo.peer_addr, PORT)
        s.sendall(b"SINK\n")
        assert send_stream(s, 44, n, 60) == expected_sha(44, n)
        c = env.stack.counters_dict()
        assert c["link"]["tx_gso_frames"] == 0 and c["tcp"].get("tso_out", 0) == 0
        assert c["link"]["tx_csum_offloaded"] > n // 1448
    finally:
        env.close()


def test_offloads_refused_entirely_give_a_plain_tap(
        make_topology: Callable[..., Topology], monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: TUNSETOFFLOAD refused altogether. ``--offload auto`` opens a
    plain TAP (frames as on the wire, no TSO), ``--offload on`` fails."""
    real_ioctl = fcntl.ioctl

    def ioctl(fd: int, request: int, arg: Any = 0, *rest: Any) -> Any:
        if request == tap_mod.TUNSETOFFLOAD:
            raise OSError(errno.EINVAL, "offloads refused (injected)")
        return real_ioctl(fd, request, arg, *rest)

    monkeypatch.setattr(fcntl, "ioctl", ioctl)  # the module TapLink calls
    topo = make_topology(mtu=1500, open_tap=False, bridge=True)
    with pytest.raises(LinkError, match="offloads"):
        open_link(topo.link_options(offload="on"))
    link = open_link(topo.link_options())
    try:
        assert isinstance(link, TapLink) and not link.offload and link.gso_max_size == 0
        loop = Loop()
        stack = NetStack(loop, link, StackConfig(mac=topo.our_mac, ip=topo.our_ip))
        stack.start()
        try:
            assert stack.tcp.tso_max == 0 and not stack.tcp.tx_csum_partial
            proc = topo.start([sys.executable, PEER, "--port", str(PORT)])
            topo.wait_listening(PORT, proc=proc)
            s = stack.open_stream(topo.peer_addr, PORT)
            s.sendall(b"SINK\n")
            assert send_stream(s, 45, 8 * MiB, 60) == expected_sha(45, 8 * MiB)
        finally:
            stack.close()
            loop.close()
    finally:
        link.close()


def test_a_refused_super_frame_is_segmented_and_tso_turned_off(
        make_topology: Callable[..., Topology], monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: the first super-frame write fails with EINVAL (a kernel that
    does not take GSO frames). That frame is cut and sent as segments, TSO goes off for
    the link and the stack, and the transfer completes intact."""
    real_writev = os.writev
    refused: list[int] = []

    def writev(fd: int, buffers: Any) -> int:
        hdr = buffers[0]
        if len(hdr) == VNET_HLEN and hdr[1] and not refused:
            refused.append(len(buffers[1]))
            raise OSError(errno.EINVAL, "GSO refused (injected)")
        return real_writev(fd, buffers)

    monkeypatch.setattr(os, "writev", writev)
    env = offload_stack(make_topology, 1500)
    try:
        n = 16 * MiB
        s = env.stack.open_stream(env.topo.peer_addr, PORT)
        s.sendall(b"SINK\n")
        assert send_stream(s, 46, n, 60) == expected_sha(46, n)
        lc = env.stack.counters_dict()["link"]
        assert refused and lc["tx_gso_refused"] == 1 and lc["tx_gso_split"] >= 1
        assert lc["tx_gso_frames"] == 0
        assert env.link.gso_max_size == 0 and env.stack.tcp.tso_max == 0
        assert env.stack.counters.get("tcp", "retransmits") == 0  # nothing was lost
    finally:
        env.close()


def test_pcap_and_fault_wrappers_get_wire_frames(make_topology: Callable[..., Topology],
                                                 tmp_path: Path) -> None:
    """``--pcap`` (auto offloads) opens a plain TAP: TCP makes no super-segments, the
    capture holds only frames that fit the MTU, and tshark finds every checksum good."""
    if shutil.which("tshark") is None:
        pytest.skip("needs tshark")
    topo = make_topology(mtu=1500, open_tap=False, bridge=True)
    proc = topo.start([sys.executable, PEER, "--port", str(PORT)])
    topo.wait_listening(PORT, proc=proc)
    cap = tmp_path / "ours.pcap"
    opts: LinkOptions = topo.link_options(pcap=cap)
    link = open_link(opts)
    assert isinstance(link, PcapLink)
    loop = Loop()
    stack = NetStack(loop, link, StackConfig(mac=topo.our_mac, ip=topo.our_ip))
    stack.start()
    try:
        assert stack.tcp.tso_max == 0
        n = 4 * MiB
        s = stack.open_stream(topo.peer_addr, PORT)
        s.sendall(b"SINK\n")
        assert send_stream(s, 47, n, 60) == expected_sha(47, n)
    finally:
        stack.close()
        loop.close()
        link.close()
    ours = str(topo.our_ip.ip)
    rows = _tshark_fields(cap, f"ip.src == {ours}", "frame.len", "tcp.checksum.status")
    assert len(rows) >= n // 1460
    assert all(int(r[0]) <= 1514 and r[1] == "1" for r in rows)


def test_no_tso_with_a_vlan_tag(make_topology: Callable[..., Topology]) -> None:
    """TSO stays off under an 802.1Q tag (not testable here: no 8021q, no VLAN
    filtering in the test kernels); checksum offload stays on."""
    topo = make_topology(mtu=1500, open_tap=False, bridge=True)
    link = TapLink(mtu=1500, netns=topo.netns, bridge=topo.bridge, offload=True)
    env = OffloadStack(topo, link, vlan=100)
    try:
        assert link.gso_max_size and env.stack.tcp.tso_max == 0
        assert env.stack.tcp.tx_csum_partial and link.tx_csum_partial
    finally:
        env.close()
