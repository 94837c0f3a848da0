"""The ACME service: keeps a certificate for every managed host, in the background.

On start every stored certificate is read and used at once (the TLS listeners read the
same files, proxy/http/tls.py); hosts without one are ordered while the listeners serve
the others. Then it sleeps until the planner (proxy/acme/plan.py) says something is due:
a renewal, a retry after a failure, a look at the CA's renewal information. Each order
runs in a worker thread (the acme package is synchronous), one at a time, so the loop
never waits on the CA. A new certificate is written atomically to the state directory
and the listeners of this process are told at once (`refresh_all`); other worker
processes notice the changed file on their next look (every CERT_CHECK_INTERVAL).

One process per state directory orders: in the multi-worker design that is the
supervisor (or worker 0), never every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import conf
from proxy.acme.board import BOARD, ChallengeBoard
from proxy.acme.client import AcmeClient, AcmeFailure
from proxy.acme.plan import Hosts, Planner, hosts_for
from proxy.acme.store import CertStore, StoreError
from proxy.http.tls import refresh_all

log = logging.getLogger("sekisho.acme")
T = TypeVar("T")


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call (the acme package) in a daemon thread and await its result.

    Not asyncio.to_thread: the loop's default executor is joined when the loop closes, so
    a SIGTERM during an order would wait for the CA (up to ORDER_DEADLINE). A daemon thread
    is left behind instead; the state directory is safe whenever the process ends (atomic
    writes), and the next start orders again."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def work() -> None:
        ok: bool
        value: Any
        try:
            ok, value = True, fn(*args)
        except BaseException as exc:
            ok, value = False, exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(deliver, ok, value)

    threading.Thread(target=work, name=f"acme {getattr(fn, '__name__', 'call')}", daemon=True).start()
    return await future


class AcmeService:
    def __init__(
        self,
        config: conf.Config,
        clock: Callable[[], float] = time.time,
        draw: Callable[[], float] = random.random,
        board: ChallengeBoard = BOARD,
    ) -> None:
        self.clock = clock
        self.draw = draw
        self.board = board
        self.planner = Planner()
        self.orders = {"success": 0, "failure": 0}
        self.expiry: dict[str, float] = {}  # host -> notAfter of the certificate served
        self.hosts = Hosts((), ())
        self._wake = asyncio.Event()
        self._config(config)

    def _config(self, config: conf.Config) -> None:
        settings = config.acme or conf.model.AcmeSettings()
        self.settings = settings
        self.store = CertStore(settings.state_dir, settings.account_key)
        self.planner.retry_min = settings.retry_min
        self.client = AcmeClient(settings.directory, self.store, settings.email, settings.ca_file, self.board)
        self.hosts = hosts_for(config)
        # http-01 needs a plain listener to be asked on; tls-alpn-01 the HTTPS one.
        plain = any(h.answers_http01 for h in config.http)
        self.prefer = tuple(c for c in settings.challenges if c != "http-01" or plain)
        self.planner.set_hosts(self.hosts.managed)
        self.board.follow(config)  # (this process; serving processes follow it too)
        self.expiry = {h: t for h, t in self.expiry.items() if h in self.hosts.managed}
        for host in self.hosts.need_dns01:
            log.warning(
                "acme: %s needs the DNS-01 challenge, which sekisho does not do: no certificate", host
            )

    @staticmethod
    def wanted(config: conf.Config) -> bool:
        return any(h.acme is not None for h in config.http)

    @staticmethod
    def state_dir_problem(config: conf.Config) -> str | None:
        """Why the state directory cannot be used (made if missing, mode 0700), or None."""
        if config.acme is None:
            return None
        for key, directory in (
            ("acme.state_dir", Path(config.acme.state_dir)),
            ("acme.account_key", Path(config.acme.account_key).parent if config.acme.account_key else None),
        ):
            if directory is None:
                continue
            try:
                directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as exc:
                return f"{key}: cannot make {directory}: {exc.strerror}"
            if not os.access(directory, os.W_OK | os.X_OK):
                return f"{key}: {directory} is not writable"
        return None

    def reconfigure(self, config: conf.Config) -> None:
        """A reload: new hosts are ordered, dropped ones forgotten (their files stay)."""
        self._config(config)
        self.load_stored()
        self._wake.set()

    def wake(self) -> None:
        """Look at the plan now (tests, and the admin API if it ever asks)."""
        self._wake.set()

    # ------------------------------------------------------------------ running

    def load_stored(self) -> None:
        """Use every stored certificate that is still valid (the listeners read the same
        files; this tells the planner when each one is due)."""
        now = self.clock()
        for host in self.hosts.managed:
            if host in self.expiry:
                continue
            try:
                stored = self.store.load(host)
            except StoreError as exc:
                log.error("acme: %s: %s: ordering a new one", host, exc)
                continue
            if stored is None:
                log.info("acme: %s: no certificate yet: ordering one", host)
                continue
            if stored.not_after <= now:
                log.warning("acme: %s: the stored certificate expired: ordering a new one", host)
                continue
            self.planner.have(host, stored.not_before, stored.not_after)
            self.planner.records[host].ari_check = now
            self.expiry[host] = stored.not_after

    async def run(self) -> None:
        """Forever: order what is due, then sleep until the next thing is."""
        self.board.clear_stale()
        self.load_stored()
        refresh_all()
        while True:
            self._wake.clear()
            now = self.clock()
            for host in self.planner.ari_due(now):
                await self._ask_renewal_info(host)
            for host in self.planner.due(self.clock()):
                await self._order(host)
            now = self.clock()
            delay = self.planner.next_wake(now) - now
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=min(max(delay, 0.05), 3600.0))
            except TimeoutError:
                pass

    async def _order(self, host: str) -> None:
        renewing = host in self.expiry
        log.info("acme: %s: %s", host, "renewing the certificate" if renewing else "ordering a certificate")
        try:
            issued = await in_thread(self.client.order, host, self.prefer)
            stored = await in_thread(self.store.save, host, issued.key_pem, issued.chain_pem)
        except (AcmeFailure, StoreError, OSError) as exc:
            self.orders["failure"] += 1
            retry_after = exc.retry_after if isinstance(exc, AcmeFailure) else None
            delay = self.planner.failed(host, self.clock(), self.draw(), str(exc), retry_after)
            log.error(
                "acme: %s: order failed (%s); %s; next try in %.0fs",
                host,
                exc,
                "still serving the current certificate" if renewing else "no certificate to serve",
                delay,
            )
            return
        self.orders["success"] += 1
        self.planner.issued(host, stored.not_before, stored.not_after, self.clock())
        self.expiry[host] = stored.not_after
        swapped = refresh_all()  # this process's listeners serve it from the next handshake
        log.info(
            "acme: %s: new certificate (%s), valid until %s; %d listener certificate(s) swapped",
            host,
            issued.challenge,
            time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(stored.not_after)),
            swapped,
        )

    async def _ask_renewal_info(self, host: str) -> None:
        try:
            stored = self.store.load(host)
        except StoreError:
            stored = None
        if stored is None:
            self.planner.ari(host, None, float("inf"))
            return
        when, next_check = await in_thread(self.client.renewal_info, stored.chain_pem)
        self.planner.ari(host, when, max(next_check, self.clock() + 60.0))

    # ------------------------------------------------------------------ reporting

    def stats(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "directory": self.settings.directory,
            "orders": dict(self.orders),
            "certificates": [
                {
                    "host": r.host,
                    "state": r.state(now),
                    "not_after": r.not_after,
                    "renew_at": r.renew_at if r.has_certificate else None,
                    "failures": r.failures,
                    "next_try": r.next_try if r.failures else None,
                    "last_error": r.last_error,
                }
                for r in self.planner.records.values()
            ],
            "need_dns01": list(self.hosts.need_dns01),
        }
