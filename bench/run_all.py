"""bootinit's combined benchmark: one table, every row measured in the same run.

Three parts, each reusing its own benchmark module:

* ``iscsi`` (bench/iscsi_io.py) — one namespace, one tgtd, one LUN on tmpfs: sequential
  write and read of ``--size`` bytes and 4 KiB random reads at queue depth 1 and 32, by
  bootinit (our stack on a TAP, once per ``--mtu`` and offload mode; every byte
  checked) and by libiscsi: ``iscsi-perf`` (reads) and ``qemu-img convert`` from/to
  ``iscsi://`` (read into null-co, write from a tmpfs file, checked in the LUN file).
  Ratios bootinit/iscsi-perf and bootinit/qemu-img.
* ``tcp`` (bench/tcp_bulk.py, bench/pytcp_peer.py, bench/tap_ceiling.py) — per MTU a
  namespace with a TAP and the kernel peer tests/integration/tcp_peer.py: the raw TAP
  ceiling (rx/tx, Python moving prebuilt frames), our stack's bulk receive and send
  with offloads off and on, and PyTCP's (``pmd-pytcp``, in a child process on the
  same TAP, no offloads: it has none; ``tcp.rcv_wnd_max`` 4 MiB). Every transfer's
  sha256 is checked. Ratios ours/PyTCP (same MTU), ours/TAP ceiling (the ceiling is a
  plain TAP's, without GSO, so our offload rows can exceed it).
* ``kernel`` (bench/kernel_veth.py) — the kernel's own TCP between two namespaces over
  a veth pair of ``--kernel-mtu`` (65520), a Python socket application on each side
  doing the same transfers (sha256 checked). Ratio ours/kernel for our rows of that MTU.

Goals are printed beside the ratios, and whether each is met: seq read and write
>= 0.8x libiscsi (the faster libiscsi row of the test); TCP bulk >= 20x PyTCP at the
same MTU; ours/kernel veth >= 0.3 with offloads at MTU 65520. Timings are never
asserted; a failed data check makes the row ``FAIL`` and the exit status 1. A peer
that cannot be measured (PyTCP not installed, a tool missing) gives ``n/a`` rows that
say why. MB = 10**6 bytes. Needs root (namespaces, TAPs). Examples::

    sudo python3 bench/run_all.py                 # 1 GiB iSCSI, 256 MiB TCP: minutes
    sudo python3 bench/run_all.py --quick         # small sizes: well under a minute
    sudo python3 bench/run_all.py --quick --json
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import iscsi_io, kernel_veth, pytcp_peer, tcp_bulk  # noqa: E402
from bootinit.targets import TargetConfigError, parse_size  # noqa: E402
from netstack.harness import Topology, environment_problem, topology  # noqa: E402
from netstack.link.base import Link  # noqa: E402

PARTS = ("iscsi", "tcp", "kernel")
MiB = 1 << 20


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class Goal:
    """A goal from issue 6: ``ratio`` of a row against ``vs`` must be >= ``minimum``."""

    key: str
    text: str
    vs: str
    minimum: float


GOAL_SEQ_READ = Goal("seq-read", "seq read >= 0.8x libiscsi (faster of iscsi-perf, "
                     "qemu-img)", "libiscsi", 0.8)
GOAL_SEQ_WRITE = Goal("seq-write", "seq write >= 0.8x libiscsi (qemu-img)", "libiscsi", 0.8)
GOAL_PYTCP = Goal("pytcp", "TCP bulk >= 20x PyTCP at the same MTU", "pytcp", 20.0)
GOAL_KERNEL = Goal("kernel", "TCP bulk >= 0.3x kernel veth (offloads on, MTU 65520)",
                   "kernel", 0.3)
GOALS = (GOAL_SEQ_READ, GOAL_SEQ_WRITE, GOAL_PYTCP, GOAL_KERNEL)


@dataclass
class Row:
    """One line of the table."""

    part: str
    test: str
    who: str
    mtu: int | None
    offload: str  # "on", "off" or "-"
    mb_per_s: float | None = None
    iops: float | None = None
    #: "ok" (data/sha256 verified), "-" (nothing to verify), "n/a" (not measured), "FAIL".
    check: str = "ok"
    note: str = ""
    ratios: dict[str, float] = field(default_factory=dict)
    #: goal key -> met (None: the reference is missing, so it cannot be judged).
    goals: dict[str, bool | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = dataclasses.asdict(self)
        for k in ("mb_per_s", "iops"):
            if d[k] is not None:
                d[k] = round(d[k], 3)
        d["ratios"] = {k: round(v, 4) for k, v in self.ratios.items()}
        return d


def missing(part: str, test: str, who: str, mtu: int | None, offload: str, check: str,
            why: str) -> Row:
    """A row that has no number (``check`` "n/a" or "FAIL"), saying why."""
    return Row(part, test, who, mtu, offload, check=check, note=why)


def _why(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:200]


# --------------------------------------------------------------------------- settings


@dataclass
class Settings:
    """What the run measures (see ``--help``)."""

    size: int = 1 << 30
    tcp_size: int = 256 * MiB
    pytcp_size: int = 32 * MiB
    mtus: list[int] = field(default_factory=lambda: [1500, 65520])
    offloads: list[bool] = field(default_factory=lambda: [False, True])
    kernel_mtu: int = 65520
    random_count: int = 20000
    random_seconds: float = 5.0
    perf_seconds: int = 3
    ceiling_seconds: float = 2.0
    pytcp_timeout: float = 300.0
    lun_dir: str = "/dev/shm"
    parts: list[str] = field(default_factory=lambda: list(PARTS))
    pytcp: bool = True


def _off(flag: bool) -> str:
    return "on" if flag else "off"


# --------------------------------------------------------------------------- row sets


Key = tuple[str, str, str, int | None, str]  # part, test, who, MTU, offload


def expected_rows(part: str, s: Settings) -> list[Key]:
    """Every row ``part`` has in the table (measured or not)."""
    offs = [_off(o) for o in s.offloads]
    if part == "iscsi":
        keys: list[Key] = [("iscsi", t, "bootinit", mtu, o) for t in iscsi_io.TESTS
                           for mtu in s.mtus for o in offs]
        return keys + [("iscsi", t, w, None, "-")
                       for t, w in _tool_tests(["iscsi-perf", "qemu-img"])]
    if part == "tcp":
        return [("tcp", f"tcp-{d}", who, mtu, o) for mtu in s.mtus for d in ("recv", "send")
                for who, o in [*(("bootinit", o) for o in offs), ("pytcp", "off"),
                               ("tap-raw", "off")]]
    return [("kernel", f"tcp-{d}", "kernel", s.kernel_mtu, "on") for d in ("recv", "send")]


def complete(rows: list[Row], keys: list[Key], why: str) -> list[Row]:
    """``rows`` plus a FAIL row (saying ``why``) for each of ``keys`` it lacks."""
    have = {(r.part, r.test, r.who, r.mtu, r.offload) for r in rows}
    return rows + [missing(*k, "FAIL", why) for k in keys if k not in have]


# --------------------------------------------------------------------------- iSCSI


def _iscsi_missing_tools() -> dict[str, str]:
    need = {"tgtd": "tgt", "tgtadm": "tgt", "iscsi-perf": "libiscsi-bin",
            "qemu-img": "qemu-utils"}
    return {tool: pkg for tool, pkg in need.items() if shutil.which(tool) is None}


def _iscsi_row(r: iscsi_io.Row, offload: str) -> Row:
    if r.initiator == "bootinit":
        check = "ok"  # every byte written/read/random-read compared with the LUN file
    elif r.initiator == "qemu-img" and r.test == "seq-write":
        check = "ok"  # the LUN file compared with the source file
    else:
        check = "-"
    rand = r.request_bytes == iscsi_io.RANDOM_BYTES
    return Row("iscsi", r.test, r.initiator, r.mtu, offload, r.mb_per_s,
               r.iops if rand else None, check, r.note)


def run_iscsi(s: Settings, info: dict[str, Any]) -> list[Row]:
    """bootinit (each MTU x offload) and libiscsi rows on one tgtd LUN on tmpfs."""
    configs = [(mtu, off) for mtu in s.mtus for off in s.offloads]
    tests = iscsi_io.TESTS
    lack = _iscsi_missing_tools()
    if "tgtd" in lack or "tgtadm" in lack:
        why = "needs tgtd (Debian package tgt)"
        return [missing("iscsi", t, "bootinit", mtu, _off(off), "n/a", why)
                for t in tests for mtu, off in configs]
    tools = [t for t in ("iscsi-perf", "qemu-img") if t not in lack]
    iset = iscsi_io.Settings(size=s.size, mtus=s.mtus, random_count=s.random_count,
                             random_seconds=s.random_seconds, perf_seconds=s.perf_seconds,
                             tools=tools, lun_dir=s.lun_dir)
    rows: list[Row] = []
    iinfo: dict[str, Any] = {}
    for tool in ("iscsi-perf", "qemu-img"):
        if tool in lack:
            why = f"{tool} not found (Debian package {lack[tool]})"
            rows += [missing("iscsi", t, w, None, "-", "n/a", why)
                     for t, w in _tool_tests([tool])]
    try:
        with iscsi_io.bench_target(s.size, mtu=max(s.mtus), lun_dir=s.lun_dir,
                                   prefix="ball") as target:
            iinfo["warm_up"] = iscsi_io.warm_up(target, iset)
            for i, (mtu, off) in enumerate(configs):
                try:
                    got = iscsi_io.measure_bootinit(
                        target, dataclasses.replace(iset, offload=off), mtu, 100 + i, iinfo)
                    rows += [_iscsi_row(r, _off(off)) for r in got]
                except Exception as e:
                    rows += [missing("iscsi", t, "bootinit", mtu, _off(off), "FAIL", _why(e))
                             for t in tests]
            try:
                rows += [_iscsi_row(r, "-") for r in iscsi_io.tool_rows(target, iset)]
            except Exception as e:
                why = _why(e)
                rows += [missing("iscsi", t, who, None, "-", "FAIL", why)
                         for t, who in _tool_tests(tools)]
    except Exception as e:  # the target (namespace, tgtd, LUN) itself
        rows = complete(rows, expected_rows("iscsi", s), f"target: {_why(e)}")
    info["iscsi"] = {"negotiated": iinfo.get("negotiated", {}),
                     "warm_up": iinfo.get("warm_up", ""),
                     "request": iset.request, "seq_qd": iset.seq_qd,
                     "counters": iinfo.get("bootinit_counters", {})}
    order = {t: i for i, t in enumerate(tests)}
    who = {n: i for i, n in enumerate(iscsi_io.INITIATORS)}
    rows.sort(key=lambda r: (order[r.test], who[r.who], r.mtu or 0, r.offload))
    return rows


def _tool_tests(tools: list[str]) -> list[tuple[str, str]]:
    out = []
    if "iscsi-perf" in tools:
        out += [("seq-read", "iscsi-perf"), ("rand-read-qd1", "iscsi-perf"),
                ("rand-read-qd32", "iscsi-perf")]
    if "qemu-img" in tools:
        out += [("seq-read", "qemu-img"), ("seq-write", "qemu-img")]
    return out


# --------------------------------------------------------------------------- TCP


def _ours(topo: Topology, link: Link, off: bool, size: int) -> list[Row]:
    mtu = topo.mtu
    try:
        recv, send = tcp_bulk.our_transfer(topo, link, size)
    except Exception as e:
        return [missing("tcp", f"tcp-{d}", "bootinit", mtu, _off(off), "FAIL", _why(e))
                for d in ("recv", "send")]
    return [Row("tcp", "tcp-recv", "bootinit", mtu, _off(off), recv),
            Row("tcp", "tcp-send", "bootinit", mtu, _off(off), send)]


def _pytcp_rows(res: pytcp_peer.PytcpResult) -> list[Row]:
    rows = []
    for d, mbs, ok, err in (("recv", res.recv_mb_per_s, res.recv_sha_ok, res.recv_error),
                            ("send", res.send_mb_per_s, res.send_sha_ok, res.send_error)):
        if mbs is not None and ok:
            rows.append(Row("tcp", f"tcp-{d}", "pytcp", res.mtu, "off", mbs,
                            note=f"pmd-pytcp {res.version}, {res.size / MiB:g} MiB, "
                                 f"rcv_wnd_max 4 MiB"))
        else:
            # Not installed: n/a. Installed but it could not do it (e.g. a stall at
            # this MTU): also n/a, with its reason -- PyTCP is the reference, not us.
            check = "FAIL" if "sha256" in (err or "") else "n/a"
            rows.append(missing("tcp", f"tcp-{d}", "pytcp", res.mtu, "off", check,
                                err or "no result"))
    return rows


def run_tcp(s: Settings, info: dict[str, Any]) -> list[Row]:
    """Per MTU, one namespace + TAP + kernel peer: ceiling, ours (offloads off), PyTCP,
    ours (offloads on; that replaces the plain TAP, so it comes last)."""
    rows: list[Row] = []
    if not s.pytcp:
        rows += [missing("tcp", f"tcp-{d}", "pytcp", mtu, "off", "n/a", "skipped (--no-pytcp)")
                 for mtu in s.mtus for d in ("recv", "send")]
    for mtu in s.mtus:
        try:
            with topology(mtu=mtu, prefix="ball") as topo:
                assert topo.link is not None and topo.tap is not None
                try:
                    rx, tx = tcp_bulk.ceilings(topo, s.ceiling_seconds)
                    rows += [Row("tcp", "tcp-recv", "tap-raw", mtu, "off", rx, check="-",
                                 note="raw TAP rx ceiling (UDP frames from the kernel)"),
                             Row("tcp", "tcp-send", "tap-raw", mtu, "off", tx, check="-",
                                 note="raw TAP tx ceiling (prebuilt frames)")]
                except Exception as e:
                    rows += [missing("tcp", f"tcp-{d}", "tap-raw", mtu, "off", "FAIL",
                                     _why(e)) for d in ("recv", "send")]
                tcp_bulk.start_peer(topo)
                if False in s.offloads:
                    rows += _ours(topo, topo.link, False, s.tcp_size)
                if s.pytcp:
                    res = pytcp_peer.measure(topo, tcp_bulk.PORT, s.pytcp_size,
                                             s.pytcp_timeout)
                    rows += _pytcp_rows(res)
                    info.setdefault("pytcp", {})[str(mtu)] = res.as_dict()
                if True in s.offloads:
                    olink = tcp_bulk.offload_link(topo)
                    try:
                        rows += _ours(topo, olink, True, s.tcp_size)
                    finally:
                        olink.close()
        except Exception as e:  # the topology or the kernel peer
            rows = complete(rows, [k for k in expected_rows("tcp", s) if k[3] == mtu],
                            f"MTU {mtu} topology: {_why(e)}")
    who = {"bootinit": 0, "pytcp": 1, "tap-raw": 2}
    rows.sort(key=lambda r: (r.test, r.mtu or 0, who[r.who], r.offload))
    return rows


def run_kernel(s: Settings, info: dict[str, Any]) -> list[Row]:
    """The kernel's TCP over a veth pair between two namespaces."""
    note = "kernel TCP over veth, Python socket app each side"
    try:
        res = kernel_veth.measure(s.kernel_mtu, s.tcp_size)
    except Exception as e:
        return [missing("kernel", f"tcp-{d}", "kernel", s.kernel_mtu, "on", "FAIL", _why(e))
                for d in ("recv", "send")]
    info["kernel_veth"] = res.as_dict()
    return [Row("kernel", "tcp-recv", "kernel", res.mtu, "on", res.recv_mb_per_s, note=note),
            Row("kernel", "tcp-send", "kernel", res.mtu, "on", res.send_mb_per_s, note=note)]


