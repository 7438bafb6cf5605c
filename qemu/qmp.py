"""A small QMP client (QEMU Machine Protocol, docs/interop/qmp-spec) for test guests.

::

    qmp = Qmp.connect(vm.qmp_path, timeout=10, pump=pump)
    qmp.execute("query-status")          # {"status": "running", ...}
    qmp.wait_event("GUEST_PANICKED", 30)
    qmp.close()

Non-blocking socket; every wait has a deadline and calls ``pump(seconds)`` meanwhile
(pass one that runs the caller's loop, so an NBD server in it keeps serving QEMU).

In a polling loop: watch :meth:`Qmp.fileno` and call :meth:`Qmp.poll` when it is
readable (it returns the new events; replies stay queued for ``execute``, which may be
running further up the stack through ``pump``). :meth:`Qmp.getfd` passes a descriptor
to QEMU over SCM_RIGHTS (QMP ``getfd``) for ``protocol: "fd:NAME"`` arguments.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from qemu.launch import Pump


class QmpError(Exception):
    """A QMP command failed, the connection broke, or a wait ran out of time."""


def _sleep(t: float) -> None:
    time.sleep(t)


class Qmp:
    """A connected QMP session in command mode."""

    def __init__(self, sock: socket.socket, pump: Pump | None = None) -> None:
        self.sock = sock
        self.pump = pump or _sleep
        self.events: list[dict[str, Any]] = []
        self.greeting: dict[str, Any] = {}
        self._buf = b""
        self._inbox: list[dict[str, Any]] = []  # parsed, not yet seen by _next

    @classmethod
    def connect(cls, path: str | os.PathLike[str], timeout: float = 10.0,
                pump: Pump | None = None) -> Qmp:
        """Connect (retrying until QEMU listens), read the greeting, enter command mode."""
        pump = pump or _sleep
        end = time.monotonic() + timeout
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(os.fspath(path))
                break
            except OSError as e:
                s.close()
                if time.monotonic() >= end:
                    raise QmpError(f"QMP socket {path}: {e}") from e
                pump(0.05)
        s.setblocking(False)
        q = cls(s, pump)
        q.greeting = q._next(lambda m: "QMP" in m, end - time.monotonic(), "greeting")
        q.execute("qmp_capabilities", timeout=max(1.0, end - time.monotonic()))
        return q

    def _read(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as e:
            raise QmpError(f"QMP connection: {e}") from e
        if not data:
            raise QmpError("QMP connection closed by QEMU")
        self._buf += data
        return True

    def _messages(self) -> list[dict[str, Any]]:
        """Parse whole lines into the inbox; returns the new events."""
        new_events = []
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            if line.strip():
                msg = json.loads(line)
                if "event" in msg:
                    self.events.append(msg)
                    new_events.append(msg)
                self._inbox.append(msg)
        return new_events

    def _next(self, pred: Callable[[dict[str, Any]], bool], timeout: float,
              what: str) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            self._messages()
            pending, self._inbox = self._inbox, []
            for i, m in enumerate(pending):
                if pred(m):
                    self._inbox[:0] = pending[i + 1:]
                    return m
            if not self._read():
                left = end - time.monotonic()
                if left <= 0:
                    raise QmpError(f"no QMP {what} within {timeout:g} s")
                self.pump(min(left, 0.05))

    def fileno(self) -> int:
        """The socket's descriptor (watch it for reading in a loop; see :meth:`poll`)."""
        return self.sock.fileno()

    def poll(self) -> list[dict[str, Any]]:
        """Read whatever QEMU sent, without waiting; the events that arrived (also kept
        in ``events``). Replies stay queued for :meth:`execute`."""
        while self._read():
            pass
        return self._messages()

    def execute(self, command: str, arguments: dict[str, Any] | None = None,
                timeout: float = 10.0, fds: Sequence[int] = ()) -> Any:
        """Run ``command``; its ``return`` value, or :class:`QmpError` with QEMU's error.
        ``fds`` travel with the command as SCM_RIGHTS ancillary data."""
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        data = json.dumps(msg).encode() + b"\n"
        self.sock.setblocking(True)
        try:
            if fds:
                sent = socket.send_fds(self.sock, [data], list(fds))
                self.sock.sendall(data[sent:])
            else:
                self.sock.sendall(data)
        except OSError as e:
            raise QmpError(f"QMP send: {e}") from e
        finally:
            self.sock.setblocking(False)
        reply = self._next(lambda m: "return" in m or "error" in m, timeout,
                           f"reply to {command}")
        if "error" in reply:
            err = reply["error"]
            raise QmpError(f"{command}: {err.get('class')}: {err.get('desc')}")
        return reply["return"]

    def getfd(self, fd: int, name: str) -> None:
        """Hand ``fd`` to QEMU as ``name`` (QMP ``getfd``; then ``protocol: "fd:NAME"``).
        QEMU holds its own copy: the caller may close ``fd`` afterwards."""
        self.execute("getfd", {"fdname": name}, fds=[fd])

    def wait_event(self, name: str, timeout: float) -> dict[str, Any]:
        """The first event ``name`` (already received or arriving within ``timeout``)."""
        for e in self.events:
            if e["event"] == name:
                return e
        return self._next(lambda m: m.get("event") == name, timeout, f"event {name}")

    def close(self) -> None:
        """Close the socket."""
        with contextlib.suppress(OSError):
            self.sock.close()


def qmp_path_ok(path: Path) -> bool:
    """Whether ``path`` is short enough for a UNIX socket."""
    return len(os.fsencode(path)) <= 107


__all__ = ["Qmp", "QmpError", "qmp_path_ok"]
