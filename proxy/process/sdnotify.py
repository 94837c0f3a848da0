"""sd_notify(3) without libsystemd: one datagram per state change.

    notifier = Notifier.from_env()      # no-op when NOTIFY_SOCKET is unset
    notifier.ready()                    # READY=1, after listeners are bound and VRRP started
    notifier.reloading()                # RELOADING=1 + MONOTONIC_USEC (systemd >= 253)
    notifier.ready()                    # ... after the reload is done (or refused)
    notifier.stopping()                 # STOPPING=1 on SIGTERM
    notifier.status("3 pools, 2 up")    # STATUS=..., shown by `systemctl status`
    task_group.create_task(notifier.watchdog_loop())   # WATCHDOG=1 at half WatchdogSec

The protocol (systemd's `sd_notify` and `sd_watchdog_enabled`): NOTIFY_SOCKET
names an AF_UNIX datagram socket, a path or, with a leading '@', an abstract
one; each message is newline-separated `KEY=VALUE` assignments. WATCHDOG_USEC
is the interval in microseconds; WATCHDOG_PID, when set, must be our pid or
the watchdog is meant for another process. Sending never raises: a service
manager that went away must not take the proxy down with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Mapping

log = logging.getLogger("sekisho.sdnotify")


class Notifier:
    def __init__(
        self,
        address: str | None,
        watchdog_usec: int | None = None,
    ) -> None:
        self.address = address
        self._watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self.sent: deque[str] = deque(maxlen=64)  # recent messages sent (tests, debugging)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, pid: int | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        if address is not None and not (address.startswith(("/", "@"))):
            log.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract socket; ignored", address)
            address = None
        return cls(address, _watchdog_usec(env, os.getpid() if pid is None else pid))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    # ------------------------------------------------------------- messages

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self, status: str | None = None) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *([f"STATUS={status}"] if status else []))

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def notify(self, *assignments: str) -> bool:
        """Send `KEY=VALUE` lines as one datagram; False when disabled or the send failed."""
        if self.address is None or not assignments:
            return False
        message = "\n".join(assignments)
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                # Non-blocking: a receiver that stops reading (its queue holds only
                # net.unix.max_dgram_qlen datagrams) must never stall the event loop.
                self._sock = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                )
            self._sock.sendto(message.encode(), target)
        except OSError as exc:
            log.debug("sd_notify to %s failed: %s", self.address, exc)
            return False
        self.sent.append(message)
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # ------------------------------------------------------------- watchdog

    def watchdog_interval(self) -> float | None:
        """WatchdogSec in seconds when the watchdog is meant for us, else None."""
        if self.address is None or self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 1_000_000

    async def watchdog_loop(self) -> None:
        """Send WATCHDOG=1 every half interval until cancelled; returns at once when disabled.

        It runs on the daemon's event loop, so a loop stuck in a blocking call stops
        the pings and systemd restarts the service, which is the point.
        """
        interval = self.watchdog_interval()
        if interval is None:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(interval / 2)


def _watchdog_usec(env: Mapping[str, str], pid: int) -> int | None:
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner:
        try:
            if int(owner) != pid:
                return None
        except ValueError:
            return None
    return usec


def _one_line(text: str) -> str:
    return " ".join(text.split())


__all__ = ["Notifier"]
