"""``--qemu-stream``: bootinit's link is a real QEMU ``-netdev stream`` server socket.

QEMU runs inside the test's namespace with no guest (``-machine none``) as a hub between
a ``-netdev stream,server=on`` UNIX socket (bootinit's side) and a ``-netdev tap``
(``qtap0``, holding the target's address, with tgtd on it). So every frame bootinit sends
goes through QEMU's stream framing code and the kernel's TAP.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bootinit.targets import Tgtd
from netstack import netns as nsh

IQN = "iqn.2026-11.org.bootinit:qemu-stream"


def test_readcap_write_read_through_qemu_stream(requires_netns: None, tmp_path: Path) -> None:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("needs qemu-system-x86_64")
    n = os.getpid() % 200 + 20
    server, ours = f"10.85.{n}.1", f"10.85.{n}.2/24"
    sock = tmp_path / "qemu.sock"
    argv = ["qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none",
            "-monitor", "none", "-serial", "none",
            "-netdev", f"stream,id=s,server=on,addr.type=unix,addr.path={sock}",
            "-netdev", "tap,id=t,ifname=qtap0,script=no,downscript=no",
            "-netdev", "hubport,id=p1,hubid=0,netdev=s",
            "-netdev", "hubport,id=p2,hubid=0,netdev=t"]
    with nsh.namespace("bqs") as ns, \
            nsh.NetnsProcess(ns, argv, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) as qemu:
        deadline = time.monotonic() + 20
        while not (sock.exists() and nsh.link_exists("qtap0", ns)):
            assert qemu.alive(), "qemu exited"
            assert time.monotonic() < deadline, "qemu made no socket/TAP in 20 s"
            time.sleep(0.05)
        nsh.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"], netns=ns)
        nsh.add_address(ns, "qtap0", f"{server}/24")
        nsh.link_up("qtap0", ns)
        with Tgtd(ns, listen=(server, 3260), lun_dir="/dev/shm") as tgtd:
            tgtd.add_target(IQN, ["8M"])
            url = f"iscsi://{server}/{IQN}/1"
            link = ["--qemu-stream", str(sock), "--ip", ours]

            def run(*args: str, stdin: bytes | None = None
                    ) -> subprocess.CompletedProcess[bytes]:
                return subprocess.run([sys.executable, "-m", "bootinit", *args, *link],
                                      capture_output=True, timeout=120, input=stdin)

            cp = run("--json", "readcap", url)
            assert cp.returncode == 0, cp.stderr
            assert b'"bytes": 8388608' in cp.stdout
            data = os.urandom(256 << 10)
            cp = run("write", url, "--lba", "8", "-i", "-", stdin=data)
            assert cp.returncode == 0, cp.stderr
            cp = run("read", url, "--lba", "8", "--count", str(len(data) // 512))
            assert cp.returncode == 0, cp.stderr
            assert cp.stdout == data
    assert not nsh.exists(ns)
