"""The fuzz targets (fuzz/targets.py) under hypothesis, and over their seed corpora.

Each target returns for input that is handled right (accepted, or refused with the
module's typed error, or — frames — a counted drop) and raises otherwise; see
``fuzz/targets.py`` for what each checks (guard zones around the caller's buffers,
memory bounds of reassembly / TCP queues / ARP queues, no exception out of
``Interface.receive_frame``, a broken parser refusing more input ...).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz import targets
from fuzz.targets import TARGETS

CORPUS = Path(__file__).resolve().parents[2] / "fuzz" / "corpus"
FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


def seeds(name: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted((CORPUS / name).iterdir())]


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_corpus_exists_and_is_small(name: str) -> None:
    files = sorted((CORPUS / name).iterdir())
    assert files, f"no seeds for {name}"
    assert all(f.stat().st_size <= 64 * 1024 for f in files)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_seed_passes(name: str) -> None:
    for data in seeds(name):
        TARGETS[name](data)


@st.composite
def mutated(draw: st.DrawFn, name: str) -> bytes:
    """A seed with a few bytes changed, cut or inserted."""
    base = bytearray(draw(st.sampled_from(seeds(name))))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 3))
        pos = draw(st.integers(0, max(len(base) - 1, 0)))
        if op == 0 and base:
            base[pos] = draw(st.integers(0, 255))
        elif op == 1:
            base[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == 2:
            del base[pos:pos + draw(st.integers(1, 64))]
        else:
            base = base[:pos + 1]
    return bytes(base)


@FAST
@given(st.data())
def test_pdu_parser(data: st.DataObject) -> None:
    targets.pdu_parser(data.draw(st.one_of(st.binary(max_size=600), mutated("pdu_parser"))))


@FAST
@given(st.data())
def test_text_keys(data: st.DataObject) -> None:
    raw = st.lists(st.tuples(st.text(max_size=12), st.text(max_size=20))).map(
        lambda kv: bytes([5]) + b"".join(f"{k}={v}".encode() + b"\0" for k, v in kv))
    targets.text_keys(data.draw(st.one_of(st.binary(max_size=400), raw,
                                          mutated("text_keys"))))


@FAST
@given(st.data())
def test_login(data: st.DataObject) -> None:
    targets.login(data.draw(st.one_of(st.binary(max_size=400), mutated("login"))))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_session(data: st.DataObject) -> None:
    targets.session(data.draw(st.one_of(st.binary(max_size=400), mutated("session"))))


def _record(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + len(body).to_bytes(2, "big") + body


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_frames(data: st.DataObject) -> None:
    records = st.lists(st.builds(_record, st.integers(0, 7), st.binary(max_size=120)),
                       max_size=30).map(b"".join)
    targets.frames(data.draw(st.one_of(records, mutated("frames"))))


@FAST
@given(st.data())
def test_ibft(data: st.DataObject) -> None:
    targets.ibft(data.draw(st.one_of(st.binary(max_size=600), mutated("ibft"))))


@FAST
@given(st.data())
def test_nbd(data: st.DataObject) -> None:
    targets.nbd(data.draw(st.one_of(st.binary(max_size=400), mutated("nbd"))))
