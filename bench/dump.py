"""Crash-dump throughput: ``bootinit dump`` beside ``qemu-img convert`` of the same dump.

One namespace with a bridge (MTU ``--mtu``), one tgtd, one LUN on tmpfs (``/dev/shm``)
twice the guest's memory. Each run:

1. ``bootinit dump URL --also-file DUMP -- <panic guest>``: the Linux guest of
   ``qemu/images.py`` built with ``panic=True`` (``--memory`` MiB, TCG) panics via
   sysrq-c; bootinit streams QEMU's ``dump-guest-memory`` (fd-passed pipe) onto the
   LUN over its own TCP/IP stack, synchronizes, reads it back; then QEMU writes the
   same paused state to ``DUMP`` on tmpfs (checked byte-identical). Reported: the
   streaming phase (first byte from QEMU to the last write acknowledged), the read-back
   verification, QEMU's own rate into the tmpfs file, panic to verified;
2. ``bootinit dump --extract URL -o FILE``: the LUN back into a file (checked);
3. ``qemu-img convert -n -f raw -O raw DUMP iscsi://...`` inside the namespace (libiscsi
   over the kernel's TCP, 8 coroutines): the same bytes onto the same LUN, wall time
   (includes process start and login; ``qemu-img info`` on the URL is timed too and
   shown subtracted). The LUN is then checked against ``DUMP``.

MB = 10**6 bytes. The ratio is bootinit dump's streaming MB/s ÷ qemu-img convert's
(wall). With ``--runs N`` the medians are shown. Example::

    sudo python bench/dump.py                     # one run, 128 MiB guest, MTU 9000 (~40 s)
    sudo python bench/dump.py --runs 3 --mtu 1500 --json
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.iscsi_io import BenchError, BenchTarget, bench_target, run_tool  # noqa: E402
from netstack.harness import BRIDGE_NAME, environment_problem  # noqa: E402
from qemu import images  # noqa: E402
from qemu.images import ImageError, copy_image  # noqa: E402

MiB = 1 << 20


@dataclass
class Row:
    """One way of moving the dump."""

    way: str
    mb_per_s: float
    seconds: float
    bytes: int
    note: str
    runs: int = 1

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        d = asdict(self)
        d["mb_per_s"] = round(self.mb_per_s, 2)
        d["seconds"] = round(self.seconds, 3)
        return d


@dataclass
class Settings:
    """What to measure."""

    memory_mb: int = 128
    mtu: int = 9000
    runs: int = 1
    fmt: str = "elf"
    qemu_img: bool = True
    lun_dir: str = "/dev/shm"
    timeout: float = 600.0


def _bootinit(target: BenchTarget, s: Settings, *argv: str,
              qemu_args: list[str] | None = None) -> dict[str, Any]:
    """``python -m bootinit dump`` with the target's link options; its JSON output."""
    link = ["--netns", target.topo.netns, "--bridge", BRIDGE_NAME, "--ip",
            str(target.topo.our_ip), "--mtu", str(s.mtu)]
    cmd = [sys.executable, "-m", "bootinit", "dump", *link, "--json", "--progress", "0",
           *argv]
    if qemu_args is not None:
        cmd += ["--", *qemu_args]
    try:
        cp = subprocess.run(cmd, capture_output=True, text=True, timeout=s.timeout,
                            cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"bootinit dump: no end after {s.timeout:.0f} s") from e
    if cp.returncode != 0:
        tail = "\n".join(cp.stderr.strip().splitlines()[-5:])
        raise BenchError(f"bootinit dump {' '.join(argv[:2])}: exit {cp.returncode}: {tail}")
    out: dict[str, Any] = json.loads(cp.stdout)
    return out


def _same_prefix(lun: Path, src: Path) -> bool:
    with open(lun, "rb") as a, open(src, "rb") as b:
        while True:
            want = b.read(4 * MiB)
            if not want:
                return True
            if a.read(len(want)) != want:
                return False


