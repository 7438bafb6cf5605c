"""Smoke tests of the benchmarks: they run with tiny sizes and print complete tables.

Only the shape of the output is checked (every expected row, positive numbers): never
a speed, which depends on whatever else runs on the machine.
"""

from __future__ import annotations

import dataclasses
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
                     rf"(?P<rmtu>{NUMBER}|-)\s+(?P<rqemu>{NUMBER}|-)(?:\s|$)")
    rows = {}
    for line in out.splitlines():
        m = row.match(line)
        if m is not None:
            rows[(m["test"], m["who"], m["mtu"])] = m
    expected = set()
    for test in ("seq-read", "seq-read-1st", "seq-write", "rand-read-qd1",
                 "rand-read-qd32"):
        for mtu in ("1500", "9000"):
            expected.add((test, "bootinit", mtu))
    expected |= {("seq-read", "iscsi-perf", "-"), ("rand-read-qd1", "iscsi-perf", "-"),
                 ("rand-read-qd32", "iscsi-perf", "-"), ("seq-read", "qemu-img", "-"),
                 ("seq-write", "qemu-img", "-"),
                 # iscsi-perf over a veth of each MTU, from its own namespace
                 ("seq-read", "iscsi-perf", "1500"), ("seq-read", "iscsi-perf", "9000")}
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
            if test in ("seq-read", "seq-read-1st"):
                positive(m["rmtu"])
            else:
                assert m["rmtu"] == "-", m[0]
        else:
            assert m["rmtu"] == "-", m[0]
    doc = json.loads(json_file.read_text())
    assert len(doc["rows"]) == len(expected)
    assert all(r["mb_per_s"] > 0 and r["bytes"] > 0 for r in doc["rows"])
    veth = [r for r in doc["rows"] if r["initiator"] == "iscsi-perf" and r["mtu"] is not None]
    assert sorted(r["mtu"] for r in veth) == [1500, 9000]
    for r in veth:
        assert r["test"] == "seq-read", r
        assert r["note"].endswith(f"over a veth of MTU {r['mtu']} from its own namespace"), r
    assert doc["info"]["negotiated"]["block_size"] == 512
    # the target's namespace inherits the machine's congestion control, and says so
    machine_cc = Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
    assert doc["info"]["target_cc"] == machine_cc
    assert doc["info"]["pin"] is None
    assert (f"(TCP congestion control {machine_cc}; CPUs not pinned (the scheduler shares "
            f"them all))") in out.splitlines()[0], out


def _bridge_ports(netns: str) -> list[str]:
    """The interfaces enslaved to ``br0`` in ``netns``."""
    from netstack import netns as nsh

    cp = nsh.run(["ip", "-j", "link", "show", "master", "br0"], netns=netns)
    return [str(link["ifname"]) for link in json.loads(cp.stdout or "[]")]


def _namespaces_holding(prefix: str, address: str) -> list[str]:
    """The namespaces named ``prefix...`` with an interface holding ``address``."""
    from netstack import netns as nsh

    names = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    return [n for n in names if n.startswith(prefix) and address in
            nsh.run(["ip", "-br", "addr"], netns=n, check=False).stdout.split()]


def _link_mtu(netns: str, dev: str) -> int:
    from netstack import netns as nsh

    cp = nsh.run(["ip", "-j", "link", "show", "dev", dev], netns=netns)
    return int(json.loads(cp.stdout)[0]["mtu"])


