"""DHCP against a real dnsmasq inside the test's namespace (RFC 2131/2132).

Layout: namespace with bridge ``br0`` (10.81.x.1/24) holding tgtd (a target whose ACL
admits only the initiator name that DHCP option 203 hands out) and dnsmasq, which leases
10.81.x.100-150 for 2 minutes (dnsmasq's minimum) with option 17 (an RFC 4173 root path
naming the target), option 203, and T1/T2 (options 58/59) of 8/16 s so that renewal
happens within the test. bootinit attaches its own TAP to the bridge.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from bootinit.initiator import Initiator
from bootinit.targets import Tgtd
from firmware_tables.uri import parse_target
from netstack import netns as nsh
from netstack.arp import ProbeConfig
from netstack.dhcp import DhcpConfig
from netstack.harness import Topology, topology
from netstack.link.tap import TapLink
from netstack.linkopts import format_mac, random_mac
from netstack.loop import Loop
from netstack.stack import NetStack, StackConfig

TARGET = "iqn.2026-11.org.bootinit:dhcp-disk"
CLIENT = "iqn.2026-11.org.bootinit:dhcp-client"
T1, T2 = 8, 16


@dataclass
class DhcpLab:
    topo: Topology
    tgtd: Tgtd
    dnsmasq: nsh.NetnsProcess
    leases: Path
    log: Path
    server: str
    root_path: str


def start_dnsmasq(topo: Topology, workdir: Path, options: list[str]) -> nsh.NetnsProcess:
    """dnsmasq as the DHCP server on the bridge (DNS off); stopped by PID with the
    topology."""
    net = topo.peer_ip.network
    first, last = net.network_address + 100, net.network_address + 150
    argv = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
            f"--interface={topo.peer_dev}", "--bind-interfaces", "--user=root",
            f"--dhcp-range={first},{last},{net.netmask},2m",
            f"--dhcp-leasefile={workdir / 'leases'}", f"--pid-file={workdir / 'pid'}",
            "--log-dhcp", f"--log-facility={workdir / 'log'}", *options]
    proc = topo.start(argv)
    deadline = time.monotonic() + 10
    while not (workdir / "log").exists() or "DHCP, IP range" not in (workdir / "log"
                                                                      ).read_text():
        if not proc.alive():
            raise RuntimeError(f"dnsmasq exited: {(workdir / 'log').read_text()}")
        if time.monotonic() > deadline:
            raise RuntimeError("dnsmasq did not start in 10 s")
        time.sleep(0.05)
    return proc


@pytest.fixture
def dhcp_lab(requires_netns: None, tmp_path: Path) -> Iterator[DhcpLab]:
    n = os.getpid() % 200 + 20
    server = f"10.81.{n}.1"
    root_path = f"iscsi:{server}::3260:1:{TARGET}"
    with topology(bridge=True, open_tap=False, peer_ip=f"{server}/24",
                  our_ip=f"10.81.{n}.2/24", prefix="bdh") as topo, \
            Tgtd(topo.netns, listen=(server, 3260), lun_dir="/dev/shm") as tgtd:
        # Only the name from option 203 may log in: proves the CLI used it.
        tgtd.add_target(TARGET, ["16M"], initiator_address=None, initiator_name=CLIENT)
        dnsmasq = start_dnsmasq(topo, tmp_path, [
            f"--dhcp-option=option:router,{server}",
            f"--dhcp-option=17,{root_path}",
            f"--dhcp-option=203,{CLIENT}",
            f"--dhcp-option=option:T1,{T1}", f"--dhcp-option=option:T2,{T2}",
        ])
        yield DhcpLab(topo, tgtd, dnsmasq, tmp_path / "leases", tmp_path / "log", server,
                      root_path)
    assert not nsh.exists(topo.netns)


def bootinit(lab: DhcpLab, *args: str, mac: bytes | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    link = ["--netns", lab.topo.netns, "--bridge", "br0"]
    if mac is not None:
        link += ["--mac", format_mac(mac)]
    return subprocess.run([sys.executable, "-m", "bootinit", *args, *link],
                          capture_output=True, text=True, timeout=timeout)


def test_ls_with_dhcp_finds_the_root_path_target(dhcp_lab: DhcpLab) -> None:
    mac = random_mac()
    cp = bootinit(dhcp_lab, "-v", "--json", "ls", "--dhcp", mac=mac)
    assert cp.returncode == 0, cp.stderr
    (entry,) = json.loads(cp.stdout)
    assert entry["target"] == TARGET and entry["portal"] == f"{dhcp_lab.server}:3260"
    luns = {r["lun"]: r for r in entry["luns"]}
    assert luns[1]["type"] == "disk" and luns[1]["size"] == 16 << 20
    # the lease (verbose line) and dnsmasq's own record of it
    dhcp_line = next(line for line in cp.stderr.splitlines() if line.startswith("DHCP: "))
    addr = IPv4Interface(dhcp_line.split()[1])
    assert addr.network == dhcp_lab.topo.peer_ip.network and addr.network.prefixlen == 24
    assert 100 <= int(addr.ip) - int(addr.network.network_address) <= 150
    assert f"root path {dhcp_lab.root_path}" in dhcp_line and CLIENT in dhcp_line
    fields = dhcp_lab.leases.read_text().split()
    assert fields[1] == format_mac(mac) and fields[2] == str(addr.ip)
    log = dhcp_lab.log.read_text()
    assert "vendor class: bootinit" in log and "DHCPACK" in log
    assert "17:root-path" in log and " 203" in log  # asked for in option 55


def test_other_commands_take_the_target_from_dhcp(dhcp_lab: DhcpLab, tmp_path: Path) -> None:
    cp = bootinit(dhcp_lab, "--json", "readcap", "--dhcp")
    assert cp.returncode == 0, cp.stderr
    assert json.loads(cp.stdout)["bytes"] == 16 << 20
    data = os.urandom(4096)
    (tmp_path / "in").write_bytes(data)
    cp = bootinit(dhcp_lab, "write", "--dhcp", "--lba", "7", "-i", str(tmp_path / "in"))
    assert cp.returncode == 0, cp.stderr
    raw = subprocess.run([sys.executable, "-m", "bootinit", "read", "--dhcp", "--lba", "7",
                          "--count", "8", "--netns", dhcp_lab.topo.netns, "--bridge", "br0"],
                         capture_output=True, timeout=120)  # binary stdout: the blocks read
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout == data
    # discover against the root path's portal
    cp = bootinit(dhcp_lab, "discover", "--dhcp")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.split() == [f"{dhcp_lab.server}:3260,1", TARGET]


def test_initiator_name_option_wins_and_static_ip_still_works(dhcp_lab: DhcpLab) -> None:
    # --initiator-name overrides option 203: the target's ACL then refuses the login
    cp = bootinit(dhcp_lab, "ls", "--dhcp", "--initiator-name", "iqn.2026-11.org.x:other")
    assert cp.returncode == 1
    assert "login refused" in cp.stderr and "Traceback" not in cp.stderr
    # --ip keeps the old behaviour (no DHCP at all), and --ip with --dhcp is refused
    url = f"iscsi://{dhcp_lab.server}/{TARGET}/1"
    cp = bootinit(dhcp_lab, "readcap", url, "--ip", f"{dhcp_lab.topo.our_ip}",
                  "--initiator-name", CLIENT)
    assert cp.returncode == 0, cp.stderr
    cp = bootinit(dhcp_lab, "readcap", url, "--ip", f"{dhcp_lab.topo.our_ip}", "--dhcp")
    assert cp.returncode == 1 and "--dhcp: cannot be combined with --ip" in cp.stderr


def test_no_dhcp_server_is_a_timeout_naming_dhcp(requires_netns: None) -> None:
    with topology(bridge=True, open_tap=False, prefix="bdn") as topo:
        cp = subprocess.run([sys.executable, "-m", "bootinit", "ls", "--dhcp",
                             "--dhcp-timeout", "3", "--netns", topo.netns, "--bridge", "br0"],
                            capture_output=True, text=True, timeout=60)
    assert cp.returncode == 2
    assert "no DHCP lease after 3 s (1 DISCOVER, 0 OFFER, 0 ACK, 0 NAK)" in cp.stderr


def test_renewal_with_dnsmasq_then_iscsi_over_the_renewed_lease(dhcp_lab: DhcpLab) -> None:
    """A 2-minute lease with T1 = 8 s, T2 = 16 s: two renewals (unicast DHCPREQUEST to
    dnsmasq, DHCPACK) in ~25 s; the address stays; dnsmasq moves the expiry forward;
    then a login with the lease's root path and initiator name."""
    topo = dhcp_lab.topo
    loop = Loop()
    link = TapLink(netns=topo.netns, bridge="br0")
    stack = NetStack(loop, link, StackConfig(
        mac=random_mac(), dhcp=DhcpConfig(probe=ProbeConfig.fast()), seed=11))
    try:
        stack.start()
        lease = stack.wait_configured(30)
        assert lease is not None
        assert (lease.t1, lease.t2, lease.lease_time) == (T1, T2, 120.0)
        assert lease.root_path == dhcp_lab.root_path and lease.initiator_name == CLIENT
        assert lease.gateway == IPv4Address(dhcp_lab.server)
        assert lease.server_id == IPv4Address(dhcp_lab.server)
        expiry0 = int(dhcp_lab.leases.read_text().split()[0])
        loop.run_until(lambda: sum(e.kind == "renewed" for e in stack.dhcp_events()) >= 2,
                       2 * T1 + 10, "two DHCP renewals")
        kinds = [e.kind for e in stack.dhcp_events()]
        assert kinds == ["bound", "renewed", "renewed"]
        renewed = stack.lease
        assert renewed is not None and renewed.address == lease.address
        assert renewed.start > lease.start + T1 - 1
        c = stack.counters_dict()["dhcp"]
        assert c["renewals"] == 2 and c["rebinds"] == 0 and c["request_out"] == 3
        expiry1 = int(dhcp_lab.leases.read_text().split()[0])
        assert expiry1 >= expiry0 + 2 * T1 - 2
        assert dhcp_lab.log.read_text().count("DHCPACK") == 3
        # the stack still carries iSCSI on the renewed lease
        spec = parse_target(renewed.root_path or "")
        ini = Initiator(stack, renewed.initiator_name)
        s = ini.login(spec)
        assert s.read_capacity().size_bytes == 16 << 20
        s.logout()
    finally:
        with contextlib.suppress(Exception):
            stack.close()
        loop.close()
        link.close()
