"""Internet checksum (RFC 1071) against a word-by-word reference and scapy."""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.utils import checksum as scapy_checksum

import netstack.checksum as checksum_mod
from netstack.checksum import (
    checksum_parts,
    fold,
    incremental_update,
    internet_checksum,
    ones_residue,
    ones_sum,
    pseudo_header_sum,
    transport_checksum,
    transport_checksum_parts,
    verify,
)


@pytest.fixture(autouse=True, scope="module", params=["pure", "numpy", "numpy-all"])
def implementation(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test runs on the pure big-integer path, on the default split (numpy from
    ``_VECTOR_MIN`` bytes on) and with numpy at every size (its 0-3 byte tails too)."""
    if request.param != "pure" and checksum_mod._np is None:
        pytest.skip("numpy is not installed")
    saved = checksum_mod._VECTOR_MIN
    checksum_mod._VECTOR_MIN = {"pure": None, "numpy": 4096, "numpy-all": 0}[request.param]
    try:
        yield str(request.param)
    finally:
        checksum_mod._VECTOR_MIN = saved


#: the module's own choice, read before any test changes it
DEFAULT_VECTOR_MIN = checksum_mod._VECTOR_MIN


def test_the_vector_path_is_the_default_for_large_buffers() -> None:
    # numpy is a dependency of the package: a TCP segment of a large MTU takes its path
    assert checksum_mod._np is not None
    assert DEFAULT_VECTOR_MIN is not None and DEFAULT_VECTOR_MIN <= 8948


def reference(data: bytes) -> int:
    """RFC 1071 §4.1 literally: add 16-bit words with end-around carry, complement."""
    if len(data) % 2:
        data += b"\0"
    s = 0
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


SIZES = [0, 1, 2, 3, 19, 20, 21, 1499, 1500, 2047, 2048, 2049, 2050, 4095, 4096, 4097,
         8999, 9000, 65535, 65536]


@pytest.mark.parametrize("size", SIZES)
def test_random_matches_reference_and_scapy(size: int) -> None:
    rng = random.Random(size)
    for _ in range(3):
        data = rng.randbytes(size)
        want = reference(data)
        assert internet_checksum(data) == want
        assert internet_checksum(memoryview(data)) == want
        assert internet_checksum(bytearray(data)) == want
        assert scapy_checksum(data) == want


@pytest.mark.parametrize("size", [0, 1, 2, 3, 2048, 2049, 4097])
@pytest.mark.parametrize("fill", [0x00, 0xFF])
def test_edge_values(size: int, fill: int) -> None:
    data = bytes([fill]) * size
    assert internet_checksum(data) == reference(data)


def test_all_zero_and_negative_zero() -> None:
    # All zero: sum +0, checksum 0xFFFF. 0xFFFF words: sum -0 (0xFFFF), checksum 0.
    assert internet_checksum(b"\0\0\0\0") == 0xFFFF
    assert internet_checksum(b"\xff\xff") == 0
    assert fold(0) == 0
    assert fold(0xFFFF) == 0xFFFF
    assert fold(0xFFFF * 7) == 0xFFFF
    # Two words that sum to a multiple of 0xFFFF but are not zero.
    assert internet_checksum(b"\x80\x00\x7f\xff") == reference(b"\x80\x00\x7f\xff") == 0


def test_rfc1071_example() -> None:
    # RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2 (folded).
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert fold(ones_sum(data)) == 0xDDF2
    assert internet_checksum(data) == 0xFFFF - 0xDDF2


@pytest.mark.parametrize("size", [1, 20, 21, 1500, 4097, 65535])
def test_verify_roundtrip(size: int) -> None:
    rng = random.Random(size)
    data = bytearray(rng.randbytes(size + 2))
    data[0:2] = b"\0\0"
    data[0:2] = struct.pack("!H", internet_checksum(data))
    assert verify(data)
    assert internet_checksum(data) == 0
    data[-1] ^= 0x01
    assert not verify(data)
    assert not verify(b"\0" * 20)


def _residue_reference(data: bytes) -> int:
    """The RFC 1071 word sum (odd byte padded) modulo 0xFFFF, from the literal checksum."""
    return (0xFFFF - reference(data)) % 0xFFFF


@pytest.mark.parametrize("size", [*SIZES, 63, 64, 65, 127, 128, 1460, 1461, 1480, 1481,
                                  70000])
@pytest.mark.parametrize("fill", [None, 0x00, 0xFF, 0x80])
def test_ones_residue_matches_the_word_sum(size: int, fill: int | None) -> None:
    data = random.Random(size).randbytes(size) if fill is None else bytes([fill]) * size
    want = _residue_reference(data)
    assert ones_residue(data) == want == ones_sum(data) % 0xFFFF
    assert ones_residue(memoryview(data)) == want
    assert ones_residue(memoryview(b"xy" + data)[2:]) == want
    assert ones_residue(bytearray(data)) == want


@given(st.binary(max_size=4200))
def test_ones_residue_property(data: bytes) -> None:
    assert ones_residue(data) == ones_sum(data) % 0xFFFF


def test_ones_residue_every_direct_length() -> None:
    # Every length the folding plans cover (by 64-byte class), random and saturated data.
    rng = random.Random(11)
    for size in range(0, 2049):
        for data in (rng.randbytes(size), b"\xff" * size):
            assert ones_residue(data) == ones_sum(data) % 0xFFFF, size


def test_parts_equal_concatenation() -> None:
    rng = random.Random(7)
    for _ in range(200):
        parts = [rng.randbytes(rng.choice([0, 1, 2, 3, 5, 20, 2049, 3001, 5001, 8192]))
                 for _ in range(rng.randrange(1, 5))]
        whole = b"".join(parts)
        assert checksum_parts(parts) == reference(whole)
        assert checksum_parts([memoryview(p) for p in parts]) == reference(whole)


def _pseudo(src: bytes, dst: bytes, proto: int, seg: bytes) -> bytes:
    return src + dst + struct.pack("!BBH", 0, proto, len(seg)) + seg


@pytest.mark.parametrize("size", [0, 1, 20, 33, 1480, 2049, 65515])
def test_transport_checksum_matches_reference(size: int) -> None:
    rng = random.Random(size)
    src, dst = rng.randbytes(4), rng.randbytes(4)
    seg = rng.randbytes(size)
    want = reference(_pseudo(src, dst, 6, seg))
    assert transport_checksum(src, dst, 6, seg) == want
    assert transport_checksum(src, dst, 6, memoryview(seg)) == want
    cut = size // 3 | 1 if size > 2 else 0
    assert transport_checksum_parts(src, dst, 6, [seg[:cut], memoryview(seg)[cut:]],
                                    size) == want
    pseudo = src + dst + struct.pack("!BBH", 0, 6, size)
    assert fold(pseudo_header_sum(src, dst, 6, size)) == fold(ones_sum(pseudo))


@pytest.mark.parametrize("payload_len", [0, 1, 7, 1460])
def test_tcp_checksum_matches_scapy(payload_len: int) -> None:
    payload = random.Random(payload_len).randbytes(payload_len)
    pkt = IP(src="10.0.0.2", dst="10.0.0.1") / TCP(sport=1234, dport=3260, seq=5,
                                                   flags="PA") / payload
    raw = bytes(pkt)  # scapy fills in its checksums
    seg = raw[20:]
    src, dst = bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1])
    assert transport_checksum(src, dst, 6, seg) == 0  # verifies
    zeroed = seg[:16] + b"\0\0" + seg[18:]
    assert transport_checksum(src, dst, 6, zeroed) == IP(raw)[TCP].chksum
    # UDP too (same pseudo-header, RFC 768).
    upkt = bytes(IP(src="10.0.0.2", dst="10.0.0.1") / UDP(sport=68, dport=67) / payload)
    useg = upkt[20:]
    zeroed = useg[:6] + b"\0\0" + useg[8:]
    want = IP(upkt)[UDP].chksum
    got = transport_checksum(src, dst, 17, zeroed)
    assert got == want or (got == 0 and want == 0xFFFF)  # UDP sends 0 as 0xFFFF


def test_incremental_update_rfc1624() -> None:
    rng = random.Random(1624)
    for _ in range(500):
        words = [rng.randrange(0x10000) for _ in range(10)]
        data = struct.pack("!10H", *words)
        old = internet_checksum(data)
        i = rng.randrange(10)
        new_word = rng.choice([0, 0xFFFF, rng.randrange(0x10000)])
        words[i] = new_word
        want = internet_checksum(struct.pack("!10H", *words))
        got = incremental_update(old, struct.unpack_from("!H", data, 2 * i)[0], new_word)
        # RFC 1624 eqn. 3 may give 0xFFFF where recomputation gives 0 only when the
        # data sums to zero; otherwise both agree exactly.
        assert got == want or {got, want} == {0, 0xFFFF}
    # An IPv4 header TTL decrement, RFC 1624 §4 style.
    hdr = bytearray(bytes(IP(src="10.0.0.2", dst="10.0.0.1", ttl=64)))
    old_word = struct.unpack_from("!H", hdr, 8)[0]
    hdr[8] = 63
    new_ck = incremental_update(struct.unpack_from("!H", hdr, 10)[0], old_word,
                                struct.unpack_from("!H", hdr, 8)[0])
    hdr[10:12] = struct.pack("!H", new_ck)
    assert verify(hdr[:20])
