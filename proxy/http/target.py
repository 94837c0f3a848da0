"""The request target the routes see and the backend receives: one normal form.

Routing on the raw target lets a request whose path only *becomes* `/-/…` (or any
routed prefix) after a backend normalises it slip past the rule written for it:
`/a/../-/`, `//-/`, `/%2D/`. So the path is normalised once, here, routes match the
normal form, and the normal form is what the backend gets. A backend that normalises
again (RFC 3986 6.2.2 and 5.2.4, and merging slashes) finds nothing left to change.

What cannot be normalised without guessing how the backend reads it is refused (400):
an encoded slash or backslash (`%2F`, `%5C`: one server splits the segment there,
another does not), a raw backslash (a separator to IIS), an encoded NUL, a malformed
percent-encoding, a fragment (`#`), dot segments that climb above the root, and dot
segments with path parameters (`/..;/`, a separator trick Tomcat honours).

Normalised: percent-encoded unreserved characters are decoded (`%2D` -> `-`,
`%2E` -> `.`), other percent-encodings get upper-case hex, repeated slashes merge
(nginx's `merge_slashes on`), `.` and `..` segments are removed. The query is left
as it is. The fast path is one regex search that finds nothing to do.
"""

from __future__ import annotations

import re

from proxy.http.errors import BadRequest

# Anything that may need work: a percent sign, a backslash, a fragment, "/." or "//".
NEEDS_WORK = re.compile(rb"[%\\#]|/[./]")
_PERCENT = re.compile(rb"%(.{0,2})", re.DOTALL)
_HEX = frozenset(b"0123456789abcdefABCDEF")
# RFC 3986 2.3: unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~"
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_REFUSED_ENCODED = {0x2F: "an encoded slash", 0x5C: "an encoded backslash", 0x00: "an encoded NUL"}
_MERGE = re.compile(rb"//+")
# A dot segment with parameters: "..;x", ".;x", "..%3Bx" (Tomcat strips ";…" first).
_DOT_PARAMS = re.compile(rb"\.\.?(;|%3B)")


def normalize_target(target: bytes) -> bytes:
    """An origin-form target (`/path?query`) in normal form; raises BadRequest (400)."""
    q = target.find(b"?")
    path, query = (target, b"") if q < 0 else (target[:q], target[q:])
    if NEEDS_WORK.search(path) is None:
        return target
    return normalize_path(path) + query


def normalize_path(path: bytes) -> bytes:
    """`path` (starting with "/", no query) in normal form; raises BadRequest."""
    if b"#" in path:
        raise BadRequest("fragment in request target")
    if b"\\" in path:
        raise BadRequest("backslash in request path")
    if b"%" in path:
        path = _PERCENT.sub(_decode_unreserved, path)
    if b"//" in path:
        path = _MERGE.sub(b"/", path)
    if b"/." in path:
        path = _remove_dot_segments(path)
    return path


def _decode_unreserved(m: re.Match[bytes]) -> bytes:
    hexdigits = m.group(1)
    if len(hexdigits) != 2 or hexdigits[0] not in _HEX or hexdigits[1] not in _HEX:
        raise BadRequest("malformed percent-encoding in request path")
    code = int(hexdigits, 16)
    if code in _UNRESERVED:
        return bytes((code,))
    refused = _REFUSED_ENCODED.get(code)
    if refused is not None:
        raise BadRequest(f"{refused} in request path")
    return b"%" + hexdigits.upper()


def _remove_dot_segments(path: bytes) -> bytes:
    """RFC 3986 5.2.4 for an absolute path without repeated slashes; no climbing above "/"."""
    out: list[bytes] = []
    segments = path.split(b"/")[1:]
    last = len(segments) - 1
    for i, seg in enumerate(segments):
        if seg == b".":
            if i == last:
                out.append(b"")
        elif seg == b"..":
            if not out:
                raise BadRequest("request path climbs above the root")
            out.pop()
            if i == last:
                out.append(b"")
        elif seg[:1] == b"." and _DOT_PARAMS.match(seg) is not None:
            raise BadRequest("dot segment with parameters in request path")
        else:
            out.append(seg)
    return b"/" + b"/".join(out)
