"""MC/S pieces that need no target: the non-leading login, the shared window, ITTs."""

from __future__ import annotations

from typing import Any, cast

from bootinit.iscsi.keys import Negotiator, OperationalConfig, decode_text
from bootinit.iscsi.login import LoginConfig
from bootinit.iscsi.mcs import (
    CmdWindow,
    McsConnection,
    McsSession,
    _non_leading,
    _NonLeadingLogin,
)
from bootinit.iscsi.session import SessionConfig
from bootinit.iscsi.text import Portal

INI = "iqn.2026-11.org.bootinit:test"
TGT = "iqn.2024-01.org.bootinit:t"
LO = {"MaxConnections", "InitialR2T", "ImmediateData", "MaxBurstLength", "FirstBurstLength",
      "DefaultTime2Wait", "DefaultTime2Retain", "MaxOutstandingR2T", "DataPDUInOrder",
      "DataSequenceInOrder", "ErrorRecoveryLevel"}


def test_non_leading_offer_has_no_leading_only_keys() -> None:
    op = _non_leading(OperationalConfig(max_connections=4, header_digest=("CRC32C", "None")))
    offered = dict(Negotiator(op).offer())
    assert not LO & set(offered)
    assert offered["HeaderDigest"] == "CRC32C,None"
    assert "MaxRecvDataSegmentLength" in offered
    assert dict(Negotiator(OperationalConfig(max_connections=4)).offer())["MaxConnections"] \
        == "4"


def test_non_leading_login_request() -> None:
    lc = LoginConfig(initiator_name=INI, target_name=TGT, isid=b"\x40\x01\x02\x03\x04\x05",
                     tsih=7, cid=3, cmdsn=1234)
    req = _NonLeadingLogin(lc).start()
    keys = dict(decode_text(bytes(req.data)))
    assert req.tsih == 7 and req.cid == 3 and req.cmdsn == 1234
    assert keys["InitiatorName"] == INI and keys["TargetName"] == TGT
    assert "SessionType" not in keys  # Leading Only (RFC 7143 §13.21)


def _conn(cid: int, window: CmdWindow, tsih: int = 0) -> McsConnection:
    cfg = SessionConfig(initiator_name=INI, portal=Portal("10.0.0.1"), target_name=TGT)
    owner = cast(McsSession, cast(Any, object()))
    return McsConnection(cfg, now=0.0, cid=cid, window=window, owner=owner, tsih=tsih)


def test_connections_share_the_command_window() -> None:
    w = CmdWindow()
    a = _conn(0, w)
    a.cmdsn, a.exp_cmdsn, a.max_cmdsn = 10, 10, 40
    b = _conn(2, w, tsih=5)  # joining later does not reset the session's numbering
    assert (b.cmdsn, b.exp_cmdsn, b.max_cmdsn) == (10, 10, 40)
    b.cmdsn = 11
    assert a.cmdsn == 11 and w.cmdsn == 11
    assert a.leading and not b.leading


def test_itts_carry_the_cid() -> None:
    w = CmdWindow()
    conns = {c: _conn(c, w) for c in (0, 1, 3)}
    tags = {c: {conn._new_itt() for _ in range(3)} for c, conn in conns.items()}
    for cid, itts in tags.items():
        assert all(itt >> 24 == cid for itt in itts) and len(itts) == 3
    assert not tags[0] & tags[1] and not tags[1] & tags[3]
