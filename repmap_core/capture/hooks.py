"""One place that knows what a transformer block returns, for every hook that reads or writes it.

Blocks return either the hidden states `(B, T, d)` or a tuple whose first item they are (with
attention weights or caches after it), depending on the architecture and the transformers
version. Extraction reads them and steering rewrites them; both go through these two functions,
so reading and steering cannot disagree (steering-vectors' `untuple_tensor` does the same).
"""
from __future__ import annotations

from typing import Any


def block_hidden(output: Any) -> Any:
    """The hidden states `(B, T, d)` inside a block's output."""
    return output[0] if isinstance(output, tuple) else output


def with_hidden(output: Any, hidden: Any) -> Any:
    """The block's output with its hidden states replaced by `hidden` (same structure as before)."""
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
