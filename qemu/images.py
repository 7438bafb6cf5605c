"""Guest disk images for QEMU tests, built from Debian packages only and cached.

* :func:`bootsector_image` -- a raw disk whose MBR (``qemu/bootsector.S``, assembled with
  binutils' ``as``/``ld``) reads ``sectors`` sectors with BIOS INT 13h AH=42h, hashes
  them (FNV-1a over 32-bit words, :func:`fnv1a32_words`), prints
  ``BOOTINIT-BOOTSECTOR OK sum=xxxxxxxx sectors=N`` on COM1 and leaves QEMU through
  ``isa-debug-exit`` (status 33). The sectors after the MBR hold deterministic data
  (SHAKE-256 of a fixed label), so Python knows the expected sum.
* :func:`linux_image` -- a raw disk: MBR (syslinux ``mbr.bin``) + one bootable FAT16
  partition (``mkfs.vfat --offset``, ``mcopy``, ``syslinux --offset --install``: no
  mount, no loop device) holding Debian's kernel (``linux-image-amd64``) and a busybox
  initramfs (``busybox-static`` + the kernel's virtio, iBFT and pvpanic modules). Its
  init prints ``BOOTINIT-LINUX-MARKER``, writes :data:`PATTERN` at :data:`DATA_OFFSET`
  of ``/dev/vda`` (past the partition), reads it back (``BOOTINIT-LINUX-PATTERN OK``),
  loads ``iscsi_ibft`` and prints every file under ``/sys/firmware/ibft`` as
  ``path=value`` between ``BOOTINIT-IBFT-BEGIN``/``-END``, then ``poweroff -f``.
  ``panic=True`` builds the variant that instead ends in ``echo c >
  /proc/sysrq-trigger`` after loading the pvpanic driver (``BOOTINIT-LINUX-PANIC``).

Guest contents come from ``.deb`` files fetched with ``apt-get download`` and unpacked
with ``dpkg-deb -x`` (never installed); host tools (binutils, dosfstools, mtools,
syslinux, syslinux-common) must be installed. Results are cached under
``$BOOTINIT_CACHE`` (default ``~/.cache/bootinit``), keyed by the build inputs (package
versions, the script's source); a cached image is reused as is. Copy an image before
booting it writable (see :func:`copy_image`).

``python -m qemu.images`` builds everything and prints the paths.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import io
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
BOOTSECTOR_SOURCE = HERE / "bootsector.S"

BOOTSECTOR_MARKER = "BOOTINIT-BOOTSECTOR OK"
BOOTSECTOR_EXIT_OK = 33     # isa-debug-exit: (0x10 << 1) | 1
BOOTSECTOR_EXIT_FAIL = 35   # (0x11 << 1) | 1
LINUX_MARKER = "BOOTINIT-LINUX-MARKER"
LINUX_PATTERN_OK = "BOOTINIT-LINUX-PATTERN OK"
LINUX_PANIC_MARKER = "BOOTINIT-LINUX-PANIC"
LINUX_DONE = "BOOTINIT-LINUX-DONE"

MiB = 1 << 20
#: Linux image layout: FAT16 partition at 1 MiB (24 MiB), data region at 32 MiB.
PART_START = 1 * MiB
PART_SIZE = 24 * MiB
DATA_OFFSET = 32 * MiB
DISK_SIZE = 40 * MiB
#: The bytes the Linux guest writes at DATA_OFFSET of its disk.
PATTERN = hashlib.shake_256(b"bootinit-linux-pattern").digest(64 * 1024)
DISK_SIGNATURE = 0xB0071417

VIRTIO_MODULES = ("virtio_pci", "virtio_blk")
IBFT_MODULES = ("iscsi_ibft",)
PANIC_MODULES = ("pvpanic_mmio", "pvpanic_pci")

#: apt packages providing the host tools, by tool.
HOST_TOOLS = {"as": "binutils", "ld": "binutils", "mkfs.vfat": "dosfstools",
              "mcopy": "mtools", "syslinux": "syslinux", "apt-get": "apt",
              "dpkg-deb": "dpkg"}
SYSLINUX_FILES = (Path("/usr/lib/syslinux/mbr/mbr.bin"),)


class ImageError(Exception):
    """An image could not be built; the message says what is missing or failed."""


# --------------------------------------------------------------------------- helpers


def cache_dir() -> Path:
    """``$BOOTINIT_CACHE`` or ``~/.cache/bootinit`` (created)."""
    env = os.environ.get("BOOTINIT_CACHE")
    d = Path(env) if env else Path.home() / ".cache" / "bootinit"
    d.mkdir(parents=True, exist_ok=True)
    return d


def missing_host_tools(tools: Iterable[str]) -> list[str]:
    """Debian packages to install for the missing ``tools`` (empty: all there)."""
    pkgs = []
    for t in tools:
        if shutil.which(t) is None:
            pkg = HOST_TOOLS.get(t, t)
            if pkg not in pkgs:
                pkgs.append(pkg)
    return pkgs


def _need(tools: Iterable[str], files: Iterable[Path] = ()) -> None:
    pkgs = missing_host_tools(tools)
    for f in files:
        if not f.exists() and "syslinux-common" not in pkgs:
            pkgs.append("syslinux-common")
    if pkgs:
        raise ImageError(f"missing host tools: apt-get install {' '.join(pkgs)}")


def _run(argv: Sequence[str], cwd: Path | None = None, timeout: float = 300) -> str:
    try:
        p = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True,
                           timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ImageError(f"{' '.join(argv)}: {e}") from e
    if p.returncode != 0:
        raise ImageError(f"{' '.join(argv)} exited {p.returncode}: "
                         f"{(p.stderr or p.stdout).strip()[-2000:]}")
    return p.stdout


@contextlib.contextmanager
def _locked(cache: Path, name: str) -> Iterator[None]:
    """Serialize builds of ``name`` between processes sharing the cache."""
    with open(cache / f".{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _publish(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)


def _key(*parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode() + b"\0")
    return h.hexdigest()[:16]


def copy_image(src: Path, dst: Path) -> Path:
    """Copy an image (sparse where the source has zero blocks) for writable use."""
    bs = 1 << 16
    zero = bytes(bs)
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        while True:
            b = fi.read(bs)
            if not b:
                break
            if b == zero[:len(b)]:
                fo.seek(len(b), os.SEEK_CUR)
            else:
                fo.write(b)
        fo.truncate()
    return dst


# ------------------------------------------------------------------------ boot sector


def fnv1a32_words(data: bytes, h: int = 0x811C9DC5) -> int:
    """FNV-1a over little-endian 32-bit words (what the boot sector computes)."""
    if len(data) % 4:
        raise ValueError(f"{len(data)} bytes is not a whole number of 32-bit words")
    for (w,) in struct.iter_unpack("<I", data):
        h = ((h ^ w) * 0x01000193) & 0xFFFFFFFF
    return h


def bootsector_data(sectors: int) -> bytes:
    """The deterministic contents of the sectors after the MBR."""
    return hashlib.shake_256(b"bootinit-bootsector").digest(sectors * 512)


@dataclass(frozen=True)
class BootsectorImage:
    """A built boot-sector disk."""

    path: Path
    sectors: int
    checksum: int

    @property
    def marker(self) -> str:
        """The exact line the boot sector prints when it read everything right."""
        return f"{BOOTSECTOR_MARKER} sum={self.checksum:08x} sectors={self.sectors}"


def assemble_bootsector(workdir: Path) -> bytes:
    """Assemble and link ``bootsector.S`` into the 512-byte MBR."""
    _need(("as", "ld"))
    obj, binary = workdir / "bs.o", workdir / "bs.bin"
    _run(["as", "--32", "-o", str(obj), str(BOOTSECTOR_SOURCE)])
    _run(["ld", "-m", "elf_i386", "-Ttext", "0x7c00", "--oformat", "binary", "-o",
          str(binary), str(obj)])
    code = binary.read_bytes()
    if len(code) != 512 or code[510:] != b"\x55\xaa":
        raise ImageError(f"boot sector is {len(code)} bytes / bad signature")
    return code


def bootsector_image(sectors: int = 4095, cache: Path | None = None) -> BootsectorImage:
    """Build (or reuse) the boot-sector disk: 1 + ``sectors`` sectors (at least 1 MiB)."""
    if not 2047 <= sectors <= 0xFFFFFFFE:
        raise ValueError(f"sectors {sectors}: the disk must be at least 1 MiB "
                         "(2047 data sectors)")
    cache = cache or cache_dir()
    key = _key("bootsector", 1, BOOTSECTOR_SOURCE.read_bytes(), sectors,
               _tool_version("as"))
    path = cache / f"bootsector-{key}.img"
    data = bootsector_data(sectors)
    checksum = fnv1a32_words(data)
    with _locked(cache, "bootsector"):
        if not path.exists():
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                mbr = bytearray(assemble_bootsector(Path(tmp)))
                mbr[0x1B0:0x1B8] = struct.pack("<II", sectors, 1)
                out = Path(tmp) / "disk.img"
                out.write_bytes(bytes(mbr) + data)
                _publish(out, path)
    return BootsectorImage(path, sectors, checksum)


def _tool_version(tool: str) -> str:
    exe = shutil.which(tool)
    if exe is None:
        return "missing"
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True,
                             timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.splitlines()[0] if out else "unknown"


# ------------------------------------------------------------------- debian packages


@dataclass(frozen=True)
class DebPackage:
    """A package ``apt-get download`` fetched: name, version, .deb path."""

    name: str
    version: str
    deb: Path


def _candidate(name: str) -> str | None:
    try:
        out = subprocess.run(["apt-cache", "policy", name], capture_output=True, text=True,
                             timeout=60, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"Candidate:\s*(\S+)", out)
    return m.group(1) if m and m.group(1) != "(none)" else None


def kernel_package_name() -> str:
    """The versioned kernel package ``linux-image-amd64`` depends on."""
    out = _run(["apt-cache", "depends", "linux-image-amd64"])
    m = re.search(r"Depends:\s*(linux-image-\d\S*-amd64)\b", out)
    if not m:
        raise ImageError("apt-cache depends linux-image-amd64 names no kernel package "
                         "(run apt-get update)")
    return m.group(1)


def fetch_deb(name: str, cache: Path | None = None) -> DebPackage:
    """``apt-get download`` the candidate version of ``name`` into the cache (reused)."""
    cache = cache or cache_dir()
    debs = cache / "debs"
    debs.mkdir(exist_ok=True)
    version = _candidate(name)
    if version is None:
        # offline / no lists: take a .deb fetched before
        old = sorted(debs.glob(f"{name}_*.deb"))
        if old:
            return DebPackage(name, old[-1].name.split("_")[1], old[-1])
        raise ImageError(f"apt-cache knows no version of {name} (run apt-get update)")
    with _locked(cache, f"deb-{name}"):
        quoted = version.replace(":", "%3a")
        found = list(debs.glob(f"{name}_{quoted}_*.deb"))
        if not found:
            _need(("apt-get",))
            with tempfile.TemporaryDirectory(dir=debs) as tmp:
                os.chmod(tmp, 0o755)
                _run(["apt-get", "download", "-q", f"{name}={version}"], cwd=Path(tmp),
                     timeout=600)
                got = list(Path(tmp).glob("*.deb"))
                if len(got) != 1:
                    raise ImageError(f"apt-get download {name}={version} gave {got}")
                final = debs / got[0].name
                _publish(got[0], final)
                found = [final]
    return DebPackage(name, version, found[0])


def _extract(deb: DebPackage, dest: Path) -> None:
    _need(("dpkg-deb",))
    _run(["dpkg-deb", "-x", str(deb.deb), str(dest)], timeout=600)


# --------------------------------------------------------------------------- kernel


def modinfo(ko: bytes) -> dict[str, list[str]]:
    """The ``.modinfo`` section of an ELF64 kernel module as key -> values."""
    if ko[:4] != b"\x7fELF" or ko[4] != 2 or ko[5] != 1:
        raise ImageError("not a little-endian ELF64 kernel module")
    shoff = struct.unpack_from("<Q", ko, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ko, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        base = shoff + i * shentsize
        name = struct.unpack_from("<I", ko, base)[0]
        off, size = struct.unpack_from("<QQ", ko, base + 0x18)
        return name, off, size

    _, stroff, _ = section(shstrndx)
    for i in range(shnum):
        name, off, size = section(i)
        end = ko.index(b"\0", stroff + name)
        if ko[stroff + name:end] == b".modinfo":
            info: dict[str, list[str]] = {}
            for item in ko[off:off + size].split(b"\0"):
                k, sep, v = item.decode(errors="replace").partition("=")
                if sep:
                    info.setdefault(k, []).append(v)
            return info
    return {}


def _norm(name: str) -> str:
    return name.replace("-", "_")


@dataclass
class Kernel:
    """Debian's kernel: vmlinuz and a flat directory of the modules the guest needs."""

    package: DebPackage
    release: str
    vmlinuz: Path
    module_dir: Path
    #: module name -> file name in module_dir
    modules: dict[str, str] = field(default_factory=dict)
    #: module name -> its dependencies (module names)
    depends: dict[str, list[str]] = field(default_factory=dict)

    def load_order(self, wanted: Iterable[str]) -> list[str]:
        """``wanted`` with their dependencies, dependencies first (insmod order)."""
        order: list[str] = []

        def visit(m: str, stack: tuple[str, ...]) -> None:
            if m in order:
                return
            if m in stack:
                raise ImageError(f"module dependency cycle: {' -> '.join((*stack, m))}")
            for d in self.depends.get(m, []):
                visit(d, (*stack, m))
            order.append(m)

        for w in wanted:
            visit(_norm(w), ())
        return order


