"""``bootinit boot``: boot a QEMU guest from an iSCSI LUN through bootinit's own stack.

What a NIC vendor's boot driver or iPXE's ``sanboot`` does, with QEMU as the machine::

    bootinit boot iscsi://10.77.0.1/iqn.2024-01.org.bootinit:lab/1 \\
        --netns NS --bridge br0 --ip 10.77.0.2/24 [-- EXTRA QEMU ARGS]
    bootinit boot --ibft table.bin --netns NS --bridge br0      # address etc. from the table
    bootinit boot --lab bilab                                    # a lab made by 'lab up'

1. The boot configuration comes from an iBFT (``--ibft FILE``, or ``--machine-ibft``: this
   machine's table, from ``/sys/firmware/acpi/tables`` or ``/sys/firmware/ibft``), from an
   ``iscsi://`` URL or an iPXE/RFC 4173 root path ``iscsi:host:proto:port:lun:iqn``, or from
   a lab recorded by ``bootinit lab up`` (``--lab NAME``: its namespace, bridge, address,
   URL and CHAP), or from DHCP (``--dhcp`` with no target: the root path, option 17, and
   the initiator name, option 203). From an iBFT the initiator name, our address, gateway,
   MAC, VLAN and the target (with CHAP) are taken; link options given on the command line
   win. Several URLs are paths to one LUN (``--multipath``).
2. bootinit brings up its TCP/IP stack on a TAP (the link options; the TAP's kernel side
   goes into the given namespace, nothing is configured in the root namespace), logs in,
   opens the LUN (TEST UNIT READY, READ CAPACITY, INQUIRY) and checks the boot sector
   signature 0x55AA at offset 510 of LBA 0.
3. It builds an iBFT describing this boot for the guest (initiator name; NIC with our
   address, prefix, gateway, MAC, VLAN, origin static or DHCP; the target's address,
   port, LUN, name, CHAP and reverse CHAP), writes it to a private temporary file and
   gives it to QEMU with ``-acpitable file=...``.
4. QEMU (TCG) starts with the LUN as its boot disk, served by bootinit's NBD server on a
   UNIX socket: ``-drive file=nbd:unix:PATH,format=raw,if=virtio`` (virtio: a Linux boot
   is a few hundred NBD requests, against ~20000 over IDE), ``-no-reboot``, an
   ``isa-debug-exit`` device, plus whatever follows ``--``. Every guest disk request
   becomes iSCSI commands in bootinit's loop (sequential reads are read ahead:
   :class:`ReadAhead`); a lost connection is recovered (ERL 0 session reinstatement)
   while the guest waits.
5. The guest's serial console goes to stdout (or ``--serial FILE``). When QEMU exits,
   bootinit logs out, prints a summary of the counters on stderr (all of them with
   ``--stats``) and exits with QEMU's exit status: an ``isa-debug-exit`` guest's
   ``(value << 1) | 1`` reaches the caller.

Ctrl-C or SIGTERM stop QEMU (by PID: SIGTERM while still serving its last requests, then
SIGKILL), log out and remove the TAP; the exit status is then 130 (SIGINT) or 143
(SIGTERM). A second signal skips the orderly part. Errors before the guest starts
(login, no boot signature, QEMU missing) print one line and exit 1 (2 for usage errors).

``bootinit demo`` (:mod:`bootinit.demo`) does all of this on a lab it makes itself.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface, ip_address
from pathlib import Path
from types import FrameType
from typing import IO, Any

from bootinit.blockdev import BlockDevice
from bootinit.commands import (
    CliError,
    Context,
    DashDashParser,
    chap_for,
    fill_defaults,
    net_options,
    target_of,
)
from bootinit.iscsi.chap import ChapCredentials as IscsiChap
from bootinit.multipath import MultipathDevice
from bootinit.nbd_server import NbdServer
from firmware_tables import (
    BootConfig,
    ChapCredentials,
    FirmwareTableError,
    NicConfig,
    TargetSpec,
    find_acpi_table,
    parse_ibft,
    read_sysfs,
    read_table_file,
)
from firmware_tables.ibft.find import ACPI_TABLES_DIR
from firmware_tables.ibft.sysfs import SYSFS_IBFT_DIR
from firmware_tables.uri import mask_url
from qemu.launch import QemuConfig, QemuError, QemuVm

BOOT_SIGNATURE = b"\x55\xaa"
DEFAULT_QEMU = "qemu-system-x86_64"
DEFAULT_MEMORY_MB = 256
SERIAL_POLL = 0.005
"""Seconds between looks at the serial file while the guest runs (marker time resolution)."""
STOP_GRACE = 5.0
"""Seconds QEMU gets after SIGTERM (the loop keeps serving it) before SIGKILL."""


class BootError(Exception):
    """The boot could not be started or went wrong; the message says why (one line)."""


# --------------------------------------------------------------------------- signals


class Interrupts:
    """SIGINT/SIGTERM while booting.

    Before the guest runs a signal raises ``KeyboardInterrupt`` (everything unwinds and is
    cleaned up). While the guest runs (``graceful`` on) the first signal only records
    itself and wakes the loop through a pipe, so the loop can stop QEMU while still
    serving its last requests; a second signal raises ``KeyboardInterrupt``.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.graceful = False
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._old: dict[int, Any] = {}

    @property
    def fd(self) -> int:
        """Readable after a signal."""
        return self._r

    def drain(self) -> None:
        """Empty the wake-up pipe."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self._r, 64):
                pass

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
        if first and self.graceful:
            with contextlib.suppress(OSError):
                os.write(self._w, b"!")
            return
        raise KeyboardInterrupt

    @property
    def exit_status(self) -> int | None:
        """128 + the signal number, once one arrived."""
        return None if self.signum is None else 128 + self.signum

    def __enter__(self) -> Interrupts:
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        os.close(self._r)
        os.close(self._w)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class BootSource:
    """Where the boot configuration came from and what it says."""

    target: TargetSpec | None
    """None: the DHCP lease's root path (option 17), known once the stack is up."""
    origin: str
    """``iBFT FILE``, ``URL``, ``root path``, ``lab NAME``, ``DHCP`` (for messages)."""
    initiator_name: str | None = None
    nic: NicConfig | None = None
    """The table's NIC for the target (its address, MAC, DNS ... are reused)."""
    more: tuple[TargetSpec, ...] = ()
    """Further paths to the same LUN (multipath: several URLs on the command line)."""


