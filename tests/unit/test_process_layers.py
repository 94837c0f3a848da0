"""The process layer's shape: arrows point one way, and the metrics never import the daemon.

proxy.process -> the edges (proxy.http, proxy.smtp, proxy.tcp, proxy.listener) -> lb -> conf.
Checked twice: by what a fresh interpreter loads, and by reading every import statement
(those under `if TYPE_CHECKING:` and inside functions too: a cycle mypy sees is a cycle).
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROCESS = ROOT / "proxy" / "process"
METRICS = PROCESS / "metrics"
# Old paths kept as one-line re-exports of the process layer (they may import it).
SHIMS = {ROOT / "proxy" / "cli.py"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> Iterator[str]:
    """Every module an import statement in `path` names, absolute, wherever the statement is."""
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    return imports_in(path.read_text(), package, str(path))


def imports_in(source: str, package: str, filename: str = "<probe>") -> Iterator[str]:
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            yield base
            # `from proxy.process import daemon` names the module proxy.process.daemon.
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _reaches(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")


def test_metrics_do_not_load_the_daemon() -> None:
    code = (
        "import sys\n"
        "import proxy.process.metrics, proxy.process.metrics.core, proxy.process.metrics.http\n"
        "import proxy.process.metrics.lb, proxy.process.metrics.smtp, proxy.process.metrics.vrrp\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('proxy.process.')"
        " and not m.startswith('proxy.process.metrics'))\n"
        "print(' '.join(loaded))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == [], f"importing the metrics loaded {out.stdout.strip()}"


@pytest.mark.parametrize("path", sorted(METRICS.glob("*.py")), ids=lambda p: p.name)
def test_metrics_import_nothing_else_of_the_process_layer(path: Path) -> None:
    """Not the daemon, not even for type checking: the daemon hands them snapshots."""
    wrong = [
        name
        for name in imports(path)
        if _reaches(name, "proxy.process")
        and not _reaches(name, "proxy.process.metrics")
        and name != "proxy.process"
    ]
    assert wrong == [], f"{path.relative_to(ROOT)} imports {wrong}"


def _below_the_process_layer() -> Iterator[Path]:
    for top in ("proxy", "lb", "vrrp", "conf"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if PROCESS not in path.parents and path not in SHIMS:
                yield path


@pytest.mark.parametrize("path", list(_below_the_process_layer()), ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_below_imports_the_process_layer(path: Path) -> None:
    wrong = [name for name in imports(path) if _reaches(name, "proxy.process")]
    assert wrong == [], f"{path.relative_to(ROOT)} imports {wrong}"


def test_the_checker_sees_a_cycle_under_type_checking() -> None:
    """The AST check reads guarded, deferred and relative imports (the old cycle was guarded)."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from proxy.process.daemon import Daemon\n"
        "def f():\n"
        "    from .. import daemon\n"
        "    from ..daemon import serve\n"
    )
    names = list(imports_in(source, "proxy.process.metrics"))
    assert names.count("proxy.process.daemon") == 3


def test_console_script_and_old_module_path() -> None:
    """pyproject's `sekisho` script names a callable; `python -m proxy.cli` still runs the CLI."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attr = scripts["sekisho"].partition(":")
    assert module == "proxy.process.cli"
    assert callable(getattr(importlib.import_module(module), attr))
    out = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.startswith("sekisho ")
