"""``bootinit demo``: boot a Linux guest from a tgtd LUN through bootinit, start to end.

Builds (or reuses, from ``~/.cache/bootinit``) the Linux guest disk of
:mod:`qemu.images`, makes a lab of its own (network namespace, bridge, tgtd serving a
copy of the disk on tmpfs as LUN 1), boots QEMU from that LUN through bootinit (its own
TCP/IP stack on a TAP in the namespace, iSCSI to tgtd, NBD to QEMU, an iBFT for the
guest), shows the guest's serial console and the counters, checks what the guest did
(the pattern it wrote is in tgtd's backing file; the iBFT it saw under
``/sys/firmware/ibft`` is the one bootinit built) and removes everything again, also on
Ctrl-C or SIGTERM. Needs root, QEMU, tgt and the image tools; says which packages when
something is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from bootinit.boot import (
    DEFAULT_QEMU,
    BootError,
    BootResult,
    BootSource,
    GuestSettings,
    Interrupts,
    add_boot_arguments,
    run_guest,
    stats_lines,
    summary,
)
from bootinit.commands import Context
from firmware_tables import parse_ibft, parse_target, render_sysfs

IBFT_ROOT = "/sys/firmware/ibft"
TMPFS = Path("/dev/shm")

#: tool -> Debian package, for the clear error on a fresh machine.
DEMO_TOOLS = {"ip": "iproute2", "ss": "iproute2", "tgtd": "tgt", "tgtadm": "tgt",
              "mkfs.vfat": "dosfstools", "mcopy": "mtools", "syslinux": "syslinux",
              "as": "binutils", "ld": "binutils", "apt-get": "apt", "dpkg-deb": "dpkg"}
DEMO_FILES = {"/usr/lib/syslinux/mbr/mbr.bin": "syslinux-common", "/dev/net/tun": "(kernel)"}


def missing_packages(qemu: str = DEFAULT_QEMU) -> list[str]:
    """Debian packages the demo needs that are not installed (by the tools they hold)."""
    want: dict[str, str] = dict(DEMO_TOOLS)
    if os.sep not in qemu:
        want[qemu] = "qemu-system-x86"
    missing = [pkg for tool, pkg in want.items() if shutil.which(tool) is None]
    if os.sep in qemu and not os.access(qemu, os.X_OK):
        missing.append("qemu-system-x86")
    missing += [pkg for path, pkg in DEMO_FILES.items() if not os.path.exists(path)]
    return sorted(set(missing))


def check_environment(qemu: str = DEFAULT_QEMU) -> None:
    """Raise :class:`BootError` naming what to install or fix."""
    if os.geteuid() != 0:
        raise BootError("needs root (network namespace, TAP device, tgtd): run it with sudo")
    pkgs = missing_packages(qemu)
    if "(kernel)" in pkgs:
        raise BootError("needs /dev/net/tun (the tun kernel module: modprobe tun)")
    if pkgs:
        raise BootError(f"missing tools; install them with: apt-get install {' '.join(pkgs)}")


# --------------------------------------------------------------------------- checks


def serial_ibft(serial: str) -> dict[str, str]:
    """``path -> value`` the Linux guest printed between BOOTINIT-IBFT-BEGIN and -END."""
    begin, end = serial.find("BOOTINIT-IBFT-BEGIN"), serial.find("BOOTINIT-IBFT-END")
    if begin < 0 or end < begin:
        return {}
    out: dict[str, str] = {}
    for line in serial[begin:end].splitlines()[1:]:
        line = line.rstrip("\r")
        if line.startswith(IBFT_ROOT + "/") and "=" in line:
            path, value = line.split("=", 1)
            out[path] = value
    return out


def expected_ibft(table: bytes) -> dict[str, str]:
    """What the guest prints for ``table``: ``firmware_tables``' sysfs rendering (the
    ``--sysfs-format`` view), each file as the guest's ``cat | tr '\\n' ' '`` shows it."""
    out: dict[str, str] = {}
    for directory, attrs in render_sysfs(parse_ibft(table)).items():
        for attr, content in attrs.items():
            value = content.replace("\n", " ")
            out[f"{IBFT_ROOT}/{directory}/{attr}"] = value[:-1] if value.endswith(" ") \
                else value
    return out


def ibft_differences(seen: dict[str, str], expected: dict[str, str]) -> list[str]:
    """Human-readable differences (empty: the guest saw the table exactly)."""
    diffs = []
    for path in sorted(set(seen) | set(expected)):
        a, b = seen.get(path), expected.get(path)
        if a != b:
            diffs.append(f"{path}: guest {a!r}, table {b!r}")
    return diffs


# --------------------------------------------------------------------------- the demo


def _say(out: IO[str], text: str) -> None:
    print(f"\n== {text}", file=out, flush=True)


@contextlib.contextmanager
def _tmpfs_copy(src: Path) -> Iterator[Path]:
    base = TMPFS if TMPFS.is_dir() else Path(tempfile.gettempdir())
    d = Path(tempfile.mkdtemp(prefix="bootinit-demo-", dir=base))
    try:
        dst = d / "disk.img"
        shutil.copyfile(src, dst)
        yield dst
    finally:
        shutil.rmtree(d, ignore_errors=True)


#: The demo's link MTU: the largest a TAP takes, so every 64 KiB guest request is one frame.
DEMO_MTU = 65520


