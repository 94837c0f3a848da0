"""The configuration contract: the user's `spec/sekisho.toml`, and the copy this project extends.

The contract as the user wrote it is kept in the repository, byte for byte, at
tests/data/contract/sekisho.toml (its home, `shared/spec/sekisho.toml` beside the clone,
is compared when it is there; a fresh clone needs nothing beside it). The issues extend
the contract in conf/examples/contract.toml (workers, ACME, anycast, exclusions...). What
must hold: the copy only adds (every setting of the contract is still there, in order,
with the same value), and the contract itself still loads, meaning what it meant.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import conf

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "tests" / "data" / "contract" / "sekisho.toml"
COPY = ROOT / "conf" / "examples" / "contract.toml"
SHARED = ROOT.parent / "shared" / "spec" / "sekisho.toml"


def _settings(text: str) -> list[str]:
    """The lines that say something (comments and blank lines dropped)."""
    lines = []
    for line in text.splitlines():
        code = line.split(" #", 1)[0].rstrip() if not line.lstrip().startswith("#") else ""
        if code.strip():
            lines.append(code)
    return lines


def test_the_kept_contract_is_the_users_byte_for_byte() -> None:
    if not SHARED.is_file():
        pytest.skip(f"no {SHARED} beside this clone (the kept copy is what the tests read)")
    assert CONTRACT.read_bytes() == SHARED.read_bytes(), f"cp {SHARED} {CONTRACT}"


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
