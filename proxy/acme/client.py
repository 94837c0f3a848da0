"""The ACME protocol side (RFC 8555), on certbot's `acme` package: synchronous, so the
service runs every call here in a thread of its own (service.in_thread), never on the loop.

`acme` does the JOSE signing, nonces, the account, orders, polling and finalisation.
It no longer ships TLS-ALPN-01 (RFC 8737), so the two small classes below register it
through the library's own challenge registry; the certificate it needs is made in
proxy/acme/tlsalpn.py.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import requests
from acme import challenges, crypto_util, errors, messages
from acme import client as acme_client
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.errors import Error as JoseError
from josepy.jwk import JWK, JWKRSA

from proxy import VERSION
from proxy.acme.board import ChallengeBoard
from proxy.acme.store import CertStore
from proxy.acme.tlsalpn import challenge_certificate

log = logging.getLogger("sekisho.acme")

ORDER_DEADLINE = 90.0  # seconds for the CA to validate and issue, then the order failed
NETWORK_TIMEOUT = 30


@challenges.ChallengeResponse.register
class TlsAlpn01Response(challenges.KeyAuthorizationChallengeResponse):
    """RFC 8737 3: the response to a tls-alpn-01 challenge is an empty object."""

    typ = "tls-alpn-01"


@challenges.Challenge.register
class TlsAlpn01(challenges.KeyAuthorizationChallenge):
    response_cls = TlsAlpn01Response
    typ = response_cls.typ

    def validation(self, account_key: JWK, **unused_kwargs: Any) -> str:
        return self.key_authorization(account_key)


class AcmeFailure(Exception):
    """An order or account request that did not succeed; `retry_after`: the CA's word
    (Retry-After, seconds from now) on when to ask again, if it said so."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Issued:
    key_pem: bytes
    chain_pem: bytes
    challenge: str  # the type that proved the name


