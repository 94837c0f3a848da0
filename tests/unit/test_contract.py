"""The configuration contract: the user's `spec/sekisho.toml`, and the copy this project extends.

The contract as the user wrote it (`spec/sekisho.toml`) is kept in the repository, byte
for byte, at tests/data/contract/sekisho.toml, pinned by its SHA-256 below: nothing
outside the repository is read. (Copied on 2026-12-06; should the user's contract change,
copy it again and update the hash.) The issues extend
the contract in conf/examples/contract.toml (workers, ACME, anycast, exclusions...). What
must hold: the copy only adds (every setting of the contract is still there, in order,
with the same value), and the contract itself still loads, meaning what it meant.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import conf

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "tests" / "data" / "contract" / "sekisho.toml"
COPY = ROOT / "conf" / "examples" / "contract.toml"
CONTRACT_SHA256 = "993907e27b8978bbdf7089088d532b9a250a922a712780d4df30031f0aade416"


def _settings(text: str) -> list[str]:
    """The lines that say something (comments and blank lines dropped)."""
    lines = []
    for line in text.splitlines():
        code = line.split(" #", 1)[0].rstrip() if not line.lstrip().startswith("#") else ""
        if code.strip():
            lines.append(code)
    return lines


def test_the_kept_contract_is_the_users_byte_for_byte() -> None:
    assert hashlib.sha256(CONTRACT.read_bytes()).hexdigest() == CONTRACT_SHA256


def test_the_extended_copy_only_adds_to_the_contract() -> None:
    contract, copy = _settings(CONTRACT.read_text()), _settings(COPY.read_text())
    remaining = iter(copy)
    missing = [line for line in contract if line not in remaining]  # a subsequence, in order
    assert not missing, f"{COPY} drops or changes: {missing}"


def test_the_contract_still_loads_and_means_what_it_meant() -> None:
    original = conf.load_file(CONTRACT)
    extended = conf.load_file(COPY)
    assert original.pools == extended.pools
    assert [h.routes for h in original.http] == [h.routes for h in extended.http]
    assert original.smtp == extended.smtp
    assert original.vrrp == extended.vrrp
