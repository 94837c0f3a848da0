"""A private Postfix instance for interop tests (a main.cf and spool of its own under a temp dir).

It lives in a temp directory with its own config directory, queue, data
directory and mail spool, listens on one loopback port, trusts 127.0.0.0/8 for
XCLIENT (unless `xclient=False`: then it does not offer XCLIENT at all, as a
Postfix without `smtpd_authorized_xclient_hosts`), and delivers everything for
`example.test` to local mailboxes (`nobody@example.test` lands in
SPOOL/nobody, mbox format); an unqualified address (`<Postmaster>`) is
qualified as `@example.test` (myorigin).

Postfix only accepts `postfix -c DIR` when the default /etc/postfix/main.cf
names DIR in alternate_config_directories, so `start()` adds DIR to that list
with `postconf -e` (creating the file if the package was installed with "No
configuration"; directories that no longer exist are dropped), so that
several instances can run at once. Always call `stop()`.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

DEFAULT_MAIN_CF = Path("/etc/postfix/main.cf")
DOMAIN = "example.test"


class Postfix:
    def __init__(self, base: Path, port: int, postfix: str = "postfix", xclient: bool = True) -> None:
        self.base = base
        self.port = port
        self.postfix = postfix
        self.xclient = xclient
        self.conf = base / "conf"
        self.queue = base / "queue"
        self.data = base / "data"
        self.spool = base / "mail"
        self.maillog = base / "maillog"
        self.started = False

    def _configure(self) -> None:
        self.base.chmod(0o755)  # Postfix's daemons run as `postfix` and must reach it
        for d in (self.conf, self.queue, self.data, self.spool):
            d.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.data, "postfix")
        self.spool.chmod(0o1777)
        (self.conf / "main.cf").write_text(
            "\n".join(
                [
                    "compatibility_level = 3.6",
                    f"queue_directory = {self.queue}",
                    f"data_directory = {self.data}",
                    f"mail_spool_directory = {self.spool}",
                    f"maillog_file = {self.maillog}",
                    f"maillog_file_prefixes = {self.base}",
                    "inet_interfaces = 127.0.0.1",
                    "inet_protocols = ipv4",
                    f"myhostname = postfix.{DOMAIN}",
                    f"myorigin = {DOMAIN}",
                    f"mydestination = {DOMAIN}",
                    "mynetworks = 127.0.0.0/8",
                    "local_recipient_maps =",
                    "alias_maps =",
                    "alias_database =",
                    f"smtpd_authorized_xclient_hosts = {'127.0.0.0/8' if self.xclient else ''}",
                    "biff = no",
                    "smtputf8_enable = no",
                    "",
                ]
            )
        )
        master = Path("/etc/postfix/master.cf").read_text()
        master, n = re.subn(
            r"^smtp(\s+)inet\s.*$",
            f"127.0.0.1:{self.port} inet n - n - - smtpd",
            master,
            count=1,
            flags=re.M,
        )
        assert n == 1, "no 'smtp inet' line in /etc/postfix/master.cf"
        (self.conf / "master.cf").write_text(master)
        if not DEFAULT_MAIN_CF.exists():
            DEFAULT_MAIN_CF.touch()
        listed = subprocess.run(
            ["postconf", "-h", "alternate_config_directories"],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.replace(",", " ")
        dirs = [d for d in listed.split() if Path(d).is_dir() and d != str(self.conf)]
        subprocess.run(
            ["postconf", "-e", f"alternate_config_directories = {' '.join([*dirs, str(self.conf)])}"],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def start(self, timeout: float = 20.0) -> None:
        self._configure()
        r = subprocess.run(
            [self.postfix, "-c", str(self.conf), "start"],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.started = True
        if r.returncode != 0:
            raise RuntimeError(f"postfix start failed: {r.stdout}{r.stderr}{self.log()}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1) as s:
                s.settimeout(5)
                if s.recv(512).startswith(b"220"):
                    return
            time.sleep(0.1)
        raise RuntimeError(f"postfix did not come up on port {self.port}: {self.log()}")

    def stop(self) -> None:
        if self.started:
            subprocess.run(
                [self.postfix, "-c", str(self.conf), "stop"], check=False, capture_output=True, timeout=60
            )
            self.started = False

    def log(self) -> str:
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""

    def mailbox(self, user: str = "nobody") -> bytes:
        path = self.spool / user
        return path.read_bytes() if path.exists() else b""

    def messages(self, user: str = "nobody") -> list[bytes]:
        """The mbox split into messages (separator: a 'From ' line after a blank line)."""
        box = self.mailbox(user)
        if not box:
            return []
        parts = re.split(rb"(?:^|\n\n)(?=From \S+ )", box)
        return [p for p in parts if p]

    def delivered(self) -> int:
        return self.log().count("status=sent")

    def queue_settled(self) -> bool:
        """Every message Postfix accepted has left the queue."""
        text = self.log()
        return text.count(": removed") >= text.count("queue active")

    def wait_delivered(self, count: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.delivered() >= count and self.queue_settled():
                return
            time.sleep(0.1)
        raise AssertionError(f"expected {count} deliveries, log:\n{self.log()[-3000:]}")
