"""Rebuild the built-in data subsets in repmap_core/builtin/ from ../shared/data (run once; the
subsets are committed with their licences). Seeded: the same inputs give the same files.

    python scripts/make_builtin_data.py [--shared ../shared/data]
"""
from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "repmap_core" / "builtin"
# a question whose choices are exactly (A) and (B), optionally followed by "Answer:"
TWO_CHOICES = re.compile(r"\n\s*\(A\).*\n\s*\(B\)(?:(?!\n\s*\([C-Z]\)).)*$", re.S)
EVALS = {"survival_instinct": "survival-instinct", "myopic_reward": "myopic-reward",
         "corrigible": "corrigible-neutral-HHH", "power_seeking": "power-seeking-inclination"}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def sentiment(shared: Path, rng: np.random.Generator, per_class: int = 200) -> list[dict]:
    """UCI sentiment sentences: `per_class` positive and negative from each of Amazon and IMDB."""
    rows = []
    for source, name in (("amazon", "amazon_cells_labelled.txt"), ("imdb", "imdb_labelled.txt")):
        lines = (shared / "uci-sentiment" / name).read_text(encoding="utf-8").splitlines()
        parsed = [(t.strip(), int(y)) for t, y in (ln.rsplit("\t", 1) for ln in lines if "\t" in ln) if t.strip()]
        seen: set[str] = set()  # texts already taken (the files repeat a few sentences)
        parsed = [r for r in dict.fromkeys(parsed) if not (r[0] in seen or seen.add(r[0]))]
        for label in (1, 0):
            pool = [t for t, y in parsed if y == label]
            for i in sorted(rng.choice(len(pool), per_class, replace=False)):
                rows.append({"text": pool[i], "label": label, "source": source})
    return rows


def hh(shared: Path, rng: np.random.Generator, pairs: int = 300, max_chars: int = 700) -> list[dict]:
    """HH-RLHF harmless-base test pairs, the shorter dialogues (so a CPU extracts them in seconds)."""
    with gzip.open(shared / "hh-rlhf" / "harmless-base-test.jsonl.gz", "rt", encoding="utf-8") as f:
        items = [json.loads(line) for line in f]
    short = [r for r in items if max(len(r["chosen"]), len(r["rejected"])) <= max_chars and r["chosen"] != r["rejected"]]
    keep = sorted(rng.choice(len(short), min(pairs, len(short)), replace=False))
    return [{"chosen": short[i]["chosen"], "rejected": short[i]["rejected"]} for i in keep]


def evals(shared: Path, rng: np.random.Generator, file: str, per_letter: int = 150) -> list[dict]:
    """A/B questions with exactly two choices, `per_letter` whose matching answer is (A) and as many (B)."""
    items = [json.loads(line) for line in (shared / "anthropic-evals" / f"{file}.jsonl").open(encoding="utf-8")]
    two = [r for r in items if TWO_CHOICES.search(r["question"]) and
           {r["answer_matching_behavior"].strip(), r["answer_not_matching_behavior"].strip()} == {"(A)", "(B)"}]
    rows = []
    for letter in ("(A)", "(B)"):
        pool = [r for r in two if r["answer_matching_behavior"].strip() == letter]
        n = min(per_letter, len(pool), *(sum(r["answer_matching_behavior"].strip() == x for r in two) for x in ("(A)", "(B)")))
        rows += [pool[i] for i in sorted(rng.choice(len(pool), n, replace=False))]
    order = rng.permutation(len(rows))
    return [{k: rows[i][k] for k in ("question", "answer_matching_behavior", "answer_not_matching_behavior")} for i in order]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    shared = Path(ap.parse_args().shared)
    write_jsonl(OUT / "sentiment.jsonl", sentiment(shared, np.random.default_rng(0)))
    write_jsonl(OUT / "hh_harmless.jsonl", hh(shared, np.random.default_rng(0)))
    for name, file in EVALS.items():
        write_jsonl(OUT / f"{name}.jsonl", evals(shared, np.random.default_rng(0), file))
    lic = OUT / "licences"
    lic.mkdir(exist_ok=True)
    shutil.copy(shared / "uci-sentiment" / "LICENSE.md", lic / "uci-sentiment-LICENSE.md")
    shutil.copy(shared / "hh-rlhf" / "LICENSE", lic / "hh-rlhf-LICENSE")
    shutil.copy(shared / "anthropic-evals" / "LICENSE", lic / "anthropic-evals-LICENSE")
    for p in sorted(OUT.glob("*.jsonl")):
        print(p.name, sum(1 for _ in p.open()), f"{p.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
