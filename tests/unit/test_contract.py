"""conf/examples/contract.toml is the configuration contract, copied in byte for byte.

The contract's home is `shared/spec/sekisho.toml` beside the repository (CI has it); a
fresh clone has only the copy, and every test reads the copy. This test keeps the two
from drifting apart: locally it skips when there is no `../shared`, in CI
(SEKISHO_REQUIRE_ALL=1) a missing contract is a failure.
"""

from __future__ import annotations

from pathlib import Path

from tests.support import require_or_skip

ROOT = Path(__file__).resolve().parents[2]
COPY = ROOT / "conf" / "examples" / "contract.toml"
SHARED = ROOT.parent / "shared" / "spec" / "sekisho.toml"


def test_the_copy_in_the_repository_is_the_contract_byte_for_byte() -> None:
    require_or_skip(SHARED.is_file(), f"no {SHARED} beside the clone to compare the copy with")
    copy, contract = COPY.read_bytes(), SHARED.read_bytes()
    assert copy == contract, f"{COPY} differs from {SHARED}: cp {SHARED} {COPY}"
