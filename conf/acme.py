"""The [acme] section and the `tls = [{ acme = true }]` item of an HTTPS listener."""

from __future__ import annotations

import dataclasses
import re

from conf.fields import Issues, Table, string_item
from conf.model import ACME_CHALLENGES, AcmeSettings, HttpListener

# What an [[http]] tls item `{ acme = true }` becomes until [acme] is read (conf.load._build).
ACME_ITEM = AcmeSettings()
_EMAIL = re.compile(r"^[^@\s:/]+@[^@\s:/]+\.[^@\s:/]+$")


def acme_item(t: Table) -> AcmeSettings | None:
    """`{ acme = true }` in a listener's tls list (nothing else may stand beside it)."""
    value = t.get_bool("acme")
    t.done()
    if value is False:
        t.error("acme", "acme = false means nothing here: leave the item out")
        return None
    return ACME_ITEM if value else None


def acme_settings(
    t: Table | None, http: tuple[HttpListener, ...], issues: Issues
) -> tuple[AcmeSettings | None, tuple[HttpListener, ...]]:
    """[acme], and the listeners with `acme = true` given those settings."""
    settings = _settings(t, issues) if t is not None else None
    if not any(h.acme is not None for h in http):
        return settings, http
    if settings is None:
        settings = AcmeSettings()  # Let's Encrypt, /var/lib/sekisho/acme (as Caddy needs no config)
    out = []
    for i, h in enumerate(http):
        if h.acme is None:
            out.append(h if h.tls else dataclasses.replace(h, answers_http01=True))
            continue
        if not any(r.host and not r.host.startswith("*.") for r in h.routes):
            issues.add(f"http[{i}].tls", "acme = true, but no route names an exact host to order for")
        out.append(dataclasses.replace(h, acme=settings))
    return settings, tuple(out)


def _settings(t: Table, issues: Issues) -> AcmeSettings:
    d = AcmeSettings()
    directory = t.get_str("directory", d.directory)
    if directory is not None and not directory.startswith(("https://", "http://")):
        t.error("directory", f"expected the CA's directory URL (https://...), got {directory!r}")
    email = t.get_str("email", None)
    if email is not None and not _EMAIL.match(email):
        t.error("email", f"expected an e-mail address, got {email!r}")
    state_dir = t.get_str("state_dir", d.state_dir)
    if state_dir is not None and not state_dir.strip():
        t.error("state_dir", "expected a directory path, got an empty string")
    challenges = t.get_list("challenges", string_item(issues), d.challenges)
    for i, kind in enumerate(challenges):
        if kind not in ACME_CHALLENGES:
            issues.add(
                f"{t.key('challenges')}[{i}]", f"must be one of {', '.join(ACME_CHALLENGES)}, got {kind!r}"
            )
    if t.has("challenges") and not challenges:
        t.error("challenges", "needs at least one challenge type (dns-01 is not supported)")
    settings = AcmeSettings(
        directory=directory or d.directory,
        email=email,
        state_dir=state_dir or d.state_dir,
        account_key=t.get_str("account_key", None),
        ca_file=t.get_str("ca_file", None),
        challenges=tuple(challenges),
        retry_min=t.get_float("retry_min", d.retry_min, positive=True, hi=21600.0),
    )
    t.done()
    return settings
