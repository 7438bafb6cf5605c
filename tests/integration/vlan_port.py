"""An 802.1Q access port in user space, for kernels without VLAN support.

This test machine's kernel has no ``CONFIG_VLAN_8021Q`` (``ip link add ... type vlan``
fails with "Unknown device type"), no bridge VLAN filtering and no tc classifiers, so
the kernel side of the VLAN is made here, inside the test's namespace: frames tagged
with VID ``--vid`` that arrive on ``--trunk`` (the TAP's kernel side) are forwarded
untagged to ``--access`` (one end of a veth pair whose other end holds the VLAN's
address); frames from ``--access`` get the tag (TPID 0x8100, PCP 0) and go out on
``--trunk``. Untagged frames and other VIDs on the trunk are dropped.

The kernel strips received tags into the packet's metadata before packet sockets see
it, so the tag is read from ``PACKET_AUXDATA`` (``tp_vlan_tci``,
``TP_STATUS_VLAN_VALID``). Runs until killed; counts on SIGTERM to stderr.
"""

from __future__ import annotations

import argparse
import select
import signal
import socket
import struct
import sys

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_OUTGOING = 4
TP_STATUS_VLAN_VALID = 1 << 4
_AUX = struct.Struct("IIIHHHH")


def open_port(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    s.bind((ifname, 0))
    return s


def vlan_of(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancdata:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= _AUX.size:
            status, _len, _snap, _mac, _net, tci, _tpid = _AUX.unpack_from(data)
            if status & TP_STATUS_VLAN_VALID:
                return int(tci) & 0x0FFF
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trunk", required=True)
    ap.add_argument("--access", required=True)
    ap.add_argument("--vid", type=int, required=True)
    args = ap.parse_args()
    trunk, access = open_port(args.trunk), open_port(args.access)
    tag = struct.pack("!HH", 0x8100, args.vid)
    counts = {"tagged_in": 0, "untagged_out": 0, "dropped": 0}

    def bye(*_: object) -> None:
        print(counts, file=sys.stderr, flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, bye)
    print("ready", flush=True)
    while True:
        ready, _, _ = select.select([trunk, access], [], [])
        for s in ready:
            data, anc, _flags, addr = s.recvmsg(65536, socket.CMSG_SPACE(64))
            if addr[2] == PACKET_OUTGOING:
                continue  # what we (or the kernel) sent on this port
            if s is trunk:
                vid = vlan_of(anc)
                if vid is None and len(data) >= 18 and data[12:14] == b"\x81\x00":
                    vid = int.from_bytes(data[14:16], "big") & 0x0FFF
                    data = data[:12] + data[16:]
                if vid != args.vid:
                    counts["dropped"] += 1
                    continue
                counts["tagged_in"] += 1
                access.send(data)
            else:
                counts["untagged_out"] += 1
                trunk.send(data[:12] + tag + data[12:])


if __name__ == "__main__":
    main()