def load_table(path: str | None, machine: bool) -> tuple[BootConfig, str]:
    """The boot configuration of an iBFT file, or of this machine's table."""
    try:
        if path is not None:
            found = read_table_file(path)
            return BootConfig.from_ibft(parse_ibft(found.data)), f"iBFT {found.source}"
        if machine:
            try:
                found = find_acpi_table(ACPI_TABLES_DIR)
                return BootConfig.from_ibft(parse_ibft(found.data)), f"iBFT {found.source}"
            except FirmwareTableError:
                table = read_sysfs(SYSFS_IBFT_DIR)
                return BootConfig.from_ibft(table), f"iBFT {SYSFS_IBFT_DIR}"
    except FirmwareTableError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BootError(f"cannot use the iBFT: {first}") from None
    raise BootError("no iBFT given")


def source_from_table(config: BootConfig, origin: str) -> BootSource:
    """The boot-selected target of a table (else the first) and its NIC."""
    if not config.targets:
        raise BootError(f"{origin}: no valid target in the table")
    target = next((t for t in config.targets if t.boot_selected), config.targets[0])
    nic = config.nics[target.nic] if target.nic < len(config.nics) else None
    return BootSource(target=target, origin=origin, initiator_name=config.initiator_name,
                      nic=nic)


def _lab_state(name: str) -> dict[str, Any]:
    from bootinit.lab import Lab, LabError

    try:
        state = Lab(name=name).read_state()
    except LabError as e:
        raise BootError(str(e)) from None
    if state is None:
        raise BootError(f"lab {name} is not up (start it with 'bootinit lab up --name "
                        f"{name} --lun DISK.img')")
    return state


def resolve_source(args: argparse.Namespace) -> BootSource:
    """The boot configuration from the arguments; fills link options it implies
    (``--ip``, ``--mac``, ``--gateway`` from a table; everything from ``--lab``)."""
    given = [x for x in (args.target, args.ibft, args.machine_ibft or None) if x]
    if len(given) > 1:
        raise CliError("give one of: a target URL or root path, --ibft FILE, --machine-ibft")
    if args.lab is not None:
        state = _lab_state(args.lab)
        for opt, value in (("netns", state["netns"]), ("bridge", state["bridge"]),
                           ("ip", state["client_ip"])):
            if getattr(args, opt) is None and args.tap is None and not (
                    opt == "ip" and args.dhcp):
                setattr(args, opt, value)
        mutual = state.get("mutual_chap")
        if mutual and args.target_user is None and args.target_secret is None:
            args.target_user, args.target_secret = mutual
        if not given:
            return BootSource(target=target_of(state["url_with_auth"]),
                              origin=f"lab {args.lab}")
    if args.ibft is not None or args.machine_ibft:
        config, origin = load_table(args.ibft, args.machine_ibft)
        src = source_from_table(config, origin)
        nic = src.nic
        if nic is not None:
            if isinstance(nic.address, IPv6Interface) and not nic.dhcp:
                if args.ip is None and not args.ip6:  # an IPv6 NIC: --ip6 (and --gateway6)
                    args.ip6 = [str(nic.address)]
                    if args.gateway6 is None and isinstance(nic.gateway, IPv6Address):
                        args.gateway6 = str(nic.gateway)
            elif args.ip is None and nic.address is not None and not nic.dhcp:
                args.ip = str(nic.address)
            if args.gateway is None and nic.gateway is not None and args.ip == str(
                    nic.address):
                args.gateway = str(nic.gateway)
            if args.mac is None and nic.mac is not None:
                args.mac = ":".join(f"{b:02x}" for b in nic.mac)
            if nic.vlan and args.vlan is None:
                args.vlan = str(nic.vlan)
            if nic.dhcp and args.ip is None:
                args.dhcp = True   # as the firmware did: the address comes from DHCP
        if args.initiator_name is None:
            args.initiator_name = src.initiator_name
        return src
    if not given:
        if args.dhcp:
            return BootSource(target=None, origin="DHCP")
        raise CliError("nothing to boot: give a target (iscsi://HOST/IQN/LUN or "
                       "iscsi:HOST:::LUN:IQN), --ibft FILE, --machine-ibft, --lab NAME "
                       "or --dhcp (root path from DHCP option 17)")
    texts: list[str] = list(args.target)
    specs = [target_of(t) for t in texts]
    origin = "root path" if texts[0].startswith("iscsi:") and not texts[0].startswith(
        "iscsi://") else "URL"
    if len(specs) > 1:
        origin = f"{len(specs)} paths"
    return BootSource(target=specs[0], origin=origin, more=tuple(specs[1:]))


