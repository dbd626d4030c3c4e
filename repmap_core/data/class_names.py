"""What label 0 and label 1 mean, for legends: the data's own class names instead of "label 0/1"."""
from __future__ import annotations

__all__ = ["class_names"]

_BUILTIN = {"sentiment": ("negative", "positive"), "hh_harmless": ("rejected", "chosen"),
            "science_qa": ("distractor", "correct")}


def class_names(dataset) -> dict[int, str]:
    """{0: name, 1: name} for a `TextDataset` (or anything with `name`, `texts`, `is_paired`, `has_answers`)."""
    name = str(getattr(dataset, "name", ""))
    if name.startswith("builtin:"):
        key = name.split(":", 1)[1].split(" ")[0]
        if key in _BUILTIN:
            return dict(enumerate(_BUILTIN[key]))
    if getattr(dataset, "is_paired", False) and getattr(dataset, "has_answers", False):
        sample = " ".join(list(dataset.texts[:4]))
        if "Assistant:" in sample:
            return {0: "rejected", 1: "chosen"}
        if "(A)" in sample or "Choices:" in sample:
            return {0: "not matching", 1: "matching behaviour"}
        if "Answer:" in sample:
            return {0: "distractor", 1: "correct"}
    return {0: "label 0", 1: "label 1"}