def debian_kernel(cache: Path | None = None) -> Kernel:
    """Fetch ``linux-image-amd64``'s kernel package, keep vmlinuz and the modules the
    guest needs (with their dependencies); the rest of the package is not kept."""
    cache = cache or cache_dir()
    try:
        pkgname = kernel_package_name()
        deb = fetch_deb(pkgname, cache)
    except ImageError:
        old = sorted(cache.glob("kernel-*/release"))
        if not old:
            raise
        return _load_kernel(old[-1].parent)
    kdir = cache / f"kernel-{deb.name}-{deb.version.replace(':', '_')}"
    with _locked(cache, "kernel"):
        if not (kdir / "release").exists():
            _build_kernel_dir(deb, kdir, cache)
    return _load_kernel(kdir)


def _build_kernel_dir(deb: DebPackage, kdir: Path, cache: Path) -> None:
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        root = Path(tmp) / "x"
        _extract(deb, root)
        vmlinuz = sorted((root / "boot").glob("vmlinuz-*"))
        if not vmlinuz:
            raise ImageError(f"{deb.deb.name} holds no /boot/vmlinuz-*")
        release = vmlinuz[0].name.removeprefix("vmlinuz-")
        moddirs = [d for d in (root / "lib/modules" / release,
                               root / "usr/lib/modules" / release) if d.is_dir()]
        if not moddirs:
            raise ImageError(f"{deb.deb.name} holds no modules for {release}")
        index: dict[str, Path] = {}
        for p in moddirs[0].rglob("*.ko*"):
            index[_norm(p.name.split(".ko")[0])] = p
        out = Path(tmp) / "kernel"
        (out / "modules").mkdir(parents=True)
        shutil.copy2(vmlinuz[0], out / "vmlinuz")
        deps: dict[str, list[str]] = {}
        todo = [_norm(m) for m in (*VIRTIO_MODULES, *IBFT_MODULES, *PANIC_MODULES)]
        while todo:
            m = todo.pop()
            if m in deps:
                continue
            src = index.get(m)
            if src is None:
                raise ImageError(f"module {m} not found in {deb.deb.name}")
            data = _read_module(src)
            (out / "modules" / f"{m}.ko").write_bytes(data)
            info = modinfo(data)
            deps[m] = [_norm(d) for d in ",".join(info.get("depends", [])).split(",") if d]
            todo.extend(deps[m])
        (out / "depends").write_text("".join(f"{m}: {' '.join(d)}\n"
                                             for m, d in sorted(deps.items())))
        (out / "package").write_text(f"{deb.name} {deb.version}\n")
        (out / "release").write_text(release + "\n")
        if kdir.exists():
            shutil.rmtree(kdir)
        os.replace(out, kdir)


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        import lzma
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        raise ImageError(f"{path.name}: zstd-compressed modules are not supported")
    return data


