"""A kernel TAP device as a :class:`~netstack.link.base.Link`.

New TAP devices are created through pytap2 (``TapDevice(mode=TapMode.Tap)``); pytap2
sets ``IFF_NO_PI`` unless ``enable_packet_info=True``, so frames carry no packet-info
header, and it never sets ``IFF_VNET_HDR`` (no offload headers, no GSO frames larger
than the MTU). The kernel side is then moved into a network namespace
(``ip link set DEV netns NS``: the file descriptor keeps working), given its MTU, a peer
address or a bridge to join, and brought up.

pytap2 quirks handled here:

* it appends ``%d`` to the requested name, so it can only *create* devices; attaching
  to an existing TAP by its exact name (``--tap NAME``) opens ``/dev/net/tun`` and
  issues ``TUNSETIFF`` directly (``IFF_TAP | IFF_NO_PI``). A tun file resolves names
  in the namespace it was opened in, so a TAP living inside ``--netns`` is attached by
  opening ``/dev/net/tun`` from inside that namespace (:func:`netstack.netns.inside`);
* its ``mtu`` argument is only remembered (used as ``read()``'s default size), never set
  on the device: the MTU is set with ``ip link set DEV mtu N``;
* ``up()``/``ifconfig()`` shell out to ``ifconfig`` in the *current* namespace: unused;
* it registers ``close`` with :mod:`atexit`, which would close the fd number a second
  time at exit (by then possibly reused): the registration is removed on close;
* its descriptor is blocking: it is switched to non-blocking here.

Offloads (``offload=True``): ``IFF_VNET_HDR`` frames (:mod:`netstack.link.gso`) with
checksum offload both ways, GSO super-frames received, and TCP super-frames sent through
:meth:`TapLink.send_gso` for the kernel to segment (TSO, :attr:`TapLink.gso_max_size`).

Kernel facts (Linux 6.x): a TAP's maximum MTU is 65521; writing to a TAP whose
kernel side is down fails with EIO; writes shorter than 14 bytes fail with EINVAL;
after the device vanished (its namespace was deleted) read/write fail with EBADFD; a
frame longer than the read buffer is silently truncated (hence the +1 in ``recv``).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import os
import secrets
import struct
from collections.abc import Callable
from ipaddress import IPv4Interface

from pytap2 import TapDevice, TapMode

from netstack import netns as nsh
from netstack.link.base import BytesLike, LinkError
from netstack.link.gso import (
    ETH_HLEN,
    NO_OFFLOAD_HDR,
    VNET_F_DATA_VALID,
    VNET_F_NEEDS_CSUM,
    VNET_HLEN,
    segment_frame,
    tx_header,
)

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
# virtio_net_hdr flags under which the kernel vouches for the transport checksum
_VNET_TRUSTED = VNET_F_NEEDS_CSUM | VNET_F_DATA_VALID
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04

#: Largest frame the kernel hands over with GSO: a 64 KiB IP datagram plus Ethernet+VLAN.
GSO_FRAME_MAX = 65535 + 18
#: Largest IP datagram (header included) we hand the kernel as one TCP super-segment.
GSO_MAX_SIZE = 65535

#: Largest link MTU accepted (the kernel allows 65521 on a TAP).
MAX_MTU = 65520
#: Smallest IPv4 MTU.
MIN_MTU = 68


def check_ifname(name: str, what: str = "interface name") -> str:
    """Return ``name`` if it is a valid Linux interface name, else raise LinkError."""
    if not 1 <= len(name) <= 15:
        raise LinkError(f"{what} {name!r}: must be 1..15 characters")
    if name in (".", "..") or any(c in name for c in "/: \t\n%") or not name.isprintable():
        raise LinkError(f"{what} {name!r}: contains a character not allowed in names")
    return name


def check_mtu(mtu: int) -> int:
    """Return ``mtu`` if it is within MIN_MTU..MAX_MTU, else raise LinkError."""
    if not isinstance(mtu, int) or isinstance(mtu, bool) or not MIN_MTU <= mtu <= MAX_MTU:
        raise LinkError(f"MTU {mtu!r}: must be an integer in {MIN_MTU}..{MAX_MTU}")
    return mtu


class TapLink:
    """One TAP device; our side is the file descriptor, the kernel side lives in ``netns``.

    Args:
        mtu: link MTU (68..65520), set on the device.
        netns: namespace to move the kernel side into (must exist). ``None`` leaves
            it where it is (only sensible with ``tap=``: a TAP someone else set up).
        peer_ip: address (CIDR) to put on the kernel side (needs ``netns``).
        bridge: bridge inside ``netns`` to enslave the kernel side to (needs ``netns``).
        tap: attach to this existing TAP device instead of creating one. It is looked
            for inside ``netns`` first, then in the root namespace (then moved).
        prefix: name prefix for a created device (first 6 characters are used).
        up: bring the kernel side up.
        offload: open with ``IFF_VNET_HDR`` and enable checksum and TSO offloads
            (``TUNSETOFFLOAD``): frames carry a virtio_net_hdr; received frames may be
            GSO super-frames (up to 64 KiB) whose TCP checksum the kernel vouches for,
            TCP frames we send may leave their checksum to the kernel and, when the
            kernel took the TSO flags too (:attr:`gso_max_size`), be TCP super-frames it
            segments (:meth:`send_gso`). Only for a TAP we create (pytap2 cannot set the
            flag: the device is made with ``TUNSETIFF`` directly). A kernel that refuses
            TSO but takes checksum offload gives a link without TSO; raises
            :class:`LinkError` if it refuses that too.
    """

    def __init__(self, *, mtu: int = 1500, netns: str | None = None,
                 peer_ip: str | IPv4Interface | None = None, bridge: str | None = None,
                 tap: str | None = None, prefix: str = "bitap", up: bool = True,
                 offload: bool = False) -> None:
        self.mtu = check_mtu(mtu)
        self.netns = netns
        self.created = tap is None
        self.offload = offload
        #: Set by the stack when its TCP layer leaves checksums partial (pseudo-header
        #: sum only): then TCP frames go out with NEEDS_CSUM and the kernel completes them.
        self.tx_csum_partial = False
        #: Largest IP datagram :meth:`send_gso` takes as one TCP super-segment (0: none):
        #: GSO_MAX_SIZE once the kernel accepted the TSO offloads; back to 0 if it ever
        #: refuses a super-frame (then they are segmented here).
        self.gso_max_size = 0
        if offload and tap is not None:
            raise LinkError("offloads need a TAP we create (not --tap NAME)")
        self._fd = -1
        self._dev: TapDevice | None = None
        self._closed = False
        self._where: str | None = None  # namespace the kernel side is in now
        self._frame_max = self.mtu + ETH_HLEN
        # where a scattered read (recv_placed, recv_split: offloads only) puts what is
        # past the buffers it was given; made once here, not looked after per frame
        self._spill = memoryview(bytearray(GSO_FRAME_MAX + 1 if offload else 0))
        self._c: dict[str, int] = {
            "rx_frames": 0, "rx_bytes": 0, "tx_frames": 0, "tx_bytes": 0,
            "tx_drop_full": 0, "tx_drop_link_down": 0, "rx_drop_oversize": 0,
        }
        if offload:
            self._frame_max = GSO_FRAME_MAX
            self._c.update({"rx_gso_frames": 0, "rx_csum_trusted": 0,
                            "tx_csum_offloaded": 0, "tx_gso_frames": 0, "tx_gso_segments": 0,
                            "tx_gso_refused": 0, "tx_gso_split": 0})
        if peer_ip is not None and netns is None:
            raise LinkError(f"peer address {peer_ip}: needs a namespace for the kernel side "
                            "(addresses are never added in the root namespace)")
        if bridge is not None and netns is None:
            raise LinkError(f"bridge {bridge!r}: needs the namespace the bridge lives in")
        if bridge is not None and peer_ip is not None:
            raise LinkError(f"bridge {bridge!r} and peer address {peer_ip}: choose one "
                            "(with a bridge, the peer address belongs on the bridge)")
        if netns is not None and not nsh.exists(netns):
            raise LinkError(f"namespace {netns!r} does not exist")
        if netns is None and tap is None:
            raise LinkError("creating a TAP needs a namespace for its kernel side")
        peer = None
        if peer_ip is not None:
            try:
                peer = IPv4Interface(peer_ip)
            except ValueError as e:
                raise LinkError(f"peer address {peer_ip!r}: {e}") from e
        if bridge is not None:
            check_ifname(bridge, "bridge name")
        try:
            if tap is None:
                check_ifname(prefix, "TAP name prefix")
                self.name = self._create_vnet(prefix) if offload else self._create(prefix)
            else:
                self.name = check_ifname(tap, "TAP name")
                self._where = self._attach(tap, netns)
            os.set_blocking(self._fd, False)
            if netns is not None and self._where != netns:
                nsh.move_to(self.name, netns)
                self._where = netns
            nsh.set_mtu(self.name, self.mtu, netns)
            if bridge is not None:
                assert netns is not None
                if not nsh.link_exists(bridge, netns):
                    raise LinkError(f"bridge {bridge!r} does not exist in namespace {netns!r}")
                nsh.enslave(netns, self.name, bridge)
            if peer is not None:
                assert netns is not None
                nsh.add_address(netns, self.name, str(peer))
            if up:
                nsh.link_up(self.name, netns)
        except nsh.NetnsError as e:
            self.close()
            raise LinkError(f"TAP setup failed: {e}") from e
        except BaseException:
            self.close()
            raise

    # -- opening -------------------------------------------------------------------------

    def _create(self, prefix: str) -> str:
        """Create a new (non-persistent) TAP through pytap2; returns its name.

        The name is unique across namespaces (``prefix[:6]`` + 6 hex digits + the
        number pytap2 appends), so it can join a namespace that already has TAPs.
        """
        base = f"{prefix[:6]}{secrets.token_hex(3)}"
        try:
            dev = TapDevice(mode=TapMode.Tap, name=base, mtu=self.mtu)
        except OSError as e:
            raise LinkError(f"cannot create TAP {base}N via /dev/net/tun: {e}") from e
        self._dev = dev
        self._fd = dev.fileno()
        if dev.is_packet_information_enabled:  # pragma: no cover - pytap2 default is off
            raise LinkError("pytap2 enabled the packet-info header (IFF_NO_PI missing)")
        return str(dev.name)

    def _create_vnet(self, prefix: str) -> str:
        """Create a TAP with ``IFF_VNET_HDR`` and offloads on (TUNSETIFF, TUNSETOFFLOAD):
        checksum and TSO (then :attr:`gso_max_size` is set), else checksum only."""
        name = f"{prefix[:6]}{secrets.token_hex(3)}v"
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise LinkError(f"cannot open /dev/net/tun: {e}") from e
        self._fd = fd
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack(
                "16sH", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
        except OSError as e:
            raise LinkError(f"cannot create TAP {name} with offloads: {e}") from e
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
            self.gso_max_size = GSO_MAX_SIZE
        except OSError:
            try:
                fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM)
            except OSError as e:
                raise LinkError(f"cannot create TAP {name} with offloads: {e}") from e
        return name

    def _attach(self, tap: str, netns: str | None) -> str | None:
        """Attach to an existing TAP; returns the namespace it was found in."""
        if netns is not None and nsh.link_exists(tap, netns):
            where: str | None = netns
        elif nsh.link_exists(tap):
            where = None
        else:
            scope = f"namespace {netns!r} or the root namespace" if netns else "root namespace"
            raise LinkError(f"TAP {tap!r} does not exist in the {scope}")
        try:
            if where is None:
                fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
            else:
                with nsh.inside(where):
                    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        except (OSError, nsh.NetnsError) as e:
            raise LinkError(f"cannot open /dev/net/tun to attach {tap!r}: {e}") from e
        self._fd = fd
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", tap.encode(), IFF_TAP | IFF_NO_PI))
        except OSError as e:
            reason = {
                errno.EBUSY: "it is already open by another process",
                errno.EEXIST: "it exists but is not a TAP device (a TUN, or another type)",
                errno.EINVAL: "it exists but is not a TAP device (a TUN, or another type)",
                errno.EPERM: "permission denied (owner/group of the persistent TAP)",
            }.get(e.errno or 0, str(e))
            raise LinkError(f"cannot attach to TAP {tap!r}: {reason}") from e
        return where

    # -- Link protocol -------------------------------------------------------------------

    def fileno(self) -> int:
        """The TAP file descriptor (readable when the kernel has a frame for us)."""
        if self._closed:
            raise LinkError(f"TAP {self.name}: closed")
        return self._fd

    def send(self, frame: BytesLike) -> None:
        """Write one frame. A full queue (EAGAIN/ENOBUFS) or a down link drops and counts."""
        n = len(frame)
        if not ETH_HLEN <= n <= self._frame_max:
            raise LinkError(f"TAP {self.name}: frame of {n} bytes outside "
                            f"{ETH_HLEN}..{self._frame_max} (MTU {self.mtu})")
        try:
            if self.offload:
                hdr = self._tx_header(frame) if self.tx_csum_partial else NO_OFFLOAD_HDR
                os.writev(self._fd, (hdr, frame))
            else:
                os.write(self._fd, frame)
        except (BlockingIOError, InterruptedError):
            self._c["tx_drop_full"] += 1
            return
        except OSError as e:
            self._write_failed(e)
            return
        c = self._c
        c["tx_frames"] += 1
        c["tx_bytes"] += n

    def send_frames(self, frames: list[bytes]) -> None:
        """Write frames in order, each as :meth:`send` does (one ``write`` per frame: a
        TAP takes one frame per write), counted the same; the loop and the counting
        are lean because it runs per frame (bulk TCP output, see NetStack)."""
        if self.offload:
            send = self.send
            for f in frames:
                send(f)
            return
        fd = self._fd
        write = os.write
        frame_max = self._frame_max
        sent = nbytes = 0
        try:
            for f in frames:
                n = len(f)
                if not ETH_HLEN <= n <= frame_max:
                    raise LinkError(f"TAP {self.name}: frame of {n} bytes outside "
                                    f"{ETH_HLEN}..{frame_max} (MTU {self.mtu})")
                try:
                    write(fd, f)
                except (BlockingIOError, InterruptedError):
                    self._c["tx_drop_full"] += 1
                    continue
                except OSError as e:
                    self._write_failed(e)
                    continue
                sent += 1
                nbytes += n
        finally:
            c = self._c
            c["tx_frames"] += sent
            c["tx_bytes"] += nbytes

    def _write_failed(self, e: OSError) -> None:
        """A full queue or a down link drops and counts; anything else raises."""
        if e.errno == errno.ENOBUFS:
            self._c["tx_drop_full"] += 1
        elif e.errno == errno.EIO:
            self._c["tx_drop_link_down"] += 1
        else:
            raise LinkError(f"TAP {self.name}: write failed: {e}") from e

    def send_gso(self, frame: BytesLike, gso_size: int, partial: bool = True) -> None:
        """Write one TCP super-frame (an IP datagram of up to :attr:`gso_max_size` bytes,
        larger than the MTU) for the kernel to cut into segments of ``gso_size`` payload
        bytes: virtio_net_hdr NEEDS_CSUM + GSO TCPV4/TCPV6 (``partial``: the TCP
        checksum holds the pseudo-header sum, as with :attr:`tx_csum_partial`).

        Without TSO (never accepted, or the kernel refused a super-frame once with
        EINVAL: ``tx_gso_refused``, and TSO stays off) the frame is segmented here
        (``tx_gso_split``) and its pieces sent as ordinary frames.
        """
        n = len(frame)
        if not self.gso_max_size or not self.tx_csum_partial or not partial:
            self._send_split(frame, gso_size)
            return
        if not ETH_HLEN <= n <= self._frame_max:
            raise LinkError(f"TAP {self.name}: super-frame of {n} bytes outside "
                            f"{ETH_HLEN}..{self._frame_max}")
        hdr = tx_header(frame, gso_size)
        try:
            os.writev(self._fd, (hdr, frame))
        except (BlockingIOError, InterruptedError):
            self._c["tx_drop_full"] += 1
            return
        except OSError as e:
            if e.errno == errno.EINVAL:
                self._c["tx_gso_refused"] += 1
                self.gso_max_size = 0
                self._send_split(frame, gso_size)
                return
            self._write_failed(e)
            return
        c = self._c
        c["tx_frames"] += 1
        c["tx_bytes"] += n
        c["tx_gso_frames"] += 1
        c["tx_csum_offloaded"] += 1
        hlen = (hdr[3] << 8) | hdr[2]
        c["tx_gso_segments"] += -(-(n - hlen) // gso_size)

    def _send_split(self, frame: BytesLike, gso_size: int) -> None:
        """Segment a super-frame here and send the pieces (their checksums partial when
        :meth:`send` marks TCP frames NEEDS_CSUM, complete otherwise)."""
        c = self._c
        c["tx_gso_split"] = c.get("tx_gso_split", 0) + 1
        for piece in segment_frame(frame, gso_size, self.tx_csum_partial):
            self.send(piece)

    def _tx_header(self, frame: BytesLike) -> bytes:
        """virtio_net_hdr for one outgoing frame: TCP frames (our TCP layer leaves their
        checksum partial when offloading) get NEEDS_CSUM; everything else none."""
        hdr = tx_header(frame)
        if hdr is not NO_OFFLOAD_HDR:
            self._c["tx_csum_offloaded"] += 1
        return hdr

    def recv_offload(self) -> tuple[memoryview, bool] | None:
        """With offloads: one frame (a view past the virtio_net_hdr) and whether the
        kernel vouches for its transport checksum (NEEDS_CSUM: a local packet whose
        checksum was never computed; DATA_VALID: already checked). None when none."""
        c = self._c
        while True:
            try:
                data = os.read(self._fd, VNET_HLEN + GSO_FRAME_MAX + 1)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError as e:
                raise LinkError(f"TAP {self.name}: read failed: {e}") from e
            n = len(data) - VNET_HLEN
            if ETH_HLEN <= n <= GSO_FRAME_MAX:
                break
            c["rx_drop_oversize"] += 1  # (or shorter than an Ethernet header)
        return memoryview(data)[VNET_HLEN:], self._count_vnet_rx(n, data[0], data[1])

    def _count_vnet_rx(self, n: int, flags: int, gso_type: int) -> bool:
        """Count one received frame of ``n`` bytes by its virtio_net_hdr ``flags`` and
        ``gso_type``; whether the kernel vouches for its transport checksum."""
        c = self._c
        c["rx_frames"] += 1
        c["rx_bytes"] += n
        if gso_type:
            c["rx_gso_frames"] += 1
        trusted = bool(flags & _VNET_TRUSTED)
        if trusted:
            c["rx_csum_trusted"] += 1
        return trusted

    def _readv_frame(self, bufs: tuple[bytearray | memoryview, ...]) -> int | None:
        """One frame by ``readv`` over ``bufs`` (the first holding the virtio_net_hdr):
        the bytes read, or None when none is waiting; frames too short or too long
        are dropped and counted (``rx_drop_oversize``)."""
        while True:
            try:
                got = os.readv(self._fd, bufs)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError as e:
                raise LinkError(f"TAP {self.name}: read failed: {e}") from e
            if ETH_HLEN <= got - VNET_HLEN <= GSO_FRAME_MAX:
                return got
            self._c["rx_drop_oversize"] += 1  # (or shorter than an Ethernet header)

    def recv_placed(self, head: bytearray, dest: memoryview
                    ) -> tuple[int, bool, int, memoryview] | None:
        """With offloads: read one frame scattered over ``head`` (virtio_net_hdr plus the
        expected protocol headers), ``dest`` (where the payload of a predicted segment
        belongs, :mod:`netstack.tcp.placement`) and a spill buffer of this link's, by
        one ``readv``. Returns ``(frame length, checksum vouched for, bytes written to
        dest, the rest in the spill buffer)`` — the last a view the next call reuses —
        or None when no frame is waiting. Counted as :meth:`recv_offload` counts."""
        spill = self._spill
        got = self._readv_frame((head, dest, spill))
        if got is None:
            return None
        n = got - VNET_HLEN
        trusted = self._count_vnet_rx(n, head[0], head[1])
        # what readv put past the head: dest first, then the spill buffer (compares, not
        # min/max: once per frame of a bulk read)
        body = got - len(head)
        if body <= 0:
            return n, trusted, 0, spill[:0]
        room = len(dest)
        if body <= room:
            return n, trusted, body, spill[:0]
        return n, trusted, room, spill[:body - room]

    def recv_split(self, head: bytearray, dest: memoryview, gap: memoryview,
                   then: memoryview
                   ) -> tuple[int, bool, int, memoryview, int, memoryview] | None:
        """:meth:`recv_placed` with a continuation (:mod:`netstack.tcp.placement`): the
        frame scattered over ``head``, ``dest`` (the rest of the placement window, maybe
        empty), ``gap`` (the predicted header), ``then`` (where the bytes after it
        belong) and the spill buffer, by one ``readv``. Returns ``(frame length,
        checksum vouched for, bytes written to dest, the part of gap written, bytes
        written to then, the rest in the spill buffer)``, or None when no frame is
        waiting."""
        spill = self._spill
        got = self._readv_frame((head, dest, gap, then, spill))
        if got is None:
            return None
        n = got - VNET_HLEN
        trusted = self._count_vnet_rx(n, head[0], head[1])
        body = got - len(head)
        room = len(dest)
        if body <= room:
            return n, trusted, max(body, 0), gap[:0], 0, spill[:0]
        body -= room
        g = len(gap)
        if body <= g:
            return n, trusted, room, gap[:body], 0, spill[:0]
        body -= g
        t = len(then)
        if body <= t:
            return n, trusted, room, gap, body, spill[:0]
        return n, trusted, room, gap, t, spill[:body - t]

    def recv(self) -> bytes | None:
        """Read one frame (at most mtu + 14 bytes), or None when none is waiting.

        The kernel silently truncates a frame longer than the read buffer, so one byte
        more is asked for: a frame that fills it was larger than mtu + 14 (the kernel
        side's MTU was raised behind our back) and is dropped (``rx_drop_oversize``).
        """
        if self.offload:
            got = self.recv_offload()
            return None if got is None else bytes(got[0])
        limit = self._frame_max
        c = self._c
        while True:
            try:
                frame = os.read(self._fd, limit + 1)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError as e:
                raise LinkError(f"TAP {self.name}: read failed: {e}") from e
            if len(frame) <= limit:
                c["rx_frames"] += 1
                c["rx_bytes"] += len(frame)
                return frame
            c["rx_drop_oversize"] += 1

    def recv_batch(self, deliver: Callable[[bytes, float], None], now: float,
                   max_frames: int, max_bytes: int) -> int:
        """Read frames and hand each to ``deliver(frame, now)`` as it comes, like
        :meth:`recv` in a loop: until none is waiting, ``max_frames`` were delivered, or
        the bytes delivered reach ``max_bytes``. Returns how many were delivered.

        Without offloads only (the stack reads those with :meth:`recv_offload`). One
        call per wake-up instead of one per frame, and the ``rx_frames``/``rx_bytes``
        counters added once at the end (also when ``deliver`` raises): at MTU 1500 that
        is ~0.3 us of the ~8 us a frame costs. Oversized frames are dropped and counted
        as in :meth:`recv` and do not count towards the limits.
        """
        if self.offload:
            raise LinkError(f"TAP {self.name}: recv_batch is for a TAP without offloads")
        fd = self._fd
        size = self._frame_max + 1
        read = os.read
        c = self._c
        frames = nbytes = 0
        try:
            while frames < max_frames:
                try:
                    frame = read(fd, size)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as e:
                    raise LinkError(f"TAP {self.name}: read failed: {e}") from e
                n = len(frame)
                if n == size:
                    c["rx_drop_oversize"] += 1
                    continue
                frames += 1
                nbytes += n
                deliver(frame, now)
                if nbytes >= max_bytes:
                    break
        finally:
            c["rx_frames"] += frames
            c["rx_bytes"] += nbytes
        return frames

    def next_deadline(self) -> float | None:
        """A TAP has no timers."""
        return None

    def poll(self, now: float) -> None:
        """Nothing to do on time."""

    def counters(self) -> dict[str, int]:
        """rx/tx frames and bytes, drops by reason."""
        return dict(self._c)

    def close(self) -> None:
        """Close the descriptor; a TAP we created is deleted (idempotent)."""
        if self._closed:
            return
        self._closed = True
        dev, self._dev = self._dev, None
        if dev is not None:
            atexit.unregister(dev.close)
            dev.close()
        elif self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = -1
        name = getattr(self, "name", None)
        # Closing the last fd of a non-persistent TAP deletes it; make sure of it.
        if self.created and name is not None:
            where = self._where
            with contextlib.suppress(nsh.NetnsError):
                if (where is None or nsh.exists(where)) and nsh.link_exists(name, where):
                    nsh.delete_link(name, where)

    def __enter__(self) -> TapLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TapLink({getattr(self, 'name', '?')!r}, mtu={self.mtu}, netns={self.netns!r})"
