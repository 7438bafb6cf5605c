"""Guest images (qemu/images.py) booted in QEMU (TCG) from a local file and through
bootinit: QEMU's NBD client -> NbdServer -> iSCSI over our TCP/IP stack -> tgtd.

Images are built once and cached (``$BOOTINIT_CACHE``, default ``~/.cache/bootinit``);
the first build fetches Debian packages (``apt-get download``) and takes ~20 s.
Every boot uses a copy of the cached image. ``-s`` prints the seconds to each marker.

Run: ``sudo python -m pytest tests/integration/test_qemu_images.py -s``.
"""

from __future__ import annotations

import gzip
import shutil
import stat
import struct
from collections.abc import Callable, Iterator
from ipaddress import IPv4Interface
from pathlib import Path

import pytest

from bootinit.targets import Lun
from firmware_tables import BootConfig, NicConfig, parse_iscsi_url
from qemu import images
from qemu.images import (
    BOOTSECTOR_EXIT_OK,
    DATA_OFFSET,
    LINUX_MARKER,
    LINUX_PANIC_MARKER,
    LINUX_PATTERN_OK,
    PATTERN,
    BootsectorImage,
    CpioEntry,
    ImageError,
    LinuxImage,
    copy_image,
    fnv1a32_words,
    newc_archive,
)
from qemu.launch import QemuConfig, QemuResult, QemuVm, qemu_argv, run_qemu
from qemu.qmp import Qmp
from tests.integration.nbd_env import NbdEnv, nbd_env

MiB = 1 << 20


def _need_qemu() -> None:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("needs qemu-system-x86_64 (apt-get install qemu-system-x86)")


@pytest.fixture(scope="module")
def bootsector() -> BootsectorImage:
    try:
        return images.bootsector_image()
    except ImageError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def linux() -> LinuxImage:
    try:
        return images.linux_image()
    except ImageError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def linux_panic() -> LinuxImage:
    try:
        return images.linux_image(panic=True)
    except ImageError as e:
        pytest.skip(str(e))


@pytest.fixture
def lun_copy() -> Iterator[Path]:
    """A scratch file under /var/tmp for a LUN (tgtd in the namespace can open it)."""
    d = Path("/var/tmp") / f"bootinit-qemu-{id(object()):x}"
    d.mkdir()
    try:
        yield d / "lun.img"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def loop_pump(env: NbdEnv) -> Callable[[float], None]:
    def pump(t: float) -> None:
        env.loop.run_once(min(t, 0.05))
    return pump


# ------------------------------------------------------------- pure parts (no QEMU)


def test_bootsector_image_layout_and_expected_checksum(bootsector: BootsectorImage) -> None:
    raw = bootsector.path.read_bytes()
    assert len(raw) == (1 + bootsector.sectors) * 512 >= MiB
    assert raw[510:512] == b"\x55\xaa"
    assert struct.unpack_from("<II", raw, 0x1B0) == (bootsector.sectors, 1)
    assert fnv1a32_words(raw[512:]) == bootsector.checksum
    assert images.bootsector_image() == bootsector          # cached: same file
    # the hash is order-sensitive: two swapped sectors change it
    data = bytearray(raw[512:])
    data[0:512], data[512:1024] = data[512:1024], data[0:512]
    assert fnv1a32_words(bytes(data)) != bootsector.checksum


def test_linux_image_layout(linux: LinuxImage) -> None:
    raw = linux.path.read_bytes()
    assert len(raw) == images.DISK_SIZE
    assert raw[510:512] == b"\x55\xaa"
    boot, ptype, start, size = struct.unpack_from("<B3xB3xII", raw, 446)
    assert (boot, ptype, start * 512, size * 512) == (0x80, 0x0E, images.PART_START,
                                                      images.PART_SIZE)
    assert raw[images.PART_START + 3:images.PART_START + 11] == b"SYSLINUX"
    assert raw[DATA_OFFSET:DATA_OFFSET + len(PATTERN)] == bytes(len(PATTERN))


