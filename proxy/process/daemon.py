"""The daemon: one config, wired into listeners, pools, VRRP and the admin API.

Lifecycle, as HAProxy and nginx users expect it:
- start: every listener bound before READY; a bind failure stops the start.
- SIGHUP: load the file again; an invalid config (or one whose new sockets
  cannot be bound, or whose certificates or admin token file do not load) keeps
  the running one and logs why. Sockets whose address did not change stay
  open, so no connection is refused during a reload; connections already
  accepted finish on the config they started on.
- SIGTERM/SIGINT: stop accepting, let in-flight work finish up to
  `global.drain_timeout`, release the VIPs, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import conf
from lb.pool import PoolSet
from proxy import VERSION
from proxy.acme.service import AcmeService
from proxy.listener import bind
from proxy.process import pool_admin
from proxy.process.admin import (
    AdminPolicy,
    AdminRequest,
    AdminResponse,
    AdminServer,
    TokenError,
    admin_policy,
    exposure_warnings,
)
from proxy.process.anycast import Anycast
from proxy.process.frontends import check_runtimes, sections
from proxy.process.metrics import Exposition
from proxy.process.metrics import acme as acme_metrics
from proxy.process.metrics import anycast as anycast_metrics
from proxy.process.metrics import http as http_metrics
from proxy.process.metrics import lb as lb_metrics
from proxy.process.metrics import smtp as smtp_metrics
from proxy.process.metrics import vrrp as vrrp_metrics
from proxy.process.metrics import workers as worker_metrics
from proxy.process.metrics.core import ProcessSnapshot, daemon_families
from proxy.process.sdnotify import Notifier
from proxy.process.serving import Key, LocalServing, StartupError, listen_keys, tune_gc
from proxy.process.status import render_html
from proxy.process.tasks import Background
from proxy.process.workers import Workers, count_for
from vrrp.errors import VrrpIOError
from vrrp.service import VrrpService

log = logging.getLogger("sekisho")


class Daemon:
    def __init__(self, config_path: str, config: conf.Config) -> None:
        self.config_path = config_path
        self.config = config
        self.started = time.time()
        self.reloads = {"success": 0, "failure": 0}
        self.last_reload_success = time.time()
        self.pools = PoolSet(config.pools)
        self.sockets: dict[Key, socket.socket] = {}  # every listening socket, bound once here
        self.vrrp: dict[str, tuple[conf.VrrpInstance, Any, asyncio.Task[None]]] = {}
        self.exposition = Exposition()
        self.admin = AdminServer()
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self.tasks = Background(log)  # every background task: tracked, failures logged
        self.acme: AcmeService | None = None  # automatic HTTPS (proxy/acme), when a listener asks
        self.notifier = Notifier.from_env()
        self.anycast = Anycast(self.tasks, lambda: self.pools, self._listening)
        # One process serves the front ends itself; more: it supervises worker processes.
        # (A config with no listener, only VRRP or anycast, has nothing for workers to do.)
        count = count_for(config.global_.workers) if any(sections(config)) else 1
        self.serving: LocalServing | Workers = (
            LocalServing(self.pools, self.tasks) if count == 1 else Workers(count, self.pools, self.tasks)
        )

    def _listening(self) -> list[conf.Address]:
        """The addresses served now: none while no worker accepts (anycast withdraws)."""
        return [key[1] for key in self.sockets] if self.serving.accepting() else []

    # ------------------------------------------------------------------ start

    async def start(self) -> None:
        # A SIGHUP that arrives while starting (with workers, start lasts until they
        # listen, a second or so) waits for the start to finish, then reloads.
        async with self._reload_lock:
            await self._start()

    async def _start(self) -> None:
        problems = check_runtimes(self.config)
        if problems:
            raise StartupError("\n".join(problems))
        self.admin.policy = _admin_policy(self.config)
        prepared = self.serving.prepare(self.config)  # builds TLS contexts: fails early on bad certs
        try:
            self.sockets = self._bind_new(self.config, set())
        except StartupError:
            self.serving.abandon(prepared)
            raise
        await self.pools.start()
        if not await self.serving.commit(prepared, self.sockets):
            raise StartupError("the worker processes did not start (see above)")
        await self._start_admin()
        for instance in self.config.vrrp:
            self._start_vrrp(instance)
        try:
            self.anycast.start(self.config.anycast)  # listeners are up: may announce
        except VrrpIOError as exc:
            raise StartupError(f"anycast: {exc}") from None
        self._start_acme(starting=True)  # automatic HTTPS: stored certificates at once, missing ones ordered
        self._register_metrics()
        self._write_pidfile()
        log.info("sekisho %s started: %s", VERSION, self.config.summary())
        tune_gc()
        self.notifier.ready()

    def _bind_new(self, config: conf.Config, existing: set[Key]) -> dict[Key, socket.socket]:
        """Bind every listen address not already open; all or nothing."""
        bound: dict[Key, socket.socket] = {}
        try:
            for section in sections(config):
                for i, address in enumerate(section.config.listen):
                    key = (section.kind, address)
                    if key in existing or key in bound:
                        continue
                    try:
                        # Workers: a SO_REUSEPORT group, a socket per worker (proxy.process.workers)
                        bound[key] = bind(address, reuseport=isinstance(self.serving, Workers))
                    except OSError as exc:
                        raise StartupError(
                            f"{section.path}.listen[{i}]: cannot bind {address}: {exc.strerror}"
                        ) from None
        except BaseException:
            for sock in bound.values():
                sock.close()
            raise
        return bound

    async def _start_admin(self) -> None:
        address = self.config.global_.metrics
        if address is None:
            return
        self.admin.route("GET", "/metrics", self._metrics)
        self.admin.route("GET", "/api/status", self._status_json)
        self.admin.route("GET", "/status", self._status_html)
        self.admin.route("GET", "/", self._index)
        pool_admin.register(self.admin, lambda: self.pools)
        self.anycast.register(self.admin)  # POST /anycast/drain, /anycast/undrain
        try:
            sock = bind(address)
        except OSError as exc:
            raise StartupError(f"global.metrics: cannot bind {address}: {exc.strerror}") from None
        await self.admin.start(sock, address)
        log.info("admin and metrics: http://%s/metrics", address)
        if self.config.global_.admin_token_file is None:
            log.info("admin API: state-changing requests are off (no global.admin_token_file)")

    def _start_vrrp(self, instance: conf.VrrpInstance) -> None:
        service = VrrpService(instance)
        task = self.tasks.spawn(self._run_vrrp(service), name=f"vrrp {instance.name}")
        self.vrrp[instance.name] = (instance, service, task)

    async def _run_vrrp(self, service: Any) -> None:
        try:
            await service.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            # A VRRP failure must be loud: the pair depends on it. Stop the daemon
            # rather than silently serving without the VIP logic.
            log.exception("vrrp instance failed; stopping")
            self._stop.set()

    def _start_acme(self, starting: bool = False) -> None:
        """The ACME service: this process orders for every worker (each serving process
        watches the certificate files, proxy.process.serving). At start and after a reload."""
        problem = AcmeService.state_dir_problem(self.config)
        if problem is not None and starting:
            raise StartupError(problem)
        if problem is not None:
            log.error("%s: orders will fail until it is fixed", problem)
        if self.acme is not None:
            self.acme.reconfigure(self.config)
        elif AcmeService.wanted(self.config):
            self.acme = AcmeService(self.config)
            self.tasks.spawn(self.acme.run(), name="acme")

    def _register_metrics(self) -> None:
        ex = self.exposition
        by_kind = self.serving.stats.by_kind
        ex.add_source("daemon", lambda: daemon_families(self.process_snapshot()))
        ex.add_source("http", lambda: http_metrics.families(by_kind["http"]))
        ex.add_source("lb", lambda: lb_metrics.families(self.pools))
        ex.add_source("tcp", lambda: lb_metrics.tcp_families(by_kind["tcp"]))
        ex.add_source("smtp", lambda: smtp_metrics.families(by_kind["smtp"]))
        ex.add_source("vrrp", lambda: vrrp_metrics.families(s for _, s, _ in self.vrrp.values()))
        ex.add_source(
            "acme", lambda: acme_metrics.families(self.acme.stats() if self.acme else None, self.config)
        )
        serving = self.serving
        if isinstance(serving, Workers):
            ex.add_source("workers", lambda: worker_metrics.families(serving.status(), serving.restarts))
        ex.add_source("anycast", lambda: anycast_metrics.families(self.anycast.stats()))

    def _write_pidfile(self) -> None:
        path = self.config.global_.pidfile
        if path:
            Path(path).write_text(f"{os.getpid()}\n")

    # ----------------------------------------------------------------- reload

    async def reload(self) -> bool:
        async with self._reload_lock:
            if self._stop.is_set():
                return False  # stopping (or a start that failed): nothing to reload
            self.notifier.reloading()
            try:
                ok = await self._reload()
            finally:
                self.notifier.ready()
            self.reloads["success" if ok else "failure"] += 1
            if ok:
                self.last_reload_success = time.time()
            return ok

    async def _reload(self) -> bool:
        try:
            new = conf.load_file(self.config_path)
        except conf.ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", "; ".join(map(str, exc.issues)))
            return False
        problems = check_runtimes(new)
        if problems:
            log.error("reload refused, keeping the running config: %s", "; ".join(problems))
            return False
        try:
            admin = _admin_policy(new)  # the token file is read again, as certificates are
        except StartupError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            return False
        if new.global_.metrics != self.config.global_.metrics:
            log.warning("global.metrics changed: takes effect at the next restart")
        if any(sections(new)) and (count_for(new.global_.workers) == 1) != isinstance(
            self.serving, LocalServing
        ):
            log.warning("global.workers: between one process and several takes effect at the next restart")
        try:
            prepared = self.serving.prepare(new)
        except StartupError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            return False
        try:
            # An address that moves from one kind to another must be freed first.
            moved = {
                key for key in self.sockets if key[0] not in _kinds_at(new, key[1]) and _kinds_at(new, key[1])
            }
            for key in moved:
                await self.serving.close(key)
                self.sockets.pop(key).close()
            fresh = self._bind_new(new, set(self.sockets))
        except StartupError as exc:
            self.serving.abandon(prepared)
            log.error("reload refused, keeping the running config: %s", exc)
            return False
        # Pools are looked up per request: swap them once nothing can fail any more.
        self.pools.reconcile(new.pools)
        self.sockets.update(fresh)
        wanted = set(listen_keys(new))
        if not await self.serving.commit(prepared, {k: s for k, s in self.sockets.items() if k in wanted}):
            for key in fresh:
                self.sockets.pop(key).close()
            log.error("reload failed, the running config goes on (see above)")
            return False
        for key in [k for k in self.sockets if k not in wanted]:
            self.sockets.pop(key).close()
        self._reconcile_vrrp(new.vrrp)
        self.anycast.reconcile(new.anycast)
        self.admin.policy = admin
        self.config = new
        self._start_acme()
        log.info("reloaded: %s", new.summary())
        return True

    def _reconcile_vrrp(self, instances: Iterable[conf.VrrpInstance]) -> None:
        wanted = {i.name: i for i in instances}
        for name, (instance, service, task) in list(self.vrrp.items()):
            new = wanted.get(name)
            if (
                new is not None
                and new != instance
                and VrrpService.updatable(instance, new)
                and not task.done()
            ):
                # Same interface, VRID and family: updated in place, as keepalived's reload
                # does; a master keeps the VIP and advertises the new priority at once.
                service.reconfigure(new)
                self.vrrp[name] = (new, service, task)
            elif new != instance:
                task.cancel()  # the service sends priority 0 and releases its VIP
                del self.vrrp[name]
                if name in wanted:
                    self.tasks.spawn(self._replace_vrrp(task, wanted.pop(name)), name=f"replace vrrp {name}")
        for name, instance in wanted.items():
            if name not in self.vrrp:
                self._start_vrrp(instance)

    async def _replace_vrrp(self, old: asyncio.Task[None], instance: conf.VrrpInstance) -> None:
        """Start the new instance only once the old one has let go of the VIP
        (else the new one would find it and remove it as stale)."""
        await asyncio.gather(old, return_exceptions=True)
        self._start_vrrp(instance)

    # ------------------------------------------------------------------- stop

    def request_stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop (with drain), SIGHUP reloads."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: self.tasks.spawn(self.reload(), name="reload"))

    def remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    async def wait(self) -> None:
        await self._stop.wait()

    async def shutdown(self) -> None:
        self.notifier.stopping()
        await self.anycast.withdraw()  # BGP moves new flows to the other nodes first
        # Hand the VIP to the peer first: it takes new connections while we drain ours.
        for _, _, task in self.vrrp.values():
            task.cancel()
        await asyncio.gather(*(t for _, _, t in self.vrrp.values()), return_exceptions=True)
        log.info("stopping: draining connections for up to %.0fs", self.config.global_.drain_timeout)
        await self.serving.stop()
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()
        await self.admin.stop()
        await self.pools.stop()
        await self.anycast.stop()
        await self.tasks.close()  # what is left: reloads, drains, VRRP instances on their way out
        _remove_pidfile(self.config.global_.pidfile)
        log.info("stopped")

    # ----------------------------------------------------------------- status

    def process_snapshot(self) -> ProcessSnapshot:
        """What the daemon's own metrics read (plain data: the metrics never see the daemon)."""
        return ProcessSnapshot(
            version=VERSION,
            started=self.started,
            reloads=dict(self.reloads),
            last_reload_success=self.last_reload_success,
            listeners=self.serving.listener_stats(),
        )

    def snapshot(self) -> dict[str, Any]:
        routes: list[dict[str, Any]] = []
        for section in sections(self.config):
            for r in getattr(section.config, "routes", ()):
                if section.kind == "http":
                    target = (
                        f"pool:{r.pool}"
                        if r.pool
                        else f"redirect:{r.redirect}"
                        if r.redirect
                        else f"status:{r.status}"
                    )
                    routes.append(
                        {
                            "listener": section.name,
                            "kind": "http",
                            "host": r.host,
                            "path": r.path,
                            "domain": None,
                            "target": target,
                        }
                    )
                else:
                    routes.append(
                        {
                            "listener": section.name,
                            "kind": "smtp",
                            "host": None,
                            "path": "",
                            "domain": r.domain,
                            "target": f"pool:{r.pool}",
                        }
                    )
            if section.kind == "tcp":
                routes.append(
                    {
                        "listener": section.name,
                        "kind": "tcp",
                        "host": None,
                        "path": "",
                        "domain": None,
                        "target": f"pool:{section.config.pool}",
                    }
                )
        listeners = self.serving.listener_stats()
        if self.config.global_.metrics is not None:
            listeners.append({"kind": "admin", "address": str(self.config.global_.metrics)})
        return {
            "version": VERSION,
            "config": self.config_path,
            "started": self.started,
            "reloads": self.reloads["success"],
            "listeners": listeners,
            "routes": routes,
            "pools": self.pools.stats(),
            "vrrp": [service.stats() for _, service, _ in self.vrrp.values()],
            "acme": self.acme.stats() if self.acme else None,
            "workers": self.serving.status() if isinstance(self.serving, Workers) else [],
            "anycast": self.anycast.stats(),
        }

    async def _metrics(self, request: AdminRequest) -> AdminResponse:
        from prometheus_client import CONTENT_TYPE_LATEST

        await self.serving.refresh()
        return AdminResponse(200, self.exposition.render(), CONTENT_TYPE_LATEST)

    async def _status_json(self, request: AdminRequest) -> AdminResponse:
        await self.serving.refresh()
        return AdminResponse.json(self.snapshot())

    async def _status_html(self, request: AdminRequest) -> AdminResponse:
        await self.serving.refresh()
        return AdminResponse(200, render_html(self.snapshot()).encode(), "text/html; charset=utf-8")

    async def _index(self, request: AdminRequest) -> AdminResponse:
        return AdminResponse.text("sekisho admin: /metrics /status /api/status\n")