class AcmeClient:
    """One account at one CA. Not thread-safe: the service calls it from one thread at a time."""

    def __init__(
        self,
        directory_url: str,
        store: CertStore,
        email: str | None,
        ca_file: str | None,
        board: ChallengeBoard,
    ) -> None:
        self.directory_url = directory_url
        self.store = store
        self.email = email
        self.ca_file = ca_file
        self.board = board
        self._acme: acme_client.ClientV2 | None = None
        self._jwk: JWK | None = None
        self._retry_after: float | None = None  # of the last error response

    # ------------------------------------------------------------------ account

    def _account_key(self) -> JWK:
        pem = self.store.read_account_key()
        if pem is None:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            self.store.write_account_key(pem)  # before registering: a crash then reuses it
            log.info("acme: new account key %s", self.store.account_key_path)
        loaded = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise AcmeFailure(f"{self.store.account_key_path}: the account key must be RSA")
        return JWKRSA(key=loaded)

    def _note_retry_after(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        if response.status_code >= 400:
            self._retry_after = _retry_after_seconds(response.headers.get("Retry-After"))

    def connect(self) -> acme_client.ClientV2:
        """The directory and the account (registered on first use, then read from the state
        directory). Kept between orders."""
        if self._acme is not None:
            return self._acme
        jwk = self._account_key()
        net = acme_client.ClientNetwork(
            jwk, user_agent=f"sekisho/{VERSION} acme-python", timeout=NETWORK_TIMEOUT
        )
        if self.ca_file:
            # requests takes a CA bundle path where it takes True (a CA with a private root).
            net.verify_ssl = self.ca_file  # type: ignore[assignment]
        net.session.hooks["response"].append(self._note_retry_after)
        directory = acme_client.ClientV2.get_directory(self.directory_url, net)
        acme = acme_client.ClientV2(directory, net)
        saved = self._saved_account()
        if saved is not None:
            net.account = saved
        else:
            contact = (f"mailto:{self.email}",) if self.email else ()
            registration = messages.NewRegistration(contact=contact, terms_of_service_agreed=True)
            try:
                regr = acme.new_account(registration)
            except errors.ConflictError as exc:
                # The key has an account already (a crash after registering, before saving).
                regr = messages.RegistrationResource(uri=str(exc.location), body=messages.Registration())
                net.account = regr
            record = {"directory": self.directory_url, "account": regr.to_json()}
            self.store.write_account(json.dumps(record, indent=1).encode())
            log.info("acme: account %s at %s", regr.uri, self.directory_url)
        self._acme, self._jwk = acme, jwk
        return acme

    def _saved_account(self) -> messages.RegistrationResource | None:
        """The stored account, if it is this CA's (a new directory URL registers anew, with
        the same key)."""
        saved = self.store.read_account()
        if saved is None:
            return None
        try:
            record = json.loads(saved)
            if record.get("directory") != self.directory_url:
                log.info("acme: %s has no account of ours yet: registering", self.directory_url)
                return None
            account: messages.RegistrationResource = messages.RegistrationResource.from_json(
                record["account"]
            )
        except (ValueError, KeyError, AttributeError, JoseError) as exc:
            log.warning("acme: %s unreadable (%s): registering again", self.store.account_path, exc)
            return None
        return account

    # ------------------------------------------------------------------ orders

    def order(self, host: str, prefer: Sequence[str], deadline: float = ORDER_DEADLINE) -> Issued:
        """Order a certificate for `host`, proving it with the first challenge type of
        `prefer` that the CA offers. Raises AcmeFailure."""
        self._retry_after = None
        try:
            return self._order(host, prefer, deadline)
        except AcmeFailure:
            raise
        except (errors.Error, requests.RequestException, JoseError, OSError, ValueError) as exc:
            if isinstance(exc, (errors.ClientError, requests.RequestException, OSError)):
                self._acme = None  # connect again next time (new nonce, new directory)
            if isinstance(exc, messages.Error) and exc.code in ("accountDoesNotExist", "unauthorized"):
                # The CA forgot or deactivated the account: register again next time.
                if exc.code == "accountDoesNotExist":
                    self.store.account_path.unlink(missing_ok=True)
                self._acme = None
            raise AcmeFailure(_describe(exc), self._retry_after) from exc

    def _order(self, host: str, prefer: Sequence[str], deadline: float) -> Issued:
        acme = self.connect()
        jwk = self._jwk
        assert jwk is not None
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        csr = crypto_util.make_csr(key_pem, [host])
        orderr = acme.new_order(csr)
        undo: list[Callable[[], None]] = []
        used = ""
        try:
            for authz in orderr.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    used = used or "reused"
                    continue
                challb = _pick(authz.body.challenges, prefer)
                if challb is None:
                    offered = ", ".join(c.chall.typ for c in authz.body.challenges)
                    raise AcmeFailure(f"{host}: the CA offers {offered}; we answer {', '.join(prefer)}")
                chall = challb.chall
                assert isinstance(chall, challenges.KeyAuthorizationChallenge)
                key_authorization = chall.key_authorization(jwk)
                if isinstance(chall, challenges.HTTP01):
                    token = chall.encode("token")
                    self.board.post_http01(token, key_authorization)
                    undo.append(lambda token=token: self.board.remove_http01(token))  # type: ignore[misc]
                else:
                    answer_cert, answer_key = challenge_certificate(host, key_authorization)
                    self.board.post_tls_alpn(host, answer_key + answer_cert)
                    undo.append(lambda: self.board.remove_tls_alpn(host))
                used = chall.typ
                acme.answer_challenge(challb, chall.response(jwk))
            until = datetime.datetime.now() + datetime.timedelta(seconds=deadline)
            try:
                orderr = acme.poll_and_finalize(orderr, until)
            except errors.ValidationError as exc:
                problems = [
                    f"{c.chall.typ}: {c.error.detail if c.error else 'invalid'}"
                    for a in exc.failed_authzrs
                    for c in a.body.challenges
                    if c.status == messages.STATUS_INVALID
                ]
                raise AcmeFailure(f"{host}: validation failed: {'; '.join(problems)}") from None
        finally:
            for step in undo:
                step()
        if not orderr.fullchain_pem:
            raise AcmeFailure(f"{host}: the CA returned no certificate")
        return Issued(key_pem, orderr.fullchain_pem.encode("ascii"), used)

    def renewal_info(self, chain_pem: bytes) -> tuple[float | None, float]:
        """The CA's renewal information (RFC 9773) for a certificate: (a moment in its
        suggested window or None when the CA has none, when to ask again)."""
        try:
            acme = self.connect()
            when, next_check = acme.renewal_time(chain_pem)
        except errors.ARIError as exc:
            return None, _epoch(exc.retry_after)
        except (errors.Error, requests.RequestException, JoseError, OSError, ValueError) as exc:
            log.debug("acme: renewal information: %s", _describe(exc))
            return None, time.time() + 3600
        return (_epoch(when) if when is not None else None), _epoch(next_check)


def _pick(offered: Sequence[messages.ChallengeBody], prefer: Sequence[str]) -> messages.ChallengeBody | None:
    by_type = {c.chall.typ: c for c in offered if isinstance(c.chall, challenges.KeyAuthorizationChallenge)}
    for kind in prefer:
        if kind in by_type:
            return by_type[kind]
    return None


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _epoch(moment: datetime.datetime) -> float:
    return moment.timestamp()  # naive values (the library's own "now + ...") are local time


def _describe(exc: BaseException) -> str:
    if isinstance(exc, messages.Error):
        return f"{exc.typ or 'error'}: {exc.detail or exc}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
