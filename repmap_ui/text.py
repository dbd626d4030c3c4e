"""User-supplied text (a data spec, a model name, a URL value, an error that quotes one) shown as
literal text: Streamlit renders markdown (and links) in captions, alerts and errors, so a crafted
link must not be able to put a clickable link, an image or formatting inside the app's own messages.

Escaped: backslashes, backticks, `*`, `[`, `]`, `<`, `>`, `~`, `$`, an underscore at a word's edge
(inside a word, as in `all-MiniLM_L6`, it formats nothing), and the `://` and `www.` that make a bare
address a link. Ordinary sentences (colons, dots, brackets) come through unchanged.
"""
from __future__ import annotations

import re

_SPECIAL = re.compile(r"([\\`*\[\]<>~$])")
_EDGE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_ADDRESS = re.compile(r"(?i)\b(https?|ftp|mailto):(//)?|\bwww\.")


def md(text: object) -> str:
    """`text` with every markdown-active character escaped, so it renders exactly as written.

    >>> md("**[sign in](https://example.org)**")
    '\\\\*\\\\*\\\\[sign in\\\\](https\\\\:\\\\/\\\\/example.org)\\\\*\\\\*'
    """
    out = _SPECIAL.sub(r"\\\1", str(text))
    out = _EDGE_UNDERSCORE.sub(r"\\_", out)
    out = _ADDRESS.sub(lambda m: m.group(0).replace(":", "\\:").replace("/", "\\/").replace(".", "\\."), out)
    return out.replace("\n", " ")
