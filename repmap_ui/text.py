"""User-supplied text (a data spec, a model name, a URL value, an error that quotes one) shown as
literal text: Streamlit renders markdown (and links) in captions, alerts and errors, so a crafted
link must not be able to put a clickable link, an image or formatting inside the app's own messages.

Escaped: backslashes, backticks, `*`, `[`, `]`, `<`, `>`, `~`, `$`, an underscore at a word's edge
(inside a word, as in `all-MiniLM_L6`, it formats nothing), and what makes a bare address a link. Escapes
alone do not stop that: Streamlit's markdown (GFM) turns `https://...`, `www....` and `name@host.org` into
links in the text after the escapes are resolved, so an invisible word joiner (U+2060) goes after the scheme,
after `www` and after `@`, where no address pattern can match across it. Ordinary sentences (colons, dots,
brackets) come through unchanged.
"""
from __future__ import annotations

import re

_SPECIAL = re.compile(r"([\\`*\[\]<>~$])")
_EDGE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_ADDRESS = re.compile(r"(?i)\b(https?|ftp|mailto|xmpp):(//)?|\bwww\.")
JOINER = "\u2060"  # WORD JOINER: invisible, and not a character any autolink pattern accepts


def _defang(m: re.Match) -> str:
    """`https://` -> `https` + joiner + `\\:\\/\\/`; `www.` -> `www` + joiner + `\\.`."""
    found = m.group(0)
    head = 3 if found.lower().startswith("www") else len(m.group(1))
    return found[:head] + JOINER + found[head:].replace(":", "\\:").replace("/", "\\/").replace(".", "\\.")


def md(text: object) -> str:
    """`text` with every markdown-active character escaped, so it renders exactly as written.

    >>> md("**[sign in](https://example.org)**")
    '\\\\*\\\\*\\\\[sign in\\\\](https\\u2060\\\\:\\\\/\\\\/example.org)\\\\*\\\\*'
    """
    out = _SPECIAL.sub(r"\\\1", str(text))
    out = _EDGE_UNDERSCORE.sub(r"\\_", out)
    out = _ADDRESS.sub(_defang, out)
    out = out.replace("@", "@" + JOINER)  # name@host.org would be a mailto: link
    return out.replace("\n", " ")