def _remove_pidfile(path: str | None) -> None:
    """Remove our pidfile, unless another instance has written its own since."""
    if path:
        with contextlib.suppress(OSError):
            if Path(path).read_text().strip() == str(os.getpid()):
                Path(path).unlink()


def _kinds_at(config: conf.Config, address: conf.Address) -> set[str]:
    return {s.kind for s in sections(config) if address in s.config.listen}


def _admin_policy(config: conf.Config) -> AdminPolicy:
    """Who may use the admin listener, with the token read from its file now."""
    try:
        policy, warnings = admin_policy(config.global_)
    except TokenError as exc:
        raise StartupError(str(exc)) from None
    for warning in (*warnings, *exposure_warnings(config.global_)):
        log.warning("%s", warning)
    return policy


async def serve(config_path: str, config: conf.Config) -> int:
    """Run until SIGTERM/SIGINT; SIGHUP reloads. Returns the exit code."""
    daemon = Daemon(config_path, config)
    daemon.install_signal_handlers()  # before start: a signal during start is not fatal
    try:
        await daemon.start()
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        daemon.request_stop()
        daemon.remove_signal_handlers()
        await daemon.shutdown()
        return 1
    watchdog = None
    if daemon.notifier.watchdog_interval():
        watchdog = daemon.tasks.spawn(daemon.notifier.watchdog_loop(), name="watchdog")
    await daemon.wait()
    if watchdog is not None:
        watchdog.cancel()
    daemon.remove_signal_handlers()
    await daemon.shutdown()
    return 0
