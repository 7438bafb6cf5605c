"""Real iSCSI targets (tgtd, istgt) run inside network namespaces, for tests and the lab.

Both daemons run in the foreground inside a namespace the caller made (``netstack.netns``)
so that their PID is ours; they are stopped by that PID only.

tgtd (``Tgtd``)
    Its control channel is a UNIX socket *in the file system* (default
    ``/var/run/tgtd/socket.<N>``, shared by every namespace on the machine), not an
    abstract one. Every ``Tgtd`` therefore gets a private directory and sets
    ``TGT_IPC_SOCKET`` there for both ``tgtd`` and ``tgtadm`` (they append ``.<N>``).
    tgtd ignores SIGTERM; it exits on ``tgtadm --op delete --mode system``, which is
    refused while targets exist, so targets are deleted (``--force``) first.
    tgtd starts on a loopback bootstrap portal; the real portal is added only once the
    whole configuration is applied, so "the port listens" means "the target is ready"
    (also after ``restart()``).

    CHAP: MD5 (CHAP_A=5) and SHA1 (7); one outgoing (mutual) account per target.
    Digests: ``HeaderDigest``/``DataDigest`` take ``None``, ``CRC32C`` or a list.
    MaxConnections can be set above 1 and a second connection's login succeeds, but
    that connection never completes a command: treat MC/S as unsupported by tgtd.

istgt (``Istgt``)
    Configured by a generated ``istgt.conf``/``auth.conf`` in a private directory, run
    with ``-D`` (no detach); SIGTERM works (it takes about 2 s). It needs a
    ``[UnitControl]`` section (its portal is put on the namespace's 127.0.0.1). MC/S
    works (MaxConnections 4). It advances ExpCmdSN on an *immediate* Text request, so
    libiscsi's ``iscsi-ls`` prints the listing and then hangs at the discovery logout.

LUN backing files are given as paths, or as sizes (``"64M"``, ``"3T"``, ``1 << 30``) for
which sparse files are created in ``lun_dir`` (pass ``/dev/shm`` to keep them in RAM).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from netstack import netns as nsh

RUN_DIR = Path("/run/bootinit")
"""Where private daemon directories (control sockets, logs, configs) are made."""

DEFAULT_START_TIMEOUT = 10.0


class TargetError(Exception):
    """A target daemon could not be controlled; the message says what and why."""


class TargetConfigError(TargetError, ValueError):
    """A target configuration (LUN spec, size, CHAP secret, ...) is invalid."""


class TargetCommandError(TargetError):
    """A control command (tgtadm, ss, ...) failed: command, exit status and stderr."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        status = "timed out" if returncode is None else f"exit {returncode}"
        super().__init__(f"{' '.join(self.argv)}: {status}: {self.stderr or '(no stderr)'}")


class TargetStartError(TargetError):
    """A daemon died or did not become ready; the message holds its log's tail."""


# --------------------------------------------------------------------------- sizes, LUNs

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtpe]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50,
          "e": 1 << 60}


def is_size(text: str) -> bool:
    """Whether ``text`` looks like a size (``"64M"``, ``"3TiB"``, ``"4096"``)."""
    return _SIZE_RE.match(text) is not None


def parse_size(value: str | int) -> int:
    """Bytes for ``value``: an int, or a number with an optional binary unit (K/M/G/T/P)."""
    if isinstance(value, int):
        if value <= 0:
            raise TargetConfigError(f"size must be positive, got {value}")
        return value
    m = _SIZE_RE.match(value)
    if m is None:
        raise TargetConfigError(f"not a size: {value!r} (examples: 64M, 3T, 1048576)")
    size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if size <= 0:
        raise TargetConfigError(f"size must be positive, got {value!r}")
    return size


@dataclass(frozen=True)
class Lun:
    """A LUN backing file; created sparse with ``size`` bytes when it does not exist."""

    path: Path
    size: int | None = None
    readonly: bool = False


LunSpec = str | os.PathLike[str] | int | Lun
"""A path to an existing file, a size (``"64M"``, ``1 << 30``) or a ``Lun``."""


