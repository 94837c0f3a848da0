"""keepalived.conf syntax: words, quoted strings and `{ }` blocks, with line numbers.

keepalived's parser (lib/parser.c) is line based: a line is a keyword and its
arguments, a `{` opens the keyword's block, `}` closes it, and `#` or `!`
start a comment. This reads that into a tree of `Node`s and keeps every
line number so the converter can point at the source. Also tolerated: `;`
between statements and `{` on the line after its keyword (seen in notes and
wikis). Not followed: `include` (reported by the converter).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field


class ParseError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


@dataclass
class Node:
    words: list[str]
    line: int
    children: list[Node] | None = None  # None: no block
    used: bool = field(default=False, compare=False)

    @property
    def keyword(self) -> str:
        return self.words[0]

    @property
    def args(self) -> list[str]:
        return self.words[1:]

    def block(self) -> list[Node]:
        return self.children or []


_NEWLINE = "\n"


def _tokens(text: str) -> Iterator[tuple[str, int, bool]]:
    """(token, line, quoted); newlines and ';' come out as _NEWLINE."""
    line = 1
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            yield _NEWLINE, line, False
            line += 1
            i += 1
        elif c in " \t\r\f\v":
            i += 1
        elif c in "#!":
            while i < n and text[i] != "\n":
                i += 1
        elif c == ";":
            yield _NEWLINE, line, False
            i += 1
        elif c in "{}":
            yield c, line, False
            i += 1
        elif c == '"':
            end = text.find('"', i + 1)
            if end < 0 or "\n" in text[i + 1 : end]:
                raise ParseError(line, "unterminated quoted string")
            yield text[i + 1 : end], line, True
            i = end + 1
        else:
            j = i
            while j < n and text[j] not in ' \t\r\f\v\n{};"':
                j += 1
            yield text[i:j], line, False
            i = j
    yield _NEWLINE, line, False


def parse(text: str) -> list[Node]:
    root: list[Node] = []
    stack: list[tuple[list[Node], int]] = [(root, 0)]
    current: list[str] = []
    current_line = 0
    for token, line, quoted in _tokens(text):
        siblings = stack[-1][0]
        if token == _NEWLINE and not quoted:
            if current:
                siblings.append(Node(current, current_line))
                current = []
        elif token == "{" and not quoted:
            if current:
                node = Node(current, current_line, [])
                current = []
                siblings.append(node)
            elif siblings and siblings[-1].children is None:
                node = siblings[-1]  # `{` on the line after its keyword
                node.children = []
            else:
                raise ParseError(line, "'{' without a keyword")
            assert node.children is not None
            stack.append((node.children, node.line))
        elif token == "}" and not quoted:
            if current:
                siblings.append(Node(current, current_line))
                current = []
            if len(stack) == 1:
                raise ParseError(line, "'}' without a matching '{'")
            stack.pop()
        else:
            if not current:
                current_line = line
            current.append(token)
    if len(stack) > 1:
        raise ParseError(stack[-1][1], "block is never closed with '}'")
    return root
