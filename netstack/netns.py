"""Network namespaces, bridges, addresses and processes inside namespaces.

The project's own test hosts live in network namespaces that these helpers create
(``ip netns add``); nothing here touches the root namespace's addresses or routes.
Processes started here are tracked by PID and stopped by PID only.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal


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


#: The local addresses ``ss`` shows for a socket listening on every address.
WILDCARD_ADDRESSES = frozenset({"0.0.0.0", "*", "::", ""})


def listening_ports(netns: str) -> set[tuple[str, int]]:
    """(local address, port) pairs of TCP sockets listening inside ``netns``
    (``ss -ltnH``; an IPv6 address without its brackets)."""
    cp = run(["ss", "-ltnH"], netns=netns)
    out: set[tuple[str, int]] = set()
    for line in cp.stdout.splitlines():
        cols = line.split()
        if len(cols) < 4:
            continue
        addr, _, port = cols[3].rpartition(":")
        if port.isdigit():
            out.add((addr.strip("[]"), int(port)))
    return out


def listens_on(found: Iterable[tuple[str, int]], port: int, addr: str | None = None) -> bool:
    """Whether ``found`` (from :func:`listening_ports`) holds a socket on ``port`` that
    takes connections to ``addr``: bound to it or to every address (any address when
    ``addr`` is None)."""
    return any(p == port and (addr is None or a == addr or a in WILDCARD_ADDRESSES)
               for a, p in found)


PollOutcome = Literal["ready", "exited", "timeout"]


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait at most ``timeout`` seconds for process ``pid`` to exit: True when it has
    (an unreaped child counts) or is gone, False at the timeout. Waits on a pidfd, which
    becomes readable when the process exits (Linux 5.3), with poll(2) (no FD_SETSIZE
    limit as with select): no polling of the process's state."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        waiter = select.poll()
        waiter.register(fd, select.POLLIN)
        return bool(waiter.poll(max(0.0, timeout) * 1000))
    finally:
        os.close(fd)


def poll_until(ready: Callable[[], bool], pid: int, timeout: float,
               interval: float = 0.05) -> PollOutcome:
    """Ask ``ready()`` every ``interval`` seconds until it is true (``"ready"``),
    process ``pid`` (the one expected to make it true) exits first (``"exited"``), or
    ``timeout`` seconds have passed (``"timeout"``, after a last look at the deadline).

    The one wait for another process's state that gives no event to wait on — a port
    that listens (``ss``), a control channel that answers (``tgtadm``), a node in a
    daemon's database (``isnsd --dump-db``) — bounded by its deadline; never used for
    our own stack, whose waits are the loop's deadlines. The time between looks is
    spent waiting on the process's exit (:func:`wait_exit`), so an exit ends the wait
    at once: there is always a process to wait on, never a bare sleep. Callers turn
    the outcome into their own typed errors."""
    deadline = time.monotonic() + timeout
    exited = False
    while True:
        if ready():
            return "ready"
        if exited:
            return "exited"
        left = deadline - time.monotonic()
        if left <= 0:
            return "timeout"
        exited = wait_exit(pid, min(interval, left))


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


def add_veth(netns: str, dev: str, peer_netns: str, peer_dev: str) -> None:
    """Create a veth pair: ``dev`` inside ``netns``, its peer ``peer_dev`` inside
    ``peer_netns`` (both namespaces must exist; nothing appears in the root one)."""
    run(["ip", "link", "add", dev, "type", "veth", "peer", "name", peer_dev, "netns",
         peer_netns], netns=netns)


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


#: ``setns(2)`` namespace type for network namespaces.
CLONE_NEWNET = 0x40000000


def _setns(fd: int, what: str) -> None:
    """Call ``setns(fd, CLONE_NEWNET)`` (Python 3.11 has no ``os.setns``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(f"setns({what}): {os.strerror(err)}")


@contextlib.contextmanager
def inside(name: str) -> Iterator[None]:
    """Run the body with this thread in namespace ``name``; always switch back.

    Only for short, non-blocking steps (e.g. opening ``/dev/net/tun`` so that a TAP
    device living in ``name`` can be attached): sockets and tun files remember the
    namespace they were opened in. The process is single-threaded, so this is safe.
    """
    if not exists(name):
        raise NetnsError(f"namespace {name!r} does not exist")
    home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target, name)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home, "back to the original namespace")
    finally:
        os.close(home)


def link_exists(dev: str, netns: str | None = None) -> bool:
    """Whether interface ``dev`` exists (inside ``netns`` when given)."""
    cmd = ["ip", "link", "show", "dev", dev]
    if netns is not None:
        if not exists(netns):
            return False
        cmd = ["ip", "-n", netns, "link", "show", "dev", dev]
    return run(cmd, check=False).returncode == 0


def set_mtu(dev: str, mtu: int, netns: str | None = None) -> None:
    """Set the MTU of ``dev`` (inside ``netns`` when given)."""
    run(["ip", "link", "set", "dev", dev, "mtu", str(mtu)], netns=netns)


def delete_link(dev: str, netns: str | None = None) -> None:
    """Delete interface ``dev`` (inside ``netns`` when given); no error if it is gone."""
    run(["ip", "link", "del", "dev", dev], netns=netns, check=False)


def stop_process(proc: subprocess.Popen[bytes] | subprocess.Popen[str],
                 grace: float = 5.0) -> int | None:
    """Stop a process we started, by its PID only: SIGTERM, SIGKILL after ``grace``
    seconds; returns its exit status."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode


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
        return stop_process(self.proc, timeout)

    def __enter__(self) -> NetnsProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