def test_iscsi_perf_veth_row_removes_its_namespace_and_veth() -> None:
    """The same-MTU reference: iscsi-perf from a client namespace of its own over a veth
    pair on the target's bridge (MTU 1500 while the bridge, as for bootinit's largest
    MTU, is 9000). What :func:`veth_client` builds, the row it gives, and that the
    namespace, both veth ends and the target's ARP entry for the client are gone
    afterwards: after the row, after an iscsi-perf that cannot log in (the row's
    failure, BenchError) and after a Ctrl-C inside."""
    for tool in ("tgtd", "tgtadm", "iscsi-perf"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    from bench import iscsi_io
    from netstack import netns as nsh

    s = iscsi_io.Settings(size=4 << 20, mtus=[1500], request=256 << 10, seq_qd=4,
                          perf_seconds=1, tools=["iscsi-perf"])
    made: list[iscsi_io.VethClient] = []
    with iscsi_io.bench_target(s.size, mtu=9000, prefix="bvr") as t:
        ns = t.topo.netns

        def assert_gone(c: iscsi_io.VethClient) -> None:
            assert not nsh.exists(c.netns), c
            assert not nsh.link_exists(c.bridge_port, ns), c
            assert _bridge_ports(ns) == []
            neigh = nsh.run(["ip", "neigh", "show"], netns=ns).stdout
            assert str(c.address.ip) not in neigh.split(), neigh
            assert _link_mtu(ns, "br0") == 9000  # the bridge keeps bootinit's MTU

        assert _bridge_ports(ns) == []
        with iscsi_io.veth_client(t, 1500, 0) as c:
            made.append(c)
            assert c.address == IPv4Interface("10.77.0.200/24") and c.mtu == 1500
            assert max(len(c.dev), len(c.bridge_port)) <= 15 and c.dev != c.bridge_port
            assert nsh.exists(c.netns) and _bridge_ports(ns) == [c.bridge_port]
            assert _link_mtu(ns, c.bridge_port) == 1500 and _link_mtu(c.netns, c.dev) == 1500
            addrs = nsh.run(["ip", "-br", "addr", "show", "dev", c.dev], netns=c.netns)
            assert "10.77.0.200/24" in addrs.stdout.split(), addrs.stdout
        assert_gone(c)

        # the row: over a veth of MTU 1500 from host 10.77.0.201
        row = iscsi_io.iscsi_perf_veth_row(t, s, 1500, 1)
        assert (row.test, row.initiator, row.mtu) == ("seq-read", "iscsi-perf", 1500)
        assert (row.request_bytes, row.qd, row.seconds) == (256 << 10, 4, 1.0)
        assert row.note.endswith("over a veth of MTU 1500 from its own namespace"), row
        assert row.bytes > 0 and row.requests > 0 and row.mb_per_s > 0
        assert row.cpu_ms_per_mib is not None and row.cpu_ms_per_mib > 0
        assert _bridge_ports(ns) == []
        # its client namespace (name unknown here) is gone: none holds its address
        assert _namespaces_holding("bvc", "10.77.0.201/24") == []

        # iscsi-perf that cannot log in (no such target): the row's error, then gone
        bad = f"iscsi://{t.host}/{iscsi_io.IQN}:no-such-target/1"
        with pytest.raises(iscsi_io.BenchError, match=r"iscsi-perf .*exit"), \
                iscsi_io.veth_client(t, 1500, 2) as c:
            made.append(c)
            iscsi_io.run_tool(t, ["iscsi-perf", "-t", "1", "-b", "8", "-m", "1", bad],
                              30, graceful=True, netns=c.netns)
        assert_gone(c)

        # Ctrl-C inside
        with pytest.raises(KeyboardInterrupt), iscsi_io.veth_client(t, 9000, 3) as c:
            made.append(c)
            assert _link_mtu(c.netns, c.dev) == 9000
            raise KeyboardInterrupt
        assert_gone(c)
    assert all(not nsh.exists(c.netns) for c in made)


def test_namespace_congestion_control() -> None:
    """``namespace_cc`` reads a namespace's default (the machine's, inherited), sets one
    the kernel allows there, and names the algorithm it refuses."""
    from bench import iscsi_io
    from netstack.harness import topology

    machine_cc = Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
    with topology(bridge=True, open_tap=False, prefix="cc") as topo:
        assert iscsi_io.namespace_cc(topo.netns) == machine_cc
        assert iscsi_io.namespace_cc(topo.netns, "reno") == "reno"  # always allowed
        assert iscsi_io.namespace_cc(topo.netns) == "reno"
        with pytest.raises(iscsi_io.BenchError, match=r"'no-such-cc' refused .*allowed"):
            iscsi_io.namespace_cc(topo.netns, "no-such-cc")
        assert iscsi_io.namespace_cc(topo.netns) == "reno"


def _cpus_allowed(status: str) -> set[int]:
    """The CPUs of a /proc/PID/status text's ``Cpus_allowed_list`` (e.g. ``0-2,5``)."""
    line = next(x for x in status.splitlines() if x.startswith("Cpus_allowed_list:"))
    cpus: set[int] = set()
    for part in line.split(":", 1)[1].strip().split(","):
        lo, _, hi = part.partition("-")
        cpus |= set(range(int(lo), int(hi or lo) + 1))
    return cpus


def test_bench_target_pin() -> None:
    """``pin=True``: every tgtd thread on the upper half of the CPUs, this process and
    the tools it starts on the lower half while the target lives (our stack reads the
    LUN so), and this process's CPUs restored afterwards."""
    from bench import iscsi_io

    before = os.sched_getaffinity(0)
    if len(before) < 2:
        pytest.skip("needs two CPUs")
    split = iscsi_io.cpu_split()
    with iscsi_io.bench_target(1 << 20, mtu=1500, prefix="pin", pin=True) as t:
        assert t.pin == split
        pid = t.tgtd.pid
        assert pid is not None
        tids = os.listdir(f"/proc/{pid}/task")
        assert tids
        for tid in tids:
            assert os.sched_getaffinity(int(tid)) == split.target, tid
        assert os.sched_getaffinity(0) == split.initiator
        out, _ = iscsi_io.run_tool(t, ["cat", "/proc/self/status"], 30)
        assert _cpus_allowed(out) == split.initiator
        with iscsi_io.bootinit_device(t, 1500) as b:
            got = bytearray(1 << 20)
            n, _ = iscsi_io.sequential(b.dev, "read", got, 64 << 10, 4)
        assert n == 16 and got == t.lun_path.read_bytes()
    assert os.sched_getaffinity(0) == before
    gone = max(int(p) for p in os.listdir("/proc") if p.isdigit()) + 100_000
    with pytest.raises(iscsi_io.BenchError, match=rf"cannot pin process {gone}"):
        iscsi_io.pin_threads(gone, split.target)


PROFILE_ROW = re.compile(rf"^\s*(\d+)\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})"
                         rf"  (\S.*)$")


def _profile_sections(out: str) -> dict[str, list[str]]:
    """The lines under each ``== title`` of bench/profile.py's output."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in out.splitlines():
        if line.startswith("== "):
            current = sections.setdefault(line[3:], [])
        elif current is not None and line.strip():
            current.append(line)
    return sections


def test_profile_read_tiny(tmp_path: Path) -> None:
    """bench/profile.py ``read`` under cProfile: the header (bytes, MTU, requests, MB/s,
    CPU per MiB), calls per MiB, the top functions by cumulative and own time (``--top``
    rows each, our modules among them), own time per file, and ``--output`` data that
    pstats reads with the same call count."""
    import pstats

    prof = tmp_path / "read.prof"
    out = run_bench("profile.py", "read", "--size", "8M", "--mtu", "1500",
                    "--request-kib", "256", "--qd", "4", "--top", "6", "--output", str(prof))
    lines = out.splitlines()
    m = re.match(rf"^read 8388608 bytes at MTU 1500, offloads on in 32 requests: ({NUMBER}) s, "
                 rf"({NUMBER}) MB/s under cProfile \(.*\); CPU ({NUMBER}) ms/MiB \(user "
                 rf"({NUMBER}), sys ({NUMBER})\) under the profiler$", lines[0])
    assert m is not None, out
    positive(m[1])
    positive(m[2])
    assert float(m[3]) == pytest.approx(float(m[4]) + float(m[5]), abs=0.002)
    m = re.match(r"^(\d+) function calls per MiB \((\d+) in all\)$", lines[1])
    assert m is not None, out
    per_mib, total = int(m[1]), int(m[2])
    assert per_mib > 0 and abs(total / 8 - per_mib) <= 1, out
    sections = _profile_sections(out)
    assert list(sections) == ["top 6 by cumulative time", "top 6 by own time",
                              "own time per file"], out
    for title in ("top 6 by cumulative time", "top 6 by own time"):
        head, *rows = sections[title]
        assert head.split() == ["ncalls", "own", "s", "own", "%", "cum", "s", "cum", "%",
                                "function"], head
        assert len(rows) == 6 and all(PROFILE_ROW.match(r) for r in rows), rows
    cum = [PROFILE_ROW.match(r) for r in sections["top 6 by cumulative time"][1:]]
    assert any(x is not None and x[6].startswith("netstack/loop.py") for x in cum), cum
    assert [float(x[5]) for x in cum if x is not None] == sorted(
        (float(x[5]) for x in cum if x is not None), reverse=True)
    files = " ".join(sections["own time per file"])
    assert "netstack/" in files and "bootinit/" in files, files
    stats = pstats.Stats(str(prof))
    assert sum(v[1] for v in stats.stats.values()) == total  # type: ignore[attr-defined]


def test_profile_no_profile_tcp_and_pin() -> None:
    """``--no-profile``: one line with MB/s and CPU per MiB (tcp modes: TCP segments per
    MiB); the line names the TAP's offloads (``--offload``; iSCSI modes on by default,
    tcp off); ``--pin`` names the CPU split in an iSCSI mode's line and is refused,
    exit 2 and a named reason, in a tcp mode."""
    out = run_bench("profile.py", "tcp-recv", "--size", "4M", "--mtu", "1500",
                    "--offload", "on", "--no-profile")
    assert re.match(rf"^tcp-recv 4194304 bytes at MTU 1500, offloads on: {NUMBER} s, "
                    rf"({NUMBER}) MB/s, "
                    rf"CPU {NUMBER} ms/MiB \(user {NUMBER}, sys {NUMBER}\), TCP segments "
                    rf"in ({NUMBER})/MiB, out ({NUMBER})/MiB \(.*no profiler\)$",
                    out.strip()), out
    assert "==" not in out
    if len(os.sched_getaffinity(0)) >= 2:
        from bench import iscsi_io
        split = iscsi_io.cpu_split()
        out = run_bench("profile.py", "rand-read", "--size", "8M", "--mtu", "1500",
                        "--count", "200", "--qd", "4", "--pin", "--no-profile")
        assert out.startswith(f"rand-read 819200 bytes at MTU 1500, offloads on in 200 "
                              f"requests ({split.text()}): "), out
    # the iSCSI modes without offloads (the bench's rows without a vnet header), the
    # tcp modes without them by default: the header names what the TAP carried
    out = run_bench("profile.py", "read", "--size", "8M", "--mtu", "1500",
                    "--request-kib", "256", "--offload", "off", "--no-profile")
    assert out.startswith("read 8388608 bytes at MTU 1500, offloads off in 32 requests: "), out
    out = run_bench("profile.py", "tcp-send", "--size", "4M", "--mtu", "1500",
                    "--no-profile")
    assert out.startswith("tcp-send 4194304 bytes at MTU 1500, offloads off: "), out
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cp = subprocess.run([sys.executable, str(ROOT / "bench" / "profile.py"), "tcp-send",
                         "--pin"], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=60)
    assert cp.returncode == 2 and "--pin is for the iSCSI modes" in cp.stderr, cp.stderr


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


def run_all_row(rounds: bool = False) -> re.Pattern[str]:
    """A line of run_all's table (``rounds``: with the range column of ``--rounds``)."""
    spread = rf"\s+(?P<range>{NUMBER}-{NUMBER}|once|-)" if rounds else ""
    cpu = rf"(?:\s+(?P<cpu>{NUMBER}|-)\s+(?P<tgtd>{NUMBER}|-))?"  # with iSCSI rows
    return re.compile(
        rf"^(?P<part>iscsi|tcp|kernel)\s+(?P<test>[a-z0-9-]+)\s+(?P<who>[a-z-]+)\s+"
        rf"(?P<mtu>\d+|-)\s+(?P<offload>on|off|-)\s+(?P<mbs>{NUMBER}|n/a)\s+"
        rf"(?P<iops>{NUMBER}|-){spread}{cpu}\s+(?P<check>ok|-|n/a|FAIL)"
        rf"(?:\s+(?P<rest>.*))?$")