# --------------------------------------------------------------------------- ratios


def _mbs(rows: list[Row], **match: object) -> float | None:
    for r in rows:
        if r.mb_per_s is not None and all(getattr(r, k) == v for k, v in match.items()):
            return r.mb_per_s
    return None


def add_ratios(rows: list[Row], s: Settings) -> None:
    """Ratio columns and goal verdicts of bootinit's rows (and PyTCP's /tap)."""
    for r in rows:
        if r.mb_per_s is None:
            continue
        if r.part == "iscsi" and r.who == "bootinit":
            refs = {w: _mbs(rows, part="iscsi", test=r.test, who=w)
                    for w in ("iscsi-perf", "qemu-img")}
            for w, ref in refs.items():
                if ref:
                    r.ratios[w] = r.mb_per_s / ref
            goal = {"seq-read": GOAL_SEQ_READ, "seq-write": GOAL_SEQ_WRITE}.get(r.test)
            if goal is not None:
                known = [v for v in refs.values() if v]
                r.goals[goal.key] = (r.mb_per_s / max(known) >= goal.minimum
                                     if known else None)
        elif r.part == "tcp" and r.who in ("bootinit", "pytcp"):
            tap = _mbs(rows, part="tcp", test=r.test, who="tap-raw", mtu=r.mtu)
            if tap:
                r.ratios["tap"] = r.mb_per_s / tap
            if r.who == "pytcp":
                continue
            py = _mbs(rows, part="tcp", test=r.test, who="pytcp", mtu=r.mtu)
            if py:
                r.ratios["pytcp"] = r.mb_per_s / py
            r.goals[GOAL_PYTCP.key] = r.mb_per_s / py >= GOAL_PYTCP.minimum if py else None
            if r.mtu == s.kernel_mtu:
                k = _mbs(rows, part="kernel", test=r.test)
                if k:
                    r.ratios["kernel"] = r.mb_per_s / k
                if r.offload == "on":
                    r.goals[GOAL_KERNEL.key] = (r.mb_per_s / k >= GOAL_KERNEL.minimum
                                                if k else None)


