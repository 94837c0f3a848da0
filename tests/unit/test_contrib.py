"""contrib/sekisho.service runs sekisho from where the README's install instructions put it.

The unit once named /usr/bin/sekisho, where pip never installs anything: `systemctl start`
failed with 203/EXEC on a machine set up by the README. Here the path in the unit is derived
the way pip derives it (the venv scheme's scripts directory plus the project's console
script name) from the venv the README creates. tests/integration/test_ops_contrib.py has
systemd-analyze verify the unit itself.
"""

from __future__ import annotations

import re
import shlex
import sysconfig
import tomllib
from pathlib import Path

from proxy.process.cli import DEFAULT_CONFIG

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "contrib" / "sekisho.service"
README = ROOT / "README.md"


def _exec_lines() -> list[tuple[str, list[str]]]:
    """(key, argv) of every Exec*= line of the unit."""
    lines = []
    for raw in UNIT.read_text().splitlines():
        key, sep, value = raw.partition("=")
        if sep and key.startswith("Exec"):
            lines.append((key, shlex.split(value)))
    return lines


def test_the_unit_runs_sekisho_where_the_readme_installs_it() -> None:
    readme = README.read_text()
    venv = re.search(r"^ +python3 -m venv (/\S+)", readme, re.MULTILINE)
    assert venv is not None, "README: no `python3 -m venv DIR` in the install instructions"
    prefix = venv.group(1)
    assert re.search(rf"^ +{re.escape(prefix)}/bin/pip install \.", readme, re.MULTILINE)
    # Where pip puts a console script in that venv: the venv scheme's scripts directory.
    scripts = sysconfig.get_path("scripts", "venv", vars={"base": prefix, "platbase": prefix})
    (name,) = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    installed = f"{scripts}/{name}"

    sekisho = [(key, argv) for key, argv in _exec_lines() if Path(argv[0]).name == name]
    assert {key for key, _ in sekisho} == {"ExecStartPre", "ExecStart", "ExecReload"}
    for key, argv in sekisho:
        assert argv[0] == installed, f"{key}={shlex.join(argv)}: pip installs sekisho as {installed}"
        assert argv[1:] in (["check", "-c", DEFAULT_CONFIG], ["run", "-c", DEFAULT_CONFIG]), key
    # And both documents say so in words: the README's install section and the unit's comment.
    assert f"`{installed}`" in readme
    comments = "\n".join(line for line in UNIT.read_text().splitlines() if line.startswith("#"))
    assert installed in comments and f"{prefix}/bin/pip install ." in comments
