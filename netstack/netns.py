"""Network namespaces, bridges, addresses and processes inside namespaces.

The project's own test hosts live in network namespaces that these helpers create
(``ip netns add``); nothing here touches the root namespace's addresses or routes.
Processes started here are tracked by PID and stopped by PID only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence


class NetnsError(Exception):
    """A namespace operation failed; the message names the command and its error."""


def run(cmd: Sequence[str], netns: str | None = None, check: bool = True,
        timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` (inside ``netns`` when given) and return the completed process."""
    full = list(cmd) if netns is None else ["ip", "netns", "exec", netns, *cmd]
    try:
        cp = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NetnsError(f"{' '.join(full)}: {e}") from e
    if check and cp.returncode != 0:
        raise NetnsError(f"{' '.join(full)}: exit {cp.returncode}: {cp.stderr.strip()}")
    return cp


def unique_name(prefix: str) -> str:
    """A short unique name (interface names are limited to 15 characters)."""
    return f"{prefix[:8]}{secrets.token_hex(3)}"


def exists(name: str) -> bool:
    """Whether the namespace ``name`` exists."""
    return os.path.exists(f"/run/netns/{name}")


def create(name: str) -> None:
    """Create namespace ``name`` with its loopback up."""
    run(["ip", "netns", "add", name])
    run(["ip", "link", "set", "lo", "up"], netns=name)


def delete(name: str) -> None:
    """Delete namespace ``name`` (no error if it is already gone)."""
    if exists(name):
        run(["ip", "netns", "delete", name], check=False)


def add_bridge(netns: str, bridge: str, address: str | None = None) -> None:
    """Create bridge ``bridge`` inside ``netns``, up, with ``address`` (CIDR) if given."""
    run(["ip", "link", "add", bridge, "type", "bridge"], netns=netns)
    run(["ip", "link", "set", bridge, "up"], netns=netns)
    if address:
        add_address(netns, bridge, address)


def add_address(netns: str, dev: str, address: str) -> None:
    """Add ``address`` (CIDR, IPv4 or IPv6) to ``dev`` inside ``netns``."""
    cmd = ["ip", "addr", "add", address, "dev", dev]
    if ":" in address:
        cmd.append("nodad")
    run(cmd, netns=netns)


def link_up(dev: str, netns: str | None = None) -> None:
    """Set ``dev`` up (inside ``netns`` when given)."""
    run(["ip", "link", "set", dev, "up"], netns=netns)


def move_to(dev: str, netns: str) -> None:
    """Move interface ``dev`` from the root namespace into ``netns``."""
    run(["ip", "link", "set", dev, "netns", netns])


def enslave(netns: str, dev: str, bridge: str) -> None:
    """Attach ``dev`` to ``bridge`` inside ``netns``."""
    run(["ip", "link", "set", dev, "master", bridge], netns=netns)


@contextlib.contextmanager
def namespace(prefix: str = "bi") -> Iterator[str]:
    """Create a fresh uniquely named namespace; delete it on exit, also on failure."""
    name = unique_name(prefix)
    create(name)
    try:
        yield name
    finally:
        delete(name)


class NetnsProcess:
    """A process started inside a namespace, stopped by its own PID only."""

    def __init__(self, netns: str | None, argv: Sequence[str], *,
                 stdout: int | None = subprocess.DEVNULL,
                 stderr: int | None = subprocess.DEVNULL,
                 stdin: int | None = subprocess.DEVNULL,
                 env: dict[str, str] | None = None) -> None:
        full = list(argv) if netns is None else ["ip", "netns", "exec", netns, *argv]
        self.argv = full
        try:
            self.proc = subprocess.Popen(full, stdout=stdout, stderr=stderr, stdin=stdin,
                                         env=env, start_new_session=True)
        except OSError as e:
            raise NetnsError(f"{' '.join(full)}: {e}") from e

    @property
    def pid(self) -> int:
        """The PID (``ip netns exec`` execs the command, so it is the command's PID)."""
        return self.proc.pid

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL. Returns the exit status."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        return self.proc.returncode

    def __enter__(self) -> NetnsProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
