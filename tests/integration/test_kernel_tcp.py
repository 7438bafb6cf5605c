"""Our stack against the Linux kernel's TCP, in a namespace the test makes (issue: netstack)."""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from netstack.harness import Topology
from netstack.loop import Loop
from netstack.stack import NetStack, StackConfig, Stream
from netstack.tcp.connection import TcpConfig, TcpError, TcpState
from tests.integration.tcp_peer import receive_all, stream

PEER = str(Path(__file__).with_name("tcp_peer.py"))
PORT = 5001
MiB = 1024 * 1024


@contextlib.contextmanager
def peer_stack(make_topology: Callable[..., Topology], tcp: TcpConfig | None = None,
               **topo_kw: object) -> Iterator[tuple[Topology, NetStack]]:
    topo = make_topology(**topo_kw)
    proc = topo.start([sys.executable, PEER, "--port", str(PORT)])
    topo.wait_listening(PORT, proc=proc)
    assert topo.link is not None
    loop = Loop()
    stack = NetStack(loop, topo.link, StackConfig(mac=topo.our_mac, ip=topo.our_ip, tcp=tcp))
    stack.start()
    try:
        yield topo, stack
    finally:
        stack.close()
        loop.close()


def command(stack: NetStack, topo: Topology, line: str) -> Stream:
    s = stack.open_stream(topo.peer_addr, PORT)
    s.sendall(line.encode() + b"\n")
    return s


def expected_sha(seed: int, n: int) -> str:
    h = hashlib.sha256()
    for chunk in stream(seed, n):
        h.update(chunk)
    return h.hexdigest()


def send_stream(s: Stream, seed: int, n: int, timeout: float) -> str:
    for chunk in stream(seed, n):
        s.sendall(chunk, timeout)
    s.close(timeout)
    answer = s.recv_exact(64 + 1 + len(str(n)) + 1, timeout).decode().split()
    return answer[0] if int(answer[1]) == n else f"short:{answer[1]}"


def test_ping_from_namespace_is_answered(make_topology: Callable[..., Topology]) -> None:
    with peer_stack(make_topology) as (topo, stack):
        pinger = subprocess.Popen(["ip", "netns", "exec", topo.netns, "ping", "-c", "3",
                                   "-i", "0.2", "-W", "2", str(topo.our_ip.ip)],
                                  stdout=subprocess.PIPE, text=True)
        stack.loop.run_until(lambda: pinger.poll() is not None, 15, "ping to finish")
        out = pinger.stdout.read() if pinger.stdout else ""
        assert pinger.returncode == 0, out
        assert "3 received" in out
        assert stack.counters.get("icmp", "echo_out") >= 3


@pytest.mark.parametrize("mtu", [1500, 9000])
def test_bulk_receive_256mib(make_topology: Callable[..., Topology], mtu: int) -> None:
    n = 256 * MiB
    with peer_stack(make_topology, mtu=mtu) as (topo, stack):
        s = command(stack, topo, f"SOURCE {n} 7")
        sha, count = receive_all(s, 60)
        assert count == n
        assert sha == expected_sha(7, n)
        s.close()
        assert s.conn.error is None


@pytest.mark.parametrize("mtu", [1500, 9000])
def test_bulk_send_256mib(make_topology: Callable[..., Topology], mtu: int) -> None:
    n = 256 * MiB
    with peer_stack(make_topology, mtu=mtu) as (topo, stack):
        s = command(stack, topo, "SINK")
        assert send_stream(s, 11, n, 60) == expected_sha(11, n)


def test_many_short_connections(make_topology: Callable[..., Topology]) -> None:
    with peer_stack(make_topology) as (topo, stack):
        for i in range(40):
            s = command(stack, topo, "ECHO")
            msg = f"hello {i}".encode() * 10
            s.sendall(msg)
            assert s.recv_exact(len(msg), 10) == msg
            s.close()
            stack.loop.run_until(lambda s=s: s.conn.eof, 10, "peer FIN")  # type: ignore[misc]
        ports = {c.local_port for c in stack.tcp.connections()}
        assert len(ports) == len(stack.tcp.connections())
        assert stack.counters.get("tcp", "connects") == 40


def test_peer_closes_first(make_topology: Callable[..., Topology]) -> None:
    with peer_stack(make_topology) as (topo, stack):
        s = command(stack, topo, "SOURCE 1000 3")
        sha, n = receive_all(s, 10)
        assert n == 1000 and sha == expected_sha(3, 1000)
        assert s.conn.state == TcpState.CLOSE_WAIT
        s.conn.close(stack.loop.time())
        stack.loop.run_until(lambda: s.conn.state == TcpState.CLOSED, 10, "LAST-ACK to end")
        assert s.conn.error is None


def test_stack_closes_first(make_topology: Callable[..., Topology]) -> None:
    with peer_stack(make_topology) as (topo, stack):
        s = command(stack, topo, "HOLD")
        s.sendall(b"x" * 100_000)
        s.close()
        stack.loop.run_until(lambda: s.conn.state == TcpState.TIME_WAIT, 10, "TIME-WAIT")
        assert s.conn.error is None
        assert s.conn.eof


def test_peer_reset_is_an_error_event(make_topology: Callable[..., Topology]) -> None:
    with peer_stack(make_topology) as (topo, stack):
        s = command(stack, topo, "RST")
        events: list[str] = []
        s.conn.callback = lambda c: events.append(c.state.value)
        with pytest.raises(TcpError) as ei:
            s.recv_exact(1, 10)
        assert ei.value.reason == "reset"
        assert s.conn.state == TcpState.CLOSED
        assert "CLOSED" in events


def test_connection_refused(make_topology: Callable[..., Topology]) -> None:
    with peer_stack(make_topology) as (topo, stack), pytest.raises(TcpError) as ei:
        stack.open_stream(topo.peer_addr, PORT + 1, timeout=10)
    assert ei.value.reason == "refused"


