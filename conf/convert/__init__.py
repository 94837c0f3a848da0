"""`sekisho convert keepalived FILE` and `sekisho convert delegate FILE`.

The configuration an operator already has becomes sekisho TOML on stdout;
everything that does not carry over is a warning on stderr naming the line
(`FILE:LINE: warning: ...`), repeated as comments at the top of the output.
The output is checked with `conf.load_text` before it is printed: a
converter bug never hands the operator a file `sekisho check` rejects.

Exit status: 0 converted (warnings or not), 1 the input could not be read or
parsed, or holds a construct that cannot be translated without the result
admitting more than the original did (each is named on stderr as
`FILE:LINE: error: ...` with what to do; nothing is written), 2 the result
failed validation (a bug: please report it).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TextIO

import conf
from conf.convert import delegate, keepalived
from conf.convert.kaparse import ParseError
from conf.convert.output import Document, Warnings

Converter = Callable[[str, str], tuple[Document, Warnings]]
CONVERTERS: dict[str, tuple[Converter, str]] = {
    "keepalived": (keepalived.convert, "keepalived.conf (vrrp_instance, virtual_server)"),
    "delegate": (delegate.convert, "DeleGate parameter file (+=FILE) or start script"),
}


def convert_text(kind: str, text: str, source: str) -> tuple[str, Warnings]:
    """Convert one file's text; returns the TOML and the warnings (raises ParseError)."""
    function = CONVERTERS[kind][0]
    doc, warnings = function(text, os.path.basename(source))
    warnings.items.sort(key=lambda n: n.line)
    doc.header = [
        f"sekisho configuration converted from {os.path.basename(source)} by `sekisho convert {kind}`.",
        "Check it with `sekisho check -c FILE` and review every note below before use.",
    ]
    if warnings.items:
        doc.header.append("")
        doc.header.extend(
            n.format(os.path.basename(source)).replace(": warning", "", 1) for n in warnings.items
        )
    return doc.render(), warnings


def main(argv: list[str], stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """argv is what follows `sekisho convert`: ["keepalived", "FILE"] or ["delegate", "FILE"]."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = argparse.ArgumentParser(
        prog="sekisho convert",
        description="Convert a keepalived or DeleGate configuration to sekisho TOML (on stdout).",
    )
    parser.add_argument("kind", choices=sorted(CONVERTERS), help="the format of FILE")
    parser.add_argument("file", metavar="FILE", help="the file to convert; - reads stdin")
    parser.add_argument("-o", "--output", metavar="OUT", help="write the TOML to OUT instead of stdout")
    args = parser.parse_args(argv)
    source = "<stdin>" if args.file == "-" else args.file
    try:
        if args.file == "-":
            text = sys.stdin.read()
        else:
            with open(args.file, encoding="utf-8", errors="replace") as f:
                text = f.read()
    except OSError as exc:
        print(f"sekisho convert: cannot read {source}: {exc.strerror}", file=err)
        return 1
    try:
        toml, warnings = convert_text(args.kind, text, source)
    except ParseError as exc:
        print(f"{source}:{exc.line}: error: {exc.message}", file=err)
        return 1
    for note in warnings.items:
        print(note.format(source), file=err)
    if warnings.errors:
        print(
            f"sekisho convert: {len(warnings.errors)} construct(s) cannot be translated without "
            "admitting more than the original did; nothing written",
            file=err,
        )
        return 1
    try:
        conf.load_text(toml, source=f"converted {source}")
    except conf.ConfigError as exc:
        print(
            f"sekisho convert: the converted configuration does not pass the check (a bug):\n{exc}", file=err
        )
        out.write(toml)
        return 2
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(toml)
        except OSError as exc:
            print(f"sekisho convert: cannot write {args.output}: {exc.strerror}", file=err)
            return 1
    else:
        out.write(toml)
    print(f"sekisho convert: {len(warnings.items)} warning(s)", file=err)
    return 0


__all__ = ["CONVERTERS", "convert_text", "main"]
