"""The lab: a network namespace with a bridge holding a tgtd target's address.

``bootinit lab up`` (or ``python -m bootinit.lab up``) makes namespace NS with bridge
``br0`` carrying ``10.77.0.1/24``, starts tgtd there serving the given files (or a
generated sparse LUN) as LUN 1, 2, ... of one target, and prints the URL and the link
options bootinit needs to reach it (``--netns NS --bridge br0 --ip 10.77.0.2/24``).

What ``up`` started is recorded in ``/run/bootinit/lab-NAME.json`` (namespace, tgtd PID
and start time, control port and socket, files made), so that ``lab down`` in another
process stops exactly that: the PID is signalled only while its command line is still
that tgtd. ``lab status`` reports whether everything is still there.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

from bootinit.targets import (
    RUN_DIR,
    Lun,
    TargetError,
    Tgtd,
    create_sparse_file,
    is_listening,
    is_size,
    parse_size,
    pid_alive,
    pid_cmdline,
    pid_starttime,
    shutdown_tgtd,
    tgtadm_argv,
)
from netstack import netns as nsh

DEFAULT_NAME = "bilab"
DEFAULT_IQN = "iqn.2024-01.org.bootinit:lab"
DEFAULT_ADDRESS = "10.77.0.1/24"
DEFAULT_BRIDGE = "br0"
DEFAULT_SIZE = "64M"
STATE_VERSION = 1


class LabError(Exception):
    """The lab could not be brought up, down or inspected; the message says why."""


def _split_credentials(text: str, option: str) -> tuple[str, str]:
    user, sep, secret = text.partition(":")
    if not sep or not user or not secret:
        raise LabError(f"{option} {text!r}: expected USER:SECRET")
    return user, secret


def _check_name(name: str) -> str:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
    if not name or len(name) > 64 or name in (".", "..") or not set(name) <= allowed:
        raise LabError(f"lab name {name!r}: must be a namespace name (letters, digits, "
                       f"'_', '-', '.'; at most 64)")
    return name


def default_client_ip(target: IPv4Interface) -> IPv4Interface:
    """The initiator's address: the next host after the target's in the same network."""
    hosts = list(target.network.hosts()) if target.network.num_addresses <= 65536 else []
    candidates = [h for h in hosts if h > target.ip] + [h for h in hosts if h < target.ip]
    if not candidates:
        raise LabError(f"no free host address in {target.network} for the initiator")
    return IPv4Interface(f"{candidates[0]}/{target.network.prefixlen}")


def format_url(address: str, port: int, iqn: str, lun: int,
               chap: tuple[str, str] | None = None) -> str:
    """``iscsi://[user%secret@]host[:port]/iqn/lun`` (libiscsi's form)."""
    auth = f"{chap[0]}%{chap[1]}@" if chap else ""
    hostport = address if port == 3260 else f"{address}:{port}"
    return f"iscsi://{auth}{hostport}/{iqn}/{lun}"


@dataclass
class LabStatus:
    """What ``Lab.status()`` found."""

    name: str
    recorded: bool
    netns_exists: bool = False
    tgtd_pid: int | None = None
    tgtd_alive: bool = False
    listening: bool = False
    url: str | None = None
    link_options: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """Everything ``up`` started is still there."""
        return self.recorded and self.netns_exists and self.tgtd_alive and self.listening

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.name, "recorded": self.recorded, "healthy": self.healthy,
                "netns_exists": self.netns_exists, "tgtd_pid": self.tgtd_pid,
                "tgtd_alive": self.tgtd_alive, "listening": self.listening, "url": self.url,
                "link_options": self.link_options, "problems": self.problems}


