"""TAP offloads against the kernel: checksum offload both ways and GSO super-frames."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from netstack.harness import Topology
from netstack.link.tap import TapLink
from netstack.loop import Loop
from netstack.stack import NetStack, StackConfig
from tests.integration.tcp_peer import receive_all
from tests.integration.test_kernel_tcp import PEER, PORT, expected_sha, send_stream

MiB = 1 << 20


@pytest.mark.parametrize("mtu", [1500, 65520])
def test_offloaded_bulk_both_ways(make_topology: Callable[..., Topology], mtu: int) -> None:
    topo = make_topology(mtu=mtu, open_tap=False, bridge=True)
    proc = topo.start([sys.executable, PEER, "--port", str(PORT)])
    topo.wait_listening(PORT, proc=proc)
    link = TapLink(mtu=mtu, netns=topo.netns, bridge=topo.bridge, offload=True)
    loop = Loop()
    stack = NetStack(loop, link, StackConfig(mac=topo.our_mac, ip=topo.our_ip))
    stack.start()
    try:
        n = 64 * MiB
        s = stack.open_stream(topo.peer_addr, PORT)
        s.sendall(f"SOURCE {n} 21\n".encode())
        sha, count = receive_all(s, 60)
        assert count == n and sha == expected_sha(21, n)
        s.close()
        s2 = stack.open_stream(topo.peer_addr, PORT)
        s2.sendall(b"SINK\n")
        assert send_stream(s2, 22, n, 60) == expected_sha(22, n)
        c = link.counters()
        # the kernel vouched for checksums, handed us GSO super-frames (larger than the
        # MTU allows on the wire at 1500), and completed the checksums of what we sent
        assert c["rx_csum_trusted"] > 0 and c["tx_csum_offloaded"] > 0
        if mtu == 1500:
            assert c["rx_gso_frames"] > 0
        # the kernel's own counters: no checksum errors on its side
        snmp = topo.run(["cat", "/proc/net/snmp"]).stdout
        tcp_lines = [ln.split() for ln in snmp.splitlines() if ln.startswith("Tcp:")]
        stats = dict(zip(tcp_lines[0][1:], tcp_lines[1][1:], strict=True))
        assert stats["InCsumErrors"] == "0"
        assert stack.counters.get("tcp", "bad_checksum") == 0
    finally:
        stack.close()
        loop.close()
        link.close()


def test_offload_refused_with_a_wrapper() -> None:
    from netstack.linkopts import LinkOptionError, LinkOptions

    with pytest.raises(LinkOptionError, match="--offload"):
        LinkOptions(netns="x", pcap=Path("/tmp/x.pcap"), offload="on")
    with pytest.raises(LinkOptionError, match="--offload"):
        LinkOptions(netns="x", offload="sometimes")
    argv = LinkOptions(netns="x", offload="off").to_argv()
    assert argv[argv.index("--offload") + 1] == "off"
    assert "--offload" not in LinkOptions(netns="x").to_argv()  # auto is the default
