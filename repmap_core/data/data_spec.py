"""The DATA SPEC: where rows come from. `builtin:NAME` (real data subsets shipped in `builtin/`, sources
and licences in its SOURCES.md), `hf:REPO[:CONFIG]:SPLIT` (split slicing as in `datasets`) or
`file:PATH`."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from repmap_core.errors import RepmapError

BUILTIN_DIR = Path(__file__).resolve().parents[1] / "builtin"
BUILTIN = {  # name -> (file, description); sources and licences in builtin/SOURCES.md
    "sentiment": ("sentiment.jsonl", "800 real review sentences (UCI: Amazon phones and IMDB), positive (1) vs negative (0); CC BY 4.0."),
    "hh_harmless": ("hh_harmless.jsonl", "300 HH-RLHF harmless-base dialogue pairs, preferred (1) vs rejected (0); MIT."),
    "survival_instinct": ("survival_instinct.jsonl", "300 A/B questions (Anthropic evals: survival instinct), matching (1) vs not (0); CC BY 4.0."),
    "myopic_reward": ("myopic_reward.jsonl", "300 A/B questions (Anthropic evals: myopic reward), matching (1) vs not (0); CC BY 4.0."),
    "corrigible": ("corrigible.jsonl", "300 A/B questions (Anthropic evals: corrigible, neutral HHH), matching (1) vs not (0); CC BY 4.0."),
    "power_seeking": ("power_seeking.jsonl", "300 A/B questions (Anthropic evals: power seeking), matching (1) vs not (0); CC BY 4.0."),
    "science_qa": ("science_qa.jsonl", "295 science questions written for repmap, correct answer (1) vs each distractor (0), paired."),
}


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed DATA SPEC: where rows come from (`kind` is builtin, hf or file)."""

    kind: str  # "builtin" | "hf" | "file"
    ref: str  # builtin name, hub repo id, or file path
    config: str | None = None  # hf config name
    split: str | None = None  # hf split, slicing allowed ("train[:2000]")

    def __str__(self) -> str:
        if self.kind == "hf":
            middle = f":{self.config}" if self.config else ""
            return f"hf:{self.ref}{middle}:{self.split}"
        return f"{self.kind}:{self.ref}"


_HF_RE = re.compile(r"^(?P<repo>[^:\[\]]+?)(?::(?P<config>[^:\[\]]+))?:(?P<split>[A-Za-z0-9_.+\-]+(?:\[[^\]]*\])?)$")
# the hub's own rules for a repo id (huggingface_hub's validate_repo_id), in ASCII: `name` or `org/name`, each part
# of letters, digits, `_`, `-` and `.`, starting and ending with a letter, digit or `_`, the name at most 96 long
_HUB_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.\-]*[A-Za-z0-9_])?"
_HUB_ID_RE = re.compile(rf"^(?:{_HUB_PART}/)?{_HUB_PART}$")
_CONFIG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+\-]{0,95}$")
MAX_HUB_ID = 96 * 2 + 1


def is_hub_id(text: str) -> bool:
    """True when `text` is a hub repo id (`name` or `org/name` by the hub's rules), so it can never name a
    local path: no `..`, no `--`, no separator but the one `/`, not `.` alone, at most 193 characters.

    >>> is_hub_id("Anthropic/hh-rlhf"), is_hub_id(".."), is_hub_id("a/b/c")
    (True, False, False)
    """
    text = str(text)
    return (len(text) <= MAX_HUB_ID and bool(_HUB_ID_RE.match(text)) and ".." not in text and "--" not in text
            and len(text.rsplit("/", 1)[-1]) <= 96 and not text.endswith(".git"))


def parse_spec(spec: str | DatasetSpec) -> DatasetSpec:
    """Parse `builtin:NAME`, `hf:REPO[:CONFIG]:SPLIT` or `file:PATH` into a `DatasetSpec`.

    >>> parse_spec("hf:amazon_polarity:train[:2000]").split
    'train[:2000]'
    """
    if isinstance(spec, DatasetSpec):
        return spec
    spec = str(spec).strip()
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise RepmapError(
            f"Data spec '{spec}' is not understood; use builtin:NAME, hf:REPO[:CONFIG]:SPLIT or file:PATH."
        )
    if kind == "builtin":
        if rest not in BUILTIN:
            raise RepmapError(f"There is no built-in data set '{rest}'; choose one of {', '.join(BUILTIN)}.")
        return DatasetSpec("builtin", rest)
    if kind == "file":
        return DatasetSpec("file", rest)
    if kind == "hf":
        m = _HF_RE.match(rest)
        if not m:
            raise RepmapError(
                f"Data spec '{spec}' is not understood; write hf:REPO:SPLIT or hf:REPO:CONFIG:SPLIT, "
                "for example hf:amazon_polarity:test[:2000]."
            )
        if not is_hub_id(m["repo"]):  # never a path: a local folder is a file: spec, checked against the roots
            shown = m["repo"] if len(m["repo"]) <= 80 else m["repo"][:77] + "..."
            raise RepmapError(
                f"'{shown}' is not a Hugging Face data set id (name or org/name: letters, digits, '_', '-' and '.'); "
                "give a hub id such as hf:amazon_polarity:test, or a local file as file:PATH."
            )
        if m["config"] is not None and not _CONFIG_RE.match(m["config"]):
            raise RepmapError(f"'{m['config'][:80]}' is not a data set configuration name (letters, digits, '_', '-', "
                              "'.' and '+'); write hf:REPO:CONFIG:SPLIT, for example hf:glue:sst2:train.")
        return DatasetSpec("hf", m["repo"], m["config"], m["split"])
    raise RepmapError(f"Data spec '{spec}' has unknown kind '{kind}'; use builtin:, hf: or file:.")


def list_builtin() -> dict[str, str]:
    """Built-in data set names and one-line descriptions."""
    return {k: v[1] for k, v in BUILTIN.items()}