LOSSY = [
    ("loss=0.01,reorder=0.02,dup=0.01,seed=1", 64 * MiB),
    ("loss=0.05,reorder=0.02,dup=0.01,seed=2", 64 * MiB),
    ("loss=0.20,reorder=0.02,dup=0.01,seed=3", 64 * MiB),
]


@pytest.mark.parametrize("fault,n", LOSSY)
def test_lossy_transfers(make_topology: Callable[..., Topology], fault: str, n: int) -> None:
    tcp = TcpConfig(min_rto=0.02)
    with peer_stack(make_topology, tcp=tcp, mtu=9000, fault=fault) as (topo, stack):
        # The kernel's retransmission floor is 200 ms; lower it on the namespace's route
        # as we do for ours, so a lossy minute stays a minute.
        topo.run(["ip", "route", "change", str(topo.our_ip.network), "dev",
                  str(topo.peer_dev), "rto_min", "20ms"], check=False)
        s = command(stack, topo, f"SOURCE {n} 5")
        sha, count = receive_all(s, 120)
        assert count == n and sha == expected_sha(5, n)
        s.close(30)
        s2 = command(stack, topo, "SINK")
        assert send_stream(s2, 6, n, 120) == expected_sha(6, n)
        link = stack.counters_dict()["link"]
        assert stack.counters.get("tcp", "retransmits") > 0
        assert link["fault.tx_lost"] > 0 and link["fault.rx_lost"] > 0, link
        assert link["fault.rx_reordered"] > 0 and link["fault.rx_duplicated"] > 0, link


def test_capture_dissects_cleanly(make_topology: Callable[..., Topology],
                                  tmp_path: Path) -> None:
    pcap = tmp_path / "run.pcap"
    with peer_stack(make_topology, pcap=str(pcap)) as (topo, stack):
        s = command(stack, topo, "ECHO")
        s.sendall(b"y" * 300_000)
        got = b""
        while len(got) < 300_000:
            got += s.recv_some(10)
        s.close()
        stack.loop.run_until(lambda: s.conn.eof, 10, "peer FIN")
    ours = topo.our_ip.ip
    cp = subprocess.run(
        ["tshark", "-r", str(pcap), "-o", "ip.check_checksum:TRUE",
         "-o", "tcp.check_checksum:TRUE", "-Y",
         f"ip.src == {ours} && (_ws.malformed || ip.checksum.status == \"Bad\" || "
         "tcp.checksum.status == \"Bad\" || _ws.expert.severity >= \"Error\")"],
        capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == ""
    count = subprocess.run(["tshark", "-r", str(pcap), "-Y", f"ip.src == {ours}"],
                           capture_output=True, text=True, timeout=120).stdout
    assert len(count.splitlines()) > 50
    scapy_all = pytest.importorskip("scapy.all")
    frames = scapy_all.rdpcap(str(pcap))
    checked = 0
    for f in frames:
        if scapy_all.IP in f and f[scapy_all.IP].src == str(ours):
            ip = f[scapy_all.IP]
            raw = bytes(ip)
            redo = scapy_all.IP(raw)
            want_ip = redo.chksum
            del redo.chksum
            assert scapy_all.IP(bytes(redo)).chksum == want_ip
            if scapy_all.TCP in redo:
                t = scapy_all.IP(raw)
                want = t[scapy_all.TCP].chksum
                del t[scapy_all.TCP].chksum
                assert scapy_all.IP(bytes(t))[scapy_all.TCP].chksum == want
            checked += 1
    assert checked > 50


def pump(stack: NetStack, seconds: float) -> None:
    """Run the loop for ``seconds``."""
    end = stack.loop.time() + seconds
    while (left := end - stack.loop.time()) > 0:
        stack.loop.run_once(min(left, 0.05))


def _peer_connections(topo: Topology, port: int) -> list[str]:
    """The kernel's connections from ``port`` in the namespace, not the listener (``ss``)."""
    out = topo.run(["ss", "-Htn", "state", "connected", f"( sport = :{port} )"]).stdout
    return [line for line in out.splitlines() if line.strip()]


def test_a_connection_aborted_on_a_dead_path_is_reset_when_the_path_returns(
        make_topology: Callable[..., Topology]) -> None:
    """The kernel keeps sending on a connection we aborted while the link was down (our
    RST was lost). Once the link is back and a new handshake with the peer completes,
    our stack sends that RST again (``TcpLayer.bury``): the kernel drops the old
    connection at once, not at its next retransmission (exponential backoff: after 8 s
    down the next one is ~4 s away)."""
    with peer_stack(make_topology) as (topo, stack):
        assert topo.tap is not None
        old = command(stack, topo, f"SOURCE {1 << 30} 3")
        old.recv_exact(256 * 1024, 10)  # the kernel is sending
        topo.run(["ip", "link", "set", "dev", topo.tap.name, "down"])
        old.conn.abort(stack.loop.time())
        assert old.conn.state is TcpState.CLOSED
        assert stack.counters.get("tcp", "tombstones") == 1
        pump(stack, 8.0)
        assert len(_peer_connections(topo, PORT)) == 1  # still sending into the void
        topo.run(["ip", "link", "set", "dev", topo.tap.name, "up"])
        new = command(stack, topo, "SOURCE 1000 4")
        new.wait_connected(10)
        assert stack.counters.get("tcp", "tombstone_resets") == 1
        pump(stack, 1.0)
        conns = _peer_connections(topo, PORT)
        assert len(conns) <= 1, conns  # only the new one (or none, once it finished)
        sha, count = receive_all(new, 10)
        assert count == 1000 and sha == expected_sha(4, 1000)