def goal_summary(rows: list[Row]) -> list[dict[str, Any]]:
    """Per goal: rows judged, rows met, the best ratio and where."""
    out = []
    for g in GOALS:
        judged = [(r, r.goals[g.key]) for r in rows if g.key in r.goals]
        known = [(r, met) for r, met in judged if met is not None]
        best: tuple[float, Row] | None = None
        for r, _ in known:
            # seq: the ratio against the faster libiscsi row is the smallest one
            v = min(r.ratios.values()) if g.vs == "libiscsi" else r.ratios[g.vs]
            if best is None or v > best[0]:
                best = (v, r)
        out.append({"goal": g.key, "text": g.text, "minimum": g.minimum,
                    "rows": len(judged), "judged": len(known),
                    "met": sum(1 for _, m in known if m),
                    "all_met": bool(known) and all(m for _, m in known),
                    "best_ratio": None if best is None else round(best[0], 4),
                    "best_row": None if best is None else
                    f"{best[1].test} MTU {best[1].mtu} offload {best[1].offload}"})
    return out


# --------------------------------------------------------------------------- output


def _num(v: float | None, width: int, digits: int = 1) -> str:
    return f"{'-' if v is None else f'{v:.{digits}f}':>{width}}"


def _size(n: int) -> str:
    for unit, k in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", 1 << 10)):
        if n >= k and n % k == 0:
            return f"{n // k} {unit}"
    return f"{n} B"


