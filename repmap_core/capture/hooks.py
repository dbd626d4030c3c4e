"""One place that knows what a transformer block takes and returns, for every hook that reads or writes it.

Blocks return either the hidden states `(B, T, d)` or a tuple whose first item they are (with
attention weights or caches after it), depending on the architecture and the transformers
version. Extraction reads them and steering rewrites them; both go through these two functions,
so reading and steering cannot disagree (steering-vectors' `untuple_tensor` does the same).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any


def block_hidden(output: Any) -> Any:
    """The hidden states `(B, T, d)` inside a block's output."""
    return output[0] if isinstance(output, tuple) else output


def with_hidden(output: Any, hidden: Any) -> Any:
    """The block's output with its hidden states replaced by `hidden` (same structure as before)."""
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


# ------------------------------------------------------------------- running a model from a block onwards
# A forward whose first blocks give the same output every time (frozen while the last blocks train; unsteered
# before the steered block) need not run them again: their output is taken once (`block_input`) and later
# forwards start from it (`started_at`). Pass-through modules stand in for the skipped blocks, so the model's
# own forward still builds the masks and position embeddings the later blocks need.


class _Stop(Exception):
    """Raised at the block whose input was wanted: nothing after it needs to run."""


def _hidden_arg(args: tuple, kwargs: dict) -> Any:
    """The hidden states a block is called with (its first argument, or `hidden_states=`)."""
    return args[0] if args else kwargs["hidden_states"]


def block_input(blocks, index: int, forward: Callable[[], Any]) -> tuple[Any, bool]:
    """Run `forward()` (one forward of the model `blocks` belong to) only as far as block `index` (>= 1) and
    return the hidden states that block is given `(B, T, d)`, and whether block `index - 1` returned a plain
    tensor (where it returns a tuple, a pass-through module could not stand in for it: `started_at` needs True)."""
    import torch

    got, plain = [], []

    def take(_module, args, kwargs):
        got.append(_hidden_arg(args, kwargs))
        raise _Stop

    hooks = [blocks[index].register_forward_pre_hook(take, with_kwargs=True),
             blocks[index - 1].register_forward_hook(lambda _m, _a, out: plain.append(isinstance(out, torch.Tensor)))]
    try:
        with contextlib.suppress(_Stop):
            forward()
    finally:
        for hook in hooks:
            hook.remove()
    if not got:
        raise RuntimeError(f"the forward never reached block {index}")
    return got[0], bool(plain) and all(plain)


@contextlib.contextmanager
def started_at(blocks, first: int, hidden: Callable[[Any], Any]):
    """Within this block a forward skips `blocks[:first]` (pass-through modules in their places) and hands
    `blocks[first]` the hidden states `hidden(given)` returns, where `given` is what reached it (the embeddings'
    output, for its shape). Only for blocks that return a plain tensor (`block_input` says). Put back after."""
    import torch

    class PassThrough(torch.nn.Module):
        def forward(self, hidden_states, *args, **kwargs):
            return hidden_states

    def give(_module, args, kwargs):
        new = hidden(_hidden_arg(args, kwargs))
        return ((new, *args[1:]), kwargs) if args else (args, dict(kwargs, hidden_states=new))

    skipped = [blocks[i] for i in range(first)]
    hook = blocks[first].register_forward_pre_hook(give, with_kwargs=True)
    try:
        for i in range(first):
            blocks[i] = PassThrough()
        yield
    finally:
        hook.remove()
        for i, block in enumerate(skipped):
            blocks[i] = block