def _load_kernel(kdir: Path) -> Kernel:
    name, version = (kdir / "package").read_text().split()
    k = Kernel(DebPackage(name, version, Path()), (kdir / "release").read_text().strip(),
               kdir / "vmlinuz", kdir / "modules")
    for line in (kdir / "depends").read_text().splitlines():
        m, _, rest = line.partition(":")
        k.depends[m] = rest.split()
        k.modules[m] = f"{m}.ko"
    return k


def busybox(cache: Path | None = None) -> tuple[DebPackage, Path]:
    """``busybox-static``'s binary, extracted into the cache."""
    cache = cache or cache_dir()
    deb = fetch_deb("busybox-static", cache)
    out = cache / f"busybox-{deb.version.replace(':', '_')}"
    with _locked(cache, "busybox"):
        if not (out / "busybox").exists():
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                _extract(deb, Path(tmp))
                for cand in (Path(tmp) / "bin/busybox", Path(tmp) / "usr/bin/busybox"):
                    if cand.exists():
                        out.mkdir(exist_ok=True)
                        shutil.copy2(cand, out / "busybox.tmp")
                        os.replace(out / "busybox.tmp", out / "busybox")
                        break
                else:
                    raise ImageError(f"{deb.deb.name} holds no busybox binary")
    return deb, out / "busybox"