def one_run(target: BenchTarget, s: Settings, disk_src: Path, work: Path) -> dict[str, Any]:
    """Dump, extract, qemu-img convert once; the measurements."""
    disk = copy_image(disk_src, work / "disk.img")
    local = work / "qemu-local.dump"
    extracted = work / "extracted.dump"
    for p in (local, extracted):
        p.unlink(missing_ok=True)
    qemu_args = ["-m", str(s.memory_mb), "-vga", "none", "-drive",
                 f"file={disk},format=raw,if=virtio", "-serial",
                 f"file:{work / 'serial.log'}", "-no-reboot"]
    t0 = time.perf_counter()
    res = _bootinit(target, s, target.url, "--format", s.fmt, "--also-file", str(local),
                    qemu_args=qemu_args)
    wall = time.perf_counter() - t0
    header = res["header"]
    if not (res["verified"] and res["also_file_identical"]):
        raise BenchError(f"bootinit dump: not verified: {res}")
    size = int(header["data_size"])
    ex = _bootinit(target, s, "--extract", target.url, "-o", str(extracted))
    h = hashlib.sha256()
    with open(extracted, "rb") as f:
        for block in iter(lambda: f.read(4 * MiB), b""):
            h.update(block)
    if h.hexdigest() != header["checksum"]:
        raise BenchError("extracted dump differs from the header's checksum")
    out: dict[str, Any] = {
        "size": size, "guest_memory": header["guest_memory"],
        "dump_mb_per_s": res["mb_per_s"], "dump_seconds": res["seconds"],
        "memory_mb_per_s": res["memory_mb_per_s"],
        "verify_mb_per_s": res["verify_mb_per_s"],
        "qemu_file_mb_per_s": res["also_file_mb_per_s"],
        "panic_to_verified": res["panic_to_done_seconds"], "bootinit_wall": wall,
        "extract_seconds": ex["seconds"], "extract_mb_per_s": size / ex["seconds"] / 1e6,
        "writes": res["writes"], "max_inflight": res["max_inflight"],
    }
    extracted.unlink(missing_ok=True)
    if s.qemu_img:
        _, t_info = run_tool(target, ["qemu-img", "info", target.url], 60)
        _, t_conv = run_tool(target, ["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw",
                                      str(local), target.url], s.timeout)
        if not _same_prefix(target.lun_path, local):
            raise BenchError("qemu-img convert: the LUN differs from the dump file")
        out.update(qemu_img_seconds=t_conv, qemu_img_mb_per_s=size / t_conv / 1e6,
                   qemu_img_info_seconds=t_info,
                   qemu_img_net_mb_per_s=size / max(t_conv - t_info, 1e-6) / 1e6)
    local.unlink(missing_ok=True)
    disk.unlink(missing_ok=True)
    return out


def rows_of(runs: list[dict[str, Any]], s: Settings) -> list[Row]:
    """Median rows over the runs."""
    def med(key: str) -> float:
        return statistics.median(float(r[key]) for r in runs)

    size = int(runs[0]["size"])
    n = len(runs)
    rows = [
        Row("bootinit dump (QEMU pipe -> LUN)", med("dump_mb_per_s"), med("dump_seconds"),
            size, "streaming phase: first byte from QEMU to last write acknowledged", n),
        Row("bootinit dump read-back verify", med("verify_mb_per_s"),
            size / med("verify_mb_per_s") / 1e6, size, "header + data, SHA-256", n),
        Row("bootinit dump --extract (LUN -> file)", med("extract_mb_per_s"),
            med("extract_seconds"), size, "reads only (after login)", n),
        Row("QEMU dump-guest-memory -> tmpfs file", med("qemu_file_mb_per_s"),
            size / med("qemu_file_mb_per_s") / 1e6, size, "QEMU's own rate: the source's "
            "ceiling", n),
    ]
    if s.fmt != "elf":
        rows[0].note += f" ({med('memory_mb_per_s'):.1f} MB/s of guest memory)"
    if "qemu_img_mb_per_s" in runs[0]:
        rows += [
            Row("qemu-img convert file -> iscsi://", med("qemu_img_mb_per_s"),
                med("qemu_img_seconds"), size, "wall, incl. process start + login", n),
            Row("qemu-img convert minus qemu-img info", med("qemu_img_net_mb_per_s"),
                med("qemu_img_seconds") - med("qemu_img_info_seconds"), size,
                "start + login subtracted", n),
        ]
    return rows