def _chap_to_table(chap: IscsiChap | None) -> tuple[ChapCredentials | None,
                                                      ChapCredentials | None]:
    if chap is None:
        return None, None
    fwd = ChapCredentials(chap.username, chap.secret.reveal().decode("utf-8", "replace"))
    rev = None
    if chap.target_secret is not None:
        rev = ChapCredentials(chap.target_username or "",
                              chap.target_secret.reveal().decode("utf-8", "replace"))
    return fwd, rev


def guest_config(initiator_name: str, target: TargetSpec, chap: IscsiChap | None,
                 address: IPv4Interface | IPv6Interface,
                 gateway: IPv4Address | IPv6Address | None, mac: bytes,
                 vlan: int = 0, dhcp: bool = False, template: NicConfig | None = None,
                 dhcp_server: IPv4Address | None = None,
                 second: tuple[TargetSpec, IscsiChap | None] | None = None) -> BootConfig:
    """The boot configuration the guest's iBFT describes: this initiator, one NIC with the
    address, gateway, MAC and VLAN bootinit uses (DNS, host name and PCI location kept
    from ``template``), and the target with the CHAP credentials used to log in; a
    ``second`` path to the LUN becomes the table's second target (it has room for two)."""
    base = template or NicConfig()
    nic = dataclasses.replace(
        base, address=address, gateway=gateway, mac=mac, vlan=vlan, dhcp=dhcp,
        dhcp_server=dhcp_server if dhcp_server is not None else (
            base.dhcp_server if dhcp else None), boot_selected=True)
    targets = []
    for spec, cred in ((target, chap), *((second,) if second is not None else ())):
        fwd, rev = _chap_to_table(cred)
        targets.append(dataclasses.replace(spec, chap=fwd, reverse_chap=rev, nic=0,
                                           boot_selected=True))
    return BootConfig(initiator_name=initiator_name, nics=(nic,), targets=tuple(targets))


# --------------------------------------------------------------------------- read-ahead


IoCallback = Callable[[Any], None]


