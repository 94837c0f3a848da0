"""ARP probe run inside a namespace: who answers for an address?

    python -m tests.netns.arp_probe IFACE TARGET [--wait-mac MAC] [--timeout S] [--listen S]

Prints one JSON line: {"replies": [[mac, monotonic_time], ...]} (all replies for
TARGET seen during --listen seconds after one request), or with --wait-mac,
{"mac": MAC, "at": monotonic_time} once MAC answers (requests every 10 ms).
CLOCK_MONOTONIC is shared by every namespace, so the caller can subtract.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import select
import socket
import sys
import time

from vrrp import arp


def _own(ifname: str) -> tuple[bytes, ipaddress.IPv4Address]:
    with open(f"/sys/class/net/{ifname}/address") as f:
        mac = arp.mac_to_bytes(f.read().strip())
    import fcntl
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("256s", ifname.encode())
        res = fcntl.ioctl(s.fileno(), 0x8915, req)  # SIOCGIFADDR
    return mac, ipaddress.IPv4Address(res[20:24])


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("iface")
    p.add_argument("target")
    p.add_argument("--wait-mac")
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--listen", type=float, default=0.3)
    args = p.parse_args()
    target = ipaddress.IPv4Address(args.target)
    mac, ip = _own(args.iface)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(arp.ETH_P_ARP))
    sock.bind((args.iface, arp.ETH_P_ARP))
    request = arp.build_arp(
        arp.ARPOP_REQUEST, sender_mac=mac, sender_ip=ip, target_mac=arp.ZERO_MAC, target_ip=target
    )
    want = arp.mac_to_bytes(args.wait_mac) if args.wait_mac else None
    print(json.dumps({"ready": time.monotonic()}), flush=True)
    deadline = time.monotonic() + (args.timeout if want else args.listen)
    replies: list[tuple[str, float]] = []
    next_send = 0.0
    while (now := time.monotonic()) < deadline:
        if now >= next_send and (want is not None or not next_send):
            sock.send(request)
            next_send = now + 0.01
        ready, _, _ = select.select([sock], [], [], max(0.0, min(next_send, deadline) - now))
        if not ready:
            continue
        frame = sock.recv(2048)
        at = time.monotonic()
        try:
            pkt = arp.parse_arp(frame)
        except Exception:
            continue
        if pkt.op != arp.ARPOP_REPLY or pkt.sender_ip != target:
            continue
        replies.append((arp.mac_to_str(pkt.sender_mac), at))
        if want is not None and pkt.sender_mac == want:
            print(json.dumps({"mac": arp.mac_to_str(want), "at": at}), flush=True)
            return 0
    if want is not None:
        print(json.dumps({"mac": None, "replies": replies}), flush=True)
        return 1
    print(json.dumps({"replies": replies}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