RUN_ALL_ROW = run_all_row()


def _pytcp_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("pmd_pytcp") is not None


def run_all_expected(mtus: tuple[str, ...]) -> set[tuple[str, str, str, str, str]]:
    """Every (part, test, who, MTU, offload) line of run_all at ``mtus``, both offloads."""
    expected = set()
    for test in ("seq-read", "seq-read-1st", "seq-write", "rand-read-qd1",
                 "rand-read-qd32"):
        for mtu in mtus:
            for off in ("off", "on"):
                expected.add(("iscsi", test, "bootinit", mtu, off))
    expected |= {("iscsi", t, "iscsi-perf", "-", "-")
                 for t in ("seq-read", "rand-read-qd1", "rand-read-qd32")}
    # iscsi-perf's seq-read over a veth of each MTU, from its own namespace
    expected |= {("iscsi", "seq-read", "iscsi-perf", mtu, "-") for mtu in mtus}
    expected |= {("iscsi", t, "qemu-img", "-", "-") for t in ("seq-read", "seq-write")}
    for d in ("tcp-recv", "tcp-send"):
        for mtu in mtus:
            expected |= {("tcp", d, "bootinit", mtu, "off"), ("tcp", d, "bootinit", mtu, "on"),
                         ("tcp", d, "pytcp", mtu, "off"), ("tcp", d, "tap-raw", mtu, "off")}
        expected.add(("kernel", d, "kernel", "65520", "on"))
    return expected