def table(rows: list[Row], goals: list[dict[str, Any]], info: dict[str, Any]) -> str:
    """The human-readable table (one line per row, then the goals)."""
    s = info["settings"]
    what = []
    if "iscsi" in s["parts"]:
        req = info.get("iscsi", {}).get("request", 256 << 10)
        qd = info.get("iscsi", {}).get("seq_qd", 32)
        what.append(f"iSCSI: tgtd in a namespace, LUN {_size(s['size'])} on tmpfs, seq "
                    f"{_size(req)} requests x{qd} (iscsi-perf the same), tgtd warmed up "
                    f"first")
    if "tcp" in s["parts"]:
        what.append(f"TCP bulk {_size(s['tcp_size'])} each way (PyTCP "
                    f"{_size(s['pytcp_size'])}), sha256 checked")
    if "kernel" in s["parts"]:
        what.append(f"kernel: veth MTU {s['kernel_mtu']}")
    lines = [
        f"bootinit benchmark, {info['date']}: {info['cpus']} CPUs, load "
        f"{info['load_start']:.2f} at the start, Python {info['python']}, Linux "
        f"{info['kernel']}; MB = 10^6 B",
        "; ".join(what),
        "",
        f"{'part':<7}{'test':<16}{'who':<11}{'MTU':>6} {'offload':<8}{'MB/s':>9}"
        f"{'IOPS':>9}  {'check':<6}{'ratios':<38}goals",
    ]
    for r in rows:
        ratios = "  ".join(f"{v:.2f}/{k}" for k, v in r.ratios.items())
        gl = []
        for key, met in r.goals.items():
            goal = next(x for x in GOALS if x.key == key)
            verdict = "n/a" if met is None else ("met" if met else "NOT met")
            gl.append(f">={goal.minimum:g}x {goal.vs}: {verdict}")
        mbs = "n/a" if r.mb_per_s is None else f"{r.mb_per_s:.1f}"
        tail = "; ".join(gl)
        if r.note and (r.check in ("n/a", "FAIL") or not tail):
            tail = f"{tail}  ({r.note})" if tail else f"({r.note})"
        mtu = "-" if r.mtu is None else str(r.mtu)
        lines.append(f"{r.part:<7}{r.test:<16}{r.who:<11}{mtu:>6} {r.offload:<8}{mbs:>9}"
                     f"{_num(r.iops, 9, 0)}  {r.check:<6}{ratios:<38}{tail}".rstrip())
    lines += ["", "goals (issue 6):"]
    for g in goals:
        if not g["judged"]:
            state = "cannot be judged (reference missing)"
        else:
            state = (f"{'MET' if g['all_met'] else 'not met'}: {g['met']}/{g['judged']} "
                     f"rows; best {g['best_ratio']:.2f} ({g['best_row']})")
        lines.append(f"  {g['text']:<62} {state}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def run(s: Settings) -> tuple[list[Row], list[dict[str, Any]], dict[str, Any]]:
    """Every part asked for, in order; rows, goal summary, run information."""
    try:
        pytcp_version: str | None = importlib.metadata.version("pmd-pytcp")
    except importlib.metadata.PackageNotFoundError:
        pytcp_version = None
    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
        "load_start": os.getloadavg()[0], "python": platform.python_version(),
        "kernel": platform.release(), "pmd_pytcp": pytcp_version,
        "settings": dataclasses.asdict(s)}
    rows: list[Row] = []
    t0 = time.monotonic()
    if "iscsi" in s.parts:
        rows += run_iscsi(s, info)
    if "tcp" in s.parts:
        rows += run_tcp(s, info)
    if "kernel" in s.parts:
        rows += run_kernel(s, info)
    info["seconds"] = round(time.monotonic() - t0, 1)
    info["load_end"] = os.getloadavg()[0]
    add_ratios(rows, s)
    return rows, goal_summary(rows), info


