"""The challenge board: HTTP-01 before routing (sans-IO: an exchange on a plain listener asks
it first; a managed host's challenge path is never forwarded, any other request is routed),
and challenges posted by the ordering process seen by another through the state directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import conf
from lb.pool import PoolSet
from proxy.acme.board import ChallengeBoard
from proxy.http.exchange import Answer, Exchange, Forward, Site

TOML = """
[pool.alpha]
servers = [{ address = "127.0.0.1:9" }]
[acme]
state_dir = "STATE"
[[http]]
listen = ["127.0.0.1:1"]
  [[http.route]]
  path = "/"
  pool = "alpha"
[[http]]
listen = ["127.0.0.1:2"]
tls = [{ acme = true }]
  [[http.route]]
  host = "a.test"
  pool = "alpha"
"""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Site, ChallengeBoard]:
    cfg = conf.load_text(TOML.replace("STATE", str(tmp_path)))
    board = ChallengeBoard()
    board.follow(cfg)
    site = Site(cfg.http[0], PoolSet(cfg.pools))
    site.challenges = board.http01
    return site, board


def start(site: Site, host: bytes, target: bytes, **kw: Any) -> Answer | Forward:
    args: dict[str, Any] = {
        "http11": True,
        "keep_alive": True,
        "host": host,
        "items": [(b"Host", b"host", host)],
        "content_length": None,
        "chunked": False,
        "upgrade": None,
        "peer": "192.0.2.1",
        "proto": b"http",
        "allowed": True,
        "trusted": False,
    }
    args.update(kw)
    method = args.pop("method", b"GET")
    return Exchange(site, 0.0).start(method, target, **args)


def test_a_posted_token_is_answered_and_never_forwarded(setup: tuple[Site, ChallengeBoard]) -> None:
    site, board = setup
    board.post_http01("tok-1_A", "tok-1_A.thumb")
    answer = start(site, b"A.test:80", b"/.well-known/acme-challenge/tok-1_A")
    assert isinstance(answer, Answer) and answer.status == 200 and not answer.close
    assert answer.data.endswith(b"\r\n\r\ntok-1_A.thumb")
    head = start(site, b"a.test", b"/.well-known/acme-challenge/tok-1_A", method=b"HEAD")
    assert isinstance(head, Answer) and head.data.endswith(b"\r\n\r\n") and b"thumb" not in head.data
    refused = start(site, b"a.test", b"/.well-known/acme-challenge/tok-1_A", allowed=False)
    assert isinstance(refused, Answer) and refused.status == 200  # the CA's address is unknown
    assert start(site, b"a.test", b"/x", allowed=False).status == 403  # type: ignore[union-attr]
    unknown = start(site, b"a.test", b"/.well-known/acme-challenge/other")
    assert isinstance(unknown, Answer) and unknown.status == 404
    traversal = start(site, b"a.test", b"/.well-known/acme-challenge/..%2F..%2Faccount.key")
    assert isinstance(traversal, Answer) and traversal.status in (400, 404)
    board.remove_http01("tok-1_A")
    gone = start(site, b"a.test", b"/.well-known/acme-challenge/tok-1_A")
    assert isinstance(gone, Answer) and gone.status == 404


def test_other_hosts_and_paths_are_routed_as_before(setup: tuple[Site, ChallengeBoard]) -> None:
    site, board = setup
    board.post_http01("tok", "tok.thumb")
    assert isinstance(start(site, b"b.test", b"/.well-known/acme-challenge/tok"), Forward)
    assert isinstance(start(site, b"a.test", b"/index.html"), Forward)


def test_another_process_answers_from_the_state_directory(tmp_path: Path) -> None:
    cfg = conf.load_text(TOML.replace("STATE", str(tmp_path)))
    orderer, worker = ChallengeBoard(), ChallengeBoard()
    orderer.follow(cfg)
    worker.follow(cfg)
    orderer.post_http01("tok", "tok.thumb")
    assert (tmp_path / "challenges" / "http-01" / "tok").read_bytes() == b"tok.thumb"
    assert worker.http01("a.test", b"/.well-known/acme-challenge/tok") == b"tok.thumb"
    orderer.remove_http01("tok")
    assert worker.http01("a.test", b"/.well-known/acme-challenge/tok") == b""
    assert not worker.tls_alpn_open


def test_a_tls_alpn_challenge_posted_by_one_process_is_seen_by_another(tmp_path: Path) -> None:
    from proxy.acme.tlsalpn import challenge_certificate

    cfg = conf.load_text(TOML.replace("STATE", str(tmp_path)))
    orderer, worker = ChallengeBoard(), ChallengeBoard()
    orderer.follow(cfg)
    worker.follow(cfg)
    assert not worker.tls_alpn_open and worker.tls_alpn("a.test") is None
    cert, key = challenge_certificate("a.test", "tok.thumb")
    orderer.post_tls_alpn("a.test", key + cert)
    assert orderer.tls_alpn_open and orderer.tls_alpn("a.test") is not None
    assert worker.tls_alpn_open
    ctx = worker.tls_alpn("a.test")
    assert ctx is not None and worker.tls_alpn("b.test") is None
    orderer.remove_tls_alpn("a.test")
    assert not worker.tls_alpn_open


def test_answers_left_by_a_killed_orderer_are_cleared_at_its_next_start(tmp_path: Path) -> None:
    from proxy.acme.tlsalpn import challenge_certificate

    cfg = conf.load_text(TOML.replace("STATE", str(tmp_path)))
    killed, restarted = ChallengeBoard(), ChallengeBoard()
    killed.follow(cfg)
    killed.post_http01("tok", "tok.thumb")
    cert, key = challenge_certificate("a.test", "tok.thumb")
    killed.post_tls_alpn("a.test", key + cert)
    restarted.follow(cfg)
    assert restarted.tls_alpn_open
    restarted.clear_stale()
    assert not restarted.tls_alpn_open
    assert restarted.http01("a.test", b"/.well-known/acme-challenge/tok") == b""