# ------------------------------------------------------------------------ initramfs


@dataclass(frozen=True)
class CpioEntry:
    """One member of a newc archive."""

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def newc_archive(entries: Iterable[CpioEntry], mtime: int = 0) -> bytes:
    """A cpio archive in the "newc" format the kernel unpacks (initramfs), trailer
    included; uid/gid 0 and a fixed mtime so the bytes are reproducible."""
    out = io.BytesIO()

    def pad() -> None:
        out.write(b"\0" * (-out.tell() % 4))

    for ino, e in enumerate((*entries, CpioEntry("TRAILER!!!", 0)), start=1):
        name = e.name.encode() + b"\0"
        fields = (ino if e.name != "TRAILER!!!" else 0, e.mode, 0, 0,
                  2 if stat.S_ISDIR(e.mode) else 1, mtime, len(e.data), 0, 0,
                  e.rdev[0], e.rdev[1], len(name), 0)
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        out.write(name)
        pad()
        out.write(e.data)
        pad()
    return out.getvalue()


INIT_SCRIPT = r"""#!/bin/busybox sh
# bootinit test guest init (qemu/images.py)
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/busybox --install -s /bin
export PATH=/bin
echo "BOOTINIT-LINUX-MARKER kernel=$(uname -r)"
load() {
    for m in "$@"; do
        insmod /lib/modules/$m.ko 2>/tmp/insmod.err || \
            echo "BOOTINIT-LINUX insmod $m: $(cat /tmp/insmod.err)"
    done
}
load @VIRTIO@
n=0
while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
if [ -b /dev/vda ]; then
    dd if=/pattern.bin of=/dev/vda bs=65536 seek=@SEEK@ count=1 conv=fsync 2>/tmp/dd.err \
        || echo "BOOTINIT-LINUX dd write: $(cat /tmp/dd.err)"
    sync
    blockdev --flushbufs /dev/vda
    echo 3 > /proc/sys/vm/drop_caches
    dd if=/dev/vda of=/tmp/back.bin bs=65536 skip=@SEEK@ count=1 2>/dev/null
    if cmp -s /pattern.bin /tmp/back.bin; then
        sum=$(md5sum < /tmp/back.bin | cut -d' ' -f1)
        echo "BOOTINIT-LINUX-PATTERN OK offset=@OFFSET@ length=65536 md5=$sum"
    else
        echo "BOOTINIT-LINUX-PATTERN FAIL offset=@OFFSET@"
    fi
else
    echo "BOOTINIT-LINUX-PATTERN FAIL no /dev/vda"
fi
load @IBFT@
echo "BOOTINIT-IBFT-BEGIN"
if [ -d /sys/firmware/ibft ]; then
    find /sys/firmware/ibft -type f | sort | while read -r f; do
        v=$(cat "$f" 2>/dev/null | tr '\n' ' ')
        echo "$f=${v% }"
    done
fi
echo "BOOTINIT-IBFT-END"
if grep -q "bootinit.panic=1" /proc/cmdline; then
    load @PANIC@
    echo "BOOTINIT-LINUX-PANIC sysrq-trigger"
    echo c > /proc/sysrq-trigger
fi
echo "BOOTINIT-LINUX-DONE"
poweroff -f
"""


