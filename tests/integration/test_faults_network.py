"""A hostile network against a live connection to the Linux kernel through the TAP.

One namespace holds the kernel side of our TAP and a kernel TCP peer (``tcp_peer.py``);
our stack streams data to it (SINK) while crafted frames (built with scapy) are written
onto the kernel-side interface from inside the namespace with an ``AF_PACKET`` socket,
so they reach our TAP exactly as the kernel's own frames do. Every attack must show in
our counters and the transfer must complete with the right bytes: blind RST and SYN in
and out of the window (RFC 5961 challenge ACK), a segment with a malformed option,
spoofed ARP replies for the peer (a static neighbour is configured:
``StackConfig(neighbors=...)``), an ARP claim of our own address, overlapping IP
fragments and fragments that never complete (timed out), and a kernel-fragmented ping
that must be reassembled and answered.

The same attacks, pure and exhaustive, are in ``tests/reliability/test_hostile_network.py``.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from netstack.harness import Topology, topology
from netstack.ipv4 import ReassemblyConfig
from netstack.linkopts import format_mac
from netstack.loop import Loop
from netstack.stack import NetStack, StackConfig, Stream
from netstack.tcp.connection import TcpConnection
from tests.conftest import netns_problem

scapy_all = pytest.importorskip("scapy.all")
Ether, IP, TCP, ARP, ICMP, Raw = (scapy_all.Ether, scapy_all.IP, scapy_all.TCP, scapy_all.ARP,
                                  scapy_all.ICMP, scapy_all.Raw)

PEER = str(Path(__file__).with_name("tcp_peer.py"))
PORT = 5001
MiB = 1 << 20
ATTACKER_MAC = "02:ba:db:ad:ba:d0"

INJECT = r"""
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
for h in sys.argv[2:]:
    s.send(bytes.fromhex(h))
