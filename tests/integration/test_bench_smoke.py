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
