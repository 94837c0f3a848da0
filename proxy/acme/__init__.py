"""Automatic HTTPS: certificates from an ACME CA (RFC 8555) for the hosts of the HTTPS
listeners that say `tls = [{ acme = true }]`, renewed and swapped without a reload.

plan.py     when to order what (sans-IO: renewal time, backoff, which hosts)
store.py    the state directory: atomic writes, mode 0600, key and chain in one file
client.py   the protocol, on certbot's `acme` package (run in a worker thread)
tlsalpn.py  TLS-ALPN-01: the challenge certificate, reading a ClientHello
board.py    the open challenges the listeners answer
listen.py   what an HTTPS listener needs: certificate paths, the TLS-ALPN-01 peek
service.py  the background task that ties them together
"""
