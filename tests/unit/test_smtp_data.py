"""The DATA-stream scanner: the end of data, dot-stuffing, bare CR/LF (SMTP smuggling)."""

from __future__ import annotations

from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.smtp.data import FLUSH_AT, DataScanner

Mode = Literal["reject", "normalize"]

# hannob/smtpsmug's malformed ends, with a smuggled second transaction behind them.
SMUGGLE_ENDS = {
    "lflf": b"\n.\n",
    "crcr": b"\r.\r",
    "crlf": b"\r.\n",
    "lfcr": b"\n.\r",
    "lfcrlf": b"\n.\r\n",
    "crlflf": b"\r\n.\n",
    "crcrlf": b"\r.\r\n",
    "crlfcr": b"\r\n.\r",
    "nullbefore": b"\r\n\x00.\r\n",
    "nullafter": b"\r\n.\x00\r\n",
}
SMUGGLED = b"MAIL FROM:<a@b.c>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nsmuggled\r\n"


def scan(chunks: list[bytes], mode: Mode = "reject", limit: int = 10**9) -> tuple[bytes, bytes, DataScanner]:
    """-> (forwarded, left over after the end, scanner)."""
    sc = DataScanner(mode, limit)
    buf = bytearray()
    out = bytearray()
    done = False
    for c in chunks:
        buf += c
        while not done:
            step = sc.step(buf)
            if step is None:
                break
            data, done = step
            out += data
    assert done
    return bytes(out), bytes(buf), sc


def test_plain_message_passes_byte_for_byte() -> None:
    body = b"Subject: x\r\n\r\n..stuffed\r\n.\r\nnot the end\r\n"  # second "." line is stuffed below
    wire = body.replace(b"\r\n.\r\n", b"\r\n..\r\n") + b".\r\n"
    out, rest, sc = scan([wire + b"QUIT\r\n"])
    assert out == wire and rest == b"QUIT\r\n" and sc.problem is None


def test_empty_message() -> None:
    assert scan([b".\r\n"])[0] == b".\r\n"


def test_every_byte_boundary() -> None:
    wire = b"a\r\n..b\r\n\r\nc" + b"x" * 50 + b"\r\n.\r\nNEXT"
    whole = scan([wire])
    for i in range(1, len(wire) - 4):
        assert scan([wire[:i], wire[i:]])[:2] == whole[:2], i
    assert scan([bytes([b]) for b in wire])[:2] == whole[:2]


def test_long_line_without_crlf_is_streamed() -> None:
    line = b"y" * (FLUSH_AT * 3) + b"\r" + b"\n"
    out, _, sc = scan([line[i : i + 4096] for i in range(0, len(line), 4096)] + [b".\r\n"])
    assert out == line + b".\r\n" and sc.problem is None


@pytest.mark.parametrize("name", sorted(SMUGGLE_ENDS))
def test_smuggling_reject(name: str) -> None:
    end = SMUGGLE_ENDS[name]
    wire = b"Subject: x\r\n\r\nbody" + end + SMUGGLED + b".\r\nQUIT\r\n"
    for chunks in ([wire], [bytes([b]) for b in wire]):
        out, rest, sc = scan(chunks)
        assert rest == b"QUIT\r\n"  # one message: the smuggled transaction is inside it
        if b"\x00" in end:
            assert sc.problem is None
            assert out.count(b"\r\n.\r\n") == 1 and out.endswith(b"\r\n.\r\n")
        else:
            assert sc.problem is not None and sc.problem.code == 550
            # Clean lines before the bare ending may have gone on, never an end of data.
            assert wire.startswith(out) and b"\r\n.\r\n" not in out and not out.startswith(b".\r\n")
            assert out.count(b"\r") == out.count(b"\r\n") == out.count(b"\n")


@pytest.mark.parametrize("name", sorted(SMUGGLE_ENDS))
def test_smuggling_normalize(name: str) -> None:
    end = SMUGGLE_ENDS[name]
    wire = b"Subject: x\r\n\r\nbody" + end + SMUGGLED + b".\r\nQUIT\r\n"
    out, rest, sc = scan([wire], "normalize")
    assert rest == b"QUIT\r\n" and sc.problem is None
    # The forwarded stream is CRLF-clean and has exactly one end of data.
    assert out.count(b"\r") == out.count(b"\r\n") == out.count(b"\n")
    assert out.count(b"\r\n.\r\n") == 1 and out.endswith(b"\r\n.\r\n")
    assert b"\r\n..\r\n" in out or b"\x00" in end


def test_normalize_stuffs_new_lines_only() -> None:
    out, _, _ = scan([b"a\n.b\r\n..c\r\n.\r\n"], "normalize")
    assert out == b"a\r\n..b\r\n..c\r\n.\r\n"
    out, _, _ = scan([b"a\r\n.\nb\r\n.\r\n"], "normalize")
    assert out == b"a\r\n..\r\nb\r\n.\r\n"


def test_size_limit() -> None:
    out, rest, sc = scan([b"x" * 600 + b"\r\n", b"y\r\n.\r\nQUIT\r\n"], limit=500)
    assert sc.problem is not None and sc.problem.code == 552
    assert out == b"" and rest == b"QUIT\r\n"


@given(
    st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"\x00"]), max_size=40),
    st.integers(1, 7),
    st.sampled_from(["reject", "normalize"]),
)
@settings(max_examples=400, deadline=None)
def test_never_a_second_end_of_data(pieces: list[bytes], step: int, mode: Mode) -> None:
    wire = b"".join(pieces) + b"\r\n.\r\n"
    sc = DataScanner(mode, 10**9)
    buf = bytearray()
    out = bytearray()
    done = False
    for i in range(0, len(wire), step):
        buf += wire[i : i + step]
        while not done and (res := sc.step(buf)) is not None:
            out += res[0]
            done = res[1]
        if done:
            break
    assert done
    # What reaches the backend is CRLF-clean and ends exactly once, at its very end (or not at all).
    stream = b"\r\n" + bytes(out)
    assert stream.count(b"\r") == stream.count(b"\r\n") == stream.count(b"\n")
    ends = stream.count(b"\r\n.\r\n")
    if sc.problem is None:
        assert ends == 1 and stream.endswith(b"\r\n.\r\n")
    else:
        assert ends == 0
