"""The CLI's contract on bad input (issue 14): exit 2, exactly one line on stderr (a sentence that names
the file or value, what is wrong and what to do), nothing on stdout, no traceback, the cache unchanged.

Every case of the issue is one row of `CASES`. The rows run in one Python process (`drive`, started
once as a subprocess), each with its own stdout and stderr file descriptors, a fresh logging handler
and fresh warning filters, as `python -m repmap_core` would have, so one import of torch serves them
all. `test_the_driver_agrees_with_a_real_process` checks two rows in real processes. Bad inputs are
built under tmp_path. Run this file as a script to print the table for the issue's note:
`python -m tests.cli.test_contract`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from repmap_core.errors import RepmapError
from tests.conftest import ROOT

FIT_ARGS = ["--labels", "{files}/labels.npy", "--json"]
WITHIN = ["within", "--before", "{files}/before.npy"]
EXTRACT = ["extract", "--data", "builtin:sentiment", "--limit", "20", "--json", "--model"]
DAMAGED_ST = "'{name}' is damaged or not a safetensors file ({reason}); write it again with safetensors' save_file."
CONSTANT = ("'{name}' ({role}) holds the same values in all 120 rows ({what}), so nothing can be fitted or probed on it; "
            "check that it holds the layer's activations.")
WRONG_MODEL = "the weights and config.json come from different models, so fix the folder"
NESTED = ("Column '{col}' of file:{files}/{name} holds {kind} (row 1: {shown}) where repmap needs one text or label per "
          "cell; {fix}.")
FLATTEN = "flatten each list to one value first (for text, join it with ' '.join)"


@dataclass(frozen=True)
class Case:
    """One bad input: the CLI arguments (with `{files}`, `{models}`, `{tiny}` filled in), the one line
    it must print (a string, or a regular expression where the line holds byte counts), and a patch
    the driver applies (`patch`: see `drive`)."""

    id: str
    issue: str  # the issue's wording
    args: list[str]
    says: str | re.Pattern
    patch: str = ""
    env: dict = field(default_factory=dict)
    after_progress: bool = False  # a failure only met while working: the sentence follows progress lines


def err(sentence: str) -> str:
    return f"error: {sentence}"


LAYERS = ["layers", "--model", "{tiny}", "--data", "builtin:sentiment", "--limit", "20", "--json"]
TOO_LONG = "a" * 300
COUNT = "{flag} must be a whole number from {least} to {most} ({what}), not {value}."
NOT_WRITABLE = ("{flag} '{path}' cannot be written: no file can be created in '{folder}' ({reason}); give a path in a "
                "folder you can write.")
FRACTION = "--test-frac must be a number strictly between 0 and 1 (the share of rows held out), not {value}."


def count_case(flag: str, value: str, least: str, most: str, what: str, args: list[str]) -> Case:
    return Case(f"{flag} {value}", f"`{flag}={value}`", args + [f"{flag}={value}"],
                err(COUNT.format(flag=flag, least=least, most=most, what=what, value=value)))


# issue 21: every option checked before anything is loaded; nothing cached for a refused request
ISSUE_21 = [
    # item 15: exit 1 instead of 2
    count_case("--seed", "-1", "0", "4,294,967,295", "a random seed", EXTRACT + ["{tiny}"]),
    count_case("--seed", "4294967296", "0", "4,294,967,295", "a random seed", WITHIN + ["--after", "{files}/after.npy"]
               + FIT_ARGS),
    *[Case(f"device {d}", f"`--device {d}` on a CPU-only machine", EXTRACT + ["{tiny}", "--device", d],
           err(f"--device {d} is not on this machine, which has no GPU torch can use; use --device cpu, or leave "
               "--device out to use the GPU when there is one."), patch="no_gpu") for d in ("cuda", "cuda:0", "cuda:7")],
    Case("device tpu", "`--device tpu`", EXTRACT + ["{tiny}", "--device", "tpu"],
         err("--device tpu is not a device torch can use here; use cpu or cuda (cuda:0, ...), or leave --device out.")),
    Case("export into /proc", "`--export /proc/x`", EXTRACT + ["{tiny}", "--export", "/proc/x"],
         err(NOT_WRITABLE.format(flag="--export", path="/proc/x", folder="/proc", reason="no such file or directory"))),
    Case("export into /sys", "`--export /sys/kernel/x`", EXTRACT + ["{tiny}", "--export", "/sys/kernel/x"],
         re.compile(re.escape("error: --export '/sys/kernel/x' cannot be written: no file can be created in '/sys/kernel' (")
                    + r"[a-z ]+" + re.escape("); give a path in a folder you can write."))),
    Case("within save into /proc", "`within --save /proc/fit.npz`",
         WITHIN + ["--after", "{files}/after.npy", "--save", "/proc/fit.npz"] + FIT_ARGS,
         err(NOT_WRITABLE.format(flag="--save", path="/proc/fit.npz", folder="/proc", reason="no such file or directory"))),
    Case("report out into /proc", "`report --out /proc/r.html`",
         ["report", "--bundle", "{files}/a_file.txt", "--out", "/proc/r.html"],
         err(NOT_WRITABLE.format(flag="--out", path="/proc/r.html", folder="/proc", reason="no such file or directory"))),
    Case("report out an existing folder", "`report --out <existing folder>`",
         ["report", "--bundle", "{files}/a_file.txt", "--out", "{files}"],
         err("--out '{files}' is a folder; give the name of a file to write.")),
    Case("report out a pipe", "`report --out <a FIFO>`", ["report", "--bundle", "{files}/a_file.txt", "--out", "{files}/fifo"],
         err("--out '{files}/fifo' is not a regular file (a device, a pipe or a socket); give the name of a file to write.")),
    Case("pair ids too few", "`within --pair-ids` of the wrong length",
         WITHIN + ["--after", "{files}/after.npy", "--pair-ids", "{files}/pairs_60.npy"] + FIT_ARGS,
         err("There are 60 pair ids (shape (60,)) for 120 rows; pair ids must give one whole number per row of the "
             "activations (-1 for a row without a pair).")),
    Case("pair ids two columns", "`between --pair-ids` of shape (120, 2)",
         ["between", "--source", "{files}/before.npy", "--target", "{files}/after.npy", "--pair-ids",
          "{files}/pairs_2d.npy"] + FIT_ARGS,
         err("There are 240 pair ids (shape (120, 2)) for 120 rows; pair ids must give one whole number per row of the "
             "activations (-1 for a row without a pair).")),
    # item 16: refused only after ~20 s of loading, with 2-4 lines
    *[count_case("--max-length", v, "2", "1,048,576", "tokens per text", EXTRACT + ["{tiny}"]) for v in ("0", "-5", "1")],
    *[Case(f"test-frac {v}", f"`layers --test-frac {v}`", LAYERS + [f"--test-frac={v}"], err(FRACTION.format(value=v)))
      for v in ("0.0", "1.5", "nan", "-0.1")],
    Case("layers on 2 rows", "`layers` on a 2-row file",
         ["layers", "--model", "{tiny}", "--data", "file:{files}/two_rows.csv", "--json"],
         err("2 rows (1 of class 1, 1 of class 0) are too few for a cross-validated probe: each class needs at least "
             "two rows (or pairs); add more data.")),
    Case("layers on 5 rows", "`layers` on a 5-row file, 4 of one class",
         ["layers", "--model", "{tiny}", "--data", "file:{files}/five_rows.csv", "--json"],
         err("5 rows (1 of class 1, 4 of class 0) are too few for a cross-validated probe: each class needs at least "
             "two rows (or pairs); add more data.")),
    # items 9 and 17: every count capped; nonsense that exited 0
    count_case("--null-permutations", "-1", "0", "1,000", "shuffled-label probes per layer", LAYERS),
    count_case("--null-permutations", "1000000000", "0", "1,000", "shuffled-label probes per layer", LAYERS),
    count_case("--folds", "1000", "2", "50", "cross-validation folds", LAYERS),
    count_case("--limit", "0", "1", "100,000,000", "rows", ["extract", "--data", "builtin:sentiment", "--json", "--model",
                                                            "{tiny}"]),
    count_case("--chunk-rows", "0", "1", "10,000,000", "rows per chunk", EXTRACT + ["{tiny}", "--stream"]),
    count_case("--epochs", "0", "1", "1,000", "passes over the data",
               ["finetune", "--model", "{tiny}", "--data", "builtin:sentiment", "--json"]),
    count_case("--batch-size", "100000", "1", "65,536", "rows per batch",
               ["finetune", "--model", "{tiny}", "--data", "builtin:sentiment", "--json"]),
    count_case("--rank", "0", "1", "100,000", "dimensions",
               ["between", "--source", "{files}/before.npy", "--target", "{files}/after.npy"] + FIT_ARGS),
    count_case("--max-rows", "1", "2", "100,000,000", "rows per data set", ["bundle", "--bundle", "{files}/a_file.txt"]),
    Case("lr nan", "`finetune --lr nan`", ["finetune", "--model", "{tiny}", "--data", "builtin:sentiment", "--lr", "nan"],
         err("--lr must be a positive number (a learning rate such as 5e-5), not nan.")),
    Case("one multiplier", "`steer --alphas=1`",
         ["steer", "--model", "{tiny}", "--data", "builtin:corrigible", "--layer", "1", "--alphas=1"],
         err("--alphas must give from 2 to 101 finite multipliers, not '1'.")),
    Case("complex activations", "`within --before complex64.npy` (exit 0: the imaginary part dropped)",
         ["within", "--before", "{files}/complex.npy", "--after", "{files}/after.npy"] + FIT_ARGS,
         err("'complex.npy' holds complex numbers (complex64); repmap needs real numbers (float or int), so save the "
             "activations as real values.")),
    Case("text activations", "`within --before` an array of text",
         ["within", "--before", "{files}/text.npy", "--after", "{files}/after.npy"] + FIT_ARGS,
         err("'text.npy' holds text (<U5); repmap needs real numbers (float or int), so save the activations as real "
             "values.")),
    # item 11: ENAMETOOLONG
    Case("data path too long", "`--data file:<300 a's>.csv`",
         ["extract", "--model", "{tiny}", "--data", f"file:{{files}}/{TOO_LONG}.csv", "--json"],
         re.compile(r"error: '.+\.\.\.a+\.csv' cannot be used as a data file \(file name too long\); check the path "
                    r"and give another\.")),
    Case("array path too long", "`within --before <300 a's>.npy`",
         ["within", "--before", f"{{files}}/{TOO_LONG}.npy", "--after", "{files}/after.npy"] + FIT_ARGS,
         re.compile(r"error: '.+\.\.\.a+\.npy' cannot be used as an array file \(file name too long\); check the path "
                    r"and give another\.")),
    Case("export path too long", "`--export <300 a's>`", EXTRACT + ["{tiny}", "--export", f"{{files}}/{TOO_LONG}"],
         re.compile(r"error: '.+\.\.\.a+' cannot be used as the path of --export \(file name too long\); check the path "
                    r"and give another\.")),
    Case("bundle path too long", "`report --bundle <300 a's>.zip`",
         ["report", "--bundle", f"{{files}}/{TOO_LONG}.zip", "--out", "{files}/r.html"],
         re.compile(r"error: '.+\.\.\.a+\.zip' cannot be used as a bundle file \(file name too long\); check the path "
                    r"and give another\.")),
    # item 14: a full disk is the user's environment
    Case("disk full before extracting", "a cache with no room for the activations (1 kB free, simulated)",
         EXTRACT + ["{tiny}"], re.compile(re.escape("error: The cache folder {cache} ran out of space while writing the "
                                                    "activations of 3 layer(s) of {tiny}: it needs about ")
                                          + r"[\d.,]+ (kB|MB)" + re.escape(" more, and 1 kB are free; free some space (the "
                                                                          "Cache page deletes entries) or set REPMAP_CACHE "
                                                                          "to a folder on a larger disk.")),
         patch="disk_1kb"),
    Case("disk full mid-extraction", "the disk filling up while a layer is written (ENOSPC, simulated)",
         EXTRACT + ["{tiny}"], re.compile(re.escape("error: The cache folder {cache} ran out of space while writing "
                                                    "layer_0.safetensors: it needs about ") + r"[\d.,]+ (kB|MB)"
                                          + r" more, and [\d.,]+ (kB|MB)" + re.escape(" are free; free some space (the "
                                                                                     "Cache page deletes entries) or set "
                                                                                     "REPMAP_CACHE to a folder on a larger "
                                                                                     "disk.")),
         patch="enospc", after_progress=True),
]


CASES = [
    # -- within / between on saved arrays
    Case("within on all-zero activations", "`within` on all-zero activations",
         WITHIN[:2] + ["{files}/zero.npy", "--after", "{files}/zero.npy"] + FIT_ARGS,
         err(CONSTANT.format(name="zero.npy", role="the base activations", what="all zeros"))),
    Case("within on constant activations", "`within` on constant activations",
         WITHIN + ["--after", "{files}/const.npy"] + FIT_ARGS,
         err(CONSTANT.format(name="const.npy", role="the finetuned activations", what="every row equal to the first"))),
    Case("between on constant activations", "`between` on constant activations (the same check)",
         ["between", "--source", "{files}/before.npy", "--target", "{files}/const.npy"] + FIT_ARGS,
         err(CONSTANT.format(name="const.npy", role="the target activations", what="every row equal to the first"))),
    Case("NaN in a result", "any NaN in a result (the within fit's R² forced to NaN)",
         WITHIN + ["--after", "{files}/after.npy"] + FIT_ARGS,
         err("The result's fit.r2_test came out NaN, which happens when the inputs are degenerate (rows that do not "
             "vary, a class without spread, or values that overflowed); check the inputs and run it again."),
         patch="nan_r2"),
    Case("safetensors with a corrupt header", "a .safetensors with a corrupt header",
         WITHIN + ["--after", "{files}/corrupt.safetensors"] + FIT_ARGS,
         err(DAMAGED_ST.format(name="corrupt.safetensors", reason="its header is not valid JSON"))),
    Case("safetensors with a huge header", "a .safetensors with a huge header",
         WITHIN + ["--after", "{files}/huge_header.safetensors"] + FIT_ARGS,
         err(DAMAGED_ST.format(name="huge_header.safetensors",
                               reason="its header claims 4,611,686,018,427,387,904 bytes but the file holds 3,912"))),
    Case("truncated safetensors", "a truncated .safetensors",
         WITHIN + ["--after", "{files}/truncated.safetensors"] + FIT_ARGS,
         err(DAMAGED_ST.format(name="truncated.safetensors", reason="tensor 'x' ends at byte 3,840 of the data but only "
                                                                     "1,884 bytes follow the header, so the file was cut short"))),
    Case("npy claiming a huge shape", "a .npy whose header claims a huge shape",
         WITHIN + ["--after", "{files}/huge_shape.npy"] + FIT_ARGS,
         err("'huge_shape.npy' is damaged or not a .npy file (its header promises shape (10000000, 1000000) of float32 "
             "(40.0 TB) but only 3.8 kB of data follow); write it again with numpy.save.")),
    Case("npz member claiming a huge shape", "a .npz whose array claims a huge shape",
         WITHIN + ["--after", "{files}/huge_shape.npz"] + FIT_ARGS,
         err("'huge_shape.npz' is damaged or not a .npz file (its header promises shape (1000000, 1000000) of float32 "
             "(4.0 TB) but only 3.8 kB of data follow); write it again with numpy.savez.")),
    Case("npy that is not one", "a .npy that is not a NumPy file",
         WITHIN + ["--after", "{files}/not_numpy.npy"] + FIT_ARGS,
         err("'not_numpy.npy' is damaged or not a .npy file (it does not start with the NumPy header); write it again "
             "with numpy.save.")),
    Case("negative alpha", "`--alpha -1`",
         WITHIN + ["--after", "{files}/after.npy", "--alpha", "-1"] + FIT_ARGS,
         err("--alpha must be a finite number of at least 0 (0 means no penalty), not -1.0.")),
    Case("NaN alpha", "`--alpha nan`",
         WITHIN + ["--after", "{files}/after.npy", "--alpha", "nan"] + FIT_ARGS,
         err("--alpha must be a finite number of at least 0 (0 means no penalty), not nan.")),
    Case("save under a file", "`--save` under an existing file",
         WITHIN + ["--after", "{files}/after.npy", "--save", "{files}/a_file.txt/fit.npz"] + FIT_ARGS,
         err("--save '{files}/a_file.txt/fit.npz' lies under '{files}/a_file.txt', which is a file; give a path "
             "inside a folder.")),
    Case("a string for a number", "`--limit abc` (argparse's own error, on one line)",
         EXTRACT[:4] + ["abc", "--json", "--model", "{tiny}"],
         "python -m repmap_core extract: error: argument --limit: invalid int value: 'abc'"),
    # -- extract / layers options
    Case("export onto a file", "`--export` pointing at an existing file",
         EXTRACT + ["{tiny}", "--export", "{files}/a_file.txt"],
         err("--export '{files}/a_file.txt' is an existing file, not a folder; give a folder (it is created if missing).")),
    Case("zero folds", "`--folds 0`",
         ["layers", "--model", "{tiny}", "--data", "builtin:sentiment", "--limit", "20", "--folds", "0", "--json"],
         err("--folds must be a whole number from 2 to 50 (cross-validation folds), not 0.")),
    # -- model folders
    Case("config is a list", "a model folder whose config is a list", EXTRACT + ["{models}/config-list"],
         err("The config.json of model '{models}/config-list' is a JSON list, not an object of settings; replace it "
             "with the model's own config.json.")),
    Case("n_layer is a word", 'config with `n_layer: "two"`', EXTRACT + ["{models}/n-layer-two"],
         err("Model '{models}/n-layer-two' has n_layer = \"two\" in config.json, which is not a whole number; set it "
             "to the model's number of blocks (a positive integer).")),
    Case("n_layer is negative", "config with `n_layer: -3`", EXTRACT + ["{models}/n-layer-negative"],
         err("Model '{models}/n-layer-negative' has n_layer = -3 in config.json, but the number of blocks must be at "
             "least 1; fix config.json.")),
    Case("unknown model_type", "an unknown `model_type`", EXTRACT + ["{models}/unknown-type"],
         err("Model '{models}/unknown-type' has model_type 'florbnet' in config.json, which transformers {transformers} "
             "does not know; fix model_type, or upgrade transformers if the architecture is newer than it.")),
    Case("no tokenizer files", "no tokenizer files", EXTRACT + ["{models}/no-tokenizer"],
         err("Model '{models}/no-tokenizer' has no tokenizer files (tokenizer.json, tokenizer.model, vocab.json or "
             "vocab.txt); copy them from where the model came from into its folder.")),
    Case("corrupt weights", "corrupt weights", EXTRACT + ["{models}/corrupt-weights"],
         err("Model '{models}/corrupt-weights' has a damaged weights file 'model.safetensors' (its header is not valid "
             "JSON); download or save the model again.")),
    Case("truncated weights", "truncated weights", EXTRACT + ["{models}/truncated-weights"],
         re.compile(re.escape("error: Model '{models}/truncated-weights' has a damaged weights file 'model.safetensors' "
                              "(tensor '") + r"[\w.]+' ends at byte [\d,]+ of the data but only [\d,]+ bytes follow the "
                    + re.escape("header, so the file was cut short); download or save the model again."))),
    Case("weights of the wrong shapes", "weights of the wrong shapes", EXTRACT + ["{models}/wrong-shapes"],
         err(f"Model '{{models}}/wrong-shapes' has weight 'h.0.attn.c_attn.weight' of shape [16, 16] where its "
             f"config.json needs [32, 96]; {WRONG_MODEL}.")),
    Case("n_layer of a million", "`n_layer: 1000000` (refused by the size check; 16 GB free, simulated)",
         EXTRACT + ["{models}/n-layer-million"],
         err("Model '{models}/n-layer-million' needs at least 32.8 GB in float32 (about 8.2 billion parameters for "
             "1000000 blocks of width 32 in its config.json), more than the 16.0 GB free in RAM; check config.json or "
             "use a smaller model or dtype."), patch="ram_16gb"),
    Case("a block without weights", "config counting more blocks than the weights hold (n_layer 4, 3 saved)",
         EXTRACT + ["{models}/missing-block"],
         err("The config.json of model '{models}/missing-block' counts 4 blocks but its weights hold none for block 3, "
             "which would be random; the weights and config.json do not belong together, so fix the folder.")),
    Case("NaN weights", "a model with NaN weights (it cached all-NaN activations with exit 0)",
         EXTRACT + ["{models}/nan-weights"],
         err("Model '{models}/nan-weights' has NaN or inf values in weight 'transformer.h.1.mlp.c_proj.bias' "
             "(model.safetensors), so every activation would be meaningless; download or save the model again.")),
    # -- data
    Case("parquet list column", "parquet text column of lists (it became \"['good' 'film']\")",
         ["extract", "--model", "{tiny}", "--data", "file:{files}/list_text.parquet", "--json"],
         err(NESTED.format(col="text", files="{files}", name="list_text.parquet", kind="lists", shown="['good', 'film']",
                           fix=FLATTEN))),
    Case("parquet struct column", "parquet text column of structs",
         ["extract", "--model", "{tiny}", "--data", "file:{files}/struct_text.parquet", "--json"],
         err(NESTED.format(col="text", files="{files}", name="struct_text.parquet", kind="structs",
                           shown="{'body': 'good film'}", fix="put the field you want in a column of its own"))),
    Case("parquet binary column", "parquet text column of bytes",
         ["extract", "--model", "{tiny}", "--data", "file:{files}/binary_text.parquet", "--json"],
         err(NESTED.format(col="text", files="{files}", name="binary_text.parquet", kind="bytes", shown="b'good film'",
                           fix="decode it to UTF-8 text first"))),
    Case("parquet list labels", "parquet label column of lists",
         ["extract", "--model", "{tiny}", "--data", "file:{files}/list_label.parquet", "--json"],
         err(NESTED.format(col="label", files="{files}", name="list_label.parquet", kind="lists", shown="[1]",
                           fix=FLATTEN))),
    Case("jsonl list column", "a JSONL text field holding a list",
         ["extract", "--model", "{tiny}", "--data", "file:{files}/list_text.jsonl", "--json"],
         err(NESTED.format(col="text", files="{files}", name="list_text.jsonl", kind="lists", shown="['good', 'film']",
                           fix=FLATTEN))),
    *ISSUE_21,
]


# --------------------------------------------------------------------------- the bad inputs


def _save_raw_npy(path: Path, shape: tuple, payload: bytes) -> None:
    from numpy.lib import format as npy_format

    with open(path, "wb") as f:
        npy_format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        f.write(payload)


def build_files(folder: Path) -> None:
    """The bad arrays and tables (and good ones beside them)."""
    import zipfile

    import pyarrow as pa
    import pyarrow.parquet as pq
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    before = np.random.default_rng(0).normal(size=(120, 8)).astype(np.float32)
    np.save(folder / "before.npy", before)
    np.save(folder / "after.npy", before + 0.1 * np.random.default_rng(1).normal(size=before.shape).astype(np.float32))
    np.save(folder / "labels.npy", np.arange(120) % 2)
    np.save(folder / "zero.npy", np.zeros_like(before))
    np.save(folder / "const.npy", np.ones_like(before))
    save_file({"x": before}, str(folder / "good.safetensors"))
    raw = (folder / "good.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    (folder / "corrupt.safetensors").write_bytes(raw[:8] + b"{not json" + b" " * (n - 9) + raw[8 + n:])
    (folder / "huge_header.safetensors").write_bytes((2**62).to_bytes(8, "little") + raw[8:])
    (folder / "truncated.safetensors").write_bytes(raw[:len(raw) // 2])
    _save_raw_npy(folder / "huge_shape.npy", (10**7, 10**6), before.tobytes())
    member = folder / "member.npy"
    _save_raw_npy(member, (10**6, 10**6), before.tobytes())
    with zipfile.ZipFile(folder / "huge_shape.npz", "w") as z:
        z.write(member, "x.npy")
    member.unlink()
    (folder / "not_numpy.npy").write_text("these are not the numbers you are looking for\n" * 3)
    (folder / "a_file.txt").write_text("an ordinary file\n")
    label = pa.array([1, 0])
    pq.write_table(pa.table({"text": [["good", "film"], ["bad", "plot"]], "label": label}), folder / "list_text.parquet")
    pq.write_table(pa.table({"text": [{"body": "good film"}, {"body": "bad plot"}], "label": label}),
                   folder / "struct_text.parquet")
    pq.write_table(pa.table({"text": [b"good film", b"bad plot"], "label": label}), folder / "binary_text.parquet")
    pq.write_table(pa.table({"text": ["good film", "bad plot"], "label": [[1], [0]]}), folder / "list_label.parquet")
    (folder / "list_text.jsonl").write_text('{"text": ["good", "film"], "label": 1}\n{"text": ["bad"], "label": 0}\n')
    np.save(folder / "pairs_60.npy", np.arange(60) // 2)
    np.save(folder / "pairs_2d.npy", np.zeros((120, 2), np.int64))
    np.save(folder / "complex.npy", before.astype(np.complex64) * (1 + 1j))
    np.save(folder / "text.npy", np.array(["a", "bcdef"] * 60))
    (folder / "two_rows.csv").write_text("text,label\ngood film,1\nbad film,0\n")
    (folder / "five_rows.csv").write_text("text,label\n" + "".join(f"film {i},{int(i == 0)}\n" for i in range(5)))
    os.mkfifo(folder / "fifo")


def build_models(tiny: Path, folder: Path) -> None:
    """Copies of the tiny GPT-2, each broken in one way."""
    import torch
    from safetensors.torch import load_file, save_file

    folder.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((tiny / "config.json").read_text())

    def copy(name: str, config=None) -> Path:
        out = folder / name
        shutil.copytree(tiny, out)
        if config is not None:
            (out / "config.json").write_text(json.dumps(config))
        return out

    def edit_weights(out: Path, edit) -> None:
        weights = load_file(str(out / "model.safetensors"))
        edit(weights)
        save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})

    copy("config-list", [cfg])
    copy("n-layer-two", dict(cfg, n_layer="two"))
    copy("n-layer-negative", dict(cfg, n_layer=-3))
    copy("n-layer-million", dict(cfg, n_layer=1_000_000))
    copy("missing-block", dict(cfg, n_layer=4))
    copy("unknown-type", dict(cfg, model_type="florbnet"))
    out = copy("no-tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (out / name).unlink()
    out = copy("corrupt-weights")
    (out / "model.safetensors").write_bytes((16).to_bytes(8, "little") + b"garbage garbage!" + b"x" * 100)
    out = copy("truncated-weights")
    raw = (out / "model.safetensors").read_bytes()
    (out / "model.safetensors").write_bytes(raw[:len(raw) // 2])
    edit_weights(copy("wrong-shapes"), lambda w: w.__setitem__("transformer.h.0.attn.c_attn.weight", torch.zeros(16, 16)))
    edit_weights(copy("nan-weights"), lambda w: w["transformer.h.1.mlp.c_proj.bias"].fill_(float("nan")))
    # finite weights whose activations overflow even float32 (inf after block 1): the late check
    edit_weights(copy("overflows-fp32"), lambda w: [w[f"transformer.h.{b}.mlp.c_proj.bias"].fill_(3e38) for b in (0, 1)])


def cache_state(root: Path) -> list[tuple[str, int]]:
    """Every folder and file under the cache with its size (empty lock files, which the lock library
    keeps on purpose, left out)."""
    return sorted((p.relative_to(root).as_posix(), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*")
                  if not (p.suffix == ".lock" and p.is_file() and p.stat().st_size == 0))


def fill(value: str, paths: dict) -> str:
    import transformers

    for key in ("files", "models", "tiny", "cache"):
        value = value.replace("{" + key + "}", str(paths[key]))
    return value.replace("{transformers}", transformers.__version__)


# --------------------------------------------------------------------------- the driver


def drive(cases_json: str, results_json: str) -> None:
    """Run each case's `main(argv)` in this process as `python -m repmap_core` would: stdout and
    stderr file descriptors of its own, a fresh logging handler, fresh warning filters. Patches:
    `ram_16gb` (16 GB of free RAM), `nan_r2` (the within fit's held-out R² forced to NaN), `no_gpu` (torch sees no
    GPU), `disk_1kb` (1 kB free on the cache's disk), `enospc` (the disk fills up as the first layer is written)."""
    import contextlib
    import errno
    import logging
    import shutil as shutil_module
    import tempfile
    import traceback
    import warnings
    from unittest import mock

    from repmap_core.__main__ import main
    from repmap_core.analysis import within
    from repmap_core.capture import model_memory

    results = []
    for case in json.loads(Path(cases_json).read_text()):
        cache = Path(case["env"]["REPMAP_CACHE"])
        before = cache_state(cache)
        old_env = dict(os.environ)
        os.environ.update(case["env"])
        saved = {"free": model_memory.available_memory_bytes, "within": within.within_model}
        if case["patch"] == "ram_16gb":
            model_memory.available_memory_bytes = lambda: 16 * 10**9
        if case["patch"] == "nan_r2":
            def within_model(*args, real=saved["within"], **kwargs):
                result, fit = real(*args, **kwargs)
                result.fit["r2_test"] = float("nan")
                return result, fit
            within.within_model = within_model
        patches = contextlib.ExitStack()
        if case["patch"] == "no_gpu":
            patches.enter_context(mock.patch("torch.cuda.is_available", return_value=False))
            patches.enter_context(mock.patch("torch.cuda.device_count", return_value=0))
        if case["patch"] == "disk_1kb":
            patches.enter_context(mock.patch.object(shutil_module, "disk_usage",
                                                    return_value=shutil_module._ntuple_diskusage(10**9, 10**9, 1000)))
        if case["patch"] == "enospc":
            patches.enter_context(mock.patch("safetensors.numpy.save_file",
                                             side_effect=OSError(errno.ENOSPC, "No space left on device")))
        for handler in list(logging.root.handlers):
            logging.root.removeHandler(handler)
        warnings.resetwarnings()
        warnings.simplefilter("default")  # what a fresh interpreter shows, each warning once
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as errf:
            sys.stdout.flush(), sys.stderr.flush()
            keep = os.dup(1), os.dup(2)
            os.dup2(out.fileno(), 1), os.dup2(errf.fileno(), 2)
            try:
                try:
                    code = main(case["args"])
                except SystemExit as e:  # argparse
                    code = e.code if isinstance(e.code, int) else 1
                except BaseException:  # what the interpreter would print
                    traceback.print_exc()
                    code = 1
                with contextlib.suppress(Exception):
                    sys.stdout.flush(), sys.stderr.flush()
            finally:
                os.dup2(keep[0], 1), os.dup2(keep[1], 2)
                os.close(keep[0]), os.close(keep[1])
                os.environ.clear()
                os.environ.update(old_env)
                model_memory.available_memory_bytes, within.within_model = saved["free"], saved["within"]
                patches.close()
            out.seek(0), errf.seek(0)
            results.append({"id": case["id"], "code": code, "stdout": out.read().decode(errors="replace"),
                            "stderr": errf.read().decode(errors="replace"), "cache_unchanged": cache_state(cache) == before})
    Path(results_json).write_text(json.dumps(results))


# --------------------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def paths(tmp_path_factory, tiny_gpt2) -> dict:
    """The bad files and models, and a cache holding one good entry of the tiny GPT-2."""
    from repmap_core.capture.activations import get_activations

    root = tmp_path_factory.mktemp("cli_contract")
    build_files(root / "files")
    build_models(tiny_gpt2, root / "models")
    cache = root / "cache"
    old = os.environ.get("REPMAP_CACHE")
    os.environ["REPMAP_CACHE"] = str(cache)
    try:
        get_activations(str(tiny_gpt2), "builtin:sentiment", "all", "last", limit=40, device="cpu")
    finally:
        os.environ.pop("REPMAP_CACHE") if old is None else os.environ.update(REPMAP_CACHE=old)
    return {"files": root / "files", "models": root / "models", "tiny": tiny_gpt2, "cache": cache, "root": root}


@pytest.fixture(scope="module")
def answers(paths) -> dict[str, dict]:
    """Every case, run once by the driver in one subprocess."""
    cases = [{"id": c.id, "args": [fill(a, paths) for a in c.args], "patch": c.patch,
              "env": dict(c.env, REPMAP_CACHE=str(paths["cache"]), HF_HUB_OFFLINE="1")} for c in CASES]
    spec, out = paths["root"] / "cases.json", paths["root"] / "results.json"
    spec.write_text(json.dumps(cases))
    code = f"from tests.cli.test_contract import drive; drive({str(spec)!r}, {str(out)!r})"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert r.returncode == 0 and out.exists(), r.stderr[-4000:]
    return {a["id"]: a for a in json.loads(out.read_text())}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_bad_input_gets_exit_2_and_one_line(case: Case, answers, paths):
    got = answers[case.id]
    lines = got["stderr"].splitlines()
    assert "Traceback" not in got["stderr"], got["stderr"]
    assert got["code"] == 2, got["stderr"]
    assert got["stdout"] == ""
    if case.after_progress:  # met only while working: progress lines, then the one sentence
        assert all(line.startswith("[") for line in lines[:-1]), lines
        lines = lines[-1:]
    assert len(lines) == 1, lines
    if isinstance(case.says, re.Pattern):
        pattern = case.says.pattern
        for key in ("files", "models", "tiny", "cache"):
            pattern = pattern.replace(re.escape("{" + key + "}"), re.escape(str(paths[key])))
        assert re.fullmatch(pattern, lines[0]), lines[0]
    else:
        assert lines[0] == fill(case.says, paths)
    assert got["cache_unchanged"]


def run_cli(args: list[str], cache: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, REPMAP_CACHE=str(cache), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "repmap_core", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=300)


@pytest.mark.slow
def test_the_driver_agrees_with_a_real_process(paths):
    """Two rows, in real `python -m repmap_core` processes: the same exit code and the same one line."""
    for case in (CASES[0], next(c for c in CASES if c.id == "NaN weights")):
        before = cache_state(paths["cache"])
        r = run_cli([fill(a, paths) for a in case.args], paths["cache"])
        assert (r.returncode, r.stdout, r.stderr.splitlines()) == (2, "", [fill(case.says, paths)])
        assert cache_state(paths["cache"]) == before


@pytest.mark.slow
def test_activations_that_overflow_even_float32_are_refused_and_never_cached(paths):
    """Finite weights can still give inf: the check after each batch refuses them (after the
    "Loading" progress line, the one case where the sentence is not alone) and nothing is cached."""
    before = cache_state(paths["cache"])
    r = run_cli(EXTRACT + [str(paths["models"] / "overflows-fp32")], paths["cache"])
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    assert lines[-1].startswith(f"error: Model '{paths['models'] / 'overflows-fp32'}' produced NaN or inf activations "
                                "at layer 1 for ")
    assert lines[-1].endswith("even in float32; its weights are broken or overflow, so nothing was cached: check the model.")
    assert all(line.startswith("[") for line in lines[:-1]), lines  # progress lines only
    assert cache_state(paths["cache"]) == before


def test_fp16_overflow_is_still_recomputed_in_float32(tiny_gpt2, tmp_path):
    """The refusal above must not catch what float32 cures: biases of 60,000 overflow fp16 (65,504) only."""
    import torch
    from safetensors.torch import load_file, save_file

    from repmap_core.capture.activations import get_activations

    folder = tmp_path / "fp16-overflow"
    shutil.copytree(tiny_gpt2, folder)
    weights = load_file(str(folder / "model.safetensors"))
    for block in (0, 1):
        weights[f"transformer.h.{block}.mlp.c_proj.bias"] = torch.full_like(weights[f"transformer.h.{block}.mlp.c_proj.bias"], 6e4)
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    aset = get_activations(str(folder), "builtin:sentiment", "all", "last", limit=20, device="cpu", dtype="float16")
    assert aset.manifest["fp32_recomputed_rows"] == 20
    assert all(np.isfinite(aset[layer]).all() for layer in aset.layer_list) and np.abs(aset[1]).max() > 65504


def test_undefined_statistics_become_null_and_other_nan_is_refused():
    from repmap_core.cli.contract import finite_result

    nan = float("nan")
    out = finite_result({"slope": {"value": nan, "low": nan, "high": nan, "n": 3, "null": None},
                         "propensity": {"mean": [0.1, 0.2], "low": [nan, 0.1], "agreement_high": [nan]},
                         "pearson_r": nan, "score": np.float32(0.5), "count": np.int64(3)})
    assert out == {"slope": {"value": None, "low": None, "high": None, "n": 3, "null": None},
                   "propensity": {"mean": [0.1, 0.2], "low": [None, 0.1], "agreement_high": [None]},
                   "pearson_r": None, "score": 0.5, "count": 3}
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    with pytest.raises(RepmapError, match=r"^The result's layers\[1\]\.silhouette came out NaN"):
        finite_result({"layers": [{"silhouette": 0.1}, {"silhouette": nan}]})
    with pytest.raises(RepmapError, match=r"^The result's probe\.value came out infinite"):
        finite_result({"probe": {"value": float("inf")}})  # a "value" outside an estimate is no statistic


def test_the_core_functions_refuse_what_the_cli_refuses():
    from repmap_core.analysis.separation import separation_at
    from repmap_core.analysis.within import within_model

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = np.arange(60) % 2
    for alpha in (-1.0, float("nan"), float("inf")):
        with pytest.raises(RepmapError, match="alpha must be a finite number of at least 0"):
            within_model(X, X + 0.1, y, alpha=alpha)
    for folds in (0, 1):
        with pytest.raises(RepmapError, match=f"needs at least 2 folds, not {folds}"):
            separation_at(X, y, np.full(60, -1), 0, folds=folds)


def note_table() -> str:
    """The table for the issue's note: input, exit code, the stderr line (paths as placeholders)."""
    import transformers

    rows = ["| bad input | exit | stderr (the only line) |", "|---|---|---|"]
    for c in CASES:
        says = c.says
        if isinstance(says, re.Pattern):  # shown with its variable parts named
            says = says.pattern.replace(r"[\w.]+", "<tensor>").replace(r"[\d,]+", "<bytes>").replace("\\", "")
        says = says.replace("{transformers}", transformers.__version__).replace("|", "\\|")
        rows.append(f"| {c.issue} | 2 | `{says}` |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(note_table())


def test_every_count_option_of_every_command_is_capped():
    """Item 9: `--null-permutations 1000000000` ran unbounded. Every whole-number option of every command is in
    `contract.COUNTS` (a new one cannot slip past the cap), every fraction and rate is checked, and a value past
    the cap is one sentence before anything runs."""
    import argparse

    from repmap_core.__main__ import build_parser
    from repmap_core.cli.contract import COUNTS, FRACTIONS, RATES, check_args

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    seen = set()
    for name, command in sub.choices.items():
        for action in command._actions:
            if action.type is int:
                assert action.dest in COUNTS, (name, action.dest)
                seen.add(action.dest)
            if action.type is float:
                assert action.dest in FRACTIONS + RATES, (name, action.dest)
    assert {"null_permutations", "limit", "folds", "epochs", "max_length", "seed"} <= seen
    for dest, (least, most, _) in COUNTS.items():
        for bad in (least - 1, most + 1):
            with pytest.raises(RepmapError, match=f"^--{dest.replace('_', '-')} must be a whole number from"):
                check_args(argparse.Namespace(**{dest: bad}))
        check_args(argparse.Namespace(**{dest: least}))