def parse_newc(arc: bytes) -> list[tuple[str, int, tuple[int, int], bytes]]:
    """(name, mode, rdev, data) of each member, checking magic and 4-byte alignment."""
    out: list[tuple[str, int, tuple[int, int], bytes]] = []
    pos = 0
    while True:
        assert arc[pos:pos + 6] == b"070701" and pos % 4 == 0
        f = [int(arc[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = f[11], f[6]
        name = arc[pos + 110:pos + 110 + namesize - 1].decode()
        assert arc[pos + 110 + namesize - 1] == 0
        pos = (pos + 110 + namesize + 3) & ~3
        data = arc[pos:pos + filesize]
        pos = (pos + filesize + 3) & ~3
        if name == "TRAILER!!!":
            assert pos == len(arc)
            return out
        out.append((name, f[1], (f[9], f[10]), data))


def test_newc_archive_format() -> None:
    arc = newc_archive([CpioEntry("dev", stat.S_IFDIR | 0o755),
                        CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
                        CpioEntry("init", stat.S_IFREG | 0o755, b"#!/bin/sh\n")])
    assert parse_newc(arc) == [("dev", stat.S_IFDIR | 0o755, (0, 0), b""),
                               ("dev/console", stat.S_IFCHR | 0o600, (5, 1), b""),
                               ("init", stat.S_IFREG | 0o755, (0, 0), b"#!/bin/sh\n")]


def test_initramfs_holds_init_busybox_and_modules() -> None:
    try:
        kernel = images.debian_kernel()
        _deb, bb = images.busybox()
    except ImageError as e:
        pytest.skip(str(e))
    order = kernel.load_order(images.VIRTIO_MODULES)
    assert order.index("virtio_ring") < order.index("virtio") < order.index("virtio_blk")
    assert kernel.load_order(["iscsi_ibft"]) == ["iscsi_boot_sysfs", "iscsi_ibft"]
    members = {m[0]: m for m in parse_newc(gzip.decompress(images.build_initramfs(kernel, bb)))}
    for name in ("init", "bin/busybox", "pattern.bin", "lib/modules/virtio_blk.ko",
                 "lib/modules/iscsi_ibft.ko", "lib/modules/pvpanic_mmio.ko"):
        assert name in members
    assert members["pattern.bin"][3] == PATTERN
    init = members["init"][3].decode()
    assert "insmod /lib/modules/$m.ko" in init and "@" not in init.replace("$@", "")
    assert f"seek={DATA_OFFSET // 65536}" in init


def test_qemu_argv() -> None:
    cfg = QemuConfig(drive="nbd:unix:/run/x.sock", pvpanic=True, panic_action="pause",
                     acpi_tables=["/tmp/ibft.bin"], qmp=True, extra_args=["-cpu", "max"])
    argv = qemu_argv(cfg, Path("/tmp/serial.log"), Path("/tmp/qmp.sock"))
    assert argv[:3] == ["qemu-system-x86_64", "-accel", "tcg"]
    assert "file=nbd:unix:/run/x.sock,format=raw,if=virtio" in argv
    assert "isa-debug-exit,iobase=0xf4,iosize=0x04" in argv
    assert argv[argv.index("pvpanic") - 1:argv.index("pvpanic") + 1] == ["-device", "pvpanic"]
    assert "panic=pause" in argv and "file=/tmp/ibft.bin" in argv
    assert "unix:/tmp/qmp.sock,server=on,wait=off" in argv and argv[-2:] == ["-cpu", "max"]
    with pytest.raises(ValueError, match="panic_action"):
        QemuConfig(drive="x", panic_action="explode")


# ---------------------------------------------------------------------- boot sector


def check_bootsector(res: QemuResult, img: BootsectorImage) -> None:
    assert not res.timed_out, res.serial
    assert res.returncode == BOOTSECTOR_EXIT_OK, (res.returncode, res.serial)
    assert res.debug_exit_code == 0x10
    assert res.lines("BOOTINIT-BOOTSECTOR") == [img.marker]


def test_bootsector_boots_from_a_local_file(bootsector: BootsectorImage) -> None:
    _need_qemu()
    res = run_qemu(QemuConfig(drive=str(bootsector.path), snapshot=True, memory_mb=32), 30,
                   watch=[bootsector.marker])
    check_bootsector(res, bootsector)
    print(f"\nboot sector, local file: marker after {res.marks[bootsector.marker]:.2f} s")
    assert res.seconds < 10


def test_bootsector_boots_through_bootinit_nbd(bootsector: BootsectorImage,
                                               lun_copy: Path) -> None:
    _need_qemu()
    copy_image(bootsector.path, lun_copy)
    with nbd_env(Lun(lun_copy), prefix="bqb") as env:
        res = run_qemu(QemuConfig(drive=env.qemu_uri, memory_mb=32), 60,
                       pump=loop_pump(env), watch=[bootsector.marker])
        check_bootsector(res, bootsector)
        print(f"\nboot sector through bootinit NBD/iSCSI: marker after "
              f"{res.marks[bootsector.marker]:.2f} s, {env.server.counters['reads']} reads")
        assert env.server.counters["bytes_read"] >= bootsector.sectors * 512


# ---------------------------------------------------------------------------- Linux


def check_linux(res: QemuResult) -> None:
    assert not res.timed_out, res.serial[-3000:]
    assert res.returncode == 0, (res.returncode, res.serial[-3000:])
    lines = res.lines("BOOTINIT-")
    assert any(ln.startswith(LINUX_MARKER) for ln in lines), lines
    assert any(ln.startswith(LINUX_PATTERN_OK) for ln in lines), lines
    assert "BOOTINIT-LINUX-DONE" in lines
    assert not any("insmod" in ln for ln in lines), lines


def test_linux_boots_from_a_local_file(linux: LinuxImage, tmp_path: Path) -> None:
    _need_qemu()
    disk = copy_image(linux.path, tmp_path / "disk.img")
    res = run_qemu(QemuConfig(drive=str(disk)), 90, watch=[LINUX_MARKER, LINUX_PATTERN_OK])
    check_linux(res)
    with open(disk, "rb") as f:
        f.seek(DATA_OFFSET)
        assert f.read(len(PATTERN)) == PATTERN
    # no iBFT given: the section is empty
    s = res.serial
    assert s[s.index("BOOTINIT-IBFT-BEGIN"):s.index("BOOTINIT-IBFT-END")].count("\n") == 1
    print(f"\nLinux, local file: marker after {res.marks[LINUX_MARKER]:.1f} s, "
          f"powered off after {res.seconds:.1f} s")


def test_linux_boots_through_bootinit_nbd_with_ibft(linux: LinuxImage, lun_copy: Path,
                                                    tmp_path: Path) -> None:
    _need_qemu()
    copy_image(linux.path, lun_copy)
    with nbd_env(Lun(lun_copy), prefix="bql") as env:
        url = f"iscsi://{env.topo.peer_addr}/{env.tgtd.targets[env.tid].iqn}/1"
        cfg = BootConfig(initiator_name="iqn.2026-11.org.bootinit:qemu-test",
                         nics=(NicConfig(address=IPv4Interface("10.77.0.2/24"),
                                         mac=bytes.fromhex("525400123456")),),
                         targets=(parse_iscsi_url(url),))
        ibft = tmp_path / "ibft.bin"
        ibft.write_bytes(cfg.to_ibft())
        res = run_qemu(QemuConfig(drive=env.qemu_uri, acpi_tables=[ibft]), 180,
                       pump=loop_pump(env),
                       watch=[LINUX_MARKER, LINUX_PATTERN_OK])
        check_linux(res)
        # written by the guest through NBD -> iSCSI, visible in tgtd's backing file
        assert env.file_bytes(DATA_OFFSET, len(PATTERN)) == PATTERN
        s = res.serial
        ibft_lines = [ln.rstrip("\r") for ln in
                      s[s.index("BOOTINIT-IBFT-BEGIN"):s.index("BOOTINIT-IBFT-END")]
                      .splitlines()[1:]]
        values = dict(ln.split("=", 1) for ln in ibft_lines if "=" in ln)
        assert values["/sys/firmware/ibft/initiator/initiator-name"] == \
            "iqn.2026-11.org.bootinit:qemu-test"
        assert values["/sys/firmware/ibft/target0/target-name"] == \
            env.tgtd.targets[env.tid].iqn
        assert values["/sys/firmware/ibft/target0/ip-addr"] == str(env.topo.peer_addr)
        assert values["/sys/firmware/ibft/ethernet0/ip-addr"] == "10.77.0.2"
        c = env.server.counters
        print(f"\nLinux through bootinit NBD/iSCSI: marker after {res.marks[LINUX_MARKER]:.1f} s,"
              f" pattern after {res.marks[LINUX_PATTERN_OK]:.1f} s, powered off after "
              f"{res.seconds:.1f} s; {c['reads']} reads ({c['bytes_read'] >> 20} MiB), "
              f"{c['writes']} writes, {c['flushes']} flushes, "
              f"{c['max_outstanding']} in flight at most")
        assert c["flushes"] >= 1 and c["writes"] >= 1


def test_linux_panic_image_pauses_on_pvpanic(linux_panic: LinuxImage, tmp_path: Path) -> None:
    _need_qemu()
    disk = copy_image(linux_panic.path, tmp_path / "disk.img")
    cfg = QemuConfig(drive=str(disk), pvpanic=True, panic_action="pause", qmp=True)
    with QemuVm(cfg, tmp_path / "vm", watch=[LINUX_MARKER, LINUX_PANIC_MARKER]) as vm:
        vm.start()
        qmp = Qmp.connect(vm.qmp_path or "", timeout=10)
        try:
            ev = qmp.wait_event("GUEST_PANICKED", 90)
            assert ev["data"]["action"] == "pause"
            assert qmp.execute("query-status")["status"] == "guest-panicked"
            res = vm.wait(0.2)
            assert res.returncode is None       # paused, not exited
            assert any(ln.startswith(LINUX_PANIC_MARKER) for ln in res.lines("BOOTINIT-"))
            assert "sysrq triggered crash" in res.serial
            assert "BOOTINIT-LINUX-DONE" not in res.serial
            qmp.execute("quit")
        finally:
            qmp.close()
        assert vm.stop() == 0
