"""The one way untrusted text (file names, global names, messages quoting model data, Hub listings)
reaches a terminal or a log: every character a terminal would act on is shown as an escape.

A scanned file named `x\\nhfguard x: PASS` or `\\x1b[2J.pkl` must not forge a line or clear the
screen. C0 and C1 controls, DEL, the Unicode line/paragraph separators and the bidi controls
(which reorder what is displayed, CVE-2021-42574) come out as `\\n`, `\\x1b`, `\\u202e`; so do
lone surrogates (undecodable bytes of a file name), which could not be written at all, and the
characters a terminal shows as nothing: every other format character (zero-width space and
joiners, soft hyphen, BOM, invisible operators, tag characters that smuggle ASCII), variation
selectors and Hangul fillers. `model\\u200b.bin` must not display as `model.bin`.
Nothing else changes: JSON and SARIF keep the exact values, and rich never parses data as markup
(the text report builds `rich.text.Text` objects from escaped strings).
"""

from __future__ import annotations

import re

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f"          # C0, DEL, C1
                     r"\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"   # bidi marks and overrides
                     r"\u2028\u2029\ud800-\udfff"      # line/paragraph separators, lone surrogates
                     # the other format characters (Unicode category Cf): shown as nothing
                     r"\xad\u0600-\u0605\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200d"
                     r"\u2060-\u2064\u206a-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
                     r"\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
                     r"\U000e0001\U000e0020-\U000e007f"
                     # blank too: variation selectors, Hangul fillers
                     r"\ufe00-\ufe0f\U000e0100-\U000e01ef\u115f\u1160\u3164\uffa0]")


def _escape_char(match: re.Match[str]) -> str:
    ch = match.group()
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def unsafe_chars(text: str) -> list[str]:
    """The characters of `text` that `safe` escapes (one pass; [] for ordinary text)."""
    return _UNSAFE.findall(text)


def safe(text: object) -> str:
    """`text` as a string with every control, bidi and invisible character shown escaped (see
    module doc)."""
    s = text if isinstance(text, str) else str(text)
    return _UNSAFE.sub(_escape_char, s)
