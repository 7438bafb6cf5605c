"""Target locators: libiscsi/QEMU ``iscsi://`` URLs and RFC 4173 root paths.

URL (libiscsi's ``iscsi_parse_full_url``, which QEMU uses)::

    iscsi://[<user>[%<secret>]@]<host>[:<port>]/<target-name>/<lun>

``host`` is a name, an IPv4 address or an IPv6 address in brackets; the port defaults to
3260; the LUN is decimal. As in libiscsi, the first ``@`` ends the credentials, the
first ``%`` (else ``:``) separates user and secret, the secret is taken literally and
the target name is percent-decoded. Mutual-CHAP credentials are not part of a URL
(libiscsi's ``?target_user=`` arguments are refused): they come from options.

Root path (RFC 4173, what DHCP option 17 and iPXE's ``root-path`` hold)::

    iscsi:<server>:<protocol>:<port>:<lun>:<targetname>

``server`` may be a bracketed IPv6 address; an empty protocol means TCP (6 is also
accepted); an empty port means 3260; the LUN is up to four dash-separated hex groups,
empty meaning 0 (so ``iscsi:10.77.5.1:::1:iqn.2026-11.test:disk`` is LUN 1, and ``10``
would be LUN 16); the target name is the rest and may contain colons.

Errors are ``UriError`` naming the part at fault; its text never shows a secret.
"""

from __future__ import annotations

import re
from ipaddress import IPv6Address
from urllib.parse import quote, unquote_to_bytes

from firmware_tables.errors import ConfigError, UriError
from firmware_tables.lun import format_lun_groups, lun_from_sam, lun_to_sam, parse_lun_groups
from firmware_tables.target import DEFAULT_PORT, ChapCredentials, TargetSpec, canonical_host

URL_SYNTAX = "iscsi://[<user>[%<secret>]@]<host>[:<port>]/<target-name>/<lun>"
ROOT_PATH_SYNTAX = "iscsi:<server>:<protocol>:<port>:<lun>:<targetname>"
MASK = "***"


def mask_url(url: str) -> str:
    """``url`` with the secret of its credentials replaced by ``***``."""
    head, sep, rest = url.partition("://")
    at = rest.find("@")
    if not sep or at < 0:
        return url
    userinfo = rest[:at]
    cut = userinfo.find("%")
    if cut < 0:
        cut = userinfo.find(":")
    if cut < 0:
        return url
    return f"{head}://{userinfo[:cut + 1]}{MASK}{rest[at:]}"


def _port(text: str, part_text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,5}", text) or not 1 <= int(text) <= 0xFFFF:
        raise UriError(f"port {text!r} is not a number 1..65535", part="port", text=part_text)
    return int(text)


def _host(text: str, shown: str) -> str:
    if text.startswith("["):
        inner = text[1:-1] if text.endswith("]") else None
        try:
            if inner is None:
                raise ValueError
            IPv6Address(inner)
        except ValueError:
            raise UriError(f"{text!r} is not a bracketed IPv6 address", part="host",
                           text=shown) from None
    host = canonical_host(text) if text else None
    if host is None:
        raise UriError(f"host {text!r} is not an IP address or host name", part="host",
                       text=shown)
    return host


def _target_spec(
    shown: str, host: str, name: str, port: int, lun: int, chap: ChapCredentials | None = None
) -> TargetSpec:
    try:
        return TargetSpec(host=host, name=name, port=port, lun=lun, chap=chap)
    except ConfigError as exc:
        raise UriError(str(exc), part=exc.path, text=shown) from None


def parse_iscsi_url(url: str) -> TargetSpec:
    """Parse a libiscsi URL into a ``TargetSpec`` (``UriError`` if malformed)."""
    shown = mask_url(url)
    if url[:8].lower() != "iscsi://":
        hint = " (iSER is not supported)" if url[:7].lower() == "iser://" else ""
        raise UriError(f"not an iSCSI URL{hint}; expected {URL_SYNTAX}", part="scheme",
                       text=shown)
    rest = url[8:]
    chap = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        cut = userinfo.find("%")
        if cut < 0:
            cut = userinfo.find(":")
        if cut < 0:
            raise UriError("CHAP user without a secret (write <user>%<secret>@)",
                           part="credentials", text=shown)
        user, secret = userinfo[:cut], userinfo[cut + 1 :]
        if not user or not secret:
            raise UriError("empty CHAP user or secret", part="credentials", text=shown)
        chap = ChapCredentials(user, secret)
    if "?" in rest:
        raise UriError("URL arguments are not supported (mutual CHAP credentials and "
                       "digests come from options)", part="query", text=shown)
    if "#" in rest:
        raise UriError("a URL fragment is not allowed", part="target", text=shown)
    slash = rest.find("/")
    if slash < 0:
        raise UriError(f"missing /<target-name>/<lun>; expected {URL_SYNTAX}", part="target",
                       text=shown)
    portal, path = rest[:slash], rest[slash + 1 :]
    if portal.startswith("["):
        close = portal.find("]")
        host_text, after = (portal[: close + 1], portal[close + 1 :]) if close >= 0 else (
            portal, "")
        if after and not after.startswith(":"):
            raise UriError("expected :<port> after the IPv6 address", part="port", text=shown)
        port = _port(after[1:], shown) if after else DEFAULT_PORT
    else:
        if portal.count(":") > 1:
            raise UriError("an IPv6 address must be in brackets", part="host", text=shown)
        host_text, colon, port_text = portal.partition(":")
        port = _port(port_text, shown) if colon else DEFAULT_PORT
    host = _host(host_text, shown)
    cut = path.find("/")
    if cut < 0:
        raise UriError(f"missing /<lun>; expected {URL_SYNTAX}", part="lun", text=shown)
    raw_name, lun_text = path[:cut], path[cut + 1 :]
    if not raw_name:
        raise UriError("empty target name", part="target", text=shown)
    if re.search(r"%(?![0-9A-Fa-f]{2})", raw_name):
        raise UriError("bad percent-escape in the target name", part="target", text=shown)
    try:
        name = unquote_to_bytes(raw_name).decode("utf-8")
    except UnicodeDecodeError:
        raise UriError("the target name is not UTF-8 once decoded", part="target",
                       text=shown) from None
    if not re.fullmatch(r"[0-9]{1,20}", lun_text):
        raise UriError(f"LUN {lun_text!r} is not a decimal number", part="lun", text=shown)
    return _target_spec(shown, host=host, name=name, port=port, lun=int(lun_text), chap=chap)


