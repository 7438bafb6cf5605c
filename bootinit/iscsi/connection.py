"""The glue between a pure :class:`~bootinit.iscsi.session.Session` and the network stack.

:class:`IscsiConnection` lives in the loop as a deadline source and owns the session's
current TCP connection (:meth:`netstack.stack.NetStack.connect`).  It

* opens, closes and aborts TCP connections when the session asks
  (:meth:`Session.transport_action`), also across recoveries and redirections;
* feeds every received byte to :meth:`Session.receive` from the connection's callback
  (the stack calls it after each batch of input), and names where the next Data-In
  bytes belong so the stack can read them straight there (``set_placement``, parsing
  ahead in the middle of a batch: :mod:`netstack.tcp.placement`);
* writes the session's output with :meth:`Session.flush_to` as far as the TCP send
  buffer takes it (``send`` is bounded); the rest goes when the stack reports space;
* drives the session's deadlines (``next_deadline`` / ``on_deadline``).

Nothing here blocks; the synchronous API (:mod:`bootinit.initiator`,
:mod:`bootinit.blockdev`) runs the loop until a task is done.
"""

from __future__ import annotations

import logging

from bootinit.iscsi.session import Session
from bootinit.iscsi.text import Portal
from netstack.stack import NetStack
from netstack.tcp.connection import TcpConfig, TcpConnection, TcpError

log = logging.getLogger("bootinit.iscsi.connection")


class IscsiConnection:
    """Binds one session to a :class:`NetStack` for the session's whole life."""

    def __init__(self, stack: NetStack, session: Session,
                 tcp_config: TcpConfig | None = None) -> None:
        self.stack = stack
        self.loop = stack.loop
        self.session = session
        self.tcp_config = tcp_config
        self.conn: TcpConnection | None = None
        self._made = False
        self._closed = False
        # Inside _on_tcp: commands submitted from completion callbacks are written by
        # the service() at its end (see submitted()).
        self._in_tcp = False
        self.connects = 0
        self.loop.add_deadline_source(self)
        self.service()

    # ------------------------------------------------------------ deadline source

    def _has_work(self) -> bool:
        s = self.session
        if s.transport_action() is not None:
            return True
        c = self.conn
        return (c is not None and self._made and c.connected and s.has_output()
                and c.send_space() > 0)

    def next_deadline(self) -> float | None:
        """Now when there is something to do at once, else the session's deadline."""
        if self._closed:
            return None
        if self._has_work():
            return 0.0
        return self.session.next_deadline()

    def on_deadline(self, now: float) -> None:
        """Fire the session's timers, then act on its requests and flush its output."""
        if self._closed:
            return
        self.session.on_deadline(now)
        self.service(now)

    # -------------------------------------------------------------------- work

    def service(self, now: float | None = None) -> None:
        """Act on transport requests and write pending output (call after submitting)."""
        if self._closed:
            return
        if now is None:
            now = self.loop.time()
        s = self.session
        for _ in range(8):
            act = s.transport_action()
            if act is None:
                break
            kind, portal = act
            if kind == "connect":
                assert portal is not None
                self._connect(portal, now)
            else:
                self._drop(kind, now)
        self._flush()

    def submitted(self) -> None:
        """A command was queued: write it now, unless this runs inside the connection's
        own callback (a completion callback submitting the next command), whose end
        writes every command queued meanwhile at once."""
        if not self._in_tcp:
            self.service()

    def _connect(self, portal: Portal, now: float) -> None:
        s = self.session
        if self.conn is not None:  # a leftover the session no longer uses
            old, self.conn = self.conn, None
            old.callback = None
            if not old.closed:
                old.abort(now)
        s.connection_started(now)
        self.connects += 1
        try:
            conn = self.stack.connect(portal.host, portal.port, self.tcp_config)
        except (ValueError, TcpError) as e:
            log.warning("cannot connect to %s: %s", portal, e)
            s.connection_lost(f"cannot connect to {portal}: {e}", now)
            return
        self.conn = conn
        self._made = False
        conn.callback = self._on_tcp
        conn.placement_refill = self._refill
        s.placement_revoked = self._revoke_placement

    def _drop(self, kind: str, now: float) -> None:
        c, self.conn = self.conn, None
        self._made = False
        if c is not None:
            c.callback = None
            if kind == "close" and c.connected:
                c.close(now)
            elif not c.closed:
                c.abort(now)
        self.session.transport_closed()

    def _flush(self) -> None:
        c = self.conn
        s = self.session
        if c is None or not self._made or not c.connected or not s.has_output():
            return
        if c.send_space() > 0:
            s.flush_to(c.send)

    def _revoke_placement(self) -> None:
        """The session dropped a task's buffer: no frame may be placed into it."""
        if self.conn is not None:
            self.conn.set_placement(None)

    def _refill(self) -> None:
        """In the middle of a receive batch (the stack's direct placement,
        :mod:`netstack.tcp.placement`): parse what came so far, processing it later with
        the batch, so that the session names where the next Data-In bytes go."""
        c, s = self.conn, self.session
        if c is None:
            return
        if not self._made or not s.can_parse_ahead():
            c.set_placement(None)
            return
        c.set_placement(s.parse_ahead(c.recv_chunks()), s.placement_next())

    def _on_tcp(self, conn: TcpConnection) -> None:
        if conn is not self.conn or self._closed:
            return
        now = self.loop.time()
        s = self.session
        if self._made and conn.placed_within_window() and not s.has_parsed_ahead():
            # Only more of the Data-In payload the parser expects, placed where it goes:
            # nothing to parse until the window fills or anything else comes (the bytes
            # stay queued and join the next Placed marker), so no pass of the session;
            # output the send side let go still leaves.
            s.receiving(now)
            self._flush()
            return
        if not self._made and conn.connected:
            self._made = True
            s.connection_made(now)
        if self._made and (conn.available() or s.has_parsed_ahead()):
            # Views into the frames: Data-In is copied once, from the frame to its buffer,
            # or not at all when the link placed it there (netstack.tcp.placement).
            self._in_tcp = True
            try:
                s.receive_chunks(conn.recv_chunks(), now)
            finally:
                self._in_tcp = False
            if conn is self.conn:
                conn.set_placement(s.placement_window(), s.placement_next())
            act = s.transport_action()
            if act is not None and act[0] != "connect":
                # The session is done with this connection (a login redirection): drop
                # it now, so that the target closing its end too (in the same batch) is
                # not taken for a failed login to the old portal.
                self.service(now)
        if conn is self.conn and (conn.error is not None or conn.closed or conn.eof):
            reason = conn.error.reason if conn.error is not None else (
                "closed by the target" if self._made else "closed")
            self.conn = None
            self._made = False
            conn.callback = None
            if conn.error is None and conn.eof and conn.connected:
                conn.close(now)  # the target closed first (e.g. after logout): FIN back
            elif not conn.closed:
                conn.abort(now)
            s.connection_lost(reason, now)
        self.service(now)

    # ------------------------------------------------------------------- end

    def close(self) -> None:
        """Abort the TCP connection (if any) and leave the loop."""
        if self._closed:
            return
        c, self.conn = self.conn, None
        if c is not None:
            c.callback = None
            if not c.closed:
                c.abort(self.loop.time())
        self._closed = True
        self.loop.remove_deadline_source(self)


__all__ = ["IscsiConnection"]
