"""The one way untrusted text (file names, global names, messages quoting model data, Hub listings)
reaches a terminal or a log: every character a terminal would act on is shown as an escape.

A scanned file named `x\\nhfguard x: PASS` or `\\x1b[2J.pkl` must not forge a line or clear the
screen. C0 and C1 controls, DEL, the Unicode line/paragraph separators and the bidi controls
(which reorder what is displayed, CVE-2021-42574) come out as `\\n`, `\\x1b`, `\\u202e`; so do
lone surrogates (undecodable bytes of a file name), which could not be written at all.
Nothing else changes: JSON and SARIF keep the exact values, and rich never parses data as markup
(the text report builds `rich.text.Text` objects from escaped strings).
"""

from __future__ import annotations

import re

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f"          # C0, DEL, C1
                     r"\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"   # bidi marks and overrides
                     r"\u2028\u2029\ud800-\udfff]")    # line/paragraph separators, lone surrogates


def _escape_char(match: re.Match[str]) -> str:
    ch = match.group()
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def unsafe_chars(text: str) -> list[str]:
    """The characters of `text` that `safe` escapes (one pass; [] for ordinary text)."""
    return _UNSAFE.findall(text)


def safe(text: object) -> str:
    """`text` as a string with every control and bidi character shown escaped (see module doc)."""
    s = text if isinstance(text, str) else str(text)
    return _UNSAFE.sub(_escape_char, s)
