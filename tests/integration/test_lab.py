"""``bootinit lab up|down|status``: namespace + bridge + tgtd, recorded and torn down by PID."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootinit.lab import Lab, LabError, add_lab_parser, handle_down, handle_status, handle_up
from bootinit.targets import pid_alive, pid_state, shutdown_tgtd
from netstack import netns as nsh

SHM = Path("/dev/shm")
PR_SET_CHILD_SUBREAPER = 36
ROOT = Path(__file__).resolve().parents[2]


def run_lab(*argv: str, module: str = "bootinit.lab") -> subprocess.CompletedProcess[str]:
    """``python -m bootinit.lab ARGV`` in a subprocess (as a user would)."""
    return subprocess.run([sys.executable, "-m", module, *argv], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)


def set_subreaper(on: bool) -> None:
    """Adopt orphans (the tgtd that ``lab up`` leaves) so the test can reap them."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def reap(pid: int) -> None:
    """Reap ``pid`` if it is a (zombie) child of ours."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


@pytest.fixture
def lab_names(requires_netns: None) -> Iterator[list[str]]:
    """Names of labs made by the test; each is brought down afterwards, also on failure."""
    if shutil.which("tgtd") is None or shutil.which("iscsi-ls") is None:
        pytest.skip("needs tgtd and iscsi-ls")
    names: list[str] = []
    set_subreaper(True)
    try:
        yield names
    finally:
        set_subreaper(False)
        for name in names:
            lab = Lab(name=name)
            with contextlib.suppress(LabError):
                lab.down()
            nsh.delete(name)
            assert not nsh.exists(name), f"namespace {name} left behind"


def test_lab_cli_up_status_down(lab_names: list[str], tmp_path: Path) -> None:
    name = nsh.unique_name("bilabt")
    lab_names.append(name)
    own = tmp_path / "own.img"
    own.write_bytes(b"\x11" * 4096 + b"\0" * (1 << 20))
    cp = run_lab("up", "--name", name, "--lun", "16M", "--lun", str(own), "--lun-dir",
                 str(SHM), "--chap", "alice:secretsecret1")
    assert cp.returncode == 0, cp.stderr
    assert "url: iscsi://10.77.0.1/iqn.2024-01.org.bootinit:lab/1" in cp.stdout
    assert f"link options: --netns {name} --bridge br0 --ip 10.77.0.2/24" in cp.stdout

    state_path = Path(f"/run/bootinit/lab-{name}.json")
    state = json.loads(state_path.read_text())
    pid = state["tgtd"]["pid"]
    assert state["state"] == "up" and nsh.exists(name) and pid_alive(pid)
    generated = Path(state["luns"][0]["path"])
    assert generated.parent == SHM and generated.stat().st_size == 16 << 20
    assert state["created_files"] == [str(generated)]

    st = run_lab("status", "--name", name)
    assert st.returncode == 0 and f"tgtd pid {pid} alive; listening" in st.stdout, st.stdout

    ls = subprocess.run(["ip", "netns", "exec", name, "iscsi-ls", "-s",
                         "iscsi://alice%secretsecret1@10.77.0.1"],
                        capture_output=True, text=True, timeout=20)
    assert ls.returncode == 0, ls.stdout + ls.stderr
    assert "Lun:1    Type:DIRECT_ACCESS (Size:15M)" in ls.stdout
    assert "Lun:2    Type:DIRECT_ACCESS (Size:1M)" in ls.stdout
    denied = subprocess.run(["ip", "netns", "exec", name, "iscsi-ls", "-s",
                             "iscsi://10.77.0.1"], capture_output=True, text=True, timeout=20)
    assert denied.returncode != 0

    # the main CLI reaches the same lab
    st_json = run_lab("lab", "status", "--name", name, "--json", module="bootinit")
    assert st_json.returncode == 0, st_json.stderr
    assert json.loads(st_json.stdout)["healthy"] is True

    down = run_lab("down", "--name", name)
    assert down.returncode == 0, down.stderr
    assert f"stopped tgtd pid {pid}" in down.stdout
    reap(pid)
    assert pid_state(pid) is None, f"tgtd pid {pid} still there"
    assert not nsh.exists(name) and not state_path.exists()
    assert not generated.exists() and own.exists(), "only generated files are removed"
    assert not Path(state["directory"]).exists()

    gone = run_lab("status", "--name", name)
    assert gone.returncode == 3 and "not up" in gone.stdout
    again = run_lab("down", "--name", name)
    assert again.returncode == 0 and "not up" in again.stdout


def test_lab_down_leaves_a_foreign_pid_alone(lab_names: list[str]) -> None:
    name = nsh.unique_name("bilabt")
    lab_names.append(name)
    cp = run_lab("up", "--name", name, "--lun-dir", str(SHM), "--size", "8M")
    assert cp.returncode == 0, cp.stderr
    state_path = Path(f"/run/bootinit/lab-{name}.json")
    state = json.loads(state_path.read_text())
    info = state["tgtd"]
    info["starttime"] += 1  # as if the PID had been reused by another tgtd
    state_path.write_text(json.dumps(state))
    try:
        down = run_lab("down", "--name", name)
        assert down.returncode == 0, down.stderr
        assert "left alone" in down.stdout
        assert pid_alive(info["pid"]), "a PID that is not ours was signalled"
        assert not nsh.exists(name)
    finally:
        shutdown_tgtd(info["pid"], Path(info["ipc_socket"]), info["control_port"], None)
        reap(info["pid"])
    assert pid_state(info["pid"]) is None


def test_lab_in_process(lab_names: list[str]) -> None:
    lab = Lab(lun_dir=SHM, size="8M", address="10.78.0.1/24", bridge="brlab")
    lab_names.append(lab.name)
    with lab:
        assert lab.link_options == ["--netns", lab.name, "--bridge", "brlab",
                                    "--ip", "10.78.0.2/24"]
        assert lab.url == "iscsi://10.78.0.1/iqn.2024-01.org.bootinit:lab/1"
        assert lab.status().healthy
        with pytest.raises(LabError, match="already up"):
            Lab(name=lab.name).up()
        tgtd = lab.tgtd
        assert tgtd is not None and tgtd.pid is not None
        inq = subprocess.run(["ip", "netns", "exec", lab.name, "iscsi-inq", lab.url],
                             capture_output=True, text=True, timeout=20)
        assert inq.returncode == 0, inq.stdout + inq.stderr
        pid = tgtd.pid
        tgtd.kill()
        st = lab.status()
        assert not st.healthy and not st.tgtd_alive and any("gone" in p for p in st.problems)
    assert not nsh.exists(lab.name) and not lab.state_path.exists()
    assert pid_state(pid) is None


def test_lab_down_stops_a_tgtd_restarted_in_process(lab_names: list[str]) -> None:
    """A test that restarts the lab's tgtd (new PID, unknown to the state file) must not
    leave it running after the lab is down (CI once found it orphaned that way)."""
    lab = Lab(lun_dir=SHM, size="8M", address="10.78.0.1/24", bridge="brlab")
    lab_names.append(lab.name)
    with lab:
        tgtd = lab.tgtd
        assert tgtd is not None and tgtd.pid is not None
        first = tgtd.pid
        tgtd.restart()
        second = tgtd.pid
        assert second is not None and second != first
    assert pid_state(first) is None
    assert pid_state(second) is None
    assert not nsh.exists(lab.name) and not lab.state_path.exists()


def test_lab_up_failure_cleans_up(lab_names: list[str]) -> None:
    lab = Lab(luns=["/nonexistent-dir/x.img"])
    lab_names.append(lab.name)
    with pytest.raises(LabError, match="failed to come up"):
        lab.up()
    assert not nsh.exists(lab.name) and not lab.state_path.exists()


def test_lab_parser_sets_handlers() -> None:
    parser = argparse.ArgumentParser()
    add_lab_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["lab", "up", "--name", "x", "--lun", "a.img", "--lun", "64M",
                              "--size", "3T", "--chap", "u:s"])
    assert args.func is handle_up and args.lun == ["a.img", "64M"] and args.chap == "u:s"
    assert parser.parse_args(["lab", "down"]).func is handle_down
    args = parser.parse_args(["lab", "status", "--name", "y"])
    assert args.func is handle_status and args.name == "y"
    bad = Lab(name="x")
    with pytest.raises(LabError, match="USER:SECRET"):
        handle_up(argparse.Namespace(name=bad.name, chap="nocolon"))
