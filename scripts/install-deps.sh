#!/usr/bin/env bash
# Installs the Debian packages the tests and the bench need (real peers:
# keepalived, Postfix, HAProxy, nginx, wrk, iperf3, promtool, Chromium, pebble).
# Only when running as root; otherwise the tests that need them skip (or fail
# under SEKISHO_REQUIRE_ALL=1). Debian starts system services on install:
# we stop them so they never hold the ports or the VRRP group of the tests.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
  echo "install-deps: not root, skipping Debian packages" >&2
  exit 0
fi
pkgs=(keepalived postfix haproxy nginx-light libnginx-mod-stream wrk iperf3
      prometheus chromium tcpdump iproute2 procps curl openssl nghttp2-client pebble
      bird2 nftables)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  # Keep package postinst scripts from starting services we would then fight.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
  # bird2's unit would run a BIRD in the root namespace from the next boot on; the tests run their own.
  if command -v systemctl >/dev/null; then systemctl disable bird.service >/dev/null 2>&1 || true; fi
fi
exit 0
