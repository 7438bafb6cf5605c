"""Smoke tests of the benchmarks: they run with tiny sizes and print complete tables.

Only the shape of the output is checked (every expected row, positive numbers): never
a speed, which depends on whatever else runs on the machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from ipaddress import IPv4Interface
from pathlib import Path

import pytest

from tests.conftest import netns_problem

ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"[0-9]+(?:\.[0-9]+)?"


@pytest.fixture(autouse=True)
def _environment() -> None:
    problem = netns_problem()
    if problem is not None:
        pytest.skip(f"network namespace test: {problem}")


def run_bench(script: str, *args: str, timeout: float = 240.0) -> str:
    """Run ``bench/<script>`` from the repository root; its stdout (exit 0 asserted)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    cp = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=timeout)
    assert cp.returncode == 0, (f"{script} {' '.join(args)}: exit {cp.returncode}\n"
                                f"stdout:\n{cp.stdout[-3000:]}\nstderr:\n{cp.stderr[-3000:]}")
    return cp.stdout


def positive(text: str) -> float:
    """``text`` as a number, asserted > 0."""
    value = float(text)
    assert value > 0, text
    return value


def test_iscsi_io_tiny(tmp_path: Path) -> None:
    for tool in ("tgtd", "tgtadm", "iscsi-perf", "qemu-img"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    json_file = tmp_path / "iscsi_io.json"
    out = run_bench("iscsi_io.py", "--size", "8M", "--mtu", "1500", "--mtu", "9000",
                    "--random-count", "200", "--random-seconds", "1", "--perf-seconds", "1",
                    "--json-file", str(json_file))
    row = re.compile(rf"^(?P<test>[a-z0-9-]+)\s+(?P<who>bootinit|iscsi-perf|qemu-img)\s+"
                     rf"(?P<mtu>\d+|-)\s+(?P<mbs>{NUMBER})\s+(?P<iops>{NUMBER}|-)\s+"
                     rf"(?P<reqs>\d+|-)\s+(?P<secs>{NUMBER})\s+(?P<rperf>{NUMBER}|-)\s+"
                     rf"(?P<rqemu>{NUMBER}|-)(?:\s|$)")
    rows = {}
    for line in out.splitlines():
        m = row.match(line)
        if m is not None:
            rows[(m["test"], m["who"], m["mtu"])] = m
    expected = set()
    for test in ("seq-read", "seq-write", "rand-read-qd1", "rand-read-qd32"):
        for mtu in ("1500", "9000"):
            expected.add((test, "bootinit", mtu))
    expected |= {("seq-read", "iscsi-perf", "-"), ("rand-read-qd1", "iscsi-perf", "-"),
                 ("rand-read-qd32", "iscsi-perf", "-"), ("seq-read", "qemu-img", "-"),
                 ("seq-write", "qemu-img", "-")}
    assert set(rows) == expected, out
    for (test, who, _mtu), m in rows.items():
        positive(m["mbs"])
        positive(m["secs"])
        if test.startswith("rand"):
            positive(m["iops"])
        if who == "bootinit":
            positive(m["reqs"])
            if test != "seq-write":
                positive(m["rperf"])
            if test.startswith("seq"):
                positive(m["rqemu"])
    doc = json.loads(json_file.read_text())
    assert len(doc["rows"]) == len(expected)
    assert all(r["mb_per_s"] > 0 and r["bytes"] > 0 for r in doc["rows"])
    assert doc["info"]["negotiated"]["block_size"] == 512


def test_tcp_bulk_tiny() -> None:
    out = run_bench("tcp_bulk.py", "--size-mib", "8", "--mtu", "1500",
                    "--ceiling-seconds", "0.5")
    found = {}
    for line in out.splitlines():
        m = re.match(rf"^\s*1500\s+(on|off)\s+(recv|send)\s+({NUMBER})\s+({NUMBER})"
                     rf"\s+({NUMBER})\s*$", line)
        if m is not None:
            found[(m[1], m[2])] = [positive(m[i]) for i in (3, 4, 5)]
    assert set(found) == {("off", "recv"), ("off", "send"), ("on", "recv"),
                          ("on", "send")}, out


def test_tap_ceiling_short() -> None:
    out = run_bench("tap_ceiling.py", "--mtu", "1500", "--duration", "0.3")
    found = {}
    for line in out.splitlines():
        m = re.match(rf"^(tx|rx|echo)\s+mtu\s+1500:\s+({NUMBER}) MB/s\s+({NUMBER}) frames/s",
                     line)
        if m is not None:
            found[m[1]] = (positive(m[2]), positive(m[3]))
    assert set(found) == {"tx", "rx", "echo"}, out


RUN_ALL_ROW = re.compile(
    rf"^(?P<part>iscsi|tcp|kernel)\s+(?P<test>[a-z0-9-]+)\s+(?P<who>[a-z-]+)\s+"
    rf"(?P<mtu>\d+|-)\s+(?P<offload>on|off|-)\s+(?P<mbs>{NUMBER}|n/a)\s+"
    rf"(?P<iops>{NUMBER}|-)\s+(?P<check>ok|-|n/a|FAIL)(?:\s+(?P<rest>.*))?$")


def _pytcp_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("pmd_pytcp") is not None


def test_run_all_tiny(tmp_path: Path) -> None:
    for tool in ("tgtd", "tgtadm", "iscsi-perf", "qemu-img"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    json_file = tmp_path / "run_all.json"
    out = run_bench("run_all.py", "--quick", "--size", "4M", "--tcp-size", "4M",
                    "--pytcp-size", "1M", "--random-count", "300", "--random-seconds", "0.5",
                    "--perf-seconds", "1", "--ceiling-seconds", "0.3",
                    "--json-file", str(json_file), timeout=180)
    rows = {}
    for line in out.splitlines():
        m = RUN_ALL_ROW.match(line)
        if m is not None:
            key = (m["part"], m["test"], m["who"], m["mtu"], m["offload"])
            assert key not in rows, line
            rows[key] = m
    expected = set()
    for test in ("seq-read", "seq-write", "rand-read-qd1", "rand-read-qd32"):
        for mtu in ("1500", "65520"):
            for off in ("off", "on"):
                expected.add(("iscsi", test, "bootinit", mtu, off))
    expected |= {("iscsi", t, "iscsi-perf", "-", "-")
                 for t in ("seq-read", "rand-read-qd1", "rand-read-qd32")}
    expected |= {("iscsi", t, "qemu-img", "-", "-") for t in ("seq-read", "seq-write")}
    for d in ("tcp-recv", "tcp-send"):
        for mtu in ("1500", "65520"):
            expected |= {("tcp", d, "bootinit", mtu, "off"), ("tcp", d, "bootinit", mtu, "on"),
                         ("tcp", d, "pytcp", mtu, "off"), ("tcp", d, "tap-raw", mtu, "off")}
        expected.add(("kernel", d, "kernel", "65520", "on"))
    assert set(rows) == expected, out
    pytcp = _pytcp_installed()
    for (part, test, who, _mtu, _off), m in rows.items():
        if who == "pytcp" and not pytcp:
            assert m["check"] == "n/a" and "pmd-pytcp not installed" in m["rest"], m[0]
            continue
        positive(m["mbs"])
        if test.startswith("rand"):
            positive(m["iops"])
        # Every transfer that can be checked was (data compared, or sha256 both ways).
        verified = who in ("bootinit", "pytcp", "kernel") or (who, test) == (
            "qemu-img", "seq-write")
        assert m["check"] == ("ok" if verified else "-"), m[0]
        if who == "bootinit" and part == "tcp":
            assert "/tap" in m["rest"] and ("/pytcp" in m["rest"]) == pytcp, m[0]
            if m["mtu"] == "65520":
                assert "/kernel" in m["rest"], m[0]
        if who == "bootinit" and test.startswith("seq"):
            assert ">=0.8x libiscsi: " in m["rest"], m[0]
    goals = out[out.index("goals (issue 6):"):].splitlines()[1:]
    assert len(goals) == 4 and all(re.search(r"(MET|not met|cannot be judged)", g)
                                   for g in goals), out
    doc = json.loads(json_file.read_text())
    assert len(doc["rows"]) == len(expected)
    assert not [r for r in doc["rows"] if r["check"] == "FAIL"]
    assert [g["goal"] for g in doc["goals"]] == ["seq-read", "seq-write", "pytcp", "kernel"]
    assert doc["info"]["kernel_veth"]["recv_sha_ok"] and doc["info"]["kernel_veth"]["send_sha_ok"]
    if pytcp:
        for res in doc["info"]["pytcp"].values():
            assert res["recv_sha_ok"] and res["send_sha_ok"], res


def test_run_all_reports_missing_pytcp(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without pmd-pytcp the PyTCP rows say so (n/a with the reason), nothing is run."""
    from bench import pytcp_peer, run_all
    from netstack.harness import Topology

    monkeypatch.setattr(pytcp_peer, "unavailable", lambda: pytcp_peer.INSTALL_HINT)
    topo = Topology(netns="none", peer_ip=IPv4Interface("10.77.0.1/24"),
                    our_ip=IPv4Interface("10.77.0.2/24"), our_mac=bytes(6), mtu=1500,
                    bridge=None, peer_dev=None)
    rows = run_all._pytcp_rows(pytcp_peer.measure(topo, 5001, 1 << 20))
    assert [(r.test, r.check) for r in rows] == [("tcp-recv", "n/a"), ("tcp-send", "n/a")]
    assert all("pmd-pytcp not installed" in r.note for r in rows)
    info = {"settings": run_all.dataclasses.asdict(run_all.Settings(parts=["tcp"])),
            "date": "now", "cpus": 2, "load_start": 0.0, "python": "3", "kernel": "6"}
    text = run_all.table(rows, run_all.goal_summary(rows), info)
    assert text.count("pmd-pytcp not installed (pip install '.[bench]')") == 2, text