class Lab:
    """A namespace + bridge + tgtd lab (see the module docstring)."""

    def __init__(self, name: str | None = None, luns: Sequence[str | os.PathLike[str]] = (),
                 target_iqn: str = DEFAULT_IQN, address: str = DEFAULT_ADDRESS,
                 bridge: str = DEFAULT_BRIDGE, chap: tuple[str, str] | None = None,
                 mutual_chap: tuple[str, str] | None = None, size: str | int = DEFAULT_SIZE,
                 client_ip: str | None = None, port: int = 3260,
                 lun_dir: str | os.PathLike[str] | None = None,
                 control_port: int | None = None,
                 state_dir: str | os.PathLike[str] = RUN_DIR) -> None:
        self.name = _check_name(name) if name is not None else nsh.unique_name("bilab")
        self._lun_path_list: list[Path] = []
        self.luns = [os.fspath(x) for x in luns]
        self.target_iqn = target_iqn
        try:
            self.address = IPv4Interface(address)
            self.client_ip = (IPv4Interface(client_ip) if client_ip is not None
                              else default_client_ip(self.address))
        except ValueError as e:
            raise LabError(f"bad lab address: {e}") from e
        if "/" not in address:
            raise LabError(f"lab address {address!r}: expected ADDR/PREFIX, e.g. 10.77.0.1/24")
        self.bridge = bridge
        self.chap = chap
        self.mutual_chap = mutual_chap
        self.size = parse_size(size)
        self.port = port
        self.lun_dir = Path(lun_dir) if lun_dir is not None else None
        self.control_port = control_port
        self.state_dir = Path(state_dir)
        self._tgtd: Tgtd | None = None

    # -- names ---------------------------------------------------------------------------
    @property
    def netns(self) -> str:
        """The namespace (same as the lab's name)."""
        return self.name

    @property
    def state_path(self) -> Path:
        """``/run/bootinit/lab-NAME.json``."""
        return self.state_dir / f"lab-{self.name}.json"

    @property
    def directory(self) -> Path:
        """``/run/bootinit/lab-NAME/``: tgtd's socket and log, generated LUN files."""
        return self.state_dir / f"lab-{self.name}"

    @property
    def url(self) -> str:
        """The URL of LUN 1 (the first disk; LUN 0 is tgtd's controller)."""
        return format_url(str(self.address.ip), self.port, self.target_iqn, 1)

    @property
    def url_with_auth(self) -> str:
        """The URL of LUN 1 with ``user%secret@`` when CHAP is on (libiscsi's form)."""
        return format_url(str(self.address.ip), self.port, self.target_iqn, 1, self.chap)

    @property
    def lun_paths(self) -> list[Path]:
        """Backing files of LUN 1, 2, ... (known in the process that ran ``up``)."""
        return list(self._lun_path_list)

    @property
    def link_options(self) -> list[str]:
        """The link options bootinit needs to reach the target."""
        return ["--netns", self.netns, "--bridge", self.bridge, "--ip", str(self.client_ip)]

    @property
    def tgtd(self) -> Tgtd | None:
        """The live ``Tgtd`` (only in the process that ran ``up()``)."""
        return self._tgtd

    # -- state file ------------------------------------------------------------------------
    def _write_state(self, state: dict[str, Any]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state, f, indent=2)
            f.write("\n")
        os.replace(tmp, self.state_path)

    def read_state(self) -> dict[str, Any] | None:
        """The recorded state, or None when this lab is not up."""
        try:
            state: dict[str, Any] = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise LabError(f"cannot read lab state {self.state_path}: {e}") from e
        if state.get("version") != STATE_VERSION or state.get("name") != self.name:
            raise LabError(f"lab state {self.state_path} is not a version-{STATE_VERSION} "
                           f"state of lab {self.name}")
        return state

    # -- up ------------------------------------------------------------------------------
    def _lun_files(self, created: list[str]) -> list[Lun]:
        specs = self.luns or [str(self.size)]
        result = []
        for n, spec in enumerate(specs, start=1):
            if is_size(spec) and not Path(spec).exists():
                base = self.lun_dir if self.lun_dir is not None else self.directory
                base.mkdir(parents=True, exist_ok=True)
                path = base / f"lab-{self.name}-lun{n}.img"
                created.append(str(path))
                create_sparse_file(path, parse_size(spec))
                result.append(Lun(path))
            else:
                path = Path(spec).absolute()
                if not path.exists():
                    create_sparse_file(path, self.size)
                result.append(Lun(path))
        return result

    def up(self) -> dict[str, Any]:
        """Make the namespace, bridge and tgtd; record them; return the recorded state."""
        if self.state_path.exists():
            raise LabError(f"lab {self.name} is already up ({self.state_path}); "
                           f"run 'lab down --name {self.name}' first")
        if nsh.exists(self.netns):
            raise LabError(f"namespace {self.netns} already exists (not made by this lab)")
        try:
            nsh.create(self.netns)
        except nsh.NetnsError as e:
            raise LabError(f"cannot create namespace {self.netns}: {e}") from e
        state: dict[str, Any] = {
            "version": STATE_VERSION, "name": self.name, "state": "starting",
            "netns": self.netns, "bridge": self.bridge, "address": str(self.address),
            "client_ip": str(self.client_ip), "port": self.port, "iqn": self.target_iqn,
            "directory": str(self.directory), "created_files": [], "luns": [],
            "chap": list(self.chap) if self.chap else None,
            "mutual_chap": list(self.mutual_chap) if self.mutual_chap else None,
            "tgtd": None, "url": self.url, "url_with_auth": self.url_with_auth,
            "link_options": self.link_options,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        try:
            self._write_state(state)
            self.directory.mkdir(parents=True, exist_ok=True)
            nsh.add_bridge(self.netns, self.bridge, str(self.address))
            created: list[str] = state["created_files"]
            luns = self._lun_files(created)
            state["luns"] = [{"lun": n, "path": str(lun.path)}
                             for n, lun in enumerate(luns, start=1)]
            self._lun_path_list = [Path(lun.path) for lun in luns]
            self._write_state(state)
            tgtd = Tgtd(self.netns, self.control_port, (str(self.address.ip), self.port),
                        state_dir=self.directory)
            self._tgtd = tgtd
            tid = tgtd.add_target(self.target_iqn, luns)
            if self.chap:
                tgtd.set_chap(tid, *self.chap)
            if self.mutual_chap:
                tgtd.set_mutual_chap(tid, *self.mutual_chap)
            tgtd.start()
            pid = tgtd.pid
            assert pid is not None
            state["tgtd"] = {"pid": pid, "starttime": pid_starttime(pid),
                             "control_port": tgtd.control_port,
                             "ipc_socket": str(tgtd.ipc_socket), "log": str(tgtd.log_path),
                             "directory": str(tgtd.directory)}
            state["state"] = "up"
            self._write_state(state)
        except (TargetError, nsh.NetnsError, OSError) as e:
            with contextlib.suppress(LabError, TargetError, nsh.NetnsError, OSError):
                self.down()
            raise LabError(f"lab {self.name} failed to come up: {e}") from e
        except BaseException:
            with contextlib.suppress(LabError, TargetError, nsh.NetnsError, OSError):
                self.down()
            raise
        return state

    # -- down ----------------------------------------------------------------------------
    @staticmethod
    def _is_our_tgtd(info: dict[str, Any]) -> tuple[bool, str]:
        pid = int(info["pid"])
        argv = pid_cmdline(pid)
        if argv is None or not pid_alive(pid):
            return False, f"tgtd pid {pid} is gone"
        port = str(info["control_port"])
        is_tgtd = bool(argv) and os.path.basename(argv[0]) == "tgtd" and any(
            a == "-C" and b == port for a, b in itertools.pairwise(argv))
        if not is_tgtd:
            return False, f"pid {pid} is now {' '.join(argv)!r}, not our tgtd; left alone"
        if info.get("starttime") is not None and pid_starttime(pid) != info["starttime"]:
            return False, f"pid {pid} was restarted since lab up; left alone"
        return True, f"tgtd pid {pid}"

    def down(self) -> list[str]:
        """Stop what ``up`` recorded (tgtd by PID, namespace, files); what was done."""
        state = self.read_state()
        done: list[str] = []
        if state is None:
            return done
        problems: list[str] = []
        info = state.get("tgtd")
        live = self._tgtd
        if live is not None and live.running:
            # This process started it (and may have restarted it since: a new PID the
            # state file does not know). Stop it through the handle.
            what = f"tgtd pid {live.pid}"
            try:
                live.stop()
                done.append(f"stopped {what}")
            except TargetError as e:
                problems.append(f"could not stop {what}: {e}")
        elif info:
            ours, what = self._is_our_tgtd(info)
            if ours:
                proc = self._tgtd.popen if self._tgtd is not None else None
                try:
                    shutdown_tgtd(int(info["pid"]), Path(info["ipc_socket"]),
                                  int(info["control_port"]), state["netns"], proc=proc)
                    done.append(f"stopped {what}")
                except TargetError as e:
                    problems.append(f"could not stop {what}: {e}")
            else:
                done.append(what)
        elif self._tgtd is not None:
            # up() failed after tgtd started but before recording it
            with contextlib.suppress(TargetError):
                self._tgtd.kill()
        if self._tgtd is not None:
            self._tgtd.forget()
            self._tgtd = None
        if nsh.exists(state["netns"]):
            try:
                nsh.run(["ip", "netns", "delete", state["netns"]])
                done.append(f"deleted namespace {state['netns']}")
            except nsh.NetnsError as e:
                problems.append(str(e))
        for path in state.get("created_files", []):
            with contextlib.suppress(FileNotFoundError):
                Path(path).unlink()
                done.append(f"removed {path}")
        shutil.rmtree(state.get("directory", self.directory), ignore_errors=True)
        if problems:
            raise LabError(f"lab {self.name} down: " + "; ".join(problems))
        with contextlib.suppress(FileNotFoundError):
            self.state_path.unlink()
        return done

    # -- status --------------------------------------------------------------------------
    def status(self) -> LabStatus:
        """Check that what ``up`` recorded is still there."""
        state = self.read_state()
        if state is None:
            return LabStatus(self.name, recorded=False, problems=["not up"])
        st = LabStatus(self.name, recorded=True, url=state.get("url"),
                       link_options=list(state.get("link_options", [])))
        st.netns_exists = nsh.exists(state["netns"])
        if not st.netns_exists:
            st.problems.append(f"namespace {state['netns']} is gone")
        info = state.get("tgtd")
        if info:
            st.tgtd_pid = int(info["pid"])
            st.tgtd_alive, what = self._is_our_tgtd(info)
            if not st.tgtd_alive:
                st.problems.append(what)
        else:
            st.problems.append(f"tgtd not recorded (state {state.get('state')!r})")
        if st.netns_exists:
            try:
                st.listening = is_listening(state["netns"], str(IPv4Interface(
                    state["address"]).ip), int(state["port"]))
            except TargetError as e:
                st.problems.append(str(e))
            if not st.listening:
                st.problems.append(f"nothing listens on port {state['port']}")
        return st

    def __enter__(self) -> Lab:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


# --------------------------------------------------------------------------- CLI

def _lab_from_args(args: argparse.Namespace) -> Lab:
    chap = _split_credentials(args.chap, "--chap") if getattr(args, "chap", None) else None
    mutual = (_split_credentials(args.mutual_chap, "--mutual-chap")
              if getattr(args, "mutual_chap", None) else None)
    return Lab(name=args.name, luns=getattr(args, "lun", None) or (),
               target_iqn=getattr(args, "iqn", DEFAULT_IQN),
               address=getattr(args, "address", DEFAULT_ADDRESS),
               bridge=getattr(args, "bridge", DEFAULT_BRIDGE), chap=chap, mutual_chap=mutual,
               size=getattr(args, "size", DEFAULT_SIZE),
               client_ip=getattr(args, "client_ip", None),
               port=getattr(args, "port", 3260), lun_dir=getattr(args, "lun_dir", None))


def handle_up(args: argparse.Namespace) -> int:
    """``lab up``: print the URL and the link options to use."""
    lab = _lab_from_args(args)
    state = lab.up()
    if getattr(args, "json", False):
        print(json.dumps(state, indent=2))
        return 0
    t = state["tgtd"]
    lines = [
        f"lab {lab.name} is up: tgtd pid {t['pid']} in namespace {lab.netns}, "
        f"bridge {lab.bridge} {lab.address}",
        f"url: {lab.url}",
        f"link options: {' '.join(lab.link_options)}",
    ]
    if lab.chap:
        lines.append(f"chap: {lab.chap[0]}:{lab.chap[1]}  (libiscsi url: {lab.url_with_auth})")
    if lab.mutual_chap:
        lines.append(f"target (mutual) chap: {lab.mutual_chap[0]}:{lab.mutual_chap[1]}")
    for lun in state["luns"]:
        lines.append(f"lun {lun['lun']}: {lun['path']}")
    lines += [
        f"check:   ip netns exec {lab.netns} iscsi-ls -s iscsi://"
        + (f"{lab.chap[0]}%{lab.chap[1]}@" if lab.chap else "") + str(lab.address.ip)
        + ("" if lab.port == 3260 else f":{lab.port}"),
        "tgtadm:  ip netns exec " + lab.netns + " " + " ".join(tgtadm_argv(
            Path(t["ipc_socket"]), int(t["control_port"]), "--op", "show", "--mode",
            "target")),
        f"stop:    python -m bootinit.lab down --name {lab.name}",
    ]
    print("\n".join(lines))
    return 0


def handle_down(args: argparse.Namespace) -> int:
    """``lab down``: stop exactly what ``lab up`` started."""
    lab = Lab(name=args.name)
    if lab.read_state() is None:
        print(f"lab {lab.name} is not up (no {lab.state_path})")
        return 0
    done = lab.down()
    if getattr(args, "json", False):
        print(json.dumps({"name": lab.name, "done": done}))
    else:
        print(f"lab {lab.name} is down" + (": " + "; ".join(done) if done else ""))
    return 0


def handle_status(args: argparse.Namespace) -> int:
    """``lab status``: 0 when healthy, 1 when something is missing, 3 when not up."""
    lab = Lab(name=args.name)
    st = lab.status()
    if getattr(args, "json", False):
        print(json.dumps(st.as_dict(), indent=2))
    elif not st.recorded:
        print(f"lab {lab.name} is not up")
    else:
        print(f"lab {lab.name}: {'up' if st.healthy else 'DEGRADED'}; namespace "
              f"{'present' if st.netns_exists else 'gone'}; tgtd pid {st.tgtd_pid} "
              f"{'alive' if st.tgtd_alive else 'dead'}; "
              f"{'listening' if st.listening else 'not listening'}")
        print(f"url: {st.url}")
        print(f"link options: {' '.join(st.link_options)}")
        for p in st.problems:
            print(f"problem: {p}")
    if not st.recorded:
        return 3
    return 0 if st.healthy else 1


def _add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--name", default=DEFAULT_NAME,
                       help=f"lab (and namespace) name (default {DEFAULT_NAME})")
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="machine-readable output")
        p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                       help="more output; tracebacks on errors")

    up = sub.add_parser("up", help="create the namespace, bridge and tgtd",
                        description="Create namespace NAME with a bridge holding the "
                        "target's address and a tgtd serving the LUNs; prints the URL and "
                        "the link options for bootinit.")
    common(up)
    up.add_argument("--lun", action="append", metavar="FILE",
                    help="backing file for the next LUN (1, 2, ...); a size like 64M makes "
                    "a sparse file; a missing FILE is created with --size (repeatable)")
    up.add_argument("--size", default=DEFAULT_SIZE,
                    help=f"size of the generated LUN when no --lun is given (default "
                    f"{DEFAULT_SIZE}; sparse, e.g. 3T)")
    up.add_argument("--chap", metavar="USER:SECRET", help="require CHAP")
    up.add_argument("--mutual-chap", metavar="USER:SECRET",
                    help="the target's own credentials (mutual CHAP)")
    up.add_argument("--iqn", default=DEFAULT_IQN, help=f"target name (default {DEFAULT_IQN})")
    up.add_argument("--address", default=DEFAULT_ADDRESS,
                    help=f"target address on the bridge (default {DEFAULT_ADDRESS})")
    up.add_argument("--client-ip", metavar="ADDR/PREFIX",
                    help="bootinit's address to suggest (default: the next host)")
    up.add_argument("--bridge", default=DEFAULT_BRIDGE,
                    help=f"bridge name (default {DEFAULT_BRIDGE})")
    up.add_argument("--port", type=int, default=3260, help="iSCSI port (default 3260)")
    up.add_argument("--lun-dir", metavar="DIR",
                    help="where to create generated LUN files (e.g. /dev/shm)")
    up.set_defaults(func=handle_up)

    down = sub.add_parser("down", help="stop what 'lab up' started",
                          description="Stop the tgtd (by PID, checked), delete the "
                          "namespace and the generated files recorded by 'lab up'.")
    common(down)
    down.set_defaults(func=handle_down)

    status = sub.add_parser("status", help="is the lab still up?",
                            description="Exit 0 when healthy, 1 when degraded, 3 when not up.")
    common(status)
    status.set_defaults(func=handle_status)


def add_lab_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``lab up|down|status`` to the main CLI's subparsers (``func`` set on each)."""
    lab = subparsers.add_parser("lab", help="a namespace + bridge + tgtd to boot from",
                                description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = lab.add_subparsers(dest="lab_command", metavar="up|down|status")
    sub.required = True
    _add_commands(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bootinit.lab up|down|status ...``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m bootinit.lab",
                                     description="The bootinit lab: namespace, bridge, tgtd.")
    sub = parser.add_subparsers(dest="lab_command", metavar="up|down|status")
    sub.required = True
    _add_commands(sub)
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
        return status
    except (LabError, TargetError, nsh.NetnsError, OSError) as e:
        if getattr(args, "verbose", 0):
            raise
        print(f"bootinit lab {args.lab_command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
