"""Make the seed corpora in ``fuzz/corpus/<target>/`` from a real tgtd session.

``python -m fuzz.make_corpus [--out fuzz/corpus] [--pcap-dir DIR]`` (root: it builds a
namespace with tgtd, like the integration tests) runs two short bootinit sessions
through a :class:`~netstack.link.pcap.PcapLink` — discovery, CHAP login, INQUIRY / READ
CAPACITY / VPD, a write larger than FirstBurstLength (R2T + Data-Out), reads, NOP
pings, logout; one plain, one with CRC32C digests — and cuts seeds out of the
captures:

* ``pdu_parser``: the target->initiator iSCSI byte stream of each connection (with the
  digest flags byte in front), capped in size;
* ``login``: the Login Responses of each connection (ISID rewritten to the fuzz
  target's fixed one);
* ``text_keys``: the data segments of Login and Text Responses;
* ``session``: the full feature phase stream after login;
* ``frames``: the frames the peer sent, as raw-frame records, and its TCP segments as
  records for the live connection;
* ``ibft`` and ``nbd`` seeds are built, not captured: tables from
  :func:`firmware_tables.build_ibft` and NBD client streams from the protocol's
  structures (there is no capture of those in the lab).

Seeds stay small (at most ``--max-size`` bytes each) so the repository stays small.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import struct
import sys
import tempfile
from pathlib import Path

from fuzz.pcapread import read_frames, tcp_of, tcp_streams

IQN = "iqn.2024-01.org.bootinit:capture"
USER, SECRET = "alice", "alice-secret-1"
MiB = 1 << 20
DEFAULT_MAX = 48 * 1024


def capture_session(pcap: Path, digests: bool) -> None:
    """One bootinit session against tgtd, captured to ``pcap``."""
    from bootinit.initiator import Initiator
    from bootinit.iscsi.chap import ChapCredentials, Secret
    from bootinit.targets import Tgtd
    from netstack.harness import topology
    from netstack.loop import Loop
    from netstack.stack import NetStack, StackConfig

    with topology(mtu=1500, pcap=pcap, prefix="bfz") as topo, \
            Tgtd(topo.netns, listen=(str(topo.peer_addr), 3260), lun_dir="/dev/shm") as tgtd:
        tid = tgtd.add_target(IQN, ["4M"])
        tgtd.set_chap(tid, USER, SECRET)
        if digests:
            tgtd.set_param(tid, "HeaderDigest", "CRC32C")
            tgtd.set_param(tid, "DataDigest", "CRC32C")
        assert topo.link is not None
        loop = Loop()
        stack = NetStack(loop, topo.link, StackConfig(mac=topo.our_mac, ip=topo.our_ip))
        stack.start()
        try:
            ini = Initiator(stack, nop_interval=0.3)
            host = str(topo.peer_addr)
            ini.discover(host)
            s = ini.login(f"iscsi://{host}/{IQN}/1", chap=ChapCredentials(USER, Secret(SECRET)),
                          digests=digests)
            s.inquiry()
            s.read_capacity()
            dev = s.block_device()
            rng = random.Random(7)
            dev.write(0, rng.randbytes(160 * 1024))
            dev.write(1024, rng.randbytes(4096))
            dev.read(0, 64)
            dev.read(1024, 8)
            loop.run_for(0.7)
            ini.logout()
        finally:
            stack.close()
            loop.close()


def _pdus(stream: bytes, digests_after_login: bool) -> list[tuple[int, bytes]]:
    """Split a target->initiator stream into (offset, raw PDU) without interpreting it."""
    out = []
    pos = 0
    hd = dd = False
    while pos + 48 <= len(stream):
        bhs = stream[pos:pos + 48]
        ahs = bhs[4] * 4
        dsl = int.from_bytes(bhs[5:8], "big")
        n = 48 + ahs + (4 if hd else 0)
        if dsl:
            n += dsl + (-dsl % 4) + (4 if dd else 0)
        out.append((pos, stream[pos:pos + n]))
        pos += n
        op = bhs[0] & 0x3F
        if op == 0x23 and bhs[1] & 0x80 and bhs[1] & 3 == 3 and digests_after_login:
            hd = dd = True
    return out


def _is_target_side(key: tuple[bytes, int, bytes, int]) -> bool:
    return key[1] == 3260


def build_from_capture(pcap: Path, digests: bool, out: Path, max_size: int) -> None:
    streams = tcp_streams(pcap)
    tag = "dig" if digests else "plain"
    flags = 3 if digests else 0
    for i, (key, data) in enumerate(streams.items()):
        if not _is_target_side(key) or not data:
            continue
        name = f"{tag}-conn{i}"
        _write(out / "pdu_parser", name, bytes([flags | (5 << 3)]) + data[:max_size])
        pdus = _pdus(data, digests)
        logins = bytearray()
        after = b""
        for off, raw in pdus:
            op = raw[0] & 0x3F
            if op in (0x23, 0x24):  # Login / Text Response: their text
                dsl = int.from_bytes(raw[5:8], "big")
                text = raw[48 + raw[4] * 4:48 + raw[4] * 4 + dsl]
                if text:
                    _write(out / "text_keys", f"{name}-{off}", bytes([0x05]) + text)
            if op == 0x23:
                b = bytearray(raw)
                b[8:14] = bytes.fromhex("400000000001")
                logins += b
                if raw[1] & 0x80 and raw[1] & 3 == 3:
                    after = data[off + len(raw):]
        if logins:
            dig = 8 if digests else 0
            for mode, what in ((1, "chap"), (2, "optional"), (4, "discovery")):
                _write(out / "login", f"{name}-{what}", bytes([mode | dig]) + bytes(logins))
        if after and not digests:
            _write(out / "session", name, bytes([7]) + after[:max_size // 4])
    # frames the peer sent, and its segments as records for the live connection; the
    # capture's MAC addresses are rewritten to the fuzz rig's (fuzz.targets.FrameRig)
    from fuzz.targets import OUR_MAC, PEER_MAC

    macs: dict[bytes, bytes] = {}
    for frame in read_frames(pcap):
        seg = tcp_of(frame)
        if seg is not None:
            macs[frame[6:12]] = PEER_MAC if seg.sport == 3260 else OUR_MAC
    recs_raw = bytearray()
    recs_tcp = bytearray()
    for frame in read_frames(pcap):
        for old_mac, new_mac in macs.items():
            frame = frame.replace(old_mac, new_mac)
        seg = tcp_of(frame)
        if seg is None or seg.sport != 3260:
            if frame[12:14] == b"\x08\x06" and len(recs_raw) < max_size:
                recs_raw += _record(0, frame)
            continue
        if len(recs_raw) < max_size // 2:
            recs_raw += _record(0, frame[:256])
        if len(recs_tcp) < max_size and not seg.flags & 0x02:
            opts = seg.header[20:]
            body = (bytes([seg.flags, 0]) + b"\0" + bytes([0]) + b"\0" +
                    struct.pack("!H", int.from_bytes(seg.header[14:16], "big")) +
                    bytes([len(opts)]) + opts + seg.payload[:300])
            recs_tcp += _record(1, body)
    _write(out / "frames", f"{tag}-raw", bytes(recs_raw[:max_size]))
    _write(out / "frames", f"{tag}-tcp", bytes(recs_tcp[:max_size]))


def _record(kind: int, body: bytes) -> bytes:
    body = body[:0x7FF]
    return bytes([kind]) + struct.pack("!H", len(body)) + body


def _write(d: Path, name: str, data: bytes) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def build_synthetic(out: Path) -> None:
    """Seeds that are not captured: iBFT tables, NBD client streams, frame records."""
    # --- iBFT: a table as iPXE would build it, and one with two NICs/targets and CHAP
    from firmware_tables import BootConfig

    cfg = BootConfig.from_dict({
        "initiator_name": "iqn.2026-11.org.bootinit:fuzz",
        "nics": [{"address": "10.77.0.2/24", "gateway": "10.77.0.254",
                  "mac": "02:00:00:00:00:02", "dns": ["10.77.0.53"]},
                 {"address": "192.168.1.5/24", "mac": "02:00:00:00:00:03", "vlan": 7}],
        "targets": [{"host": "10.77.0.1", "name": IQN, "lun": 1,
                     "chap_user": USER, "chap_secret": SECRET},
                    {"host": "192.168.1.1", "port": 3261, "name": IQN + "-b", "lun": 0,
                     "nic": 1}],
    })
    _write(out / "ibft", "two-nics", cfg.to_ibft())
    one = BootConfig.from_dict({"initiator_name": "iqn.2026-11.org.bootinit:one",
                                "nics": [{"address": "10.0.0.2/8"}],
                                "targets": [{"host": "10.0.0.1", "name": IQN}]})
    _write(out / "ibft", "one", one.to_ibft())
    # --- NBD: handshake with GO, then requests; and EXPORT_NAME + bad requests
    ihave = 0x49484156454F5054
    req = struct.Struct(">IHHQQI")

    def opt(code: int, data: bytes) -> bytes:
        return struct.pack(">QII", ihave, code, len(data)) + data

    go = opt(7, struct.pack(">I", 0) + struct.pack(">H", 1) + struct.pack(">H", 3))
    cmds = (req.pack(0x25609513, 0, 0, 1, 0, 4096) +
            req.pack(0x25609513, 0, 1, 2, 8192, 512) + bytes(512) +
            req.pack(0x25609513, 0, 3, 3, 0, 0) +
            req.pack(0x25609513, 0, 4, 4, 0, 1024) +
            req.pack(0x25609513, 0, 0, 5, 1 << 20, 512) +
            req.pack(0x25609513, 0, 0, 6, 3, 512) +
            req.pack(0x25609513, 0, 2, 7, 0, 0))
    _write(out / "nbd", "go-io-disc", bytes([0x1C]) + struct.pack(">I", 3) +
           opt(1 << 0 | 2, b"") + opt(6, b"\0\0\0\0\0\0") + go + cmds)
    _write(out / "nbd", "export-name", bytes([0x10]) + struct.pack(">I", 1) +
           opt(1, b"") + cmds[:60])
    _write(out / "nbd", "list-abort", bytes([0x05]) + struct.pack(">I", 3) + opt(3, b"") +
           opt(2, b""))
    # --- frames: a blind RST/SYN, fragments, ARP spoofing, time passing
    recs = bytearray()
    recs += _record(1, bytes([0x04, 1]) + struct.pack(">i", 1000) + bytes([0, 0, 0, 1, 0]))
    recs += _record(1, bytes([0x02, 0, 5, 0, 0, 0xFF, 0xFF, 0]))
    recs += _record(1, bytes([0x10, 0, 0, 0, 0, 0x10, 0, 4]) + b"\x02\x09\x05\xb4" + b"data")
    recs += _record(1, bytes([0x18, 0, 3, 0, 0, 0x10, 0, 0]) + b"ooo-segment")
    recs += _record(2, struct.pack(">HH", 7, 0x2000) + bytes([0]) + bytes(64))
    recs += _record(2, struct.pack(">HH", 7, 0x2004) + bytes([0]) + bytes(40))
    recs += _record(3, bytes([2]) + bytes.fromhex("0200000000ee") + bytes(4) + bytes([0]) +
                    bytes(6) + bytes(4) + bytes([0]))
    recs += _record(4, bytes([200, 0]))
    recs += _record(6, bytes([0x02, 0, 0, 0, 0, 0xFF, 0xFF, 4]) + b"\x02\x04\x05\xb4")
    recs += _record(5, bytes([1]) + b"hello")
    _write(out / "frames", "synthetic", bytes(recs))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("corpus"))
    ap.add_argument("--pcap-dir", type=Path, default=None,
                    help="keep the captures here (default: a temporary directory)")
    ap.add_argument("--max-size", type=int, default=DEFAULT_MAX)
    ap.add_argument("--synthetic-only", action="store_true",
                    help="only the seeds that need no capture (no root, no tgtd)")
    args = ap.parse_args(argv)
    build_synthetic(args.out)
    if not args.synthetic_only:
        with tempfile.TemporaryDirectory() as tmp:
            pdir = args.pcap_dir or Path(tmp)
            pdir.mkdir(parents=True, exist_ok=True)
            for digests in (False, True):
                pcap = pdir / f"session-{'digests' if digests else 'plain'}.pcap"
                capture_session(pcap, digests)
                build_from_capture(pcap, digests, args.out, args.max_size)
    total = 0
    for d in sorted(args.out.iterdir()):
        files = sorted(d.iterdir())
        size = sum(f.stat().st_size for f in files)
        total += size
        digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:12]
        print(f"{d.name:12} {len(files):3} files {size:8} bytes  {digest}")
    print(f"total {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
