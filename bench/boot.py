"""Guest boot time: bootinit beside QEMU's own iSCSI driver (libiscsi) and a local file.

Seconds from QEMU's start to the guest's marker on the serial console, same image, same
QEMU command line (TCG, virtio disk, the same iBFT), same run, for each guest:

* ``bootsector`` — the 512-byte guest of ``qemu/images.py`` that reads 4095 sectors by
  INT 13h and prints ``BOOTINIT-BOOTSECTOR OK``;
* ``linux`` — the Debian kernel + busybox initramfs guest, up to ``BOOTINIT-LINUX-MARKER``
  (its /init's first line: the kernel and initramfs were read from the disk by syslinux).

Ways to the disk:

* ``local`` — ``-drive file=DISK`` (a fresh copy on tmpfs);
* ``libiscsi`` — ``-drive file=iscsi://...`` (qemu-block-extra), QEMU run inside the
  namespace (``ip netns exec``) so that the kernel's TCP reaches tgtd on the bridge;
* ``bootinit`` — bootinit's stack on a TAP in the namespace, iSCSI to tgtd, NBD to QEMU
  (:func:`bootinit.boot.run_guest`, what ``bootinit boot`` does). Its login and LUN
  checks happen before QEMU starts and are not in the time; ``setup`` reports them.

One namespace with a bridge and one tgtd serve the LUN (on tmpfs); the LUN and the local
copy are reset to the pristine image before every run (the Linux guest writes to its
disk). The runs are interleaved (local, libiscsi, bootinit, local, ...); the table shows
the median and the minimum of ``--runs`` runs and the ratios bootinit / libiscsi of the
medians and of the minima (the minimum is the run least disturbed by other load on the
machine). The serial console is polled every 5 ms for all three.

    sudo python bench/boot.py                       # both guests, 3 runs each (~1.5 min)
    sudo python bench/boot.py --guest linux --runs 11 --nice -10 --json
"""

from __future__ import annotations

import argparse
import contextlib
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bootinit.boot import BootSource, GuestSettings, guest_config, run_guest  # noqa: E402
from bootinit.commands import Context, fill_defaults  # noqa: E402
from bootinit.targets import Lun, Tgtd  # noqa: E402
from firmware_tables import parse_iscsi_url  # noqa: E402
from netstack.harness import BRIDGE_NAME, Topology, environment_problem, topology  # noqa: E402
from qemu import images  # noqa: E402
from qemu.launch import QemuConfig, QemuVm  # noqa: E402

IQN = "iqn.2024-01.org.bootinit:bootbench"
WAYS = ("local", "libiscsi", "bootinit")
EXTRA_WAYS = ("bootinit-no-ra",)
"""Not run unless asked (``--way``): bootinit without its read-ahead."""
GUESTS = ("bootsector", "linux")
POLL = 0.005
QEMU = "qemu-system-x86_64"


class BenchError(Exception):
    """A measurement could not be made; says which and why."""


@dataclass
class Guest:
    """One guest image and what to wait for."""

    name: str
    image: Path
    marker: str
    memory_mb: int
    limit: float


@dataclass
class Run:
    """One boot."""

    guest: str
    way: str
    marker: float
    total: float
    returncode: int | None
    setup: float | None = None


@dataclass
class Row:
    """Median/min of the runs of one guest and way."""

    guest: str
    way: str
    runs: list[float] = field(default_factory=list)
    setups: list[float] = field(default_factory=list)
    ratio: float | None = None
    ratio_min: float | None = None

    @property
    def median(self) -> float:
        """Median seconds to the marker."""
        return statistics.median(self.runs)

    @property
    def best(self) -> float:
        """Fastest run."""
        return min(self.runs)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        d = asdict(self)
        d.update(median=round(self.median, 3), min=round(self.best, 3))
        return d


def guests(wanted: list[str]) -> list[Guest]:
    """Build (or reuse) the images."""
    out = []
    try:
        for name in wanted:
            if name == "bootsector":
                bs = images.bootsector_image()
                out.append(Guest(name, bs.path, images.BOOTSECTOR_MARKER, 32, 60))
            else:
                li = images.linux_image()
                out.append(Guest(name, li.path, images.LINUX_MARKER, 256, 180))
    except images.ImageError as e:
        raise BenchError(f"guest image: {e}") from None
    return out


def reset(image: Path, dst: Path) -> None:
    """Make ``dst`` hold exactly ``image`` again (same inode: tgtd keeps it open)."""
    with open(image, "rb") as src, open(dst, "r+b" if dst.exists() else "wb") as out:
        shutil.copyfileobj(src, out, 4 << 20)
        out.truncate()


