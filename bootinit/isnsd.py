"""An open-isns server (``isnsd``) run inside a network namespace, for tests and the lab.

``isnsd --config FILE --foreground`` with a configuration of its own in a private
directory (database, PID file and control socket there, ``Security = 0``,
``SLPRegister = 0``, a default discovery domain so that every registered node sees
every other); it listens on TCP 3205 (RFC 4171 §5.1) on every address of the
namespace.  Stopped by its PID only (SIGTERM, then SIGKILL).

::

    with Isnsd(topo.netns) as isns:
        tgtd.set_isns(str(topo.peer_addr))      # tgtd registers its targets
        isns.wait_registered("iqn...")          # polls --dump-db
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Self

from bootinit.targets import (
    RUN_DIR,
    TargetStartError,
    _private_dir,
    _tail,
    kill_pid,
    wait_listening,
    wait_pid_gone,
)
from netstack import netns as nsh

ISNS_PORT = 3205


class Isnsd:
    """An ``isnsd`` in ``netns`` (see module doc)."""

    def __init__(self, netns: str, *, default_dd: bool = True, registration_period: str = "0",
                 state_dir: str | os.PathLike[str] | None = None,
                 start_timeout: float = 10.0) -> None:
        self.netns = netns
        self.port = ISNS_PORT
        self.default_dd = default_dd
        self.registration_period = registration_period
        self.start_timeout = start_timeout
        self._state_base = state_dir if state_dir is not None else RUN_DIR
        self._dir: Path | None = None
        self._proc: nsh.NetnsProcess | None = None

    @property
    def directory(self) -> Path:
        """The private directory (configuration, database, PID file, control socket)."""
        if self._dir is None:
            self._dir = _private_dir("isnsd-", self._state_base)
        return self._dir

    @property
    def config_path(self) -> Path:
        """The generated ``isnsd.conf``."""
        return self.directory / "isnsd.conf"

    @property
    def log_path(self) -> Path:
        """isnsd's stdout/stderr."""
        return self.directory / "isnsd.log"

    def config_text(self) -> str:
        """The configuration file."""
        d = self.directory
        return "\n".join([
            f"Database = {d / 'db'}",
            "Security = 0",
            "SLPRegister = 0",
            f"DefaultDiscoveryDomain = {1 if self.default_dd else 0}",
            f"RegistrationPeriod = {self.registration_period}",
            f"PIDFile = {d / 'isnsd.pid'}",
            f"ControlSocket = {d / 'control'}",
            "",
        ])

    @property
    def running(self) -> bool:
        """Whether isnsd runs."""
        return self._proc is not None and self._proc.alive()

    @property
    def pid(self) -> int | None:
        """isnsd's PID while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.alive() else None

    def start(self) -> None:
        """Write the configuration, start ``isnsd --foreground``, wait for port 3205."""
        if self.running:
            raise TargetStartError(f"isnsd (pid {self.pid}) already runs in {self.netns}")
        (self.directory / "db").mkdir(exist_ok=True)
        self.config_path.write_text(self.config_text())
        argv = ["isnsd", "--config", str(self.config_path), "--foreground"]
        with open(self.log_path, "ab") as log:
            log.write(f"--- {' '.join(argv)}\n".encode())
            log.flush()
            self._proc = nsh.NetnsProcess(self.netns, argv, stdout=log.fileno(),
                                          stderr=subprocess.STDOUT)
        try:
            wait_listening(self.netns, "0.0.0.0", self.port, self.start_timeout,
                           self._proc.pid, "isnsd")
        except Exception as e:
            tail = _tail(self.log_path)
            self.stop()
            raise TargetStartError(f"isnsd in {self.netns} failed to start: {e}\n"
                                   f"isnsd log ({self.log_path}):\n{tail}") from e

    def dump_db(self) -> str:
        """``isnsd --dump-db`` (entities, portals, storage nodes, portal groups)."""
        cp = nsh.run(["isnsd", "--config", str(self.config_path), "--dump-db"],
                     netns=self.netns, check=False, timeout=15)
        return cp.stdout

    def wait_registered(self, name: str, timeout: float = 10.0) -> str:
        """Poll the database until storage node ``name`` is in it; returns the dump.
        Raises :class:`TargetStartError` at ``timeout``, or at once if isnsd exits."""
        dump = ""

        def registered() -> bool:
            nonlocal dump
            dump = self.dump_db()
            return f'"{name}"' in dump

        if self._proc is None:
            raise TargetStartError("isnsd is not running")
        got = nsh.poll_until(registered, self._proc.pid, timeout, 0.1)
        if got == "exited":
            raise TargetStartError(f"isnsd exited before {name} registered; "
                                   f"database:\n{dump}")
        if got == "timeout":
            raise TargetStartError(f"{name} not registered with isnsd after "
                                   f"{timeout:g} s; database:\n{dump}")
        return dump

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM by PID, SIGKILL after ``timeout``."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            if not wait_pid_gone(proc.pid, timeout, proc.proc):
                kill_pid(proc.pid, proc.proc)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.proc.wait(timeout=5)

    def close(self) -> None:
        """Stop and remove the private directory."""
        try:
            self.stop()
        finally:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


__all__ = ["ISNS_PORT", "Isnsd"]