def table(rows: list[Row], info: dict[str, Any]) -> str:
    """The text table."""
    lines = [f"dump of a {info['memory_mb']} MiB guest ({info['format']}, "
             f"{info['dump_bytes'] / 1e6:.1f} MB), MTU {info['mtu']}, LUN on "
             f"{info['lun_dir']}, {info['runs']} run(s); medians",
             f"{'way':<40} {'MB/s':>8} {'seconds':>8}  note"]
    for r in rows:
        lines.append(f"{r.way:<40} {r.mb_per_s:8.1f} {r.seconds:8.2f}  {r.note}")
    if info.get("ratio_vs_qemu_img") is not None:
        lines.append(f"bootinit dump / qemu-img convert (wall): {info['ratio_vs_qemu_img']:.2f}"
                     f"; panic to verified on the LUN: {info['panic_to_verified']:.1f} s")
    return "\n".join(lines)


@contextlib.contextmanager
def _workdir(base: str) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="bootinit-bench-dump-", dir=base))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run(s: Settings) -> tuple[list[Row], dict[str, Any]]:
    """Everything; (rows, info)."""
    try:
        image = images.linux_image(panic=True)
    except ImageError as e:
        raise BenchError(f"panic guest image: {e}") from e
    lun_size = max(2 * s.memory_mb, 64) * MiB
    runs: list[dict[str, Any]] = []
    with bench_target(lun_size, mtu=s.mtu, lun_dir=s.lun_dir, prefix="bdm") as target, \
            _workdir(s.lun_dir) as work:
        for _ in range(s.runs):
            runs.append(one_run(target, s, image.path, work))
    rows = rows_of(runs, s)
    info: dict[str, Any] = {
        "memory_mb": s.memory_mb, "format": s.fmt, "mtu": s.mtu, "runs": s.runs,
        "lun_dir": s.lun_dir, "dump_bytes": runs[0]["size"],
        "panic_to_verified": statistics.median(r["panic_to_verified"] for r in runs),
        "host": platform.node(), "python": platform.python_version(),
        "cpus": os.cpu_count(), "per_run": runs,
        "ratio_vs_qemu_img": (statistics.median(r["dump_mb_per_s"] for r in runs)
                              / statistics.median(r["qemu_img_mb_per_s"] for r in runs)
                              if s.qemu_img else None),
    }
    return rows, info


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--memory", type=int, default=128, help="guest MiB (128)")
    ap.add_argument("--mtu", type=int, default=9000, help="MTU of bridge and TAP (9000)")
    ap.add_argument("--runs", type=int, default=1, help="runs; medians are shown (1)")
    ap.add_argument("--format", default="elf", choices=["elf", "kdump-zlib"])
    ap.add_argument("--no-qemu-img", action="store_true", help="skip qemu-img convert")
    ap.add_argument("--lun-dir", default="/dev/shm", help="LUN and dump files (tmpfs)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = ap.parse_args(argv)
    if not (64 <= args.memory <= 4096 and 1 <= args.runs <= 20):
        ap.error("--memory 64..4096, --runs 1..20")
    s = Settings(memory_mb=args.memory, mtu=args.mtu, runs=args.runs, fmt=args.format,
                 qemu_img=not args.no_qemu_img, lun_dir=args.lun_dir)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    problem = environment_problem()
    if problem is not None:
        print(f"dump bench: cannot run: {problem}", file=sys.stderr)
        return 2
    if shutil.which("qemu-system-x86_64") is None:
        print("dump bench: needs qemu-system-x86_64", file=sys.stderr)
        return 2
    try:
        rows, info = run(s)
    except BenchError as e:
        print(f"dump bench: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dump bench: interrupted (everything started was stopped and removed)",
              file=sys.stderr)
        return 130
    doc = {"info": info, "rows": [r.as_dict() for r in rows]}
    print(json.dumps(doc, indent=1) if args.json else table(rows, info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