def run_demo(args: argparse.Namespace, interrupts: Interrupts, out: IO[str]) -> int:
    """The demo proper (see the module doc); returns the exit status."""
    from bootinit.lab import Lab, LabError
    from bootinit.targets import TargetError
    from qemu import images

    check_environment(args.qemu_binary)
    t0 = time.monotonic()
    linux = args.guest == "linux"
    _say(out, f"1. guest image ({args.guest})")
    try:
        if linux:
            li = images.linux_image()
            image, watch = li.path, [images.LINUX_MARKER, images.LINUX_PATTERN_OK]
            print(f"Linux {li.kernel_release} + busybox initramfs on a syslinux disk: {image}",
                  file=out)
        else:
            bs = images.bootsector_image()
            image, watch = bs.path, [images.BOOTSECTOR_MARKER]
            print(f"boot sector reading {bs.sectors} sectors by INT 13h: {image}", file=out)
    except images.ImageError as e:
        raise BootError(f"cannot build the guest image: {e}") from None
    name = f"bidemo{os.getpid() % 100000}"
    with _tmpfs_copy(image) as disk:
        _say(out, f"2. lab {name}: namespace, bridge, tgtd with the disk as LUN 1")
        lab = Lab(name=name, luns=[disk], lun_dir=disk.parent)
        try:
            lab.up()
        except (LabError, TargetError) as e:
            raise BootError(str(e)) from None
        try:
            print(f"target {lab.url} (tgtd pid {lab.tgtd.pid if lab.tgtd else '?'}), "
                  f"backing file {disk} on tmpfs", file=out)
            print(f"bootinit: {' '.join(lab.link_options)}", file=out)
            for k, v in (("netns", lab.netns), ("bridge", lab.bridge),
                         ("ip", str(lab.client_ip))):
                setattr(args, k, v)
            if getattr(args, "mtu", None) is None:
                args.mtu = str(DEMO_MTU)  # the lab's bridge takes its only port's MTU
            _say(out, "3. bootinit: stack up, login, boot signature, iBFT, QEMU on NBD "
                      "(serial console follows)")
            out.flush()
            settings = GuestSettings(memory_mb=args.memory, qemu=args.qemu_binary,
                                     extra_args=list(args.qemu_args),
                                     time_limit=args.time_limit,
                                     readahead=not args.no_readahead,
                                     serial=sys.stdout.buffer if args.serial is None
                                     else None, watch=watch)
            result = _boot(args, BootSource(parse_target(lab.url), f"lab {name}"),
                           settings, interrupts)
            if args.serial is not None:
                Path(args.serial).write_bytes(result.serial)
            _say(out, "4. counters")
            print(summary(result), file=out)
            for line in stats_lines(result):
                print(f"  {line}", file=out)
            ok = _checks(result, disk, linux, out) if result.interrupted is None else True
        finally:
            _say(out, f"5. teardown: QEMU stopped, logged out, TAP removed; lab {name} down")
            try:
                done = lab.down()
            except LabError as e:
                print(f"problem: {e}", file=out)
                ok = False
            else:
                print("; ".join(done), file=out)
    print(f"\ndemo finished in {time.monotonic() - t0:.1f} s: exit status "
          f"{result.exit_status}{'' if ok else ' (but a check failed)'}", file=out)
    if not ok and result.exit_status == 0:
        return 1
    return result.exit_status


def _boot(args: argparse.Namespace, source: BootSource, settings: GuestSettings,
          interrupts: Interrupts) -> BootResult:
    ctx = Context(args)
    try:
        return run_guest(ctx, source, settings, interrupts)
    finally:
        ctx.close()


def _checks(result: BootResult, disk: Path, linux: bool, out: IO[str]) -> bool:
    from qemu import images

    text = result.serial.decode(errors="replace")
    ok = True
    if not linux:
        good = images.BOOTSECTOR_MARKER in text
        print(f"check: boot-sector checksum line {'seen' if good else 'MISSING'}", file=out)
        return good
    with open(disk, "rb") as f:
        f.seek(images.DATA_OFFSET)
        found = f.read(len(images.PATTERN)) == images.PATTERN
    print(f"check: the guest's pattern is {'in' if found else 'NOT in'} tgtd's backing file "
          f"at offset {images.DATA_OFFSET >> 20} MiB", file=out)
    seen, want = serial_ibft(text), expected_ibft(result.ibft)
    diffs = ibft_differences(seen, want)
    if seen and not diffs:
        print(f"check: the guest's {IBFT_ROOT} shows the iBFT bootinit built "
              f"({len(seen)} attributes equal)", file=out)
    else:
        ok = False
        print(f"check: the guest's {IBFT_ROOT} differs from the iBFT bootinit built:", file=out)
        for d in diffs or ["(no iBFT attributes printed)"]:
            print(f"  {d}", file=out)
    return ok and found


def cmd_demo(args: argparse.Namespace) -> int:
    """``bootinit demo``."""
    out = sys.stdout
    with Interrupts() as interrupts:
        try:
            return run_demo(args, interrupts, out)
        except KeyboardInterrupt:
            print("\nbootinit demo: interrupted; everything started was stopped and "
                  "removed", file=sys.stderr)
            return interrupts.exit_status or 130


def description() -> str:
    """The first paragraph of the module doc (for ``--help``)."""
    return (__doc__ or "").split("\n\n")[0].split(": ", 1)[-1]


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``bootinit demo``."""
    add_boot_arguments(p, target=False)
    p.add_argument("--guest", choices=("linux", "bootsector"), default="linux",
                   help="the Linux guest (default) or the 512-byte boot-sector guest")


__all__ = ["check_environment", "cmd_demo", "description", "expected_ibft", "ibft_differences",
           "missing_packages", "run_demo", "serial_ibft"]
