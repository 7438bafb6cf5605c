"""PcapLink: classic pcap, read back by scapy and tshark."""

from __future__ import annotations

import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from netstack.link import LinkError, PcapLink, WirePair
from netstack.link.pcap import PcapWriter, pcap_header, pcap_record


def frames() -> list[bytes]:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import ARP, Ether

    out = [
        bytes(Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff")
              / ARP(op=1, hwsrc="02:00:00:00:00:01", psrc="10.0.0.2", pdst="10.0.0.1")),
        bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
              / IP(src="10.0.0.2", dst="10.0.0.1") / UDP(sport=1234, dport=9) / (b"x" * 1400)),
    ]
    return out


def test_header_is_classic_pcap() -> None:
    h = pcap_header()
    assert len(h) == 24
    assert h[:4] == bytes.fromhex("d4c3b2a1")  # a1b2c3d4 little-endian
    magic, vmaj, vmin, zone, sigfigs, snaplen, linktype = struct.unpack("<IHHiIII", h)
    assert (magic, vmaj, vmin, zone, sigfigs, snaplen, linktype) == (
        0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)


def test_record_timestamp_is_microseconds() -> None:
    rec = pcap_record(b"\x01" * 20, 1700000000.1234567)
    sec, usec, incl, orig = struct.unpack("<IIII", rec[:16])
    assert (sec, usec, incl, orig) == (1700000000, 123457, 20, 20)
    assert rec[16:] == b"\x01" * 20
    sec, usec, _, _ = struct.unpack("<IIII", pcap_record(b"", 5.9999999)[:16])
    assert (sec, usec) == (6, 0)


def test_both_directions_captured_and_read_back_identically(tmp_path: Path) -> None:
    from scapy.utils import rdpcap

    path = tmp_path / "cap.pcap"
    fs = frames()
    t0 = time.time()
    with WirePair() as w:
        link = PcapLink(w.a, path)
        link.send(fs[0])                  # out
        w.b.send(fs[1])                   # in
        assert link.recv() == fs[1]
        assert link.recv() is None
        link.send(bytearray(fs[1]))
        c = link.counters()
        assert c["pcap.frames"] == 3 and c["pcap.bytes"] == len(fs[0]) + 2 * len(fs[1])
        assert c["tx_frames"] == 2 and c["rx_frames"] == 1  # the wire's own counters
        link.close()
        link.close()
    pkts = rdpcap(str(path))
    assert [bytes(p) for p in pkts] == [fs[0], fs[1], fs[1]]
    for p in pkts:
        assert t0 - 1 <= float(p.time) <= time.time() + 1


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "cap.pcap"
    with WirePair() as w:
        link = PcapLink(w.a, path)
        for f in frames():
            link.send(f)
        link.close()
    cp = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.len",
                         "-e", "frame.protocols"],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    rows = [line.split("\t") for line in cp.stdout.splitlines()]
    assert [int(r[0]) for r in rows] == [len(f) for f in frames()]
    assert rows[0][1] == "eth:ethertype:arp"
    assert rows[1][1].startswith("eth:ethertype:ip:udp")


def test_flush_interval(tmp_path: Path) -> None:
    now = [1000.0]
    path = tmp_path / "f.pcap"
    wr = PcapWriter(path, flush_interval=1.0, wallclock=lambda: now[0])
    wr.write(b"\x00" * 60)
    assert path.stat().st_size == 0  # still buffered
    now[0] += 1.5
    wr.write(b"\x00" * 60)
    assert path.stat().st_size == 24 + 2 * (16 + 60)
    wr.close()
    with pytest.raises(LinkError, match="after close"):
        wr.write(b"\x00" * 60)


def test_unwritable_path_is_a_link_error(tmp_path: Path) -> None:
    with WirePair() as w, pytest.raises(LinkError, match="cannot open"):
        PcapLink(w.a, tmp_path / "no" / "such" / "dir.pcap")