def parse_root_path(root_path: str) -> TargetSpec:
    """Parse an RFC 4173 root path into a ``TargetSpec`` (``UriError`` if malformed)."""
    shown = root_path
    if root_path[:6].lower() != "iscsi:" or root_path[6:8] == "//":
        raise UriError(f"not an iSCSI root path; expected {ROOT_PATH_SYNTAX}", part="scheme",
                       text=shown)
    rest = root_path[6:]
    if rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            raise UriError("unclosed '[' in the server", part="host", text=shown)
        server, rest = rest[: close + 1], rest[close + 1 :]
        if not rest.startswith(":"):
            raise UriError(f"expected ':' after the server; {ROOT_PATH_SYNTAX}", part="host",
                           text=shown)
        rest = rest[1:]
    else:
        server, colon, rest = rest.partition(":")
        if not colon:
            raise UriError(f"expected {ROOT_PATH_SYNTAX}", part="host", text=shown)
    fields = rest.split(":", 3)
    if len(fields) != 4:
        raise UriError(f"expected five fields after 'iscsi:': {ROOT_PATH_SYNTAX}",
                       part="target", text=shown)
    protocol, port_text, lun_text, name = fields
    if not server:
        raise UriError("empty server (discovery is not supported)", part="host", text=shown)
    host = _host(server, shown)
    if protocol not in ("", "6"):
        raise UriError(f"protocol {protocol!r} is not TCP (empty or 6)", part="protocol",
                       text=shown)
    port = _port(port_text, shown) if port_text else DEFAULT_PORT
    try:
        lun = lun_from_sam(parse_lun_groups(lun_text))
    except ValueError as exc:
        raise UriError(f"LUN {lun_text!r}: {exc}", part="lun", text=shown) from None
    if not name:
        raise UriError("empty target name", part="target", text=shown)
    return _target_spec(shown, host=host, name=name, port=port, lun=lun)


def parse_target(text: str) -> TargetSpec:
    """Parse either form: ``iscsi://...`` as a URL, ``iscsi:...`` as a root path."""
    if text[:8].lower() == "iscsi://":
        return parse_iscsi_url(text)
    return parse_root_path(text)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def format_iscsi_url(spec: TargetSpec, *, show_secret: bool = False) -> str:
    """The libiscsi URL of ``spec``; the secret is ``***`` unless ``show_secret``.

    Mutual-CHAP credentials cannot be written into a URL and are left out. Raises
    ``UriError`` when ``show_secret`` is set and the user or secret cannot be written
    literally (libiscsi does not decode them).
    """
    auth = ""
    if spec.chap is not None:
        user, secret = spec.chap.user, spec.chap.secret
        if any(c in user for c in "%:@/?#"):
            raise UriError("the CHAP user cannot be written into a URL", part="credentials",
                           text=user)
        if show_secret and (not secret or any(c in secret for c in "@/?#")):
            raise UriError("the CHAP secret cannot be written into a URL", part="credentials",
                           text=MASK)
        auth = f"{user}%{secret if show_secret else MASK}@"
    name = quote(spec.name, safe=":.-_~+=,;!$&'()*")
    return f"iscsi://{auth}{_bracket(spec.host)}:{spec.port}/{name}/{spec.lun}"


def format_root_path(spec: TargetSpec) -> str:
    """The RFC 4173 root path of ``spec`` (credentials are not part of a root path)."""
    port = "" if spec.port == DEFAULT_PORT else str(spec.port)
    lun = format_lun_groups(lun_to_sam(spec.lun))
    return f"iscsi:{_bracket(spec.host)}::{port}:{lun}:{spec.name}"
