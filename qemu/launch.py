"""Start QEMU for a test guest, watch its serial output, wait for it with a deadline.

::

    cfg = QemuConfig(drive=f"nbd:unix:{srv.path}", pvpanic=True, panic_action="pause",
                     acpi_tables=[ibft_path], qmp=True)
    with QemuVm(cfg, watch=["BOOTINIT-LINUX-MARKER"]) as vm:
        vm.start()
        res = vm.wait(60, pump=lambda t: loop.run_once(min(t, 0.05)))
    res.returncode, res.serial, res.marks["BOOTINIT-LINUX-MARKER"]   # seconds after start

QEMU runs with ``-accel tcg`` (no KVM here), no display, the serial port in a file,
``-no-reboot``, optionally ``isa-debug-exit`` (port 0xf4: status ``(value << 1) | 1``),
``pvpanic`` with ``-action panic=...``, ``-acpitable file=...`` tables and a QMP socket.
While waiting, ``pump(seconds)`` is called repeatedly: pass one that runs the caller's
loop (an NBD server in it keeps serving QEMU); the default sleeps. QEMU is stopped by
PID (SIGTERM, then SIGKILL) when the deadline passes or the context exits.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from netstack.netns import stop_process

Pump = Callable[[float], None]
POLL_INTERVAL = 0.05
PANIC_ACTIONS = ("pause", "shutdown", "exit-failure", "none")


class QemuError(Exception):
    """QEMU could not be started or misbehaved; the message says why."""


def _sleep(t: float) -> None:
    time.sleep(t)


@dataclass(frozen=True)
class QemuConfig:
    """What to run (see :func:`qemu_argv`)."""

    drive: str
    drive_format: str = "raw"
    drive_interface: str = "virtio"
    memory_mb: int = 256
    accel: str = "tcg"
    acpi_tables: Sequence[str | os.PathLike[str]] = ()
    debug_exit: bool = True
    pvpanic: bool = False
    panic_action: str | None = None
    qmp: bool = False
    no_reboot: bool = True
    snapshot: bool = False
    extra_args: Sequence[str] = ()
    qemu: str = "qemu-system-x86_64"

    def __post_init__(self) -> None:
        if self.panic_action is not None and self.panic_action not in PANIC_ACTIONS:
            raise ValueError(f"panic_action {self.panic_action!r}: one of "
                             f"{', '.join(PANIC_ACTIONS)}")
        if self.memory_mb < 16:
            raise ValueError(f"memory_mb {self.memory_mb}: at least 16")
        if "," in self.drive and not self.drive.startswith(("nbd:", "nbd+")):
            raise ValueError(f"drive {self.drive!r}: commas would need escaping")


def qemu_argv(cfg: QemuConfig, serial_path: Path, qmp_path: Path | None = None) -> list[str]:
    """The QEMU command line for ``cfg`` with the serial port going to ``serial_path``."""
    drive = f"file={cfg.drive},format={cfg.drive_format},if={cfg.drive_interface}"
    if cfg.snapshot:
        drive += ",snapshot=on"
    argv = [cfg.qemu, "-accel", cfg.accel, "-m", str(cfg.memory_mb), "-smp", "1",
            "-display", "none", "-vga", "none", "-monitor", "none",
            "-chardev", f"file,id=ser0,path={serial_path}", "-serial", "chardev:ser0",
            "-drive", drive, "-boot", "c"]
    if cfg.no_reboot:
        argv.append("-no-reboot")
    if cfg.debug_exit:
        argv += ["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
    if cfg.pvpanic:
        argv += ["-device", "pvpanic"]
    if cfg.panic_action is not None:
        argv += ["-action", f"panic={cfg.panic_action}"]
    for t in cfg.acpi_tables:
        argv += ["-acpitable", f"file={os.fspath(t)}"]
    if qmp_path is not None:
        argv += ["-qmp", f"unix:{qmp_path},server=on,wait=off"]
    argv += list(cfg.extra_args)
    return argv


@dataclass
class QemuResult:
    """How a run ended."""

    returncode: int | None
    timed_out: bool
    serial: str
    seconds: float
    #: watched string -> seconds after start when it first appeared on the serial port
    marks: dict[str, float] = field(default_factory=dict)

    @property
    def debug_exit_code(self) -> int | None:
        """The value written to isa-debug-exit (None unless QEMU exited that way)."""
        rc = self.returncode
        return rc >> 1 if rc is not None and rc > 0 and rc & 1 else None

    def lines(self, prefix: str = "") -> list[str]:
        """Serial lines (CR stripped) starting with ``prefix``."""
        return [ln.rstrip("\r") for ln in self.serial.splitlines()
                if ln.rstrip("\r").startswith(prefix)]


class QemuVm:
    """One QEMU process (see the module doc). Use as a context manager."""

    def __init__(self, cfg: QemuConfig, workdir: str | os.PathLike[str] | None = None,
                 watch: Sequence[str] = ()) -> None:
        self.cfg = cfg
        self._own_dir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="bootinit-qemu-") if workdir is None
                            else workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.serial_path = self.workdir / "serial.log"
        self.qmp_path: Path | None = self.workdir / "qmp.sock" if cfg.qmp else None
        self.log_path = self.workdir / "qemu.log"
        self.watch = list(watch)
        self.marks: dict[str, float] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self._serial = bytearray()
        self._serial_pos = 0

    @property
    def argv(self) -> list[str]:
        """The command line."""
        return qemu_argv(self.cfg, self.serial_path, self.qmp_path)

    @property
    def pid(self) -> int | None:
        """QEMU's PID while it runs."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self) -> None:
        """Start QEMU (stdin closed, stdout/stderr to ``qemu.log``)."""
        if self.proc is not None:
            raise QemuError("already started")
        if shutil.which(self.cfg.qemu) is None:
            raise QemuError(f"{self.cfg.qemu} not found: apt-get install qemu-system-x86")
        self.serial_path.write_bytes(b"")
        with open(self.log_path, "wb") as log:
            try:
                self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT)
            except OSError as e:
                raise QemuError(f"cannot start {self.cfg.qemu}: {e}") from e
        self.started_at = time.monotonic()

    def poll(self) -> int | None:
        """Exit status, or None while running (also reads new serial output)."""
        self._read_serial()
        return self.proc.poll() if self.proc is not None else None

    def _read_serial(self) -> None:
        try:
            with open(self.serial_path, "rb") as f:
                f.seek(self._serial_pos)
                new = f.read()
        except FileNotFoundError:
            return
        if not new:
            return
        self._serial_pos += len(new)
        self._serial += new
        now = time.monotonic() - self.started_at
        if self.watch:
            text = self._serial.decode(errors="replace")
            for w in self.watch:
                if w not in self.marks and w in text:
                    self.marks[w] = now

    def serial_text(self) -> str:
        """Serial output so far."""
        self._read_serial()
        return self._serial.decode(errors="replace")

    def qemu_log(self) -> str:
        """QEMU's own stdout/stderr."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait(self, timeout: float, pump: Pump | None = None,
             until: Callable[[str], bool] | None = None) -> QemuResult:
        """Until QEMU exits, ``until(serial_text)`` holds, or ``timeout`` seconds pass
        (then ``timed_out``; QEMU keeps running until :meth:`stop`)."""
        if self.proc is None:
            raise QemuError("not started")
        pump = pump or _sleep
        end = time.monotonic() + timeout
        timed_out = False
        while True:
            if self.poll() is not None:
                break
            if until is not None and until(self.serial_text()):
                break
            left = end - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            pump(min(left, POLL_INTERVAL))
        self._read_serial()
        return QemuResult(self.proc.poll(), timed_out, self.serial_text(),
                          time.monotonic() - self.started_at, dict(self.marks))

    def stop(self, grace: float = 3.0) -> int | None:
        """Stop QEMU by PID: SIGTERM, SIGKILL after ``grace`` seconds; returns the status."""
        p = self.proc
        if p is None:
            return None
        stop_process(p, grace)
        self._read_serial()
        return p.returncode

    def close(self) -> None:
        """Stop QEMU and remove the work directory if this object made it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> QemuVm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_qemu(cfg: QemuConfig, timeout: float, pump: Pump | None = None,
             watch: Sequence[str] = (), until: Callable[[str], bool] | None = None,
             workdir: str | os.PathLike[str] | None = None) -> QemuResult:
    """Start QEMU, wait (see :meth:`QemuVm.wait`), stop it; the result."""
    with QemuVm(cfg, workdir, watch) as vm:
        vm.start()
        res = vm.wait(timeout, pump, until)
        rc = vm.stop()
        if res.returncode is None and not res.timed_out:
            res.returncode = rc
        return res


__all__ = ["PANIC_ACTIONS", "Pump", "QemuConfig", "QemuError", "QemuResult", "QemuVm",
           "qemu_argv", "run_qemu"]