class _Done:
    """The result handed to a callback for a read served from the read-ahead cache."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class _Segment:
    """Blocks ``[lba, lba + count)`` read ahead (``done``) or being read."""

    __slots__ = ("count", "data", "done", "error", "lba", "stale", "used", "waiters")

    def __init__(self, lba: int, count: int, block_size: int) -> None:
        self.lba = lba
        self.count = count
        self.data = bytearray(count * block_size)
        self.done = False
        self.error: BaseException | None = None
        self.stale = False
        self.used = False
        self.waiters: list[_Waiter] = []

    @property
    def end(self) -> int:
        return self.lba + self.count

    def overlaps(self, lba: int, count: int) -> bool:
        return self.lba < lba + count and lba < self.end


class _Waiter:
    """A guest read waiting for the segments that cover it."""

    __slots__ = ("callback", "count", "failed", "lba", "left", "segments", "view")

    def __init__(self, lba: int, count: int, view: memoryview, callback: IoCallback | None,
                 segments: list[_Segment]) -> None:
        self.lba = lba
        self.count = count
        self.view = view
        self.callback = callback
        self.segments = segments
        self.left = sum(1 for s in segments if not s.done)
        self.failed = False


def _copy_out(lba: int, count: int, view: memoryview, segments: list[_Segment],
              bs: int) -> None:
    end = lba + count
    for s in segments:
        a, b = max(lba, s.lba), min(end, s.end)
        view[(a - lba) * bs:(b - lba) * bs] = s.data[(a - s.lba) * bs:(b - s.lba) * bs]


class ReadAhead:
    """Sequential read-ahead in front of a block device, for the one reader a boot has.

    QEMU's NBD client sends a booting guest's reads one at a time (BIOS INT 13h, then
    the kernel's first reads), so each waits for a full iSCSI round trip. When a read
    continues the previous one (or was served from here), the next ``window`` bytes are
    read ahead in ``chunk``-sized commands; a read inside them is answered from memory
    (or as soon as its chunk arrives). Writes invalidate what they overlap, also the
    chunks read while they were in flight (the target may reorder them). At most
    ``limit`` bytes are held. Same interface as the device (what NbdServer uses).
    """

    def __init__(self, device: BlockDevice | MultipathDevice, *, window: int = 512 << 10,
                 chunk: int = 128 << 10, limit: int = 4 << 20) -> None:
        self.device = device
        bs = device.block_size
        self.window = max(1, window // bs)
        self.chunk = max(1, min(chunk // bs, device.max_transfer_blocks))
        self.limit = max(self.window + self.chunk, limit // bs)
        self.segments: list[_Segment] = []
        self.next_lba = -1
        self.counters: dict[str, int] = {
            "hits": 0, "waits": 0, "misses": 0, "prefetches": 0, "prefetched_bytes": 0,
            "unused_bytes": 0, "invalidated": 0, "prefetch_errors": 0}

    @property
    def block_size(self) -> int:
        """Logical block size in bytes."""
        return self.device.block_size

    @property
    def capacity(self) -> int:
        """Size in bytes."""
        return self.device.capacity

    # ------------------------------------------------------------------ reads

    def _cover(self, lba: int, count: int) -> list[_Segment] | None:
        """The usable segments that together hold ``[lba, lba + count)``, else None."""
        out: list[_Segment] = []
        pos, end = lba, lba + count
        while pos < end:
            for s in self.segments:
                if not s.stale and s.error is None and s.lba <= pos < s.end:
                    out.append(s)
                    pos = s.end
                    break
            else:
                return None
        return out

    def submit_read(self, lba: int, count: int, buf: bytearray | memoryview | None = None,
                    callback: IoCallback | None = None) -> object:
        """Read ``count`` blocks at ``lba`` into ``buf`` (see the class doc)."""
        bs = self.block_size
        if buf is None:
            buf = bytearray(count * bs)
        sequential = lba == self.next_lba
        self.next_lba = lba + count
        segs = self._cover(lba, count) if count else None
        result: object
        if segs is None:
            self.counters["misses"] += 1
            result = self.device.submit_read(lba, count, buf, callback)
        else:
            view = memoryview(buf).cast("B")
            for seg in segs:
                seg.used = True
            waiter = _Waiter(lba, count, view, callback, segs)
            if waiter.left == 0:
                self.counters["hits"] += 1
                _copy_out(lba, count, view, segs, bs)
                result = _Done()
                if callback is not None:
                    callback(result)
            else:
                self.counters["waits"] += 1
                for seg in segs:
                    if not seg.done:
                        seg.waiters.append(waiter)
                result = waiter
        if count and (sequential or segs is not None):
            self._forget_before(lba)
            self._prefetch(lba + count)
        return result

    def _forget_before(self, lba: int) -> None:
        """Drop what a sequential reader went past."""
        keep = []
        for s in self.segments:
            if s.done and s.end <= lba:
                if not s.used:
                    self.counters["unused_bytes"] += len(s.data)
            else:
                keep.append(s)
        self.segments = keep

    def _held(self) -> int:
        return sum(s.count for s in self.segments)

    def _prefetch(self, start: int) -> None:
        total = self.device.num_blocks
        frontier = start
        for s in sorted((s for s in self.segments if not s.stale and s.error is None),
                        key=lambda s: s.lba):
            if s.lba <= frontier < s.end:
                frontier = s.end
        held = self._held()
        while frontier < min(start + self.window, total):
            n = min(self.chunk, total - frontier)
            if held + n > self.limit:
                self._evict(held + n - self.limit)
                held = self._held()
                if held + n > self.limit:
                    return
            seg = _Segment(frontier, n, self.block_size)
            self.segments.append(seg)
            self.counters["prefetches"] += 1
            self.device.submit_read(frontier, n, seg.data, self._arrival(seg))
            held += n
            frontier += n

    def _evict(self, blocks: int) -> None:
        """Drop finished segments, oldest first, until ``blocks`` are freed."""
        keep = []
        for s in self.segments:
            if blocks > 0 and s.done:
                blocks -= s.count
                if not s.used:
                    self.counters["unused_bytes"] += len(s.data)
            else:
                keep.append(s)
        self.segments = keep

    def _arrival(self, seg: _Segment) -> IoCallback:
        def arrived(req: Any) -> None:
            self._arrived(seg, req)
        return arrived

    def _arrived(self, seg: _Segment, req: Any) -> None:
        seg.done = True
        seg.error = req.error
        if seg.error is None:
            self.counters["prefetched_bytes"] += len(seg.data)
        else:
            self.counters["prefetch_errors"] += 1
        if seg.stale or seg.error is not None:
            with contextlib.suppress(ValueError):
                self.segments.remove(seg)
        waiters, seg.waiters = seg.waiters, []
        for w in waiters:
            w.left -= 1
            w.failed = w.failed or seg.error is not None
            if w.left:
                continue
            if w.failed:
                # ask again by itself: its own error (or success) is the answer
                self.device.submit_read(w.lba, w.count, w.view, w.callback)
                continue
            _copy_out(w.lba, w.count, w.view, w.segments, self.block_size)
            if w.callback is not None:
                w.callback(_Done())

    # ------------------------------------------------------------- writes, flush

    def _invalidate(self, lba: int, count: int) -> None:
        keep = []
        for s in self.segments:
            if s.overlaps(lba, count):
                self.counters["invalidated"] += 1
                s.stale = True
                if not s.done:
                    keep.append(s)      # its waiters still get what was read
            else:
                keep.append(s)
        self.segments = keep

    def submit_write(self, lba: int, data: bytes | bytearray | memoryview,
                     callback: IoCallback | None = None) -> object:
        """Write through; invalidate what overlaps now and when the write completes."""
        count = memoryview(data).nbytes // self.block_size
        self._invalidate(lba, count)

        def done(req: Any) -> None:
            self._invalidate(lba, count)
            if callback is not None:
                callback(req)

        return self.device.submit_write(lba, data, done)

    def submit_flush(self, callback: IoCallback | None = None) -> object:
        """SYNCHRONIZE CACHE (nothing is cached for writing here)."""
        return self.device.submit_flush(callback)


# --------------------------------------------------------------------------- running


@dataclass
class GuestSettings:
    """How to run the guest."""

    memory_mb: int = DEFAULT_MEMORY_MB
    qemu: str = DEFAULT_QEMU
    extra_args: Sequence[str] = ()
    time_limit: float | None = None
    """Stop QEMU after this many seconds (exit status 124)."""
    serial: IO[bytes] | None = None
    """Where the guest's serial output goes as it comes (None: nowhere)."""
    watch: Sequence[str] = ()
    """Strings whose first appearance on the serial console is timed (``marks``)."""
    save_ibft: Path | None = None
    """Also write the guest's iBFT here."""
    keep_serial: bool = True
    readahead: bool = True
    """Serve sequential guest reads from :class:`ReadAhead`."""


@dataclass
class BootResult:
    """How a boot ended."""

    exit_status: int
    """QEMU's exit status (128 + N when it died of signal N); 130/143 when interrupted;
    124 when the time limit stopped it."""
    qemu_returncode: int | None
    seconds: float
    """From QEMU's start to its exit."""
    marks: dict[str, float] = field(default_factory=dict)
    serial: bytes = b""
    capacity: int = 0
    block_size: int = 0
    ibft: bytes = b""
    timed_out: bool = False
    interrupted: int | None = None
    counters: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    qemu_log: str = ""


class _SerialTap:
    """Reads QEMU's serial file as it grows: forwards the bytes, times watched strings."""

    def __init__(self, path: Path, out: IO[bytes] | None, watch: Sequence[str],
                 started: float, keep: bool) -> None:
        self.path = path
        self.out = out
        self.started = started
        self.watch = [w.encode() for w in watch]
        self.marks: dict[str, float] = {}
        self.keep = keep
        self.data = bytearray()
        self._tail = b""
        self._f: IO[bytes] | None = None

    def poll(self) -> None:
        if self._f is None:
            try:
                self._f = open(self.path, "rb")  # noqa: SIM115 - kept open while running
            except FileNotFoundError:
                return
        new = self._f.read()
        if not new:
            return
        now = time.monotonic() - self.started
        if self.out is not None:
            with contextlib.suppress(OSError, ValueError):
                self.out.write(new)
                self.out.flush()
        if self.keep:
            self.data += new
        if self.watch:
            window = self._tail + new
            for w in self.watch:
                name = w.decode()
                if name not in self.marks and w in window:
                    self.marks[name] = now
            longest = max(len(w) for w in self.watch)
            self._tail = window[-longest:]

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _status_of(returncode: int | None) -> int:
    if returncode is None:
        return 1
    return 128 - returncode if returncode < 0 else returncode


def run_guest(ctx: Context, source: BootSource, settings: GuestSettings,
              interrupts: Interrupts | None = None,
              on_started: Callable[[QemuVm], None] | None = None) -> BootResult:
    """Log in, check the LUN, serve it to QEMU over NBD until QEMU exits, log out.

    ``ctx`` holds the stack and the initiator (see :class:`bootinit.commands.Context`).
    Raises :class:`BootError` for problems before QEMU starts.
    """
    from bootinit.multipath import close_device, device_counters, open_device

    spec = source.target if source.target is not None else ctx.spec(None)
    specs = [spec, *source.more]
    chap = chap_for(ctx.args, spec)
    policy = getattr(ctx.args, "multipath", None)
    dev = open_device(ctx, specs, policy if policy or len(specs) == 1 else "failover",
                      connections=getattr(ctx.args, "connections", 1) or 1)
    try:
        result = _run_device(ctx, source, settings, interrupts, on_started, specs, chap, dev)
    except BaseException:
        with contextlib.suppress(Exception):
            close_device(dev)
        raise
    close_device(dev)                        # logout
    if isinstance(dev, BlockDevice):
        with contextlib.suppress(ValueError):
            ctx.initiator.sessions.remove(dev.session)
    result.counters["session"] = device_counters(dev)
    result.counters["stack"] = ctx.stack.counters_dict()
    return result


def _run_device(ctx: Context, source: BootSource, settings: GuestSettings,
                interrupts: Interrupts | None, on_started: Callable[[QemuVm], None] | None,
                specs: list[TargetSpec], chap: IscsiChap | None,
                dev: BlockDevice | MultipathDevice) -> BootResult:
    from bootinit.multipath import device_counters

    spec = specs[0]
    first = dev.read(0, 1)
    if first[510:512] != BOOT_SIGNATURE:
        raise BootError(
            f"{mask_url(_url(spec))}: LUN {spec.lun} is not bootable: no boot signature "
            f"55 aa at offset 510 of LBA 0 (found {first[510:512].hex(' ')}; "
            f"{dev.capacity} bytes, {dev.block_size}-byte blocks)")
    second = (specs[1], chap_for(ctx.args, specs[1])) if len(specs) > 1 else None
    cfg = _guest_boot_config(ctx, source, spec, chap, second)
    try:
        table = cfg.to_ibft()
    except FirmwareTableError as e:
        raise BootError(f"cannot build the guest's iBFT: {e}") from None
    if settings.save_ibft is not None:
        settings.save_ibft.write_bytes(table)
    result = BootResult(exit_status=1, qemu_returncode=None, seconds=0.0,
                        capacity=dev.capacity, block_size=dev.block_size, ibft=table)
    with tempfile.TemporaryDirectory(prefix="bootinit-boot-") as tmp:
        work = Path(tmp)
        ibft_path = work / "ibft.bin"
        fd = os.open(ibft_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(table)
        ra = ReadAhead(dev) if settings.readahead else None
        server = NbdServer(ctx.loop, work / "nbd.sock", ra if ra is not None else dev,
                           description=f"{spec.name} LUN {spec.lun}")
        try:
            qcfg = QemuConfig(drive=f"nbd:unix:{server.path}", memory_mb=settings.memory_mb,
                              acpi_tables=[ibft_path], extra_args=tuple(settings.extra_args),
                              qemu=settings.qemu)
            with QemuVm(qcfg, work / "qemu") as vm:
                _serve(ctx, vm, settings, interrupts, result, on_started)
                result.qemu_log = vm.qemu_log()
        finally:
            server.close()
            result.counters = {"stack": ctx.stack.counters_dict(),
                               "session": device_counters(dev),
                               "nbd": {"server": dict(server.counters)}}
            if ra is not None:
                result.counters["nbd"]["readahead"] = dict(ra.counters)
    return result


def _guest_boot_config(ctx: Context, source: BootSource, spec: TargetSpec,
                       chap: IscsiChap | None,
                       second: tuple[TargetSpec, IscsiChap | None] | None = None,
                       ) -> BootConfig:
    """The guest's boot configuration from what the stack really uses (static address
    or DHCP lease, MAC, VLAN) and the target logged in to."""
    from bootinit.dhcpboot import nic_from_lease

    opts = ctx.link_opts
    lease = ctx.lease
    template = source.nic
    address: IPv4Interface | IPv6Interface | None
    gateway: IPv4Address | IPv6Address | None
    if lease is not None:
        template = nic_from_lease(lease, opts.mac, opts.vlan)
        address, gateway = lease.address, lease.gateway
    else:
        address, gateway = opts.ip, opts.gateway
        v6 = _ipv6_nic(ctx, spec)
        if v6 is not None:
            address, gateway = v6
        if address is None:
            raise BootError("no address for bootinit's stack (give --ip, --ip6 or --dhcp)")
    return guest_config(ctx.initiator.initiator_name, spec, chap, address, gateway,
                        opts.mac, vlan=opts.vlan or 0, dhcp=lease is not None,
                        template=template,
                        dhcp_server=lease.server_id if lease is not None else None,
                        second=second)


def _ipv6_nic(ctx: Context, spec: TargetSpec) -> tuple[IPv6Interface, IPv6Address | None] | None:
    """The IPv6 address (with prefix) and default router the stack reaches the target
    with, for the guest's iBFT NIC — when the target is an IPv6 address, or there is no
    IPv4 address; None otherwise."""
    ip6 = ctx.stack.iface.ip6
    if ip6 is None:
        return None
    try:
        host = ip_address(spec.host)
    except ValueError:
        host = None
    if (host is not None and host.version == 4) or (host is None and ctx.link_opts.ip):
        return None
    src = ip6.select_source(host.packed) if host is not None else ip6.primary
    for a in ip6.addresses:
        if src is not None and a.ip == src:
            router = ip6.default_router
            return a.interface, IPv6Address(router) if router is not None else None
    return None


def _url(spec: TargetSpec) -> str:
    from firmware_tables.uri import format_iscsi_url

    return format_iscsi_url(spec)


def _serve(ctx: Context, vm: QemuVm, settings: GuestSettings, interrupts: Interrupts | None,
           result: BootResult, on_started: Callable[[QemuVm], None] | None) -> None:
    """Start QEMU and run the loop until it exits (or a signal / the time limit)."""
    loop = ctx.loop
    try:
        vm.start()
    except QemuError as e:
        raise BootError(str(e)) from None
    assert vm.proc is not None
    started = vm.started_at
    tap = _SerialTap(vm.serial_path, settings.serial, settings.watch, started,
                     settings.keep_serial)
    state = {"exited": False, "stop": False}
    pidfd = _pidfd(vm.proc.pid)
    proc = vm.proc

    def on_exit() -> None:
        if proc.poll() is not None:
            state["exited"] = True

    def on_signal() -> None:
        if interrupts is not None:
            interrupts.drain()
        state["stop"] = True

    def tick() -> None:
        tap.poll()
        if pidfd is None:
            on_exit()
        if not state["exited"]:
            timers.append(loop.call_later(SERIAL_POLL, tick))

    timers = [loop.call_later(SERIAL_POLL, tick)]
    if pidfd is not None:
        loop.add_reader(pidfd, on_exit)
    if interrupts is not None:
        interrupts.graceful = True
        loop.add_reader(interrupts.fd, on_signal)
        if interrupts.signum is not None:
            state["stop"] = True
    if on_started is not None:
        on_started(vm)
    deadline = None if settings.time_limit is None else started + settings.time_limit
    try:
        while not state["exited"] and not state["stop"]:
            if deadline is not None and time.monotonic() >= deadline:
                result.timed_out = True
                break
            loop.run_once(0.5)
        if not state["exited"]:
            _stop_qemu(ctx, vm, state)
    finally:
        for t in timers:
            t.cancel()
        if pidfd is not None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        if interrupts is not None:
            loop.remove_reader(interrupts.fd)
            interrupts.graceful = False
        rc = vm.stop()   # by PID; no-op when it exited
        result.seconds = time.monotonic() - started
        tap.poll()
        tap.close()
    result.qemu_returncode = rc
    result.marks = tap.marks
    result.serial = bytes(tap.data)
    if interrupts is not None and interrupts.exit_status is not None:
        result.interrupted = interrupts.signum
        result.exit_status = interrupts.exit_status
    elif result.timed_out:
        result.exit_status = 124
    else:
        result.exit_status = _status_of(rc)


def _stop_qemu(ctx: Context, vm: QemuVm, state: dict[str, bool]) -> None:
    """SIGTERM QEMU by PID and keep serving it until it exits (at most STOP_GRACE s);
    :meth:`QemuVm.stop` kills it after that."""
    proc = vm.proc
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    end = time.monotonic() + STOP_GRACE
    while proc.poll() is None and time.monotonic() < end:
        ctx.loop.run_once(0.02)


# --------------------------------------------------------------------------- output


def _get(counters: dict[str, dict[str, int]], layer: str, name: str) -> int:
    return counters.get(layer, {}).get(name, 0)


def summary(result: BootResult) -> str:
    """A few lines on how the boot went (for stderr)."""
    c = result.counters
    nbd = c.get("nbd", {}).get("server", {})
    sess = c.get("session", {})
    stack = c.get("stack", {})
    if result.interrupted is not None:
        how = f"stopped by {signal.Signals(result.interrupted).name}"
    elif result.timed_out:
        how = "stopped at the time limit"
    else:
        rc = result.qemu_returncode
        how = f"QEMU exited with status {_status_of(rc)}"
        if rc is not None and rc > 0 and rc & 1 and rc != 1:
            how += f" (isa-debug-exit value 0x{rc >> 1:x})"
    lat = sess.get("latency", {})
    mean = lat.get("sum_us", 0) / lat["count"] / 1000 if lat.get("count") else 0.0
    lines = [
        f"bootinit boot: {how} after {result.seconds:.2f} s",
        f"  lun: {result.capacity} bytes ({result.capacity // max(result.block_size, 1)} "
        f"blocks of {result.block_size})",
        f"  nbd: {nbd.get('reads', 0)} reads ({nbd.get('bytes_read', 0) / 2**20:.1f} MiB), "
        f"{nbd.get('writes', 0)} writes ({nbd.get('bytes_written', 0) / 2**20:.1f} MiB), "
        f"{nbd.get('flushes', 0)} flushes, {nbd.get('io_errors', 0)} errors",
        f"  iscsi: {_get(sess, 'commands', 'completed')} commands "
        f"(mean {mean:.2f} ms), {_get(sess, 'commands', 'replayed')} replayed, "
        f"{_get(sess, 'recovery', 'succeeded')} recoveries, "
        f"{_get(sess, 'login', 'successes')} logins",
        f"  tcp: {_get(stack, 'tcp', 'segments_in')} segments in, "
        f"{_get(stack, 'tcp', 'segments_out')} out, "
        f"{_get(stack, 'tcp', 'retransmits')} retransmits",
    ]
    if result.marks:
        lines.append("  marks: " + ", ".join(f"{k} {v:.2f} s" for k, v in
                                             result.marks.items()))
    return "\n".join(lines)


def stats_lines(result: BootResult) -> list[str]:
    """Every non-zero counter as ``section.layer: k=v ...``."""
    lines = []
    for section, layers in result.counters.items():
        for layer, values in layers.items():
            shown = " ".join(f"{k}={v}" for k, v in sorted(values.items()) if v)
            if shown:
                lines.append(f"{section}.{layer}: {shown}")
    return lines


def report(result: BootResult, stats: bool, as_json: bool) -> None:
    """Summary (and counters) on stderr; QEMU's own messages first."""
    log = result.qemu_log.strip()
    if log:
        for line in log.splitlines()[-20:]:
            print(f"qemu: {line}", file=sys.stderr)
    if as_json:
        doc = {"exit_status": result.exit_status, "qemu_returncode": result.qemu_returncode,
               "seconds": round(result.seconds, 3), "marks": result.marks,
               "timed_out": result.timed_out, "interrupted": result.interrupted,
               "capacity": result.capacity, "block_size": result.block_size,
               "counters": result.counters if stats else None}
        print(json.dumps(doc, indent=2), file=sys.stderr)
        return
    print(summary(result), file=sys.stderr)
    if stats:
        for line in stats_lines(result):
            print(line, file=sys.stderr)


# --------------------------------------------------------------------------- the command


@contextlib.contextmanager
def _serial_sink(path: str | None) -> Iterator[IO[bytes]]:
    if path is None or path == "-":
        yield sys.stdout.buffer
        return
    with open(path, "wb") as f:
        yield f


def settings_from_args(args: argparse.Namespace, serial: IO[bytes] | None) -> GuestSettings:
    """GuestSettings from the command line."""
    if args.memory < 16:
        raise CliError(f"--memory {args.memory}: at least 16 (MiB)")
    qemu = args.qemu_binary
    if shutil.which(qemu) is None:
        raise BootError(f"{qemu} not found: install QEMU (Debian: apt-get install "
                        "qemu-system-x86) or give --qemu-binary PATH")
    return GuestSettings(memory_mb=args.memory, qemu=qemu, extra_args=list(args.qemu_args),
                         time_limit=args.time_limit, serial=serial,
                         save_ibft=Path(args.save_ibft) if args.save_ibft else None,
                         keep_serial=False, readahead=not args.no_readahead)


def boot_with_context(args: argparse.Namespace, source: BootSource, settings: GuestSettings,
                      interrupts: Interrupts) -> BootResult:
    """Bring up the stack from the link options, run the guest, tear down."""
    try:
        ctx = Context(args)
    except (ValueError, OSError) as e:
        raise BootError(str(e)) from None
    try:
        return run_guest(ctx, source, settings, interrupts)
    finally:
        ctx.close()


def cmd_boot(args: argparse.Namespace) -> int:
    """``bootinit boot``."""
    with Interrupts() as interrupts:
        try:
            source = resolve_source(args)
            if args.verbose and source.target is not None:
                print(f"bootinit boot: {source.origin}: {mask_url(_url(source.target))}",
                      file=sys.stderr)
            with _serial_sink(args.serial) as sink:
                settings = settings_from_args(args, sink)
                result = boot_with_context(args, source, settings, interrupts)
        except KeyboardInterrupt:
            status = interrupts.exit_status or 130
            print("bootinit boot: interrupted; everything started was stopped",
                  file=sys.stderr)
            return status
    report(result, args.stats, args.json)
    return result.exit_status


def add_boot_arguments(p: argparse.ArgumentParser, *, target: bool = True) -> None:
    """The guest options of ``boot`` (and ``demo``)."""
    g = p.add_argument_group("guest")
    g.add_argument("--memory", type=int, default=DEFAULT_MEMORY_MB, metavar="MIB",
                   help=f"guest memory in MiB (default {DEFAULT_MEMORY_MB})")
    g.add_argument("--qemu-binary", default=DEFAULT_QEMU, metavar="PATH",
                   help=f"QEMU to run (default {DEFAULT_QEMU}; TCG, no KVM needed)")
    g.add_argument("--serial", metavar="FILE",
                   help="write the guest's serial console here (default: stdout)")
    g.add_argument("--time-limit", type=float, metavar="S",
                   help="stop the guest after S seconds (exit status 124)")
    g.add_argument("--no-readahead", action="store_true",
                   help="serve every guest read straight from the target (default: "
                        "sequential reads are read ahead, 512 KiB)")
    g.add_argument("--save-ibft", metavar="FILE",
                   help="also write the iBFT given to the guest to FILE (holds CHAP "
                        "secrets)")
    if target:
        c = p.add_argument_group("boot configuration")
        c.add_argument("target", nargs="*", metavar="URL|ROOT_PATH",
                       help="iscsi://[user[%%secret]@]host[:port]/iqn/lun or iPXE's "
                            "iscsi:host:proto:port:lun:iqn; several: paths to one LUN "
                            "(multipath; the guest's iBFT names the first two)")
        c.add_argument("--multipath", choices=("failover", "round-robin"),
                       help="path policy for several URLs (default failover)")
        c.add_argument("--connections", metavar="N", type=int, default=1,
                       help="MC/S: up to N connections in the session")
        c.add_argument("--ibft", metavar="FILE", help="boot configuration from this iBFT")
        c.add_argument("--machine-ibft", action="store_true",
                       help="boot configuration from this machine's iBFT "
                            f"({ACPI_TABLES_DIR}, else {SYSFS_IBFT_DIR})")
        c.add_argument("--lab", metavar="NAME",
                       help="use a lab made by 'bootinit lab up --name NAME': its "
                            "namespace, bridge, address, URL (LUN 1) and CHAP")


def _add(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
         **kw: Any) -> argparse.ArgumentParser:
    old = sub._parser_class
    sub._parser_class = DashDashParser
    try:
        return sub.add_parser(name, **kw)
    finally:
        sub._parser_class = old


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``boot`` and ``demo`` with the main CLI."""
    from bootinit.demo import add_demo_arguments, cmd_demo, description

    doc = (__doc__ or "").split("\n\n")
    p = _add(sub, "boot", parents=[net_options()],
             help="boot a QEMU guest from an iSCSI LUN through bootinit",
             usage="bootinit boot [options] [URL|ROOT_PATH ...] [-- QEMU_ARGS...]",
             description=doc[0].split(": ", 1)[-1],
             epilog="Arguments after -- go to QEMU as they are. Exit status: QEMU's "
                    "(isa-debug-exit: (value << 1) | 1); 130/143 after SIGINT/SIGTERM; "
                    "124 at --time-limit; 1 when the boot could not start.",
             formatter_class=argparse.RawDescriptionHelpFormatter)
    add_boot_arguments(p)
    p.set_defaults(func=_wrap(cmd_boot))
    d = _add(sub, "demo", help="the whole thing on a lab of its own: build a Linux guest, "
             "serve it from tgtd in a namespace, boot it through bootinit",
             usage="bootinit demo [options] [-- QEMU_ARGS...]",
             description=description())
    add_demo_arguments(d)
    d.set_defaults(func=_wrap(cmd_demo))


def _wrap(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        fill_defaults(args)
        for k, v in (("target", []), ("ibft", None), ("machine_ibft", False),
                     ("lab", None), ("qemu_args", []), ("multipath", None),
                     ("connections", 1)):
            if not hasattr(args, k):
                setattr(args, k, v)
        try:
            return func(args)
        except CliError as e:
            print(f"bootinit {args.command}: {e}", file=sys.stderr)
            return 2
        except BootError as e:
            print(f"bootinit {args.command}: {e}", file=sys.stderr)
            return 1
    return run


__all__ = [
    "BOOT_SIGNATURE", "BootError", "BootResult", "BootSource", "GuestSettings", "Interrupts",
    "add_parsers", "cmd_boot", "guest_config", "load_table", "report", "resolve_source",
    "run_guest", "source_from_table", "summary",
]