QUICK = {"size": "64M", "tcp_size": "32M", "pytcp_size": "8M", "random_count": 2000,
         "random_seconds": 1.0, "perf_seconds": 1, "ceiling_seconds": 0.5}
DEFAULTS = {"size": "1G", "tcp_size": "256M", "pytcp_size": "32M", "random_count": 20000,
            "random_seconds": 5.0, "perf_seconds": 3, "ceiling_seconds": 2.0}


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join((__doc__ or "").splitlines()[2:]))
    ap.add_argument("--quick", action="store_true",
                    help="small sizes (64M iSCSI, 32M TCP, 8M PyTCP, 1 s random/perf, "
                         "0.5 s ceilings); options given explicitly still win")
    ap.add_argument("--size", help="iSCSI LUN = sequential transfer size (default 1G)")
    ap.add_argument("--tcp-size", help="TCP bulk bytes each way, ours and kernel "
                    "(default 256M)")
    ap.add_argument("--pytcp-size", help="PyTCP's bytes each way (default 32M: it is "
                    "~100x slower; keep it well above its 4 MiB window, or its receive "
                    "is mostly buffering)")
    ap.add_argument("--mtu", type=int, action="append",
                    help="MTU of our TAP, iSCSI and TCP parts (repeatable; default 1500 "
                         "and 65520)")
    ap.add_argument("--offload", choices=("off", "on", "both"), default="both",
                    help="our TAP's checksum/GSO offloads (default both)")
    ap.add_argument("--kernel-mtu", type=int, default=65520, help="veth MTU (65520)")
    ap.add_argument("--random-count", type=int, help="most random reads per queue depth")
    ap.add_argument("--random-seconds", type=float, help="most seconds per random test")
    ap.add_argument("--perf-seconds", type=int, help="seconds of iscsi-perf's seq read")
    ap.add_argument("--ceiling-seconds", type=float, help="seconds per TAP ceiling")
    ap.add_argument("--pytcp-timeout", type=float, default=300.0,
                    help="seconds PyTCP may take per direction")
    ap.add_argument("--no-pytcp", action="store_true", help="skip PyTCP")
    ap.add_argument("--part", choices=PARTS, action="append",
                    help="measure only this part (repeatable; default all)")
    ap.add_argument("--lun-dir", default="/dev/shm", help="where the LUN file lives")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--json-file", type=Path, help="also write the JSON to this file")
    args = ap.parse_args(argv)
    base = QUICK if args.quick else DEFAULTS

    def pick(name: str) -> Any:
        value = getattr(args, name)
        return base[name] if value is None else value

    try:
        size, tcp_size, pytcp_size = (parse_size(pick(n))
                                      for n in ("size", "tcp_size", "pytcp_size"))
    except TargetConfigError as e:
        ap.error(str(e))
    request = iscsi_io.Settings(size=size, mtus=[]).request
    if size % request:
        ap.error(f"--size must be a multiple of {_size(request)}")
    offloads = {"off": [False], "on": [True], "both": [False, True]}[args.offload]
    s = Settings(size=size, tcp_size=tcp_size, pytcp_size=pytcp_size,
                 mtus=args.mtu or [1500, 65520], offloads=offloads,
                 kernel_mtu=args.kernel_mtu, random_count=pick("random_count"),
                 random_seconds=pick("random_seconds"), perf_seconds=pick("perf_seconds"),
                 ceiling_seconds=pick("ceiling_seconds"), pytcp_timeout=args.pytcp_timeout,
                 lun_dir=args.lun_dir, parts=args.part or list(PARTS),
                 pytcp=not args.no_pytcp)
    # SIGTERM unwinds like Ctrl-C: processes stopped, namespaces and LUN files removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    problem = environment_problem()
    if problem is not None:
        print(f"run_all: cannot run: {problem}", file=sys.stderr)
        return 2
    try:
        rows, goals, info = run(s)
    except KeyboardInterrupt:
        print("run_all: interrupted (everything started was stopped and removed)",
              file=sys.stderr)
        return 130
    doc = {"info": info, "rows": [r.as_dict() for r in rows], "goals": goals}
    if args.json_file is not None:
        args.json_file.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc, indent=1) if args.json else table(rows, goals, info))
    failed = [r for r in rows if r.check == "FAIL"]
    for r in failed:
        print(f"run_all: FAIL {r.part} {r.test} {r.who} MTU {r.mtu}: {r.note}",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
