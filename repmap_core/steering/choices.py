"""A/B questions as a model sees them: both letter orders, the chat template, and the prompts
cut where the answer letter goes.

Real weights taught why the letter order matters: on SmolLM2-135M the part of a pair's difference
explained by *which letter* matches has norm ~100 against 3-9 for the behaviour itself, so a
vector from a split with more (A)- than (B)-matching questions is mostly "B minus A", and two
unrelated behaviours come out antiparallel. `letter_balanced` asks every two-choice question in
both orders (the options swapped, so the matching answer changes letter); the letter terms then
cancel exactly in the mean difference. Questions that cannot be swapped (Yes/No) are balanced by
sampling instead, and the balance is reported with every vector set.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from repmap_core.data.load import TextDataset
from repmap_core.errors import RepmapError

__all__ = ["LetterBalance", "BalancedAB", "swap_choices", "answer_letter", "letter_balanced", "balanced_rows",
           "apply_chat_template", "ABPrompt", "ab_prompts"]

# "...\n (A) first option\n (B) second option" (options may span lines), optionally then "Answer:"
_CHOICES = re.compile(r"^(?P<head>.*\n[ \t]*)\(A\)(?P<a>.*?)(?P<mid>\n[ \t]*)\(B\)(?P<b>.*?)(?P<tail>\s*(?:Answer:)?\s*)$",
                      re.S)


def swap_choices(question: str) -> str | None:
    """The question with its (A) and (B) options exchanged; None unless it has exactly those two."""
    m = _CHOICES.match(question)
    if m is None or re.search(r"\n[ \t]*\([C-Z]\)", m["b"]):
        return None
    a, b = m["a"].rstrip(), m["b"].rstrip()
    a_ws, b_ws = m["a"][len(a):], m["b"][len(b):]
    return f"{m['head']}(A){b}{a_ws}{m['mid']}(B){a}{b_ws}{m['tail']}"


def answer_letter(answer: str) -> str:
    """' (A)' -> 'A', ' Yes' -> 'Yes': the answer as a letter or word."""
    return answer.strip().strip("()[]. ")


@dataclass(frozen=True)
class LetterBalance:
    """Which answer letter the behaviour-matching answer has, over the questions used."""

    counts: dict  # letter -> questions whose matching answer has it
    swapped: bool  # True: every question was also asked with its options swapped (exact balance)
    n_questions: int  # distinct questions before swapping

    @property
    def balanced(self) -> bool:
        values = list(self.counts.values())
        return len(values) > 1 and max(values) - min(values) <= max(1, round(0.05 * sum(values)))

    def sentence(self) -> str:
        shown = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        if self.swapped:
            return (f"Letter-balanced: each of the {self.n_questions} questions the vectors come from was asked in both "
                    f"orders (matching letter: {shown}).")
        if self.balanced:
            return f"Letter-balanced by sampling (matching answer: {shown})."
        return (f"Not letter-balanced (matching answer: {shown}): the vector mixes the behaviour with the answer letter; "
                "use two-choice (A)/(B) questions, which repmap asks in both orders.")


@dataclass(frozen=True, eq=False)
class BalancedAB:
    """A/B rows with every swappable question also in the swapped order.

    `dataset` holds the original pairs (pair ids as given) then the swapped twins (pair id + offset);
    `question_ids` (n,) names each row's original question, so a split keeps a question and its twin
    on one side; `letters` (n,) the answer letter of each row."""

    dataset: TextDataset
    question_ids: np.ndarray
    letters: np.ndarray
    balance: LetterBalance


def _pairs(ds: TextDataset) -> dict[int, tuple[int, int]]:
    """pair id -> (row of the matching answer, row of the other)."""
    if not ds.is_paired or not ds.has_answers:
        raise RepmapError(f"{ds.name} has no A/B pairs; steering vectors need questions with a matching and a not-matching answer.")
    rows: dict[int, dict[int, int]] = {}
    for i, (p, y) in enumerate(zip(ds.pair_ids, ds.labels)):
        rows.setdefault(int(p), {})[int(y)] = i
    bad = [p for p, r in rows.items() if set(r) != {0, 1}]
    if bad:
        raise RepmapError(f"Question {bad[0] + 1} does not have both a matching and a not-matching answer.")
    return {p: (r[1], r[0]) for p, r in rows.items()}


def letter_balanced(ds: TextDataset, swap: bool = True) -> BalancedAB:
    """Add each two-choice question again with its options swapped (`swap=False`: as given)."""
    pairs = _pairs(ds)
    texts, labels, pair_ids, spans, qids, letters = [], [], [], [], [], []
    offset = int(ds.pair_ids.max()) + 1

    def add(text: str, start: int, label: int, pid: int, qid: int) -> None:
        texts.append(text)
        labels.append(label)
        pair_ids.append(pid)
        spans.append((start, len(text)))
        qids.append(qid)
        letters.append(answer_letter(text[start:]))

    twins = []
    for p, (i, j) in sorted(pairs.items()):
        start = int(ds.answer_spans[i][0])
        question = ds.texts[i][:start]
        matching, other = ds.texts[i][start:ds.answer_spans[i][1]], ds.texts[j][ds.answer_spans[j][0]:ds.answer_spans[j][1]]
        add(ds.texts[i], start, 1, p, p)
        add(ds.texts[j], int(ds.answer_spans[j][0]), 0, p, p)
        swapped = swap_choices(question) if swap else None
        if swapped is not None and {answer_letter(matching), answer_letter(other)} == {"A", "B"}:
            twins.append((swapped, other, matching, p))  # swapped options: the matching content is under the other letter
    for question, matching, other, p in twins:
        add(question + matching, len(question), 1, p + offset, p)
        add(question + other, len(question), 0, p + offset, p)
    out = TextDataset(ds.name + (" (both letter orders)" if twins else ""), texts, np.asarray(labels, np.int8),
                      np.asarray(pair_ids, np.int64), np.asarray(spans, np.int64))
    letters_arr = np.asarray(letters, dtype=object)
    matching_letters = letters_arr[np.asarray(labels) == 1]
    counts = {str(k): int(v) for k, v in zip(*np.unique(matching_letters.astype(str), return_counts=True))}
    balance = LetterBalance(counts, swapped=bool(twins) and len(twins) == len(pairs), n_questions=len(pairs))
    return BalancedAB(out, np.asarray(qids, np.int64), letters_arr, balance)


def balanced_rows(ab: BalancedAB, rows: np.ndarray, seed: int = 0) -> tuple[np.ndarray, LetterBalance]:
    """`rows` cut to as many questions per matching letter (seeded), when the questions were not
    swapped; with swapping they are balanced already and returned as they are."""
    rows = np.asarray(rows)
    labels, letters, pids = ab.dataset.labels, ab.letters, ab.dataset.pair_ids
    match = rows[labels[rows] == 1]
    by_letter: dict[str, list[int]] = {}
    for r in match:
        by_letter.setdefault(str(letters[r]), []).append(int(pids[r]))
    counts = {k: len(v) for k, v in by_letter.items()}
    if ab.balance.swapped or len(by_letter) < 2:
        return rows, LetterBalance(counts, ab.balance.swapped, len(np.unique(ab.question_ids[rows])))
    n = min(counts.values())
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.choice(v, n, replace=False) for v in by_letter.values()])
    kept = rows[np.isin(pids[rows], keep)]
    return kept, LetterBalance({k: n for k in by_letter}, False, len(np.unique(ab.question_ids[kept])))


def apply_chat_template(dataset: TextDataset, tokenizer) -> TextDataset:
    """Put each A/B question in the model's chat template (user turn; the answer starts the
    assistant turn), keeping the answer span; unchanged when the tokenizer has no template."""
    if not getattr(tokenizer, "chat_template", None):
        return dataset
    texts, spans = [], []
    for text, (start, end) in zip(dataset.texts, dataset.answer_spans):
        question, answer = text[:start], text[start:end]
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": question.strip()}], tokenize=False,
                                               add_generation_prompt=True)
        answer = answer.lstrip()
        texts.append(prompt + answer)
        spans.append((len(prompt), len(prompt) + len(answer)))
    return TextDataset(dataset.name + " (chat template)", texts, dataset.labels, dataset.pair_ids,
                       np.asarray(spans, dtype=np.int64))


@dataclass(frozen=True)
class ABPrompt:
    """A question cut where the answer letter goes, and the two letters' token ids."""

    prompt: str
    matching_id: int
    other_id: int
    matching: str  # the answers as written, for display
    other: str