def verified(who: str, test: str) -> bool:
    """Whether run_all checks this row's data (compare or sha256): its check is ``ok``."""
    return who in ("bootinit", "pytcp", "kernel") or (who, test) == ("qemu-img", "seq-write")


TINY = ("--quick", "--size", "4M", "--tcp-size", "4M", "--pytcp-size", "1M",
        "--random-count", "300", "--random-seconds", "0.5", "--perf-seconds", "1",
        "--ceiling-seconds", "0.3")


def test_run_all_tiny(tmp_path: Path) -> None:
    for tool in ("tgtd", "tgtadm", "iscsi-perf", "qemu-img"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    json_file = tmp_path / "run_all.json"
    out = run_bench("run_all.py", *TINY, "--json-file", str(json_file), timeout=180)
    rows = {}
    for line in out.splitlines():
        m = RUN_ALL_ROW.match(line)
        if m is not None:
            key = (m["part"], m["test"], m["who"], m["mtu"], m["offload"])
            assert key not in rows, line
            rows[key] = m
    expected = run_all_expected(("1500", "65520"))
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
        assert m["check"] == ("ok" if verified(who, test) else "-"), m[0]
        if who == "bootinit" and part == "tcp":
            assert "/tap" in m["rest"] and ("/pytcp" in m["rest"]) == pytcp, m[0]
            if m["mtu"] == "65520":
                assert "/kernel" in m["rest"], m[0]
        if who == "bootinit" and test in ("seq-read", "seq-write"):
            assert ">=0.8x libiscsi: " in m["rest"], m[0]
            # the read also against libiscsi over the veth of its MTU
            assert (">=0.8x libiscsi@mtu: " in m["rest"]) == (test == "seq-read"), m[0]
        if who == "bootinit" and test == "seq-read-1st":  # ratios, no goal
            assert "/iscsi-perf" in m["rest"] and "libiscsi: " not in m["rest"], m[0]
        if who == "bootinit" and part == "iscsi":  # against iscsi-perf over a veth
            assert ("/iscsi-perf@mtu" in m["rest"]) == (test in ("seq-read",
                                                                 "seq-read-1st")), m[0]
        # CPU per MiB: the initiator's for every iSCSI row (tgtd's may round to 0 at
        # this size: /proc counts 10 ms ticks); none for TCP rows.
        if part == "iscsi":
            positive(m["cpu"])
            assert m["tgtd"] is not None and float(m["tgtd"]) >= 0, m[0]
        else:
            assert m["cpu"] in (None, "-") and m["tgtd"] in (None, "-"), m[0]
    goals = out[out.index("goals (issue 6):"):].splitlines()[1:]
    assert len(goals) == 5 and all(re.search(r"(MET|not met|cannot be judged)", g)
                                   for g in goals), out
    doc = json.loads(json_file.read_text())
    assert len(doc["rows"]) == len(expected)
    assert not [r for r in doc["rows"] if r["check"] == "FAIL"]
    assert [g["goal"] for g in doc["goals"]] == ["seq-read", "seq-read@mtu", "seq-write",
                                                 "pytcp", "kernel"]
    (same,) = [g for g in doc["goals"] if g["goal"] == "seq-read@mtu"]
    # every bootinit seq-read row (2 MTUs x 2 offload modes), each with its veth row
    assert same["judged"] == same["rows"] == 4, same
    assert doc["info"]["kernel_veth"]["recv_sha_ok"] and doc["info"]["kernel_veth"]["send_sha_ok"]
    if pytcp:
        for runs in doc["info"]["pytcp"].values():
            assert len(runs) == 1  # one round
            for res in runs:
                assert res["recv_sha_ok"] and res["send_sha_ok"], res


def test_run_all_rounds_tiny(tmp_path: Path) -> None:
    """``--rounds 2``: every row measured twice (PyTCP too), medians within the
    samples, every check ok in both rounds, the range column and per-round goal ratios."""
    for tool in ("tgtd", "tgtadm", "iscsi-perf", "qemu-img"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    json_file = tmp_path / "run_all.json"
    pin = len(os.sched_getaffinity(0)) >= 2
    out = run_bench("run_all.py", *TINY, "--mtu", "65520", "--rounds", "2",
                    "--target-cc", "reno", *(["--pin"] if pin else []),
                    "--json-file", str(json_file), timeout=240)
    assert "2 rounds (iSCSI: every row each round" in out, out
    from bench import iscsi_io
    split = iscsi_io.cpu_split() if pin else None
    assert (f"iSCSI: tgtd in a namespace (TCP congestion control reno; "
            f"{iscsi_io.pin_text(iscsi_io.pin_json(split))})") in out, out
    row = run_all_row(rounds=True)
    lines = {}
    for line in out.splitlines():
        m = row.match(line)
        if m is not None:
            lines[(m["part"], m["test"], m["who"], m["mtu"], m["offload"])] = m
    expected = run_all_expected(("65520",))
    assert set(lines) == expected, out
    pytcp = _pytcp_installed()
    doc = json.loads(json_file.read_text())
    assert doc["info"]["settings"]["rounds"] == 2
    assert doc["info"]["iscsi"]["target_cc"] == "reno"
    assert doc["info"]["iscsi"]["pin"] == iscsi_io.pin_json(split)
    assert doc["info"]["settings"]["pin"] is pin
    assert len(doc["rows"]) == len(expected)
    for r in doc["rows"]:
        key = (r["part"], r["test"], r["who"], str(r["mtu"] or "-"), r["offload"])
        m = lines[key]
        if r["who"] == "pytcp" and not pytcp:
            assert r["check"] == "n/a" and r["samples"] == [], r
            continue
        assert len(r["samples"]) == 2, r
        lo, hi = (float(v) for v in m["range"].split("-"))  # as printed: rounded
        assert lo - 0.5 <= float(m["mbs"]) <= hi + 0.5, m[0]
        assert r["check"] == ("ok" if verified(r["who"], r["test"]) else "-"), r
        assert all(v > 0 for v in r["samples"]), r
        assert min(r["samples"]) <= r["mb_per_s"] <= max(r["samples"]), r
        assert r["mb_per_s_range"] == [min(r["samples"]), max(r["samples"])], r
        if r["test"].startswith("rand"):
            assert len(r["iops_samples"]) == 2, r
            assert min(r["iops_samples"]) <= r["iops"] <= max(r["iops_samples"]), r
        for name, per in r["round_ratios"].items():
            assert len(per) == 2 and name in r["ratios"], r
        if r["who"] == "bootinit" and r["test"] == "seq-read-1st":
            assert r["goals"] == {} and len(r["round_ratios"]["iscsi-perf"]) == 2, r
        elif r["who"] == "bootinit" and r["test"].startswith("seq"):
            keys = [r["test"], *(["seq-read@mtu"] if r["test"] == "seq-read" else [])]
            assert sorted(r["goals"]) == sorted(keys), r
            for goal in keys:
                assert len(r["goal_round_ratios"][goal]) == 2, r
                assert r["goals"][goal] == (r["goal_ratios"][goal] >= 0.8), r
            assert "per round" in m["rest"], m[0]
    assert len(doc["info"]["kernel_veth_rounds"]) == 2
    assert all(k["recv_sha_ok"] and k["send_sha_ok"] for k in doc["info"]["kernel_veth_rounds"])
    assert [g["goal"] for g in doc["goals"]] == ["seq-read", "seq-read@mtu", "seq-write",
                                                 "pytcp", "kernel"]


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
    info = {"settings": dataclasses.asdict(run_all.Settings(parts=["tcp"])),
            "date": "now", "cpus": 2, "load_start": 0.0, "python": "3", "kernel": "6"}
    text = run_all.table(rows, run_all.goal_summary(rows), info)
    assert text.count("pmd-pytcp not installed (pip install '.[bench]')") == 2, text


def test_run_all_veth_reference_fails_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A same-MTU reference that cannot be measured (its namespace or veth refused)
    fails its own row only: the other MTU's veth row and the loopback rows, which the
    goals use, are measured as ever, and the goals are still judged."""
    for tool in ("tgtd", "tgtadm", "iscsi-perf"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    from bench import iscsi_io, run_all

    real = iscsi_io.iscsi_perf_veth_row

    def veth_row(target: iscsi_io.BenchTarget, s: iscsi_io.Settings, mtu: int,
                 index: int = 0) -> iscsi_io.Row:
        if mtu == 1500:
            raise iscsi_io.BenchError("veth client of MTU 1500: refused (test)")
        return real(target, s, mtu, index)

    monkeypatch.setattr(iscsi_io, "iscsi_perf_veth_row", veth_row)
    monkeypatch.setattr(run_all, "_iscsi_missing_tools",
                        lambda: {"qemu-img": "qemu-utils"})  # quicker: no qemu-img rows
    s = run_all.Settings(size=4 << 20, mtus=[1500, 9000], offloads=[True],
                         random_count=100, random_seconds=0.3, perf_seconds=1,
                         parts=["iscsi"])
    rows = run_all.run_iscsi(s, {})
    run_all.add_ratios(rows, s)
    by = {(r.test, r.who, r.mtu): r for r in rows}
    bad = by[("seq-read", "iscsi-perf", 1500)]
    assert bad.check == "FAIL" and "refused (test)" in bad.note, bad
    ok = by[("seq-read", "iscsi-perf", 9000)]
    assert ok.check == "-" and ok.mb_per_s is not None and ok.mb_per_s > 0, ok
    loop = by[("seq-read", "iscsi-perf", None)]
    assert loop.mb_per_s is not None and loop.mb_per_s > 0, loop
    for mtu in (1500, 9000):
        ours = by[("seq-read", "bootinit", mtu)]
        assert ours.mb_per_s is not None
        assert ours.goals.get(run_all.GOAL_SEQ_READ.key) is not None, ours
        assert ours.goal_ratios[run_all.GOAL_SEQ_READ.key] == \
            pytest.approx(ours.mb_per_s / loop.mb_per_s)
        assert (iscsi_io.SAME_MTU_RATIO in ours.ratios) == (mtu == 9000), ours.ratios
        # the same-MTU goal: judged where its veth row stands, None (n/a) where it failed
        same = ours.goals[run_all.GOAL_SEQ_READ_MTU.key]
        assert (same is None) == (mtu == 1500), ours.goals
    assert not [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                          text=True, check=True).stdout.split()
                if n.startswith("bvc")]
