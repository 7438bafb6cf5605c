"""The iSCSI commands of the CLI: discover, ls, inquiry, readcap, read, write, ping.

Shaped like libiscsi's tools (iscsi-ls, iscsi-inq, iscsi-readcapacity16) and iscsiadm.
Every command brings up bootinit's own stack on a TAP or a passt/QEMU stream socket
(the link options), logs in over it, does its work and logs out. With ``--dhcp`` the
address comes from DHCP (RFC 2131), and a command given no target uses the lease's root
path (option 17) and, unless ``--initiator-name``, its initiator name (option 203), as
iPXE's ``sanboot`` does. Targets are libiscsi/QEMU URLs
``iscsi://[user[%secret]@]host[:port]/iqn/lun`` or iPXE root paths
``iscsi:host:proto:port:lun:iqn`` (RFC 4173); ``discover`` and ``ls`` also take a plain
``HOST[:PORT]``. CHAP secrets come from the URL, from ``--secret``, or from the
environment (``BOOTINIT_CHAP_SECRET``, ``BOOTINIT_TARGET_SECRET``) so they stay out of
``ps``; they never appear in output or errors.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, replace
from typing import Any

from bootinit.blockdev import BlockDevice
from bootinit.initiator import Initiator, IscsiSession
from bootinit.iscsi.chap import ChapCredentials, Secret
from bootinit.iscsi.errors import NegotiationError
from bootinit.iscsi.keys import USER_KEYS, OperationalConfig, with_params
from bootinit.multipath import MultipathDevice, close_device
from bootinit.scsi.inquiry import PeripheralType
from firmware_tables import UriError
from firmware_tables.target import TargetSpec
from firmware_tables.uri import format_iscsi_url, parse_target
from netstack.arp import ProbeConfig
from netstack.dhcp import DhcpConfig, Lease
from netstack.interface import UNCONFIGURED
from netstack.linkopts import LinkOptions, add_link_options, open_link
from netstack.loop import Loop, LoopTimeout
from netstack.stack import NetStack, StackConfig

Handler = Callable[[argparse.Namespace], int]

ENV_USER = "BOOTINIT_CHAP_USER"
ENV_SECRET = "BOOTINIT_CHAP_SECRET"
ENV_TARGET_USER = "BOOTINIT_TARGET_USER"
ENV_TARGET_SECRET = "BOOTINIT_TARGET_SECRET"


class CliError(Exception):
    """A usage or input problem, reported as one line."""


# ------------------------------------------------------------------ options
def net_options() -> argparse.ArgumentParser:
    """Link + iSCSI options, all defaulting to SUPPRESS (so they may come before or after
    the command without one overwriting the other); :func:`fill_defaults` adds defaults."""
    p = argparse.ArgumentParser(add_help=False)
    add_link_options(p)
    g = p.add_argument_group("iscsi")
    g.add_argument("--initiator-name", metavar="IQN", help="our iSCSI name")
    g.add_argument("--digest", choices=("none", "crc32c", "prefer"),
                   help="header and data digests: none (default), crc32c (required), "
                        "prefer (crc32c if the target agrees)")
    g.add_argument("--user", metavar="USER", help=f"CHAP user (or ${ENV_USER})")
    g.add_argument("--secret", metavar="SECRET",
                   help=f"CHAP secret (visible in ps: prefer ${ENV_SECRET})")
    g.add_argument("--target-user", metavar="USER",
                   help=f"mutual CHAP: the target's user (or ${ENV_TARGET_USER})")
    g.add_argument("--target-secret", metavar="SECRET",
                   help=f"mutual CHAP: the target's secret (prefer ${ENV_TARGET_SECRET})")
    g.add_argument("--iscsi-param", metavar="KEY=VALUE", action="append",
                   help="an operational key offered at login, as iscsiadm's node settings "
                        "(repeatable): " + ", ".join(USER_KEYS) + "; e.g. "
                        "MaxRecvDataSegmentLength=1048576 for a target without tgtd's "
                        "large-PDU stall (README)")
    g.add_argument("--queue-depth", metavar="N", type=int, help="commands in flight (32)")
    g.add_argument("--timeout", metavar="S", type=float, help="per-command timeout (30)")
    g.add_argument("--stats", action="store_true", help="print counters of every layer")
    g.add_argument("--dhcp-timeout", metavar="S", type=float,
                   help="seconds to wait for a DHCP lease with --dhcp (30)")
    for action in p._actions:
        action.default = argparse.SUPPRESS
    return p


_DEFAULTS: dict[str, Any] = {
    "netns": None, "bridge": None, "peer_ip": None, "ip": None, "gateway": None, "mac": None,
    "mtu": None, "fault": None, "pcap": None, "tap": None, "initiator_name": None,
    "digest": "none", "user": None, "secret": None, "target_user": None,
    "target_secret": None, "iscsi_param": None, "queue_depth": None, "timeout": None,
    "stats": False,
    "dhcp": False, "vlan": None, "passt": None, "qemu_stream": None, "dhcp_timeout": None,
    "ip6": None, "slaac": False, "gateway6": None, "no_dad": False, "ip6_iid": None,
}


def fill_defaults(args: argparse.Namespace) -> None:
    """Give every option that was not given its default."""
    for k, v in _DEFAULTS.items():
        if not hasattr(args, k):
            setattr(args, k, v)


# ------------------------------------------------------------------ plumbing
class Context:
    """A stack on a TAP, an initiator, and printing helpers for one command."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        try:
            self.operational = with_params(OperationalConfig(), args.iscsi_param or ())
        except NegotiationError as e:
            raise CliError(f"--iscsi-param: {e}") from None
        if args.ip is None and not args.dhcp and not args.ip6 and not args.slaac:
            raise CliError("no address for bootinit's stack: give --ip ADDR/PREFIX or --dhcp "
                           "(IPv6: --ip6 ADDR/PREFIX or --slaac)")
        self.link_opts = opts = LinkOptions.from_args(args)
        self.loop = Loop()
        self.link = open_link(opts, self.loop.time)
        dhcp: DhcpConfig | bool = False
        if opts.dhcp:
            # A shortened RFC 5227 probe (~1 s instead of ~7 s): an interactive command.
            dhcp = DhcpConfig(probe=ProbeConfig.fast())
        self.stack = NetStack(self.loop, self.link, StackConfig(
            mac=opts.mac, ip=opts.ip or UNCONFIGURED, gateway=opts.gateway, dhcp=dhcp,
            neighbors=dict(opts.neighbors),
            vlan=opts.vlan, ipv6=opts.ipv6_config()))
        self.lease: Lease | None = None
        try:
            self.stack.start()
            if opts.ipv6:
                self._wait_ipv6()
            if opts.dhcp:
                self.lease = self._wait_lease()
        except BaseException:
            self.stack.close()
            self.loop.close()
            self.link.close()
            raise
        name = args.initiator_name or (self.lease.initiator_name if self.lease else None)
        if args.timeout is not None:
            self.initiator = Initiator(self.stack, name, command_timeout=float(args.timeout))
        else:
            self.initiator = Initiator(self.stack, name)

    def _wait_lease(self) -> Lease:
        timeout = 30.0 if self.args.dhcp_timeout is None else float(self.args.dhcp_timeout)
        try:
            lease = self.stack.wait_configured(timeout)
        except LoopTimeout:
            c = self.stack.counters.get
            raise CliError(f"--dhcp: no DHCP lease after {timeout:g} s "
                           f"({c('dhcp', 'discover_out')} DISCOVER, {c('dhcp', 'offers')} "
                           f"OFFER, {c('dhcp', 'acks')} ACK, {c('dhcp', 'naks')} NAK)"
                           ) from None
        assert lease is not None
        if self.args.verbose:
            print(f"DHCP: {lease.address} gateway {lease.gateway or '-'} from "
                  f"{lease.server_id}, lease {lease.lease_time or 'infinite'} s, root path "
                  f"{lease.root_path or '-'}, initiator {lease.initiator_name or '-'}",
                  file=sys.stderr)
        return lease

    def _wait_ipv6(self) -> None:
        """Until an IPv6 address is ours (DAD passed; with --slaac, an RA came first)."""
        timeout = 30.0 if self.args.dhcp_timeout is None else float(self.args.dhcp_timeout)
        try:
            addr = self.stack.wait_ipv6(timeout)
        except LoopTimeout as e:
            c = self.stack.counters.get
            raise CliError(f"IPv6: {e} ({c('nd', 'rs_out')} RS, {c('nd', 'ra_in')} RA, "
                           f"{c('nd', 'dad_duplicates')} duplicate addresses)") from None
        if self.args.verbose:
            ip6 = self.stack.iface.ip6
            assert ip6 is not None
            router = ip6.default_router
            print(f"IPv6: {addr} ("
                  + ", ".join(str(a) for a in ip6.usable_addresses())
                  + f"), router {ipaddress.IPv6Address(router) if router else '-'}",
                  file=sys.stderr)

    def spec(self, text: str | None) -> TargetSpec:
        """The target named on the command line, else the DHCP root path (option 17)."""
        if text is not None:
            return target_of(text)
        if self.lease is None:
            raise CliError("no target given (give a URL, or --dhcp with a root path)")
        if not self.lease.root_path:
            raise CliError(f"no target given and the DHCP server {self.lease.server_id} "
                           "sent no root path (option 17)")
        try:
            return parse_target(self.lease.root_path)
        except UriError as e:
            raise CliError(f"DHCP option 17 (root path) {self.lease.root_path!r}: {e}"
                           ) from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.initiator.logout()
        self.stack.close()
        self.loop.close()
        self.link.close()

    def login(self, spec: TargetSpec) -> IscsiSession:
        return self.initiator.login(spec, chap=chap_for(self.args, spec),
                                    digests=_digests(self.args),
                                    queue_depth=self.args.queue_depth,
                                    operational=self.operational)

    def stats(self, sessions: list[IscsiSession]) -> None:
        if not self.args.stats:
            return
        out: dict[str, Any] = {"stack": self.stack.counters_dict()}
        for i, s in enumerate(sessions):
            out[f"session{i}"] = {**s.counters(), **_params(s)}
        _print_stats(self.args, out)