def ab_prompts(dataset: TextDataset, tokenizer) -> list[ABPrompt]:
    """One prompt per pair: the shared text up to where the answers differ (" (" for " (A)"/" (B)";
    nothing for " Yes"/" No"), and the first token of each answer there, which must be one token."""
    texts, spans = dataset.texts, dataset.answer_spans
    if not dataset.has_answers or not dataset.is_paired:
        raise RepmapError("Propensity needs paired A/B questions with their answers (e.g. model-written evals).")
    out = []
    for i, j in _pairs(dataset).values():
        question = texts[i][: spans[i][0]]
        a, b = texts[i][spans[i][0]: spans[i][1]], texts[j][spans[j][0]: spans[j][1]]
        shared = len(_common_prefix(a, b).rstrip())  # a prompt never ends in a space: BPE puts it on the next token
        prompt = question + a[:shared]
        base = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        ids = []
        for answer in (a, b):
            core = answer[shared:].rstrip(") ].")  # the letter or word, without the closing bracket
            full = tokenizer(prompt + core, add_special_tokens=True)["input_ids"]
            if full[: len(base)] != base or len(full) - len(base) != 1:
                n = len(full) - len(base) if full[: len(base)] == base else "several"
                raise RepmapError(
                    f"Answers '{a.strip()}' and '{b.strip()}' differ by '{core.strip()}', which is {n} tokens for this "
                    f"tokenizer; propensity needs one letter or word per answer: rewrite the choices as ' (A)' and ' (B)'."
                )
            ids.append(full[len(base)])
        if ids[0] == ids[1]:
            raise RepmapError(f"Answers '{a.strip()}' and '{b.strip()}' start with the same token; they cannot be told apart.")
        out.append(ABPrompt(prompt, ids[0], ids[1], a.strip(), b.strip()))
    return out


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]