class NetnsQemu(QemuVm):
    """QEMU started inside a network namespace (``ip netns exec`` execs it: same PID)."""

    def __init__(self, netns: str, cfg: QemuConfig, workdir: Path, watch: list[str]) -> None:
        super().__init__(cfg, workdir, watch)
        self.netns = netns

    @property
    def argv(self) -> list[str]:
        """``ip netns exec NS qemu ...``."""
        return ["ip", "netns", "exec", self.netns, *super().argv]


def _sleep(t: float) -> None:
    time.sleep(min(t, POLL))


def qemu_run(guest: Guest, way: str, drive: str, ibft: Path, work: Path,
             netns: str | None) -> Run:
    """Boot with QEMU reaching the disk itself (local file or libiscsi)."""
    cfg = QemuConfig(drive=drive, memory_mb=guest.memory_mb, acpi_tables=[ibft])
    vmdir = work / f"vm-{way}"
    shutil.rmtree(vmdir, ignore_errors=True)
    vm = NetnsQemu(netns, cfg, vmdir, [guest.marker]) if netns else QemuVm(
        cfg, vmdir, [guest.marker])
    with vm:
        vm.start()
        res = vm.wait(guest.limit, pump=_sleep)
        rc = vm.stop()
    if guest.marker not in res.marks:
        raise BenchError(f"{guest.name} via {way}: no marker within {guest.limit:g} s "
                         f"(exit {rc}); serial tail: {res.serial[-500:]!r}; "
                         f"qemu: {vm.qemu_log()[-500:]!r}")
    return Run(guest.name, way, res.marks[guest.marker], res.seconds, rc)


def bootinit_run(guest: Guest, topo: Topology, url: str, readahead: bool = True) -> Run:
    """Boot through bootinit (in this process, as ``bootinit boot`` does)."""
    args = argparse.Namespace(netns=topo.netns, bridge=BRIDGE_NAME, ip=str(topo.our_ip),
                              json=False, verbose=0)
    fill_defaults(args)
    t0 = time.monotonic()
    ctx = Context(args)
    holder: dict[str, float] = {}
    try:
        settings = GuestSettings(memory_mb=guest.memory_mb, time_limit=guest.limit,
                                 watch=[guest.marker], keep_serial=True,
                                 readahead=readahead)
        def started(vm: QemuVm) -> None:
            holder.setdefault("start", vm.started_at)

        res = run_guest(ctx, BootSource(parse_iscsi_url(url), "URL"), settings,
                        on_started=started)
    finally:
        ctx.close()
    if guest.marker not in res.marks:
        raise BenchError(f"{guest.name} via bootinit: no marker (exit {res.exit_status}); "
                         f"serial tail: {res.serial[-500:]!r}; qemu: {res.qemu_log[-500:]!r}")
    way = "bootinit" if readahead else "bootinit-no-ra"
    return Run(guest.name, way, res.marks[guest.marker], res.seconds,
               res.qemu_returncode, setup=holder["start"] - t0)


@contextlib.contextmanager
def bench_target(lun: Path) -> Iterator[tuple[Topology, Tgtd]]:
    """Namespace + bridge + tgtd serving ``lun`` as LUN 1 (all removed on exit)."""
    with topology(bridge=True, open_tap=False, prefix="bbt", peer_ip="10.83.0.1/24",
                  our_ip="10.83.0.2/24") as topo, \
            Tgtd(topo.netns, listen=(str(topo.peer_addr), 3260)) as tgtd:
        tgtd.add_target(IQN, [Lun(lun)])
        yield topo, tgtd


def measure(guest: Guest, runs: int, ways: list[str], work: Path) -> list[Run]:
    """``runs`` interleaved boots of ``guest`` by every way."""
    lun = work / f"{guest.name}-lun.img"
    local = work / f"{guest.name}-local.img"
    reset(guest.image, lun)
    out: list[Run] = []
    with bench_target(lun) as (topo, _tgtd):
        url = f"iscsi://{topo.peer_addr}/{IQN}/1"
        ibft = work / "ibft.bin"
        ibft.write_bytes(guest_config(
            "iqn.2026-11.org.bootinit:bench", parse_iscsi_url(url), None, topo.our_ip, None,
            topo.our_mac).to_ibft())
        for i in range(runs):
            for way in ways:
                if way == "local":
                    reset(guest.image, local)
                    r = qemu_run(guest, way, str(local), ibft, work, None)
                elif way == "libiscsi":
                    reset(guest.image, lun)
                    r = qemu_run(guest, way, url, ibft, work, topo.netns)
                else:
                    reset(guest.image, lun)
                    r = bootinit_run(guest, topo, url, readahead=way == "bootinit")
                print(f"  {guest.name:10} run {i + 1}/{runs} {way:14} marker {r.marker:6.2f} s"
                      f"  exit after {r.total:6.2f} s", file=sys.stderr, flush=True)
                out.append(r)
    return out