"""


@dataclass
class Env:
    topo: Topology
    loop: Loop
    stack: NetStack
    peer_mac: str

    @property
    def our_mac(self) -> str:
        return format_mac(self.topo.our_mac)

    def inject(self, *frames: bytes) -> None:
        """Write frames onto the kernel-side interface (they arrive at our TAP)."""
        assert self.topo.peer_dev is not None
        self.topo.run([sys.executable, "-c", INJECT, self.topo.peer_dev,
                       *(f.hex() for f in frames)])

    def count(self, layer: str, name: str) -> int:
        return self.stack.counters.get(layer, name)

    def tcp_to_us(self, conn: TcpConnection, flags: str, seq: int, *, ack: int | None = None,
                  payload: bytes = b"", dataofs: int | None = None) -> bytes:
        t = TCP(sport=conn.remote_port, dport=conn.local_port, flags=flags,
                seq=seq & 0xFFFFFFFF, ack=(conn.snd_una if ack is None else ack) & 0xFFFFFFFF,
                window=65535)
        if dataofs is not None:
            t.dataofs = dataofs
        return bytes(Ether(src=self.peer_mac, dst=self.our_mac)
                     / IP(src=str(self.topo.peer_addr), dst=str(self.topo.our_ip.ip)) / t
                     / Raw(payload))


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    problem = netns_problem()
    if problem is not None:
        pytest.skip(f"network namespace test: {problem}")
    with topology(prefix="bfn") as topo:
        proc = topo.start([sys.executable, PEER, "--port", str(PORT)])
        topo.wait_listening(PORT, proc=proc)
        assert topo.link is not None
        peer_mac = topo.peer_mac()
        loop = Loop()
        stack = NetStack(loop, topo.link, StackConfig(
            mac=topo.our_mac, ip=topo.our_ip, neighbors={topo.peer_addr: peer_mac}))
        stack.start()
        try:
            yield Env(topo, loop, stack, format_mac(peer_mac))
        finally:
            stack.close()
            loop.close()


class Sink:
    """A SINK connection with a known byte stream pushed in pieces."""

    def __init__(self, env: Env, total: int = 8 * MiB, seed: int = 1) -> None:
        self.env = env
        self.stream: Stream = env.stack.open_stream(env.topo.peer_addr, PORT)
        self.stream.sendall(b"SINK\n")
        self.data = (hashlib.sha256(str(seed).encode()).digest() * (total // 32 + 1))[:total]
        self.pos = 0

    @property
    def conn(self) -> TcpConnection:
        return self.stream.conn

    def push(self, n: int) -> None:
        self.stream.sendall(self.data[self.pos:self.pos + n], timeout=60)
        self.pos += n
        self.env.loop.run_for(0.05)

    def finish(self) -> None:
        self.push(len(self.data) - self.pos)
        self.stream.close(30)
        answer = self.stream.recv_exact(64 + 1 + len(str(len(self.data))) + 1, 30)
        digest, count = answer.decode().split()
        assert int(count) == len(self.data)
        assert digest == hashlib.sha256(b"SINK\n"[5:] + self.data).hexdigest()


def test_blind_rst_and_syn_in_and_out_of_window(env: Env) -> None:
    s = Sink(env)
    s.push(2 * MiB)
    c = s.conn
    before = {k: env.count("tcp", k) for k in ("rst_challenged", "challenge_acks",
                                               "syn_challenged", "rst_out_of_window",
                                               "out_of_window")}
    nxt = c.rcv_nxt  # the kernel only ACKs: RCV.NXT does not move
    env.inject(env.tcp_to_us(c, "R", nxt + 1),
               env.tcp_to_us(c, "R", nxt + 20000),
               env.tcp_to_us(c, "RA", nxt + 3),
               env.tcp_to_us(c, "R", nxt - 1),
               env.tcp_to_us(c, "R", nxt + (1 << 30)),
               env.tcp_to_us(c, "S", nxt + 5),
               env.tcp_to_us(c, "S", nxt - 100000))
    s.push(2 * MiB)
    d = {k: env.count("tcp", k) - v for k, v in before.items()}
    assert d["rst_challenged"] == 3, d
    assert d["syn_challenged"] == 1, d
    assert d["rst_out_of_window"] == 2, d
    assert d["out_of_window"] >= 1, d
    assert 4 <= d["challenge_acks"] <= 10, d
    assert c.connected
    s.finish()


def test_malformed_tcp_option_is_dropped_and_counted(env: Env) -> None:
    s = Sink(env, total=2 * MiB, seed=2)
    s.push(MiB)
    c = s.conn
    before = env.count("tcp", "bad_option")
    # data offset 6: the first 4 payload bytes are the options: MSS with length 9
    env.inject(env.tcp_to_us(c, "A", c.rcv_nxt, payload=b"\x02\x09\x05\xb4junk",
                             dataofs=6))
    s.push(512 * 1024)
    assert env.count("tcp", "bad_option") - before == 1
    assert c.connected and c.available() == 0
    s.finish()


def test_spoofed_arp_for_the_peer_does_not_redirect_the_connection(env: Env) -> None:
    s = Sink(env, total=4 * MiB, seed=3)
    s.push(MiB)
    peer, ours = str(env.topo.peer_addr), str(env.topo.our_ip.ip)
    before = env.count("arp", "static_conflicts")
    env.inject(
        bytes(Ether(src=ATTACKER_MAC, dst=env.our_mac)
              / ARP(op=2, hwsrc=ATTACKER_MAC, psrc=peer, hwdst=env.our_mac, pdst=ours)),
        bytes(Ether(src=ATTACKER_MAC, dst="ff:ff:ff:ff:ff:ff")
              / ARP(op=1, hwsrc=ATTACKER_MAC, psrc=peer, hwdst="00:00:00:00:00:00",
                    pdst=peer)))
    s.push(MiB)
    assert env.count("arp", "static_conflicts") - before == 2
    assert env.stack.iface.arp.lookup(env.topo.peer_addr.packed, env.loop.time()) == \
        bytes.fromhex(env.peer_mac.replace(":", ""))
    s.finish()


def test_arp_claim_of_our_address_is_counted_and_defended(env: Env) -> None:
    ours = str(env.topo.our_ip.ip)
    before = env.count("arp", "conflicts")
    env.inject(*[bytes(Ether(src=ATTACKER_MAC, dst="ff:ff:ff:ff:ff:ff")
                       / ARP(op=2, hwsrc=ATTACKER_MAC, psrc=ours, hwdst="ff:ff:ff:ff:ff:ff",
                             pdst=ours)) for _ in range(5)])
    env.loop.run_for(0.2)
    assert env.count("arp", "conflicts") - before == 5
    assert env.count("arp", "defended") >= 1
    # the kernel still reaches us (its neighbour entry was not taken over by the claim)
    s = Sink(env, total=MiB, seed=4)
    s.finish()


def _icmp_echo(ident: int, size: int) -> bytes:
    return bytes(ICMP(type=8, id=ident, seq=1) / Raw(bytes(range(256)) * (size // 256 + 1)))[
        :size + 8]


def test_overlapping_fragments_are_dropped(env: Env) -> None:
    peer, ours = str(env.topo.peer_addr), str(env.topo.our_ip.ip)
    echo = _icmp_echo(0x4242, 200)
    eth = Ether(src=env.peer_mac, dst=env.our_mac)
    before_overlap = env.count("ip", "reassembly_overlap")
    before_replies = env.count("icmp", "echo_out")
    first = eth / IP(src=peer, dst=ours, id=777, flags="MF", frag=0, proto=1) / Raw(echo[:96])
    evil = eth / IP(src=peer, dst=ours, id=777, flags="MF", frag=8, proto=1) / Raw(
        bytes(b ^ 0xFF for b in echo[64:160]))
    last = eth / IP(src=peer, dst=ours, id=777, frag=12, proto=1) / Raw(echo[96:])
    env.inject(bytes(first), bytes(evil), bytes(last))
    env.loop.run_for(0.3)
    assert env.count("ip", "reassembly_overlap") - before_overlap == 1
    assert env.count("icmp", "echo_out") == before_replies


def test_fragments_that_never_complete_time_out(env: Env) -> None:
    r = env.stack.iface.ipv4.reassembler
    saved = r.config
    r.config = ReassemblyConfig(timeout=1.0, max_datagrams=saved.max_datagrams,
                                max_bytes=saved.max_bytes)
    try:
        peer, ours = str(env.topo.peer_addr), str(env.topo.our_ip.ip)
        eth = Ether(src=env.peer_mac, dst=env.our_mac)
        before = env.count("ip", "reassembly_timeouts")
        r.on_deadline(env.loop.time() + 3600)  # forget what earlier tests left
        env.inject(*[bytes(eth / IP(src=peer, dst=ours, id=900 + i, flags="MF", frag=0,
                                    proto=6) / Raw(bytes(1000))) for i in range(4)])
        env.loop.run_for(0.3)
        assert len(r) == 4 and r.bytes_held >= 4000
        env.loop.run_for(1.5)
        assert env.count("ip", "reassembly_timeouts") - before >= 4
        assert len(r) == 0 and r.bytes_held == 0
    finally:
        r.config = saved


def test_kernel_fragmented_ping_is_reassembled_and_answered(env: Env) -> None:
    ping = subprocess.Popen(["ip", "netns", "exec", env.topo.netns, "ping", "-c", "2", "-i",
                             "0.2", "-W", "2", "-s", "4000", str(env.topo.our_ip.ip)],
                            stdout=subprocess.PIPE, text=True)
    try:
        env.loop.run_until(lambda: ping.poll() is not None, 15, "ping to finish")
    finally:
        if ping.poll() is None:
            ping.kill()
        ping.wait()
    out = ping.stdout.read() if ping.stdout else ""
    assert ping.returncode == 0, out
    assert "2 received" in out
    assert env.count("ip", "reassembled") >= 2
