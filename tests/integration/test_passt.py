"""Rootless: bootinit as user ``nobody`` over passt's socket (``--passt``), no TAP.

Layout, all inside one namespace the test makes: a veth pair (``veth0`` 10.83.x.2/24
with the default route via ``veth1`` 10.83.x.1 — passt needs an interface with a
default route to take its addresses from), tgtd listening on 127.0.0.1:3260 only, and
``passt -f -s SOCKET`` (started as root, it drops to ``nobody`` and creates the socket
as ``nobody``). bootinit runs under ``setpriv --reuid nobody``, gets 10.83.x.2 by DHCP
from passt, and connects to the gateway address 10.83.x.1, which passt maps to the
namespace's loopback (passt(1), "Handling of traffic with local destination and source
addresses": the gateway address as destination becomes a loopback address; this passt
has no --map-host-loopback option, the mapping is its default, --no-map-gw turns it
off). Every connection stays in that namespace.

The project's interpreter may live where ``nobody`` cannot enter (pyenv under /root,
mode 0700): then Debian's python3 of the same minor version runs the checkout with the
runtime dependencies (crc32c, pytap2) copied to a directory ``nobody`` can read.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bootinit.targets import Tgtd
from netstack import netns as nsh

IQN = "iqn.2026-11.org.bootinit:passt"
REPO = Path(__file__).resolve().parents[2]
SETPRIV = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"]


@dataclass
class PasstEnv:
    netns: str
    socket: Path
    gateway: str
    address: str
    tgtd: Tgtd
    python: str
    env: dict[str, str]


def _as_nobody(argv: list[str], env: dict[str, str], timeout: float = 120,
               stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*SETPRIV, *argv], capture_output=True, timeout=timeout, env=env,
                          cwd="/", input=stdin)


@contextlib.contextmanager
def nobody_python() -> Iterator[tuple[str, dict[str, str]]]:
    """An interpreter ``nobody`` can run, and the environment to import bootinit."""
    deps = Path(tempfile.mkdtemp(prefix="bipydeps", dir="/tmp"))
    try:
        for name in ("crc32c", "pytap2"):
            dist = importlib.metadata.distribution(name)
            for f in dist.files or ():
                if "__pycache__" in f.parts or ".." in f.parts:
                    continue
                dst = deps / f
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(str(dist.locate_file(f))), dst)
        for root, dirs, files in os.walk(deps):
            os.chmod(root, 0o755)
            for x in files:
                os.chmod(os.path.join(root, x), 0o644)
            del dirs[:0]
        os.chmod(deps, 0o755)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONPATH": f"{REPO}:{deps}"}
        probe = "import crc32c, netstack.link.stream, bootinit.commands"
        want = f"{sys.version_info.major}.{sys.version_info.minor}"
        for py in (sys.executable, f"/usr/bin/python{want}", "/usr/bin/python3"):
            if not os.path.exists(py):
                continue
            cp = _as_nobody([py, "-c", f"{probe}; import sys; print(sys.version)"], env, 60)
            if cp.returncode == 0 and cp.stdout.decode().startswith(want):
                yield py, env
                return
        pytest.skip(f"no Python {want} that user nobody can run with bootinit imported")
    finally:
        shutil.rmtree(deps, ignore_errors=True)


@pytest.fixture
def passt_env(requires_netns: None) -> Iterator[PasstEnv]:
    for tool in ("passt", "setpriv"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    n = os.getpid() % 200 + 20
    gw, addr = f"10.83.{n}.1", f"10.83.{n}.2"
    nobody = pwd.getpwnam("nobody")
    sockdir = Path(tempfile.mkdtemp(prefix="bipasst", dir="/tmp"))
    try:
        os.chown(sockdir, nobody.pw_uid, nobody.pw_gid)
        with nsh.namespace("bps") as ns, nobody_python() as (py, env):
            nsh.run(["ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1"],
                    netns=ns)
            nsh.add_address(ns, "veth0", f"{addr}/24")
            nsh.add_address(ns, "veth1", f"{gw}/24")
            nsh.link_up("veth0", ns)
            nsh.link_up("veth1", ns)
            nsh.run(["ip", "route", "add", "default", "via", gw, "dev", "veth0"], netns=ns)
            sock = sockdir / "passt.sock"
            with Tgtd(ns, listen=("127.0.0.1", 3260), lun_dir="/dev/shm") as tgtd, \
                    nsh.NetnsProcess(ns, ["passt", "-f", "-4", "-s", str(sock)],
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL) as passt:
                tgtd.add_target(IQN, ["8M"])
                deadline = time.monotonic() + 10
                while not sock.exists():
                    assert passt.alive(), "passt exited"
                    assert time.monotonic() < deadline, "passt made no socket in 10 s"
                    time.sleep(0.05)
                assert sock.stat().st_uid == nobody.pw_uid  # passt dropped to nobody
                yield PasstEnv(ns, sock, gw, addr, tgtd, py, env)
        assert not nsh.exists(ns)
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


def bootinit(env: PasstEnv, *args: str,
             stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return _as_nobody([env.python, "-m", "bootinit", *args], env.env, stdin=stdin)


def test_unprivileged_dhcp_and_lun_io_through_passt(passt_env: PasstEnv) -> None:
    env = passt_env
    url = f"iscsi://{env.gateway}/{IQN}/1"
    link = ["--dhcp", "--passt", str(env.socket)]
    cp = bootinit(env, "-v", "--json", "readcap", url, *link)
    assert cp.returncode == 0, cp.stderr
    assert b'"bytes": 8388608' in cp.stdout
    err = cp.stderr.decode()
    assert f"DHCP: {env.address}/24 gateway {env.gateway} from " in err
    # write then read back 1 MiB (two more connections through passt)
    data = os.urandom(1 << 20)
    cp = bootinit(env, "write", url, "--lba", "64", "-i", "-", *link, stdin=data)
    assert cp.returncode == 0, cp.stderr
    cp = bootinit(env, "read", url, "--lba", "64", "--count", str(len(data) // 512), *link)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == data
    backing = Path(env.tgtd.created_files[0]).read_bytes()[64 * 512:64 * 512 + len(data)]
    assert backing == data
    # the same user cannot make a TAP: the passt socket is what made this work
    cp = bootinit(env, "readcap", url, "--netns", env.netns, "--ip", f"{env.address}/24")
    assert cp.returncode != 0 and b"Traceback" not in cp.stderr