def rows_of(runs: list[Run]) -> list[Row]:
    """Group the runs; ratio bootinit / libiscsi of the medians."""
    rows: dict[tuple[str, str], Row] = {}
    for r in runs:
        row = rows.setdefault((r.guest, r.way), Row(r.guest, r.way))
        row.runs.append(round(r.marker, 3))
        if r.setup is not None:
            row.setups.append(round(r.setup, 3))
    for (g, _way), row in rows.items():
        ref = rows.get((g, "libiscsi"))
        if ref is not None:
            row.ratio = row.median / ref.median
            row.ratio_min = row.best / ref.best
    return list(rows.values())


def table(rows: list[Row], info: dict[str, Any]) -> str:
    """The text table."""
    lines = [f"guest boot, seconds from QEMU start to the marker ({info['runs']} runs; "
             f"{info['accel']}, {info['cpus']} CPUs, load {info['load']} at the start, "
             f"nice {info['nice']}, {info['qemu']})",
             f"{'guest':<11}{'way':<15}{'median':>8}{'min':>8}{'med/lib':>10}"
             f"{'min/lib':>10}{'setup':>8}"]
    for r in rows:
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
        ratio_min = f"{r.ratio_min:.2f}x" if r.ratio_min is not None else "-"
        setup = f"{statistics.median(r.setups):.2f}" if r.setups else "-"
        lines.append(f"{r.guest:<11}{r.way:<15}{r.median:>8.2f}{r.best:>8.2f}{ratio:>10}"
                     f"{ratio_min:>10}{setup:>8}")
    lines.append("med/lib, min/lib: median and minimum over libiscsi's; setup: bootinit's "
                 "stack, login and LUN checks before QEMU starts (not in the times)")
    return "\n".join(lines)


def qemu_version() -> str:
    """``QEMU 7.2.x``."""
    try:
        out = subprocess.run([QEMU, "--version"], capture_output=True, text=True,
                             timeout=10).stdout
    except OSError:
        return "QEMU ?"
    first = out.splitlines()[0] if out else ""
    return "QEMU " + first.split("version", 1)[-1].split()[0] if "version" in first else first


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guest", choices=(*GUESTS, "both"), default="both")
    ap.add_argument("--runs", type=int, default=3, help="boots per guest and way (3)")
    ap.add_argument("--way", action="append", choices=WAYS + EXTRA_WAYS,
                    help="only these ways (repeatable; default all three)")
    ap.add_argument("--nice", type=int, default=0, metavar="N",
                    help="add N to this process's niceness (its QEMUs and tgtd inherit it); "
                         "negative (root) makes other load on the machine disturb less")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--json-file", type=Path, help="also write the JSON to this file")
    args = ap.parse_args(argv)
    if not 1 <= args.runs <= 50:
        ap.error("--runs 1..50")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.nice:
        try:
            os.nice(args.nice)
        except OSError as e:
            ap.error(f"--nice {args.nice}: {e}")
    problem = environment_problem()
    if problem is None:
        missing = [t for t in (QEMU, "tgtd", "tgtadm") if shutil.which(t) is None]
        if missing:
            problem = f"needs {', '.join(missing)} (apt-get install qemu-system-x86 tgt)"
    if problem is not None:
        print(f"boot bench: cannot run: {problem}", file=sys.stderr)
        return 2
    ways = args.way or list(WAYS)
    wanted = list(GUESTS) if args.guest == "both" else [args.guest]
    info = {"runs": args.runs, "accel": "tcg", "cpus": os.cpu_count(), "qemu": qemu_version(),
            "nice": os.nice(0), "load": round(os.getloadavg()[0], 2),
            "python": platform.python_version(), "kernel": platform.release()}
    runs: list[Run] = []
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    try:
        with tempfile.TemporaryDirectory(prefix="bootinit-bootbench-", dir=base) as tmp:
            for g in guests(wanted):
                runs += measure(g, args.runs, ways, Path(tmp))
    except BenchError as e:
        print(f"boot bench: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("boot bench: interrupted (everything started was stopped and removed)",
              file=sys.stderr)
        return 130
    rows = rows_of(runs)
    doc = {"info": info, "rows": [r.as_dict() for r in rows]}
    if args.json_file is not None:
        args.json_file.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc, indent=1) if args.json else table(rows, info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