def create_sparse_file(path: Path, size: int) -> None:
    """Create ``path`` as a sparse file of ``size`` bytes (it must not exist)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise TargetConfigError(f"cannot create LUN file {path}: {e}") from e
    try:
        os.ftruncate(fd, size)
    except OSError as e:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        raise TargetConfigError(f"cannot size LUN file {path} to {size} bytes: {e}") from e
    os.close(fd)


class _LunFiles:
    """Resolves LUN specs to files, creating (and later removing) the ones it made."""

    def __init__(self, lun_dir: str | os.PathLike[str] | None) -> None:
        self._base = Path(lun_dir) if lun_dir is not None else None
        self._dir: Path | None = None
        self.created: list[Path] = []

    def _directory(self) -> Path:
        if self._dir is None:
            base = self._base if self._base is not None else Path("/var/tmp")
            try:
                base.mkdir(parents=True, exist_ok=True)
                self._dir = Path(tempfile.mkdtemp(prefix="bootinit-luns-", dir=base))
            except OSError as e:
                raise TargetConfigError(f"cannot make a LUN directory in {base}: {e}") from e
        return self._dir

    def resolve(self, spec: LunSpec) -> Lun:
        """The ``Lun`` for ``spec``; files given by size are created now."""
        if isinstance(spec, Lun):
            lun = spec
        elif isinstance(spec, int) or (isinstance(spec, str) and is_size(spec)):
            size = parse_size(spec)
            path = self._directory() / f"lun-{len(self.created)}-{secrets.token_hex(3)}.img"
            create_sparse_file(path, size)
            self.created.append(path)
            return Lun(path, size)
        else:
            lun = Lun(Path(spec))
        if not lun.path.exists():
            if lun.size is None:
                raise TargetConfigError(f"LUN file {lun.path} does not exist (and no size)")
            create_sparse_file(lun.path, lun.size)
            self.created.append(lun.path)
        elif not (lun.path.is_file() or lun.path.is_block_device()):
            raise TargetConfigError(f"LUN backing {lun.path} is not a file or block device")
        return Lun(lun.path.absolute(), lun.size, lun.readonly)

    def remove(self) -> None:
        """Remove the files (and the directory) this object created."""
        for path in self.created:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.created.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


# --------------------------------------------------------------------------- processes

def pid_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` from /proc (``None`` when there is no such PID)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rpartition(")")[2].split()[0]


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    return pid_state(pid) not in (None, "Z", "X")


def pid_cmdline(pid: int) -> list[str] | None:
    """The argv of ``pid`` (``None`` when gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]]


def pid_starttime(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (identifies it against reuse)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat.rpartition(")")[2].split()[19])


