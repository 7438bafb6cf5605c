"""A whole bootinit session against tgtd, captured through PcapLink and read by tshark.

Each capture (one without digests, one with CRC32C header and data digests) holds:
discovery (SendTargets), login with CHAP, TEST UNIT READY / INQUIRY / READ CAPACITY /
VPD pages, a 1 MiB write (more than FirstBurstLength, so R2T + Data-Out) and a small one
(immediate data), reads, an idle pause with NOP-Out pings, and the logout.

Wireshark's iSCSI dissector (``tshark -d tcp.port==3260,iscsi``, IP and TCP checksum
checks on) must find no malformed PDU and no expert error, must actually dissect iSCSI
PDUs of every kind we sent and received, must see the CHAP exchange without the secret,
and with digests must find every header and data digest good (Wireshark takes the
digest settings from the login's HeaderDigest/DataDigest keys: no preference needed).

Run: ``sudo python -m pytest tests/integration/test_iscsi_capture.py``.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bootinit.initiator import Initiator
from bootinit.iscsi.chap import ChapCredentials, Secret
from bootinit.targets import Tgtd
from netstack.harness import topology
from netstack.loop import Loop
from netstack.stack import NetStack, StackConfig
from tests.conftest import netns_problem

IQN = "iqn.2024-01.org.bootinit:capture"
USER, SECRET = "alice", "alice-secret-1"
MiB = 1 << 20
TSHARK_PREFS = ("-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE")

# iSCSI opcodes (RFC 7143 §11.1.1), initiator and target side.
NOP_OUT, SCSI_CMD, LOGIN_REQ, TEXT_REQ, DATA_OUT, LOGOUT_REQ = 0x00, 0x01, 0x03, 0x04, 0x05, 0x06
NOP_IN, SCSI_RSP, LOGIN_RSP, TEXT_RSP, DATA_IN, LOGOUT_RSP, R2T = (
    0x20, 0x21, 0x23, 0x24, 0x25, 0x26, 0x31)
# SCSI operation codes of the commands the session sends (SPC-4 / SBC-3).
TUR, INQUIRY, READ_CAPACITY_10, READ_10, WRITE_10 = 0x00, 0x12, 0x25, 0x28, 0x2A


@dataclass
class Capture:
    """One captured session."""

    path: Path
    digests: bool


def run_session(pcap: Path, digests: bool) -> None:
    """Bring up namespace + tgtd, run the whole session through a PcapLink, tear down."""
    with topology(mtu=1500, pcap=pcap, prefix="bcap") as topo, \
            Tgtd(topo.netns, listen=(str(topo.peer_addr), 3260), lun_dir="/dev/shm") as tgtd:
        tid = tgtd.add_target(IQN, ["16M"])
        tgtd.set_chap(tid, USER, SECRET)
        if digests:
            tgtd.set_param(tid, "HeaderDigest", "CRC32C")
            tgtd.set_param(tid, "DataDigest", "CRC32C")
        assert topo.link is not None
        loop = Loop()
        stack = NetStack(loop, topo.link, StackConfig(mac=topo.our_mac, ip=topo.our_ip))
        stack.start()
        try:
            ini = Initiator(stack, nop_interval=0.5)
            host = str(topo.peer_addr)
            assert IQN in {t.name for t in ini.discover(host)}
            s = ini.login(f"iscsi://{host}/{IQN}/1", chap=ChapCredentials(USER, Secret(SECRET)),
                          digests=digests)
            assert s.params.header_digest is digests and s.params.data_digest is digests
            assert s.inquiry().is_disk
            assert s.read_capacity().size_bytes == 16 * MiB
            dev = s.block_device()
            rng = random.Random(7)
            big, small = rng.randbytes(MiB), rng.randbytes(4096)
            dev.write(0, big)
            dev.write(4096, small)
            assert dev.read(0, MiB // 512) == big
            assert dev.read(4096, 8) == small
            loop.run_for(1.2)  # idle: NOP-Out pings, answered by NOP-In
            assert s.counters()["nop"].get("pings_answered", 0) >= 1, s.counters()["nop"]
            ini.logout()
            assert s.session.finished and s.session.error is None
            with open(tgtd.lun_path(tid, 1), "rb") as f:
                assert f.read(MiB) == big
        finally:
            stack.close()
            loop.close()
    assert pcap.stat().st_size > MiB


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "digests"])
def capture(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Capture]:
    """A capture of a full session (once per variant)."""
    problem = netns_problem()
    if problem is not None:
        pytest.skip(f"network namespace test: {problem}")
    for tool in ("tshark", "tgtd", "tgtadm"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    digests = bool(request.param)
    path = tmp_path_factory.mktemp("capture") / f"session-{'digests' if digests else 'plain'}.pcap"
    run_session(path, digests)
    yield Capture(path, digests)


def tshark(cap: Capture, *args: str) -> str:
    """tshark's stdout for the capture, port 3260 decoded as iSCSI, checksums checked."""
    cp = subprocess.run(["tshark", "-n", "-r", str(cap.path), "-d", "tcp.port==3260,iscsi",
                         *TSHARK_PREFS, *args], capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, f"tshark {' '.join(args)}: exit {cp.returncode}: {cp.stderr}"
    return cp.stdout


def frames(cap: Capture, display_filter: str) -> list[str]:
    """Summary lines of the frames matching ``display_filter``."""
    return tshark(cap, "-Y", display_filter).splitlines()


def field_values(cap: Capture, display_filter: str, field: str) -> list[str]:
    """Every value of ``field`` (several per frame are split) in matching frames."""
    out = tshark(cap, "-Y", display_filter, "-T", "fields", "-e", field)
    return [v for line in out.splitlines() for v in line.split(",") if v]


def test_no_malformed_pdu_and_no_expert_error(capture: Capture) -> None:
    malformed = frames(capture, "_ws.malformed")
    assert malformed == [], "malformed frames:\n" + "\n".join(malformed[:20])
    errors = frames(capture, '_ws.expert.severity >= "Error"')
    if errors:
        detail = tshark(capture, "-Y", '_ws.expert.severity >= "Error"', "-T", "fields",
                        "-e", "frame.number", "-e", "_ws.expert.message")
        pytest.fail(f"{len(errors)} frames with expert errors:\n{detail[:3000]}")


def test_every_kind_of_pdu_is_dissected(capture: Capture) -> None:
    assert len(frames(capture, "iscsi")) > 100
    opcodes = {int(v, 16) & 0x3F for v in field_values(capture, "iscsi", "iscsi.opcode")}
    wanted = {LOGIN_REQ: "Login Request", LOGIN_RSP: "Login Response",
              TEXT_REQ: "Text Request (SendTargets)", TEXT_RSP: "Text Response",
              SCSI_CMD: "SCSI Command", SCSI_RSP: "SCSI Response", DATA_IN: "Data-In",
              DATA_OUT: "Data-Out", R2T: "R2T", NOP_OUT: "NOP-Out", NOP_IN: "NOP-In",
              LOGOUT_REQ: "Logout Request", LOGOUT_RSP: "Logout Response"}
    missing = [name for op, name in wanted.items() if op not in opcodes]
    assert not missing, f"not dissected: {missing} (seen {sorted(hex(o) for o in opcodes)})"
    cdbs = {int(v, 16) for v in field_values(capture, "iscsi", "scsi_sbc.opcode")}
    assert {TUR, INQUIRY, READ_CAPACITY_10, READ_10, WRITE_10} <= cdbs, sorted(cdbs)
    # Discovery and the normal session are two TCP connections, each logged out.
    assert len(frames(capture, "iscsi.opcode == 0x06")) == 2
    assert len(field_values(capture, "iscsi.opcode == 0x24", "iscsi.keyvalue")) >= 1


def test_chap_exchange_is_seen_and_the_secret_is_not(capture: Capture) -> None:
    keys = field_values(capture, "iscsi.opcode == 0x03 or iscsi.opcode == 0x23",
                        "iscsi.keyvalue")
    names = {k.partition("=")[0] for k in keys}
    assert {"AuthMethod", "CHAP_A", "CHAP_I", "CHAP_C", "CHAP_N", "CHAP_R"} <= names, names
    assert f"CHAP_N={USER}" in keys
    assert SECRET.encode() not in capture.path.read_bytes()


def test_digests_as_negotiated_and_all_good(capture: Capture) -> None:
    keys = field_values(capture, "iscsi.opcode == 0x23", "iscsi.keyvalue")
    want = "CRC32C" if capture.digests else "None"
    assert f"HeaderDigest={want}" in keys and f"DataDigest={want}" in keys, keys
    header = field_values(capture, "iscsi", "iscsi.headerdigest32")
    data = field_values(capture, "iscsi", "iscsi.datadigest32")
    if not capture.digests:
        assert header == [] and data == []
        return
    assert len(header) > 100 and len(data) > 20
    detail = tshark(capture, "-Y", "iscsi.headerdigest32 or iscsi.datadigest32", "-V")
    good = len(re.findall(r"Digest: 0x[0-9a-f]{8} \(Good CRC32\)", detail))
    bad = re.findall(r".*Digest: 0x[0-9a-f]{8} \(Bad CRC32.*", detail)
    assert bad == [], "bad digests:\n" + "\n".join(bad[:10])
    assert good >= len(header) + len(data), (good, len(header), len(data))
