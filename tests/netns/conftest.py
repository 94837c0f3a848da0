"""netns fixtures: root and keepalived required (fail in CI, skip locally)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns.vrrp_lab import Lab
from tests.support import require_root, require_tool


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    require_root()
    lab = Lab(tmp_path)
    try:
        lab.up()
        yield lab
    finally:
        lab.close()


@pytest.fixture
def keepalived() -> str:
    return require_tool("keepalived")