def init_script(kernel: Kernel) -> str:
    """The guest's /init with the module load orders filled in."""
    virtio = kernel.load_order(VIRTIO_MODULES)
    ibft = [m for m in kernel.load_order(IBFT_MODULES) if m not in virtio]
    panic = [m for m in kernel.load_order(PANIC_MODULES) if m not in virtio + ibft]
    return (INIT_SCRIPT.replace("@VIRTIO@", " ".join(virtio))
            .replace("@IBFT@", " ".join(ibft)).replace("@PANIC@", " ".join(panic))
            .replace("@SEEK@", str(DATA_OFFSET // 65536))
            .replace("@OFFSET@", str(DATA_OFFSET)))


def build_initramfs(kernel: Kernel, busybox_bin: Path) -> bytes:
    """gzip-compressed newc initramfs: busybox, /init, /pattern.bin, the modules."""
    entries = [CpioEntry(d, stat.S_IFDIR | 0o755)
               for d in ("bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules")]
    entries.append(CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    entries.append(CpioEntry("bin/busybox", stat.S_IFREG | 0o755, busybox_bin.read_bytes()))
    entries.append(CpioEntry("init", stat.S_IFREG | 0o755, init_script(kernel).encode()))
    entries.append(CpioEntry("pattern.bin", stat.S_IFREG | 0o644, PATTERN))
    for m in sorted(kernel.modules):
        entries.append(CpioEntry(f"lib/modules/{m}.ko", stat.S_IFREG | 0o644,
                                 (kernel.module_dir / kernel.modules[m]).read_bytes()))
    raw = newc_archive(entries)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=6, mtime=0) as gz:
        gz.write(raw)
    return buf.getvalue()


# ---------------------------------------------------------------------- Linux disk


def kernel_cmdline(panic: bool) -> str:
    """The kernel command line syslinux passes."""
    return "console=ttyS0 quiet loglevel=3" + (" bootinit.panic=1" if panic else "")


def syslinux_cfg(panic: bool) -> str:
    """syslinux.cfg: boot /vmlinuz with /initrd.gz at once, banner on COM1."""
    return ("SERIAL 0 115200\nDEFAULT linux\nPROMPT 0\nTIMEOUT 0\nLABEL linux\n"
            "  LINUX /vmlinuz\n  INITRD /initrd.gz\n"
            f"  APPEND {kernel_cmdline(panic)}\n")


def mbr_partition_entry(start: int, size: int, ptype: int = 0x0E,
                        bootable: bool = True) -> bytes:
    """A 16-byte MBR partition entry in LBA terms (CHS fields set to "use LBA")."""
    return struct.pack("<B3sB3sII", 0x80 if bootable else 0, b"\xfe\xff\xff", ptype,
                       b"\xfe\xff\xff", start // 512, size // 512)


@dataclass(frozen=True)
class LinuxImage:
    """A built Linux guest disk."""

    path: Path
    panic: bool
    kernel_release: str
    packages: tuple[str, ...]
    data_offset: int = DATA_OFFSET
    pattern: bytes = field(default=PATTERN, repr=False)


def linux_image(panic: bool = False, cache: Path | None = None) -> LinuxImage:
    """Build (or reuse) the Linux guest disk (see the module doc)."""
    _need(("mkfs.vfat", "mcopy", "syslinux"), SYSLINUX_FILES)
    cache = cache or cache_dir()
    kernel = debian_kernel(cache)
    bb_deb, bb = busybox(cache)
    pkgs = (f"{kernel.package.name}={kernel.package.version}",
            f"busybox-static={bb_deb.version}",
            f"syslinux={_candidate('syslinux') or 'installed'}")
    script_src = Path(__file__).read_bytes()
    key = _key("linux", 1, panic, pkgs, script_src, _tool_version("mkfs.vfat"))
    path = cache / f"linux-{'panic-' if panic else ''}{key}.img"
    with _locked(cache, "linux"):
        if not path.exists():
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                out = _build_linux_disk(Path(tmp), kernel, bb, panic)
                _publish(out, path)
    return LinuxImage(path, panic, kernel.release, pkgs)


def _build_linux_disk(tmp: Path, kernel: Kernel, bb: Path, panic: bool) -> Path:
    disk = tmp / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(DISK_SIZE)
    fixed = 1704067200  # 2024-01-01: file times on the FAT
    files = {"vmlinuz": kernel.vmlinuz.read_bytes(),
             "initrd.gz": build_initramfs(kernel, bb),
             "syslinux.cfg": syslinux_cfg(panic).encode()}
    for name, data in files.items():
        (tmp / name).write_bytes(data)
        os.utime(tmp / name, (fixed, fixed))
    total = sum(len(d) for d in files.values())
    if total > PART_SIZE - 2 * MiB:
        raise ImageError(f"kernel + initramfs ({total} bytes) do not fit the "
                         f"{PART_SIZE >> 20} MiB partition")
    _run(["mkfs.vfat", "-F", "16", f"--offset={PART_START // 512}", "--invariant",
          "-i", "B0071417", "-n", "BOOTINIT", str(disk), str(PART_SIZE // 1024)])
    img = f"{disk}@@{PART_START}"
    for name in files:
        _run(["mcopy", "-m", "-i", img, str(tmp / name), f"::{name}"])
    _run(["syslinux", "--install", "--offset", str(PART_START), str(disk)])
    mbr_code = SYSLINUX_FILES[0].read_bytes()[:440]
    with open(disk, "r+b") as f:
        f.seek(0)
        f.write(mbr_code)
        f.write(struct.pack("<IH", DISK_SIGNATURE, 0))
        f.write(mbr_partition_entry(PART_START, PART_SIZE))
        f.write(bytes(48))
        f.write(b"\x55\xaa")
    return disk


def main() -> int:
    """Build every image; print their paths."""
    bs = bootsector_image()
    print(f"bootsector {bs.path} ({bs.marker})")
    for panic in (False, True):
        li = linux_image(panic)
        print(f"linux{'-panic' if panic else ''} {li.path} kernel {li.kernel_release} "
              f"({', '.join(li.packages)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