def _params(s: IscsiSession) -> dict[str, dict[str, int]]:
    """What login settled, as a stats group (iscsiadm -m session -P 2); none before."""
    p = s.session.params
    if p is None:
        return {}
    return {"params": {k: v for k, v in asdict(p).items() if isinstance(v, int)}}


def _print_stats(args: argparse.Namespace, out: dict[str, Any]) -> None:
    """``--stats`` output on stderr: JSON with ``--json``, else one line per layer."""
    if args.json:
        print(json.dumps({"stats": out}, indent=2), file=sys.stderr)
        return
    for section, layers in out.items():
        for layer, values in layers.items():
            shown = " ".join(f"{k}={v}" for k, v in sorted(values.items()) if v)
            if shown:
                print(f"{section}.{layer}: {shown}", file=sys.stderr)


@contextlib.contextmanager
def context(args: argparse.Namespace) -> Iterator[Context]:
    ctx = Context(args)
    try:
        yield ctx
    finally:
        ctx.close()


def _digests(args: argparse.Namespace) -> bool | str:
    choice: dict[str, bool | str] = {"none": False, "crc32c": True, "prefer": "preferred"}
    return choice[args.digest]


def chap_for(args: argparse.Namespace, spec: TargetSpec | None) -> ChapCredentials | None:
    """CHAP from the URL first, then the options, then the environment."""
    user = spec.chap.user if spec is not None and spec.chap else None
    secret = spec.chap.secret if spec is not None and spec.chap else None
    user = user or args.user or os.environ.get(ENV_USER)
    secret = secret or args.secret or os.environ.get(ENV_SECRET)
    tuser = args.target_user or os.environ.get(ENV_TARGET_USER)
    tsecret = args.target_secret or os.environ.get(ENV_TARGET_SECRET)
    if spec is not None and spec.reverse_chap is not None:
        tuser, tsecret = spec.reverse_chap.user, spec.reverse_chap.secret
    if (user is None) != (secret is None):
        raise CliError("CHAP needs both a user and a secret "
                       f"(--user/--secret or ${ENV_USER}/${ENV_SECRET})")
    if (tuser is None) != (tsecret is None):
        raise CliError("mutual CHAP needs both --target-user and --target-secret")
    if user is None or secret is None:
        if tuser is not None:
            raise CliError("mutual CHAP (--target-user) needs our own CHAP user and secret")
        return None
    return ChapCredentials(user, Secret(secret), tuser,
                           Secret(tsecret) if tsecret is not None else None)