def wait_pid_gone(pid: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """Wait until ``pid`` (``proc``'s when given) has exited, reaping it when it is our
    child; True if it did. Waits on its exit (:func:`netstack.netns.wait_exit`, a
    pidfd) for at most ``timeout`` seconds: no polling."""
    if proc is not None:
        if proc.poll() is not None:
            return True
        pid = proc.pid
    if not nsh.wait_exit(pid, timeout):
        return False
    if proc is not None:
        proc.poll()  # reap it (one reaped meanwhile by someone: ECHILD, taken as gone)
    return True


def kill_pid(pid: int, proc: subprocess.Popen[bytes] | None = None,
             timeout: float = 5.0) -> None:
    """SIGKILL ``pid`` and wait for it to be gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not wait_pid_gone(pid, timeout, proc):
        raise TargetError(f"process {pid} survived SIGKILL for {timeout:.0f} s")


def _run(argv: Sequence[str], netns: str | None, timeout: float = 15.0,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    full = list(argv) if netns is None else ["ip", "netns", "exec", netns, *argv]
    try:
        cp = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise TargetCommandError(full, None, f"no answer within {timeout:.0f} s") from e
    except OSError as e:
        raise TargetCommandError(full, None, str(e)) from e
    if check and cp.returncode != 0:
        raise TargetCommandError(full, cp.returncode, cp.stderr or cp.stdout)
    return cp


def is_listening(netns: str, address: str, port: int) -> bool:
    """Whether something listens on ``address:port`` (or a wildcard) in ``netns``."""
    try:
        found = nsh.listening_ports(netns)
    except nsh.NetnsError as e:
        raise TargetCommandError(["ss", "-ltnH"], None, str(e)) from e
    return nsh.listens_on(found, port, address)


def wait_listening(netns: str, address: str, port: int, timeout: float,
                   pid: int, what: str) -> None:
    """Wait until ``address:port`` listens in ``netns``, ``what`` (process ``pid``)
    alive meanwhile."""
    got = nsh.poll_until(lambda: is_listening(netns, address, port), pid, timeout)
    if got == "exited":
        raise TargetStartError(f"{what} exited before listening on {address}:{port}")
    if got == "timeout":
        raise TargetStartError(
            f"{what} does not listen on {address}:{port} in {netns} after {timeout:.0f} s")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _portal(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _private_dir(prefix: str, state_dir: str | os.PathLike[str] | None) -> Path:
    base = Path(state_dir) if state_dir is not None else RUN_DIR
    try:
        base.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    except OSError as e:
        raise TargetError(f"cannot make a private directory in {base}: {e}") from e


# --------------------------------------------------------------------------- tgtd

@dataclass
class TgtTarget:
    """One tgtd target as configured (re-applied by ``Tgtd.restart()``)."""

    tid: int
    iqn: str
    luns: dict[int, Lun] = field(default_factory=dict)
    initiator_addresses: list[str] = field(default_factory=list)
    initiator_names: list[str] = field(default_factory=list)
    incoming: dict[str, str] = field(default_factory=dict)
    outgoing: tuple[str, str] | None = None
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TgtConnection:
    """A live iSCSI connection as ``tgtadm --op show --mode conn`` lists it."""

    sid: int
    cid: int
    initiator: str
    address: str


def parse_connections(text: str) -> list[TgtConnection]:
    """Parse ``tgtadm --op show --mode conn --tid N`` output."""
    conns: list[TgtConnection] = []
    sid = cid = -1
    initiator = ""
    for raw in text.splitlines():
        line = raw.strip()
        key, _, value = line.partition(":")
        value = value.strip()
        if key == "Session":
            sid = int(value)
        elif key == "Connection":
            cid = int(value)
            initiator = ""
        elif key == "Initiator":
            initiator = value.split()[0] if value else ""
        elif key == "IP Address":
            conns.append(TgtConnection(sid, cid, initiator, value))
    return conns


def parse_params(text: str) -> dict[str, str]:
    """Parse ``tgtadm --op show --mode target --tid N`` (``Name=Value`` lines)."""
    params = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep:
            params[key] = value
    return params


def parse_tids(text: str) -> list[int]:
    """Target ids in ``tgtadm --op show --mode target`` output."""
    return [int(m.group(1)) for m in re.finditer(r"^Target (\d+):", text, re.MULTILINE)]


def tgtadm_argv(ipc_socket: Path, control_port: int, *args: str) -> list[str]:
    """The argv that runs ``tgtadm`` against the tgtd with this socket and port."""
    return ["env", f"TGT_IPC_SOCKET={ipc_socket}", "tgtadm", "-C", str(control_port), *args]


def run_tgtadm(ipc_socket: Path, control_port: int, args: Sequence[str],
               netns: str | None = None, timeout: float = 15.0) -> str:
    """Run tgtadm (inside ``netns`` when it exists); its stdout, or TargetCommandError."""
    ns = netns if netns is not None and nsh.exists(netns) else None
    return _run(tgtadm_argv(ipc_socket, control_port, *args), ns, timeout).stdout


def shutdown_tgtd(pid: int, ipc_socket: Path, control_port: int, netns: str | None,
                  timeout: float = 5.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Stop the tgtd ``pid``: delete its targets, ``--op delete --mode system``, else SIGKILL.

    The caller has checked that ``pid`` is that tgtd (see ``Lab.down``).
    """
    if not wait_pid_gone(pid, 0, proc):
        try:
            shown = run_tgtadm(ipc_socket, control_port,
                               ["--lld", "iscsi", "--op", "show", "--mode", "target"], netns)
            for tid in parse_tids(shown):
                run_tgtadm(ipc_socket, control_port,
                           ["--lld", "iscsi", "--op", "delete", "--force", "--mode", "target",
                            "--tid", str(tid)], netns)
            run_tgtadm(ipc_socket, control_port, ["--op", "delete", "--mode", "system"], netns)
            asked = True
        except TargetError:
            asked = False  # wedged, half-started or socket gone: SIGKILL now
        if not asked or not wait_pid_gone(pid, timeout, proc):
            kill_pid(pid, proc)
    for path in (Path(f"{ipc_socket}.{control_port}"), Path(f"{ipc_socket}.{control_port}.lock")):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class _TargetDaemon:
    """What tgtd and istgt control share: the process, its files, the lifecycle.

    Subclasses set ``_proc``, ``_files`` and ``_dir`` and define ``start()``, ``stop()``
    and ``close()``; ``kill()``/``restart()`` and the context manager come from here.
    """

    _proc: nsh.NetnsProcess | None
    _files: _LunFiles
    _dir: Path | None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 5.0) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop; remove the LUN files created and the private directory."""
        try:
            self.stop()
        finally:
            self._files.remove()
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    @property
    def pid(self) -> int | None:
        """The daemon's PID while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.alive() else None

    @property
    def running(self) -> bool:
        """Whether the daemon is running."""
        return self._proc is not None and self._proc.alive()

    @property
    def _spawned_pid(self) -> int:
        """The PID of the daemon this object started, running or exited (not yet
        reaped), for the waits on it (:func:`wait_listening`, tgtd's control channel)."""
        if self._proc is None:
            raise TargetStartError(f"{type(self).__name__}: no daemon started")
        return self._proc.pid

    def kill(self) -> None:
        """SIGKILL the daemon (fault injection: sessions die without a logout)."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        kill_pid(proc.pid, proc.proc)

    def restart(self, kill: bool = False) -> None:
        """Stop (or SIGKILL when ``kill``) and start again with the same configuration."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()

    def __enter__(self) -> Self:
        if not self.running:
            try:
                self.start()
            except BaseException:
                self.close()
                raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class Tgtd(_TargetDaemon):
    """A tgtd in ``netns`` serving iSCSI on ``listen`` (address, port).

    ``tgtd -f -C <control_port> --iscsi portal=127.0.0.1:<bootstrap>`` is started with
    ``TGT_IPC_SOCKET`` in a private directory; the configuration (targets, LUNs,
    accounts, bindings, parameters) is recorded, applied at ``start()`` and re-applied
    by ``restart()``; then the portal ``listen`` is added. Use as a context manager:
    on exit tgtd is stopped and the LUN files it created are removed.
    """

    def __init__(self, netns: str, control_port: int | None = None,
                 listen: tuple[str, int] = ("0.0.0.0", 3260), *,
                 lun_dir: str | os.PathLike[str] | None = None,
                 state_dir: str | os.PathLike[str] | None = None,
                 start_timeout: float = DEFAULT_START_TIMEOUT) -> None:
        if control_port is None:
            control_port = 1000 + secrets.randbelow(30000)
        if not 0 < control_port < 32768:
            raise TargetConfigError(f"tgtd control port must be 1..32767, got {control_port}")
        self.netns = netns
        self.control_port = control_port
        self.address, self.port = listen
        self.start_timeout = start_timeout
        self.bootstrap_port = 40000 + control_port % 20000
        self._state_base = state_dir
        self._dir: Path | None = None
        self._files = _LunFiles(lun_dir)
        self._targets: dict[int, TgtTarget] = {}
        self._portals: list[tuple[str, int]] = []
        self._isns: tuple[str, int] | None = None
        self._proc: nsh.NetnsProcess | None = None
        self._log: Path | None = None

    # -- paths and process -------------------------------------------------------------
    @property
    def directory(self) -> Path:
        """The private directory holding the control socket and the log."""
        if self._dir is None:
            self._dir = _private_dir(f"tgtd-{self.control_port}-", self._state_base)
        return self._dir

    @property
    def ipc_socket(self) -> Path:
        """The ``TGT_IPC_SOCKET`` value (tgtd listens on ``<it>.<control_port>``)."""
        return self.directory / "ipc"

    @property
    def log_path(self) -> Path:
        """tgtd's stdout/stderr."""
        return self.directory / "tgtd.log"

    @property
    def popen(self) -> subprocess.Popen[bytes] | None:
        """The ``Popen`` of the running tgtd (to reap it), or None."""
        return self._proc.proc if self._proc is not None else None

    def forget(self) -> None:
        """Drop the handle on the tgtd process (someone else stops it by PID)."""
        self._proc = None

    @property
    def targets(self) -> dict[int, TgtTarget]:
        """The recorded configuration, by tid."""
        return dict(self._targets)

    @property
    def created_files(self) -> list[Path]:
        """LUN files this object created (removed by ``close()``)."""
        return list(self._files.created)

    def tgtadm_command(self, *args: str) -> list[str]:
        """The argv to run tgtadm by hand against this tgtd (inside the namespace)."""
        return ["ip", "netns", "exec", self.netns,
                *tgtadm_argv(self.ipc_socket, self.control_port, *args)]

    def tgtadm(self, *args: str, timeout: float = 15.0) -> str:
        """Run ``tgtadm -C <port> ARGS`` against this tgtd; stdout or TargetCommandError."""
        return run_tgtadm(self.ipc_socket, self.control_port, args, self.netns, timeout)

    def _iscsi(self, *args: str) -> str:
        return self.tgtadm("--lld", "iscsi", *args)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start tgtd, apply the whole configuration, add the portal, wait until it listens."""
        if self.running:
            raise TargetError(f"tgtd (pid {self.pid}) is already running in {self.netns}")
        if is_listening(self.netns, self.address, self.port):
            raise TargetStartError(
                f"{_portal(self.address, self.port)} is already in use in {self.netns}")
        if len(f"{self.ipc_socket}.{self.control_port}") > 107:
            raise TargetConfigError(f"tgtd control socket path {self.ipc_socket} is too long "
                                    f"for a UNIX socket; use a shorter state_dir")
        for stale in (Path(f"{self.ipc_socket}.{self.control_port}"),
                      Path(f"{self.ipc_socket}.{self.control_port}.lock")):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        argv = ["tgtd", "-f", "-C", str(self.control_port),
                "--iscsi", f"portal=127.0.0.1:{self.bootstrap_port}"]
        env = {**os.environ, "TGT_IPC_SOCKET": str(self.ipc_socket)}
        with open(self.log_path, "ab") as log:
            log.write(f"--- {' '.join(argv)}\n".encode())
            log.flush()
            self._proc = nsh.NetnsProcess(self.netns, argv, stdout=log.fileno(),
                                          stderr=subprocess.STDOUT, env=env)
        try:
            self._wait_control()
            self._apply_all()
            self._iscsi("--op", "new", "--mode", "portal",
                        "--param", f"portal={_portal(self.address, self.port)}")
            self._iscsi("--op", "delete", "--mode", "portal",
                        "--param", f"portal=127.0.0.1:{self.bootstrap_port}")
            if self._isns is not None:
                self._apply_isns()  # before the extra portals: see set_isns
            for address, port in self._portals:
                self._iscsi("--op", "new", "--mode", "portal",
                            "--param", f"portal={_portal(address, port)}")
            wait_listening(self.netns, self.address, self.port, self.start_timeout,
                           self._spawned_pid, "tgtd")
            for address, port in self._portals:
                wait_listening(self.netns, address, port, self.start_timeout,
                               self._spawned_pid, "tgtd")
        except TargetError as e:
            log_tail = _tail(self.log_path)
            with contextlib.suppress(TargetError):
                self.kill()
            raise TargetStartError(f"tgtd in {self.netns} failed to start: {e}\n"
                                   f"tgtd log ({self.log_path}):\n{log_tail}") from e

    def _wait_control(self) -> None:
        last: TargetCommandError | None = None

        def answers() -> bool:
            nonlocal last
            try:
                self.tgtadm("--op", "show", "--mode", "system", timeout=5)
            except TargetCommandError as e:
                last = e
                return False
            return True

        got = nsh.poll_until(answers, self._spawned_pid, self.start_timeout, 0.03)
        if got == "exited":
            raise TargetStartError("tgtd exited during start-up")
        if got == "timeout":
            raise TargetStartError(
                f"tgtd control channel not ready after {self.start_timeout:.0f} s: "
                f"{last if last is not None else '(not asked)'}")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop tgtd gracefully (delete targets, delete system), SIGKILL if it lingers."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        shutdown_tgtd(proc.pid, self.ipc_socket, self.control_port, self.netns, timeout,
                      proc.proc)

    # -- configuration -----------------------------------------------------------------
    def add_target(self, iqn: str, luns: Sequence[LunSpec] = (), *, tid: int | None = None,
                   initiator_address: str | None = "ALL", initiator_name: str | None = None,
                   params: dict[str, str] | None = None) -> int:
        """Add target ``iqn`` with ``luns`` as LUN 1, 2, ... (LUN 0 is the controller).

        ``initiator_address`` ("ALL", an address or a subnet) and/or ``initiator_name``
        are bound as allowed initiators. Returns the tid.
        """
        if tid is None:
            tid = max(self._targets, default=0) + 1
        if tid in self._targets:
            raise TargetConfigError(f"tid {tid} already exists ({self._targets[tid].iqn})")
        if any(t.iqn == iqn for t in self._targets.values()):
            raise TargetConfigError(f"target {iqn} already exists")
        target = TgtTarget(tid, iqn)
        if initiator_address:
            target.initiator_addresses.append(initiator_address)
        if initiator_name:
            target.initiator_names.append(initiator_name)
        self._targets[tid] = target
        if self.running:
            self._apply_target_base(target)
        for spec in luns:
            self.add_lun(tid, spec)
        for name, value in (params or {}).items():
            self.set_param(tid, name, value)
        if self.running:
            self._apply_acl(target)
        return tid

    def _target(self, tid: int) -> TgtTarget:
        try:
            return self._targets[tid]
        except KeyError:
            raise TargetConfigError(f"no target with tid {tid}") from None

    def add_lun(self, tid: int, spec: LunSpec, lun: int | None = None) -> int:
        """Add a LUN to target ``tid`` (next free number unless ``lun``); returns it."""
        target = self._target(tid)
        if lun is None:
            lun = max(target.luns, default=0) + 1
        if lun == 0 or lun in target.luns:
            raise TargetConfigError(f"LUN {lun} of tid {tid} is taken (0 is the controller)")
        resolved = self._files.resolve(spec)
        target.luns[lun] = resolved
        if self.running:
            self._apply_lun(tid, lun, resolved)
        return lun

    def lun_path(self, tid: int, lun: int) -> Path:
        """The backing file of LUN ``lun`` of target ``tid``."""
        return self._target(tid).luns[lun].path

    def set_chap(self, tid: int, user: str, password: str) -> None:
        """Require CHAP: the initiator must log in as ``user``/``password``."""
        target = self._target(tid)
        self._check_account(user, password)
        target.incoming[user] = password
        if self.running:
            self._ensure_account(user, password)
            self._iscsi("--op", "bind", "--mode", "account", "--tid", str(tid), "--user", user)

    def set_mutual_chap(self, tid: int, user: str, password: str) -> None:
        """Let the target authenticate itself as ``user``/``password`` (mutual CHAP)."""
        target = self._target(tid)
        self._check_account(user, password)
        if target.outgoing is not None and self.running:
            self._iscsi("--op", "unbind", "--mode", "account", "--tid", str(tid),
                        "--user", target.outgoing[0], "--outgoing")
        target.outgoing = (user, password)
        if self.running:
            self._ensure_account(user, password)
            self._iscsi("--op", "bind", "--mode", "account", "--tid", str(tid), "--user", user,
                        "--outgoing")

    def clear_chap(self, tid: int) -> None:
        """Unbind every CHAP account of ``tid`` (login without authentication again)."""
        target = self._target(tid)
        if self.running:
            for user in target.incoming:
                self._iscsi("--op", "unbind", "--mode", "account", "--tid", str(tid),
                            "--user", user)
            if target.outgoing is not None:
                self._iscsi("--op", "unbind", "--mode", "account", "--tid", str(tid),
                            "--user", target.outgoing[0], "--outgoing")
        target.incoming.clear()
        target.outgoing = None

    def set_param(self, tid: int, name: str, value: str | int) -> None:
        """``tgtadm --op update --mode target --name NAME --value VALUE`` (kept on restart)."""
        target = self._target(tid)
        if self.running:
            self._iscsi("--op", "update", "--mode", "target", "--tid", str(tid),
                        "--name", name, "--value", str(value))
        target.params[name] = str(value)

    def params(self, tid: int) -> dict[str, str]:
        """The live parameters of target ``tid`` (``--op show --mode target --tid``)."""
        return parse_params(self._iscsi("--op", "show", "--mode", "target", "--tid", str(tid)))

    def connections(self, tid: int) -> list[TgtConnection]:
        """The live connections of target ``tid``."""
        return parse_connections(self._iscsi("--op", "show", "--mode", "conn",
                                             "--tid", str(tid)))

    def delete_connection(self, tid: int, sid: int, cid: int) -> None:
        """Close connection ``cid`` of session ``sid`` (``--op delete --mode conn``)."""
        self._iscsi("--op", "delete", "--mode", "conn", "--tid", str(tid), "--sid", str(sid),
                    "--cid", str(cid))

    def add_portal(self, address: str, port: int = 3260) -> None:
        """Listen on one more portal (``tgtadm --op new --mode portal``; kept on restart).

        tgtd puts every portal in portal group 1: sessions through different portals
        reach the same LUNs (multipath)."""
        if (address, port) in self._portals or (address, port) == (self.address, self.port):
            raise TargetConfigError(f"portal {_portal(address, port)} already exists")
        self._portals.append((address, port))
        if self.running:
            self._iscsi("--op", "new", "--mode", "portal",
                        "--param", f"portal={_portal(address, port)}")
            wait_listening(self.netns, address, port, self.start_timeout,
                           self._spawned_pid, "tgtd")

    @property
    def portals(self) -> list[tuple[str, int]]:
        """Every portal tgtd listens on: ``listen`` first, then the added ones."""
        return [(self.address, self.port), *self._portals]

    def set_isns(self, server: str, port: int = 3205) -> None:
        """Register every target with the iSNS server (RFC 4171) at ``server``:
        ``--mode sys --name iSNSServerIP/iSNSServerPort``, then ``iSNS On`` (kept on
        restart). Call it after the targets exist: tgtd registers what it has.

        tgtd 1.0.85 registers with open-isns only while it has one portal: with two,
        the second portal stays "larval" and no storage node is registered.  Call it
        before :meth:`add_portal` (only the first portal is then registered)."""
        self._isns = (server, port)
        if self.running:
            self._apply_isns()

    def _apply_isns(self) -> None:
        assert self._isns is not None
        server, port = self._isns
        for name, value in (("iSNSServerIP", server), ("iSNSServerPort", str(port)),
                            ("iSNS", "On")):
            self.tgtadm("--op", "update", "--mode", "sys", "--name", name, "-v", value)

    def show(self) -> str:
        """``tgtadm --op show --mode target`` output (targets, LUNs, nexuses, ACLs)."""
        return self._iscsi("--op", "show", "--mode", "target")

    # -- applying ----------------------------------------------------------------------
    @staticmethod
    def _check_account(user: str, password: str) -> None:
        for what, text in (("user", user), ("password", password)):
            if not text or any(c.isspace() or c == "," for c in text):
                raise TargetConfigError(
                    f"CHAP {what} {text!r} must be non-empty without spaces or commas")

    def _accounts(self) -> dict[str, str]:
        accounts: dict[str, str] = {}
        for t in self._targets.values():
            pairs = list(t.incoming.items()) + ([t.outgoing] if t.outgoing else [])
            for user, password in pairs:
                if accounts.setdefault(user, password) != password:
                    raise TargetConfigError(f"CHAP user {user} has two different passwords")
        return accounts

    def _ensure_account(self, user: str, password: str) -> None:
        existing = self._iscsi("--op", "show", "--mode", "account").split()
        if user not in existing:
            self._iscsi("--op", "new", "--mode", "account", "--user", user,
                        "--password", password)

    def _apply_target_base(self, target: TgtTarget) -> None:
        self._iscsi("--op", "new", "--mode", "target", "--tid", str(target.tid),
                    "-T", target.iqn)

    def _apply_lun(self, tid: int, lun: int, spec: Lun) -> None:
        self._iscsi("--op", "new", "--mode", "logicalunit", "--tid", str(tid),
                    "--lun", str(lun), "-b", str(spec.path))
        if spec.readonly:
            self._iscsi("--op", "update", "--mode", "logicalunit", "--tid", str(tid),
                        "--lun", str(lun), "--params", "readonly=1")

    def _apply_acl(self, target: TgtTarget) -> None:
        for address in target.initiator_addresses:
            self._iscsi("--op", "bind", "--mode", "target", "--tid", str(target.tid),
                        "-I", address)
        for name in target.initiator_names:
            self._iscsi("--op", "bind", "--mode", "target", "--tid", str(target.tid),
                        "--initiator-name", name)

    def _apply_all(self) -> None:
        for user, password in self._accounts().items():
            self._iscsi("--op", "new", "--mode", "account", "--user", user,
                        "--password", password)
        for target in self._targets.values():
            self._apply_target_base(target)
            for lun, spec in target.luns.items():
                self._apply_lun(target.tid, lun, spec)
            for name, value in target.params.items():
                self._iscsi("--op", "update", "--mode", "target", "--tid", str(target.tid),
                            "--name", name, "--value", value)
            for user in target.incoming:
                self._iscsi("--op", "bind", "--mode", "account", "--tid", str(target.tid),
                            "--user", user)
            if target.outgoing is not None:
                self._iscsi("--op", "bind", "--mode", "account", "--tid", str(target.tid),
                            "--user", target.outgoing[0], "--outgoing")
            self._apply_acl(target)


# --------------------------------------------------------------------------- istgt

_QUOTE_BAD = re.compile(r'["\\\s]')


class Istgt(_TargetDaemon):
    """An istgt in ``netns`` serving one target with ``luns`` as LUN 0, 1, ...

    The configuration lives in a private directory (``istgt.conf``, ``auth.conf``);
    ``chap=(user, secret)`` requires CHAP, ``mutual_chap=(user, secret)`` additionally
    makes the target authenticate itself. istgt has no controller LUN: the first disk is
    LUN 0. Its unit-control portal listens on ``127.0.0.1:<uctl_port>`` in the namespace.
    """

    def __init__(self, netns: str, listen: tuple[str, int] = ("0.0.0.0", 3260), *,
                 iqn: str = "iqn.2024-01.org.bootinit:istgt",
                 luns: Sequence[LunSpec] = ("64M",),
                 chap: tuple[str, str] | None = None,
                 mutual_chap: tuple[str, str] | None = None,
                 max_connections: int = 4, max_sessions: int = 16,
                 use_digest: str = "Auto",
                 global_params: dict[str, str | int] | None = None,
                 uctl_port: int = 3261,
                 lun_dir: str | os.PathLike[str] | None = None,
                 state_dir: str | os.PathLike[str] | None = None,
                 start_timeout: float = DEFAULT_START_TIMEOUT) -> None:
        if mutual_chap is not None and chap is None:
            raise TargetConfigError("mutual CHAP needs the initiator's CHAP too (chap=...)")
        for pair in (chap, mutual_chap):
            for text in pair or ():
                if not text or _QUOTE_BAD.search(text):
                    raise TargetConfigError(
                        f"istgt CHAP name/secret {text!r} must be non-empty, without "
                        f"quotes, backslashes or spaces")
        if use_digest not in ("Auto", "Header", "Data", "Header Data"):
            raise TargetConfigError(f"UseDigest must be Auto, Header, Data or 'Header Data', "
                                    f"got {use_digest!r}")
        self.netns = netns
        self.address, self.port = listen
        self.iqn = iqn
        self.chap = chap
        self.mutual_chap = mutual_chap
        self.max_connections = max_connections
        self.max_sessions = max_sessions
        self.use_digest = use_digest
        self.global_params = {k: str(v) for k, v in (global_params or {}).items()}
        self.uctl_port = uctl_port
        self.start_timeout = start_timeout
        self._state_base = state_dir
        self._dir: Path | None = None
        self._files = _LunFiles(lun_dir)
        self.luns: list[Lun] = [self._files.resolve(s) for s in luns]
        self._proc: nsh.NetnsProcess | None = None

    @property
    def directory(self) -> Path:
        """The private directory holding the configuration, PID file and log."""
        if self._dir is None:
            self._dir = _private_dir("istgt-", self._state_base)
        return self._dir

    @property
    def config_path(self) -> Path:
        """The generated ``istgt.conf``."""
        return self.directory / "istgt.conf"

    @property
    def log_path(self) -> Path:
        """istgt's stdout/stderr."""
        return self.directory / "istgt.log"

    @property
    def created_files(self) -> list[Path]:
        """LUN files this object created (removed by ``close()``)."""
        return list(self._files.created)

    def config_text(self) -> str:
        """The ``istgt.conf`` for the current settings."""
        d = self.directory
        glob = {
            "NodeBase": '"iqn.2024-01.org.bootinit.istgt"',
            "PidFile": str(d / "istgt.pid"),
            "AuthFile": str(d / "auth.conf"),
            "MediaDirectory": str(d),
            "LogFacility": '"local7"',
            "Timeout": "30", "NopInInterval": "20",
            "DiscoveryAuthMethod": "None",
            "MaxSessions": str(self.max_sessions),
            "MaxConnections": str(self.max_connections),
            "MaxR2T": "32", "MaxOutstandingR2T": "16",
            "DefaultTime2Wait": "2", "DefaultTime2Retain": "60",
            "FirstBurstLength": "262144", "MaxBurstLength": "1048576",
            "MaxRecvDataSegmentLength": "262144",
            "InitialR2T": "Yes", "ImmediateData": "Yes",
            "DataPDUInOrder": "Yes", "DataSequenceInOrder": "Yes",
            "ErrorRecoveryLevel": "0",
        }
        glob.update(self.global_params)
        auth = "None"
        if self.chap is not None:
            auth = "CHAP Mutual" if self.mutual_chap is not None else "CHAP"
        lines = ["[Global]", *(f"  {k} {v}" for k, v in glob.items()), "",
                 "[UnitControl]", "  AuthMethod None",
                 f"  Portal UC1 127.0.0.1:{self.uctl_port}", "  Netmask 127.0.0.1", "",
                 "[PortalGroup1]", f"  Portal DA1 {_portal(self.address, self.port)}", "",
                 "[InitiatorGroup1]", '  InitiatorName "ALL"', "  Netmask ALL", "",
                 "[LogicalUnit1]", f"  TargetName {self.iqn}",
                 "  Mapping PortalGroup1 InitiatorGroup1",
                 f"  AuthMethod {auth}",
                 f"  AuthGroup {'AuthGroup1' if self.chap else 'None'}",
                 f"  UseDigest {self.use_digest}", "  UnitType Disk"]
        for n, lun in enumerate(self.luns):
            lines.append(f"  LUN{n} Storage {lun.path} Auto")
        return "\n".join(lines) + "\n"

    def auth_text(self) -> str:
        """The ``auth.conf`` for the current settings."""
        lines = ["[AuthGroup1]", '  Comment "bootinit"']
        if self.chap is not None:
            entry = f'  Auth "{self.chap[0]}" "{self.chap[1]}"'
            if self.mutual_chap is not None:
                entry += f' "{self.mutual_chap[0]}" "{self.mutual_chap[1]}"'
            lines.append(entry)
        return "\n".join(lines) + "\n"

    def write_config(self) -> None:
        """Write ``istgt.conf`` and ``auth.conf`` into the private directory."""
        self.config_path.write_text(self.config_text())
        (self.directory / "auth.conf").write_text(self.auth_text())

    def start(self) -> None:
        """Write the configuration, start ``istgt -D``, wait until the portal listens."""
        if self.running:
            raise TargetError(f"istgt (pid {self.pid}) is already running in {self.netns}")
        for port, what in ((self.port, "portal"), (self.uctl_port, "unit-control port")):
            if is_listening(self.netns, self.address if port == self.port else "127.0.0.1",
                            port):
                raise TargetStartError(f"istgt {what} {port} is already in use in {self.netns}")
        self.write_config()
        pid_file = self.directory / "istgt.pid"
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
        argv = ["istgt", "-D", "-c", str(self.config_path), "-p", str(pid_file)]
        with open(self.log_path, "ab") as log:
            log.write(f"--- {' '.join(argv)}\n".encode())
            log.flush()
            self._proc = nsh.NetnsProcess(self.netns, argv, stdout=log.fileno(),
                                          stderr=subprocess.STDOUT)
        try:
            wait_listening(self.netns, self.address, self.port, self.start_timeout,
                           self._spawned_pid, "istgt")
        except TargetError as e:
            log_tail = _tail(self.log_path)
            with contextlib.suppress(TargetError):
                self.kill()
            raise TargetStartError(f"istgt in {self.netns} failed to start: {e}\n"
                                   f"istgt log ({self.log_path}):\n{log_tail}") from e

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM istgt (it takes about 2 s to exit), SIGKILL after ``timeout``."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            if not wait_pid_gone(proc.pid, timeout, proc.proc):
                kill_pid(proc.pid, proc.proc)
        proc.proc.wait(timeout=5)