def _ptype(t: int) -> str:
    try:
        return PeripheralType(t).name.lower()
    except ValueError:
        return f"0x{t:02x}"


def parse_portal(text: str) -> tuple[str, int]:
    """``HOST[:PORT]`` or ``[V6]:PORT``."""
    host, port = text, 3260
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise CliError(f"portal {text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise CliError(f"portal {text!r}: expected ':PORT' after ']'")
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, p = text.split(":")
        port = _port(p, text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise CliError(f"portal {text!r}: {host!r} is not an IP address") from None
    return host, port


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise CliError(f"portal {whole!r}: port {text!r} is not 1..65535")
    return int(text)


def target_of(text: str) -> TargetSpec:
    try:
        return parse_target(text)
    except UriError as e:
        raise CliError(str(e)) from None


def _emit(args: argparse.Namespace, obj: Any, lines: list[str]) -> None:
    if args.json:
        print(json.dumps(obj, indent=2))
    else:
        for line in lines:
            print(line)


# ------------------------------------------------------------------ commands
def _add_device_args(p: argparse.ArgumentParser, dhcp_help: str) -> None:
    p.add_argument("url", metavar="URL", nargs="*",
                   help="target URL or root path; several: the paths of one LUN "
                        f"(multipath); {dhcp_help}")
    p.add_argument("--multipath", choices=("failover", "round-robin"), default=None,
                   help="path policy for several URLs (default failover)")
    p.add_argument("--connections", metavar="N", type=int, default=1,
                   help="MC/S: up to N connections in the session (RFC 7143 §4.4; one URL)")


def _discover_isns(args: argparse.Namespace) -> int:
    """``discover --isns``: the targets an iSNS server shows our initiator (RFC 4171)."""
    from bootinit.isns import ISNS_PORT, isns_discover, isns_server_from_ibft, parse_server

    if args.isns == "ibft":
        found = isns_server_from_ibft(args.ibft)
        if found is None:
            raise CliError("--isns without a server: no iSNS server in the iBFT "
                           f"({args.ibft or 'firmware tables'})")
        host, port = found, ISNS_PORT
    else:
        try:
            host, port = parse_server(args.isns)
        except ValueError as e:
            raise CliError(str(e)) from None
    with context(args) as ctx:
        targets = isns_discover(ctx.stack, host, port, ctx.initiator.initiator_name)
        obj = [{"name": t.name, "portals": [
            {"host": p.host, "port": p.port, "tpgt": p.tpgt} for p in t.portals]}
            for t in targets]
        lines = [f"{'[' + p.host + ']' if ':' in p.host else p.host}:{p.port},"
                 f"{p.tpgt if p.tpgt is not None else 1} {t.name}"
                 for t in targets for p in t.portals]
        _emit(args, obj, lines)
        ctx.stats([])
    return 0


def cmd_discover(args: argparse.Namespace) -> int:
    if args.isns is None and args.portal is None and not args.dhcp:
        from bootinit.isns import isns_server_from_ibft

        if isns_server_from_ibft(args.ibft) is not None:
            args.isns = "ibft"  # no portal given: the iBFT's iSNS server, when it has one
    if args.isns is not None:
        return _discover_isns(args)
    if args.portal is not None:
        host, port = parse_portal(args.portal)
    with context(args) as ctx:
        if args.portal is None:
            root = ctx.spec(None)
            host, port = root.host, root.port
        targets = ctx.initiator.discover(host, port, chap=chap_for(args, None),
                                         digests=_digests(args))
        obj = [{"name": t.name, "portals": [
            {"host": p.host, "port": p.port, "tpgt": p.tpgt} for p in t.portals]}
            for t in targets]
        lines = []
        for t in targets:
            for p in t.portals or []:
                h = f"[{p.host}]" if ":" in p.host else p.host
                lines.append(f"{h}:{p.port},{p.tpgt} {t.name}")
            if not t.portals:
                lines.append(f"{host}:{port},1 {t.name}")
        _emit(args, obj, lines)
        ctx.stats([])
    return 0


def _lun_rows(ctx: Context, spec: TargetSpec) -> list[dict[str, Any]]:
    s = ctx.login(replace(spec, lun=0))
    try:
        rows: list[dict[str, Any]] = []
        for lun in s.report_luns():
            row: dict[str, Any] = {"lun": lun}
            inq = s.inquiry(lun)
            row["type"] = _ptype(inq.device_type)
            row["vendor"], row["product"] = inq.vendor, inq.product
            if inq.device_type == 0:
                with contextlib.suppress(Exception):
                    cap = s.read_capacity(lun)
                    row["size"] = cap.size_bytes
                    row["block_size"] = cap.block_size
            rows.append(row)
        return rows
    finally:
        s.logout()
        ctx.initiator.sessions.remove(s)


def cmd_ls(args: argparse.Namespace) -> int:
    with context(args) as ctx:
        if args.target is None or args.target.startswith("iscsi"):
            specs = [ctx.spec(args.target)]
        else:
            host, port = parse_portal(args.target)
            found = ctx.initiator.discover(host, port, digests=_digests(args),
                                           chap=chap_for(args, None))
            specs = [TargetSpec(host=host, port=port, name=t.name) for t in found]
        obj = []
        lines = []
        for spec in specs:
            rows = _lun_rows(ctx, spec)
            obj.append({"target": spec.name, "portal": f"{spec.host}:{spec.port}",
                        "luns": rows})
            lines.append(f"Target:{spec.name} Portal:{spec.host}:{spec.port}")
            for r in rows:
                size = f" Size:{_size(r['size'])}" if "size" in r else ""
                lines.append(f"  Lun:{r['lun']:<3} Type:{r['type']} "
                             f"({r['vendor']} {r['product']}){size}")
        _emit(args, obj, lines)
        ctx.stats([])
    return 0


def _size(n: int) -> str:
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    v = float(n)
    i = 0
    while v >= 1024 and i < len(units) - 1:
        v /= 1024
        i += 1
    return f"{v:.0f}{units[i]}" if v == int(v) else f"{v:.1f}{units[i]}"


def cmd_inquiry(args: argparse.Namespace) -> int:
    if args.url is not None:
        target_of(args.url)  # a bad URL is reported before the link is set up
    with context(args) as ctx:
        spec = ctx.spec(args.url)
        s = ctx.login(spec)
        inq = s.inquiry()
        pages = s.supported_vpd_pages()
        ident = s.lun_identity()
        obj: dict[str, Any] = {
               "vendor": inq.vendor, "product": inq.product, "revision": inq.revision,
               "peripheral_type": inq.device_type,
               "type": _ptype(inq.device_type),
               "vpd_pages": [f"0x{p:02x}" for p in pages],
               "serial": ident.serial,
               "identifier": ident.designator[1].hex() if ident.designator else None}
        _emit(args, obj, [
            f"Vendor: {inq.vendor}", f"Product: {inq.product}", f"Revision: {inq.revision}",
            f"Type: {obj['type']} (0x{inq.device_type:02x})",
            f"VPD pages: {' '.join(obj['vpd_pages'])}",
            f"Unit serial: {ident.serial}", f"Identifier: {obj['identifier']}"])
        ctx.stats([s])
        s.logout()
    return 0


def cmd_readcap(args: argparse.Namespace) -> int:
    if args.url is not None:
        target_of(args.url)  # a bad URL is reported before the link is set up
    with context(args) as ctx:
        spec = ctx.spec(args.url)
        s = ctx.login(spec)
        cap = s.read_capacity()
        obj = {"blocks": cap.blocks, "block_size": cap.block_size, "bytes": cap.size_bytes}
        _emit(args, obj, [f"Blocks: {cap.blocks}", f"Block size: {cap.block_size}",
                          f"Capacity: {cap.size_bytes} bytes ({_size(cap.size_bytes)})"])
        ctx.stats([s])
        s.logout()
    return 0


class Progress:
    """A progress line on stderr for long transfers when stderr is a terminal."""

    def __init__(self, total: int, what: str) -> None:
        self.total = total
        self.what = what
        self.on = sys.stderr.isatty() and total >= 16 << 20
        self.t0 = time.monotonic()
        self.last = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if not self.on or (now - self.last < 0.2 and done < self.total):
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-6) / 1e6
        pct = 100 * done // max(self.total, 1)
        sys.stderr.write(f"\r{self.what}: {pct:3d}% {done >> 20} MiB {rate:.1f} MB/s ")
        if done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _open_dev(ctx: Context, args: argparse.Namespace) -> BlockDevice | MultipathDevice:
    """The LUN of the command's URL(s): one session, MC/S (``--connections``) or
    multipath over several URLs/root paths (``--multipath``)."""
    from bootinit.multipath import open_device

    urls: list[str | None] = list(args.url) if args.url else [None]
    specs = [ctx.spec(u) for u in urls]
    policy = args.multipath if args.multipath or len(specs) == 1 else "failover"
    return open_device(ctx, specs, policy, connections=args.connections)


def _dev_stats(ctx: Context, dev: BlockDevice | MultipathDevice) -> None:
    from bootinit.multipath import device_counters

    if not ctx.args.stats:
        return
    out = {"stack": ctx.stack.counters_dict(), "device": device_counters(dev)}
    if isinstance(dev, BlockDevice) and isinstance(dev.session, IscsiSession):
        out["device"].update(_params(dev.session))
    _print_stats(ctx.args, out)


def cmd_read(args: argparse.Namespace) -> int:
    for url in args.url or []:
        target_of(url)  # a bad URL is reported before the link is set up
    with context(args) as ctx:
        dev = _open_dev(ctx, args)
        count = args.count if args.count is not None else dev.num_blocks - args.lba
        if args.lba < 0 or count < 0 or args.lba + count > dev.num_blocks:
            raise CliError(f"--lba {args.lba} --count {count}: outside the LUN's "
                           f"{dev.num_blocks} blocks")
        out = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: SIM115
        try:
            chunk_blocks = max(1, (4 << 20) // dev.block_size)
            prog = Progress(count * dev.block_size, "read")
            done = 0
            lba = args.lba
            t0 = time.monotonic()
            while done < count:
                n = min(chunk_blocks, count - done)
                out.write(dev.read(lba + done, n))
                done += n
                prog.update(done * dev.block_size)
            out.flush()
            elapsed = time.monotonic() - t0
        finally:
            if args.output:
                out.close()
        if args.verbose:
            print(f"read {count} blocks in {elapsed:.2f} s "
                  f"({count * dev.block_size / max(elapsed, 1e-9) / 1e6:.1f} MB/s)",
                  file=sys.stderr)
        _dev_stats(ctx, dev)
        close_device(dev)
    return 0


def cmd_write(args: argparse.Namespace) -> int:
    for url in args.url or []:
        target_of(url)  # a bad URL is reported before the link is set up
    with context(args) as ctx:
        dev = _open_dev(ctx, args)
        src = open(args.input, "rb") if args.input != "-" else sys.stdin.buffer  # noqa: SIM115
        try:
            data = src.read()
        finally:
            if args.input != "-":
                src.close()
        bs = dev.block_size
        if len(data) % bs:
            raise CliError(f"input is {len(data)} bytes, not a multiple of the block size "
                           f"{bs}")
        blocks = len(data) // bs
        if args.lba < 0 or args.lba + blocks > dev.num_blocks:
            raise CliError(f"--lba {args.lba} + {blocks} blocks: outside the LUN's "
                           f"{dev.num_blocks} blocks")
        prog = Progress(len(data), "write")
        step = 4 << 20
        view = memoryview(data)
        for off in range(0, len(data), step):
            dev.write(args.lba + off // bs, view[off:off + step])
            prog.update(min(off + step, len(data)))
        dev.flush()
        if args.verbose:
            print(f"wrote {blocks} blocks at LBA {args.lba}", file=sys.stderr)
        _dev_stats(ctx, dev)
        close_device(dev)
    return 0


def cmd_ping(args: argparse.Namespace) -> int:
    if args.url is not None:
        target_of(args.url)  # a bad URL is reported before the link is set up
    with context(args) as ctx:
        spec = ctx.spec(args.url)
        s = ctx.login(spec)
        rtts = []
        for i in range(args.count):
            rtt = s.ping(timeout=args.wait)
            rtts.append(rtt)
            if not args.json:
                print(f"NOP-In from {spec.host}:{spec.port}: seq={i + 1} "
                      f"time={rtt * 1000:.3f} ms")
            if i + 1 < args.count:
                ctx.loop.run_for(args.interval)
        if args.json:
            print(json.dumps({"target": format_iscsi_url(spec), "rtt_ms":
                              [r * 1000 for r in rtts]}))
        else:
            print(f"{len(rtts)} pings, min/avg/max = {min(rtts) * 1000:.3f}/"
                  f"{sum(rtts) / len(rtts) * 1000:.3f}/{max(rtts) * 1000:.3f} ms")
        ctx.stats([s])
        s.logout()
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the iSCSI commands; returns the network-options parent (for the top parser)."""
    net = net_options()
    parents = [net]

    def add(name: str, func: Handler, helptext: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=parents, help=helptext, description=helptext)
        p.set_defaults(func=_wrap(func))
        return p

    dhcp_help = "default with --dhcp: the DHCP root path (option 17)"
    p = add("discover", cmd_discover, "list targets (SendTargets=All, or iSNS with --isns)")
    p.add_argument("portal", metavar="HOST[:PORT]", nargs="?", help=dhcp_help)
    p.add_argument("--isns", metavar="HOST[:PORT]", nargs="?", const="ibft", default=None,
                   help="ask this iSNS server (RFC 4171, port 3205) instead; without a "
                        "value: the iSNS server of the iBFT (--ibft FILE, else the firmware's)")
    p.add_argument("--ibft", metavar="FILE",
                   help="iBFT table file for --isns (without a portal and without --dhcp, "
                        "an iBFT with an iSNS server is used even without --isns)")
    add("ls", cmd_ls, "targets and LUNs with type and size (like iscsi-ls -s)").add_argument(
        "target", metavar="URL|HOST[:PORT]", nargs="?", help=dhcp_help)
    add("inquiry", cmd_inquiry, "INQUIRY and VPD identity of a LUN").add_argument(
        "url", metavar="URL", nargs="?", help=dhcp_help)
    add("readcap", cmd_readcap, "READ CAPACITY of a LUN").add_argument(
        "url", metavar="URL", nargs="?", help=dhcp_help)
    p = add("read", cmd_read, "read blocks to a file or stdout")
    _add_device_args(p, dhcp_help)
    p.add_argument("--lba", type=int, default=0)
    p.add_argument("--count", type=int, default=None, help="blocks (default: to the end)")
    p.add_argument("-o", "--output", metavar="FILE")
    p = add("write", cmd_write, "write a file's blocks")
    _add_device_args(p, dhcp_help)
    p.add_argument("--lba", type=int, default=0)
    p.add_argument("-i", "--input", metavar="FILE", required=True, help="FILE or - (stdin)")
    p = add("ping", cmd_ping, "NOP-Out pings to a target")
    p.add_argument("url", metavar="URL", nargs="?", help=dhcp_help)
    p.add_argument("-c", "--count", type=int, default=3)
    p.add_argument("-i", "--interval", type=float, default=0.2)
    p.add_argument("-W", "--wait", type=float, default=10.0, help="seconds to wait for each")
    return net


def _wrap(func: Handler) -> Handler:
    def run(args: argparse.Namespace) -> int:
        fill_defaults(args)
        try:
            return func(args)
        except CliError as e:
            print(f"bootinit {args.command}: {e}", file=sys.stderr)
            return 2
    return run


class DashDashParser(argparse.ArgumentParser):
    """A subcommand parser that takes everything after the first ``--`` as ``qemu_args``
    (handed to QEMU as it is): ``bootinit boot URL -- -smp 2``."""

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None,
                         ) -> tuple[argparse.Namespace, list[str]]:
        argv = list(sys.argv[1:] if args is None else args)
        extra: list[str] = []
        if "--" in argv:
            i = argv.index("--")
            argv, extra = argv[:i], argv[i + 1:]
        ns, rest = super().parse_known_args(argv, namespace)
        ns.qemu_args = extra
        return ns, rest
