"""Every bad input of the robustness issue in one table, each answered by one sentence.

Each case checks:
- **In the app** (AppTest, the layer explorer), the page shows exactly that sentence and no
  traceback, and the last good result stays on screen.
- **In the CLI** (a subprocess), the exit status is 2, stdout is empty and the sentence is the last
  line of stderr.
- **Either way**, the cache is unchanged: the same files with the same sizes. A valid action right
  after still works: the app computes a new request, and the CLI's cache still serves a verified
  entry without loading a model.

Two inputs are not errors. An fp16 overflow is recomputed in fp32 and reported, and an upload's
name never becomes a path (tests/pages/test_security.py checks that). Run this file as a script to print
the table for the issue's note: `python -m tests.cli.test_bad_inputs`.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from repmap_core.capture import store
from repmap_core.data.load import SCHEMAS_HINT
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
EMBEDDED = "sentence-transformers/all-MiniLM-L6-v2"
TRAVERSAL = "../" * 24 + "etc/passwd"  # /etc/passwd from any working directory
FP16_MAX = 65504.0


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    """One bad input: how to give it in the app and/or the CLI, and the sentence each answers with.

    `ui` maps widget keys of the layer explorer to values, with the special keys "upload" (a file name
    under the fixture folder), "hub_error" (the hub's answer, simulated) and "upload_limit_mb"
    (server.maxUploadSize for this case). `cli` is the argument list. In sentences and arguments,
    `{files}`, `{tiny}` and `{remote}` stand for the test files' folder, a tiny GPT-2 and a copy of it
    that asks for its own code.
    """

    id: str
    issue: str  # the issue's wording of the bad input
    ui: dict | None = None
    ui_says: str = ""
    cli: list[str] | None = None
    cli_says: str = ""  # the last line of stderr, in full
    cli_env: dict = field(default_factory=dict)
    not_in_ui: str = ""  # why there is no app case (for the note)
    not_in_cli: str = ""


def err(sentence: str) -> str:
    return f"error: {sentence}"


OFFLINE = ("Model 'someone/absent-model' is not available offline (it is not in the local Hugging Face cache); "
           "download it once with network access, or give a local folder.")
NOT_FOUND = "Model 'someone/{name}' was not found on the Hugging Face Hub (or it is private); check the id or log in."
GATED = "Model 'someone/gated-model' is gated; accept its licence on huggingface.co and log in with `hf auth login`."
REMOTE = ("Model '{remote}' needs its own code to run (trust_remote_code); allow it only if you trust its authors, "
          "by ticking 'Trust remote code' (or --trust-remote-code).")
TRAVERSAL_MODEL = (f"'{TRAVERSAL}' is not a model folder or a Hugging Face model id; "
                   "give a folder with config.json or an id like gpt2.")
# the app opens files and model folders only under the operator's roots (the CLI is its user's own shell)
OUTSIDE_DATA_ROOTS = ("This server reads data files only under {data_roots}; that path is outside them, so it was not "
                      "opened. Upload the table instead, or ask the operator to add its folder to REPMAP_DATA_ROOTS.")
OUTSIDE_MODEL_ROOTS = ("This server loads model folders only under {model_roots}; that path is outside them, so it was "
                       "not opened. Ask the operator to add its folder to REPMAP_MODEL_ROOTS.")
NOT_A_FORMAT = "'{name}' is not a format repmap reads; use .csv, .tsv, .jsonl, .json or .parquet (optionally .gz)."
PICKLE_FILE = "'{name}' is a pickle-based file, which repmap never opens (loading one can run code); {then}"
NOT_A_TABLE = "'{name}' is not a table repmap reads; upload .csv, .tsv, .jsonl, .json or .parquet."
MISSING_COLUMN = (f"file:{{files}}/missing_col.csv has columns 'review', 'stars', which match no known schema "
                  f"({SCHEMAS_HINT}); name the text and label columns (--text-col/--label-col).")
EMPTY = "'empty.csv' is empty; it needs at least one data row."
LATIN1 = "'latin1.csv' is not valid UTF-8 text; save it as UTF-8 and try again."
THREE_LABELS = ("Labels must be binary (0/1 or -1/+1), but column 'label' of file:{files}/three_labels.csv has 3 "
                "distinct values (0, 1, 2); map them to two classes first.")
ONE_CLASS = ("file:{files}/one_class.csv has only one class (all 4 rows are labelled 1); repmap needs rows "
             "labelled 0 and rows labelled 1, so use data with both (or a larger row limit).")
ANSWER = ("Position 'answer' needs rows with an answer (paired A/B, SciQ or chosen/rejected data), and "
          "builtin:sentiment has none; use last or mean.")
WITHIN = ["within", "--before", "{files}/before.npy", "--labels", "{files}/labels.npy", "--json"]

CASES = [
    Case("unknown model id", "unknown model id (the hub answers: not found)",
         ui={"explorer.model_other": "someone/no-such-model", "hub_error": "RepositoryNotFoundError"},
         ui_says=NOT_FOUND.format(name="no-such-model"),
         cli=["extract", "--model", "someone/no-such-model", "--data", "builtin:sentiment", "--json"],
         cli_env={"REPMAP_TEST_HUB_ERROR": "RepositoryNotFoundError"}, cli_says=err(NOT_FOUND.format(name="no-such-model"))),
    Case("malformed model id", "unknown model id (not even a valid id)",
         ui={"explorer.model_other": "bad name!!"},
         ui_says="'bad name!!' is not a valid Hugging Face model id or an existing folder; check the spelling.",
         cli=["extract", "--model", "bad name!!", "--data", "builtin:sentiment", "--json"],
         cli_says=err("'bad name!!' is not a valid Hugging Face model id or an existing folder; check the spelling.")),
    Case("model not available offline", "model not available offline",
         ui={"explorer.model_other": "someone/absent-model"}, ui_says=OFFLINE,
         cli=["extract", "--model", "someone/absent-model", "--data", "builtin:sentiment", "--json"], cli_says=err(OFFLINE)),
    Case("gated model", "gated model",
         ui={"explorer.model_other": "someone/gated-model", "hub_error": "GatedRepoError"}, ui_says=GATED,
         cli=["extract", "--model", "someone/gated-model", "--data", "builtin:sentiment", "--json"],
         cli_env={"REPMAP_TEST_HUB_ERROR": "GatedRepoError"}, cli_says=err(GATED)),
    Case("private model", "private model (the hub answers anonymous users: not found)",
         ui={"explorer.model_other": "someone/private-model", "hub_error": "RepositoryNotFoundError"},
         ui_says=NOT_FOUND.format(name="private-model"),
         cli=["extract", "--model", "someone/private-model", "--data", "builtin:sentiment", "--json"],
         cli_env={"REPMAP_TEST_HUB_ERROR": "RepositoryNotFoundError"}, cli_says=err(NOT_FOUND.format(name="private-model"))),
    Case("remote code unticked", "trust_remote_code model while the box is unticked",
         ui={"explorer.model_other": "{remote}"}, ui_says=REMOTE,
         cli=["extract", "--model", "{remote}", "--data", "builtin:sentiment", "--limit", "40", "--json"], cli_says=err(REMOTE)),
    Case("missing column", "data file missing a column",
         ui={"explorer.data_other": "file:{files}/missing_col.csv"}, ui_says=MISSING_COLUMN,
         cli=["extract", "--model", "{tiny}", "--data", "file:{files}/missing_col.csv", "--json"], cli_says=err(MISSING_COLUMN)),
    Case("empty file", "empty file",
         ui={"explorer.data_other": "file:{files}/empty.csv"}, ui_says=EMPTY,
         cli=["extract", "--model", "{tiny}", "--data", "file:{files}/empty.csv", "--json"], cli_says=err(EMPTY)),
    Case("empty upload", "empty file (uploaded)", ui={"upload": "empty.csv"}, ui_says=EMPTY,
         not_in_cli="the CLI has no uploads; it reads files by path (the row above)"),
    Case("non-UTF-8 text", "non-UTF-8 text",
         ui={"explorer.data_other": "file:{files}/latin1.csv"}, ui_says=LATIN1,
         cli=["extract", "--model", "{tiny}", "--data", "file:{files}/latin1.csv", "--json"], cli_says=err(LATIN1)),
    Case("non-UTF-8 upload", "non-UTF-8 text (uploaded)", ui={"upload": "latin1.csv"}, ui_says=LATIN1,
         not_in_cli="the CLI has no uploads"),
    Case("labels not binary", "labels not binary",
         ui={"explorer.data_other": "file:{files}/three_labels.csv"}, ui_says=THREE_LABELS,
         cli=["extract", "--model", "{tiny}", "--data", "file:{files}/three_labels.csv", "--json"], cli_says=err(THREE_LABELS)),
    Case("label array not binary", "labels not binary (a label array)",
         cli=WITHIN[:3] + ["--after", "{files}/after.npy", "--labels", "{files}/labels3.npy", "--json"],
         cli_says=err("Labels in 'labels3.npy' must be 0/1 or -1/+1, and they have values [0, 1, 2]."),
         not_in_ui="the app takes no label arrays"),
    Case("one class only", "one class only",
         ui={"explorer.data_other": "file:{files}/one_class.csv"}, ui_says=ONE_CLASS,
         cli=WITHIN[:3] + ["--after", "{files}/after.npy", "--labels", "{files}/labels1.npy", "--json"],
         cli_says=err("All rows have label 1; separation needs both classes, so pick data with 0 and 1 labels.")),
    Case("one class only, layers", "one class only",
         cli=["layers", "--model", "{tiny}", "--data", "file:{files}/one_class.csv", "--json"], cli_says=err(ONE_CLASS),
         not_in_ui="the row above gives it in the app"),
    Case("layer out of range", "layer out of range",
         ui={"explorer.layers": "0,99"},
         ui_says=f"Layer 99 is out of range for model '{EMBEDDED}', which has 6 blocks (use 0 to 5, or -6 to -1).",
         cli=["extract", "--model", "{tiny}", "--data", "builtin:sentiment", "--layers", "0,7", "--json"],
         cli_says=err("Layer 7 is out of range for model '{tiny}', which has 3 blocks (use 0 to 2, or -3 to -1).")),
    Case("answer on unpaired data", "position answer on unpaired data",
         ui={"explorer.position": "answer"}, ui_says=ANSWER,
         cli=["extract", "--model", "{tiny}", "--data", "builtin:sentiment", "--position", "answer", "--json"],
         cli_says=err(ANSWER)),
    Case("different row counts", "two sets of different row counts",
         cli=WITHIN[:3] + ["--after", "{files}/short.npy"] + WITHIN[3:],
         cli_says=err("The base and finetuned activations have 120 and 119 rows; a map needs the same rows (texts) in both."),
         not_in_ui="every page extracts both sets from one data set, so their rows always match"),
    Case("NaN in saved activations", "NaN/inf in activations (saved arrays)",
         cli=WITHIN[:3] + ["--after", "{files}/nan.npy"] + WITHIN[3:],
         cli_says=err("The finetuned activations have 3 row(s) with NaN or inf (first at row 5); "
                      "recompute them in float32 or drop those rows."),
         not_in_ui="the app takes no saved arrays; its own fp16 overflows are recomputed (test_fp16_overflow_*)"),
    Case("upload over the limit", "an upload over the size limit",
         ui={"upload": "big.csv", "upload_limit_mb": 1},
         ui_says="'big.csv' is 1.5 MB, over this server's upload limit of 1 MB; upload a smaller file or give its "
                 "path as file:PATH.",
         not_in_cli="the CLI has no uploads"),
    Case("npy with pickled objects", "a .npy with pickled objects",
         ui={"upload": "obj.npy"}, ui_says=NOT_A_TABLE.format(name="obj.npy"),
         cli=WITHIN[:3] + ["--after", "{files}/obj.npy"] + WITHIN[3:],
         cli_says=err("'obj.npy' holds Python objects (pickle), which repmap never loads; save it as a plain numeric array.")),
    Case("pkl upload", "a .pt/.pkl upload",
         ui={"upload": "acts.pkl"}, ui_says=PICKLE_FILE.format(
             name="acts.pkl", then="upload a table: .csv, .tsv, .jsonl, .json or .parquet."),
         cli=["extract", "--model", "{tiny}", "--data", "file:{files}/acts.pkl", "--json"],
         cli_says=err(PICKLE_FILE.format(name="acts.pkl", then="use .csv, .tsv, .jsonl, .json or .parquet."))),
    Case("pt upload", "a .pt upload; a .pt file as activations (CLI)",
         ui={"upload": "acts.pt"}, ui_says=PICKLE_FILE.format(
             name="acts.pt", then="upload a table: .csv, .tsv, .jsonl, .json or .parquet."),
         cli=WITHIN[:3] + ["--after", "{files}/acts.pt"] + WITHIN[3:],
         cli_says=err("'acts.pt' is not an array file repmap reads; use .npy, .npz or .safetensors (never .pt or .pkl).")),
    Case("traversal model name", "a path-like or traversal name in a model name",
         ui={"explorer.model_other": TRAVERSAL}, ui_says=OUTSIDE_MODEL_ROOTS,
         cli=["extract", "--model", TRAVERSAL, "--data", "builtin:sentiment", "--json"], cli_says=err(TRAVERSAL_MODEL)),
    Case("traversal data name", "a path-like or traversal name in a data name",
         ui={"explorer.data_other": f"file:{TRAVERSAL}"}, ui_says=OUTSIDE_DATA_ROOTS,
         cli=["extract", "--model", "{tiny}", "--data", f"file:{TRAVERSAL}", "--json"],
         cli_says=err(NOT_A_FORMAT.format(name="passwd"))),
    Case("number field given a string", "a string where a number belongs (a form field; the URL: see below)",
         ui={"explorer.layers": "0,x"}, ui_says="Layer 'x' is not a whole number; give layers like 0,6,-1 or all.",
         cli=["extract", "--model", "{tiny}", "--data", "builtin:sentiment", "--limit", "abc", "--json"],
         cli_says="python -m repmap_core extract: error: argument --limit: invalid int value: 'abc'"),
]
UI_CASES = [c for c in CASES if c.ui is not None]
CLI_CASES = [c for c in CASES if c.cli is not None]


# --------------------------------------------------------------------------- fixtures


class Planted:
    """Unpickling this runs code: it creates a marker file. No test may ever see the marker."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_gpt2) -> dict[str, Path]:
    """The bad files, a model that asks for its own code, and one that overflows fp16 (all built here)."""
    root = tmp_path_factory.mktemp("bad_inputs")
    folder = root / "files"
    folder.mkdir()
    texts = {"missing_col.csv": "review,stars\nnice,5\n", "empty.csv": "",
             "three_labels.csv": "text,label\na,0\nb,1\nc,2\n",
             "one_class.csv": "text,label\ngood,1\nnice,1\ngreat,1\nlovely,1\n"}
    for name, content in texts.items():
        (folder / name).write_text(content, encoding="utf-8")
    (folder / "latin1.csv").write_bytes("text,label\ncaf\u00e9 cr\u00e8me,1\nbad,0\n".encode("latin-1"))
    row = b"some words of a long review,1\n"
    (folder / "big.csv").write_bytes((b"text,label\n" + row * (1024 * 1024 * 3 // 2 // len(row) + 1))[:1024 * 1024 * 3 // 2])
    marker = root / "UNPICKLED"  # created only if something unpickles a planted file
    (folder / "acts.pkl").write_bytes(pickle.dumps(Planted(marker)))
    (folder / "acts.pt").write_bytes(pickle.dumps({"activations": Planted(marker)}))
    np.save(folder / "obj.npy", np.array([Planted(marker)], dtype=object), allow_pickle=True)
    rng = np.random.default_rng(0)
    before = rng.normal(size=(120, 8)).astype(np.float32)
    np.save(folder / "before.npy", before)
    np.save(folder / "after.npy", before + 0.1)
    np.save(folder / "short.npy", before[:-1])
    nan = before.copy()
    nan[[5, 7, 9], 2] = [np.nan, np.inf, -np.inf]
    np.save(folder / "nan.npy", nan)
    np.save(folder / "labels.npy", np.arange(120) % 2)
    np.save(folder / "labels3.npy", np.arange(120) % 3)
    np.save(folder / "labels1.npy", np.ones(120, np.int64))

    remote = shutil.copytree(tiny_gpt2, root / "remote-code-model")
    cfg = json.loads((remote / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_custom.CustomModel"}
    (remote / "config.json").write_text(json.dumps(cfg))
    (remote / "modeling_custom.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).touch()\n")
    return {"files": folder, "tiny": tiny_gpt2, "remote": remote, "marker": marker,
            "overflow": overflow_model(tiny_gpt2, root / "fp16-overflow-model")}


def overflow_model(tiny: Path, folder: Path) -> Path:
    """The tiny GPT-2 with MLP output biases of 60,000 in blocks 0 and 1: the residual stream reaches
    ~120,000 after block 1, past fp16's largest number (65,504) but easy for fp32."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(tiny, folder)
    weights = load_file(str(folder / "model.safetensors"))
    for block in (0, 1):
        name = f"transformer.h.{block}.mlp.c_proj.bias"
        weights[name] = torch.full_like(weights[name], 60000.0)
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def displayed(markdown: str) -> str:
    """What a person reads: user-supplied text is escaped for markdown (repmap_ui/text.py), shown without the backslashes."""
    return re.sub(r"\\(.)", r"\1", markdown).replace("\u2060", "")  # the word joiner that defangs an address


def fill(template: str, files: dict[str, Path]) -> str:
    from repmap_core.access import policy

    if "_roots}" in template:  # the roots as this test's app sees them (its cache, the test roots)
        p = policy()
        template = template.replace("{data_roots}", p.roots_text("data")).replace("{model_roots}", p.roots_text("model"))
    return template.replace("{files}", str(files["files"])).replace("{tiny}", str(files["tiny"])).replace(
        "{remote}", str(files["remote"]))


def cache_state(root: Path) -> list[tuple[str, int]]:
    """Every folder and file under the cache with its size. Empty `*.lock` files are left out: the
    lock library keeps them on purpose (unlinking a lock file breaks mutual exclusion), and they
    hold nothing."""
    return sorted((p.relative_to(root).as_posix(), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*")
                  if not (p.suffix == ".lock" and p.is_file() and p.stat().st_size == 0))


@pytest.fixture
def no_unpickling(files):
    yield
    assert not files["marker"].exists(), "a planted pickle or model code was executed"


# --------------------------------------------------------------------------- the app


@pytest.fixture(scope="module")
def ui_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad_inputs_app_cache")


def open_app(ui_cache: Path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("REPMAP_CACHE", str(ui_cache))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.switch_page("views/layer_explorer.py")  # opened by name: Home is the default page
    at.run()  # the explorer's default view: the embedded model on the built-in data (computed once per module)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def submit(at) -> None:
    at.button(key="FormSubmitter:explorer.form-Compute").click().run()


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def fake_hub(error: str):
    """`snapshot_download` answering like the hub: nothing cached, then `error` (as in test_models)."""
    from huggingface_hub import errors
    from huggingface_hub.errors import LocalEntryNotFoundError

    def snapshot_download(repo_id, revision=None, allow_patterns=None, local_files_only=False, **kwargs):
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        exc = getattr(errors, error).__new__(getattr(errors, error))
        Exception.__init__(exc, "simulated")
        raise exc

    return snapshot_download


@pytest.mark.parametrize("case", UI_CASES, ids=[c.id for c in UI_CASES])
def test_app_answers_a_bad_input_with_one_sentence(case: Case, files, ui_cache, monkeypatch, no_unpickling):
    import huggingface_hub
    from streamlit import config

    at = open_app(ui_cache, monkeypatch)
    shown, before = metrics(at), cache_state(ui_cache)
    assert at.checkbox(key="explorer.trust").value is False  # remote code: off unless ticked
    limit = config.get_option("server.maxUploadSize")
    with monkeypatch.context() as patch:
        for key, value in case.ui.items():
            if key == "hub_error":
                patch.setattr(huggingface_hub, "snapshot_download", fake_hub(value))
            elif key == "upload_limit_mb":
                config.set_option("server.maxUploadSize", value)
            elif key == "upload":
                at.file_uploader(key="explorer.upload").set_value((value, (files["files"] / value).read_bytes(),
                                                                  "application/octet-stream"))
            elif key == "explorer.position":
                at.selectbox(key=key).set_value(value)
            else:
                at.text_input(key=key).set_value(fill(value, files))
        try:
            submit(at)
        finally:
            config.set_option("server.maxUploadSize", limit)
    assert not at.exception, [e.value for e in at.exception]
    assert [displayed(e.value) for e in at.error] == [fill(case.ui_says, files)]
    assert metrics(at) == shown and len(at.get("plotly_chart")) == 2  # the last good result stays
    assert cache_state(ui_cache) == before

    # the app is still usable: a valid request right after computes and shows its result
    at.text_input(key="explorer.model_other").set_value(str(files["tiny"]))
    at.text_input(key="explorer.data_other").set_value("builtin:sentiment")
    at.text_input(key="explorer.layers").set_value("all")
    at.selectbox(key="explorer.position").set_value("auto")
    at.number_input(key="explorer.limit").set_value(60)
    at.file_uploader(key="explorer.upload").clear()
    submit(at)
    assert not at.exception and not at.error, ([e.value for e in at.exception], [e.value for e in at.error])
    assert metrics(at)["Width"] == "32" and metrics(at)["Rows"] == "60"


def test_app_answers_a_string_where_the_url_wants_a_number(ui_cache, monkeypatch):
    """A bad URL value is a notice (a warning), not a failure: the default is used and the page computes."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("REPMAP_CACHE", str(ui_cache))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    at.switch_page("views/layer_explorer.py")  # opened by name: the default page may be another one
    at.query_params["limit"] = "abc"
    at.run()
    assert not at.exception and not at.error, ([e.value for e in at.exception], [e.value for e in at.error])
    warnings = [w.value for w in at.warning]
    assert len(warnings) == 1 and "limit" in warnings[0] and "'abc'" in warnings[0] and "\n" not in warnings[0], warnings
    assert "2000" in warnings[0]  # what was used instead
    assert metrics(at)["Rows"] == "800"  # the default view is still computed
    assert at.number_input(key="explorer.limit").value == 2000
    assert "limit" not in at.query_params  # the URL now says what is shown: the default, left out


def test_fp16_overflow_is_recomputed_in_fp32_and_reported_in_the_app(files, ui_cache, monkeypatch):
    """The app's default dtype is bf16/fp16 on a GPU; here fp16 is forced on the CPU (REPMAP_DTYPE)."""
    at = open_app(ui_cache, monkeypatch)
    monkeypatch.setenv("REPMAP_DTYPE", "float16")
    at.text_input(key="explorer.model_other").set_value(str(files["overflow"]))
    at.number_input(key="explorer.limit").set_value(40)
    submit(at)
    assert not at.exception and not at.error, ([e.value for e in at.exception], [e.value for e in at.error])
    captions = [c.value for c in at.caption]
    assert ("40 of 40 rows were recomputed in float32 automatically because float16 overflowed (NaN or inf) in "
            "their batch; every value shown is finite.") in captions, captions
    aset = at.session_state["explorer.result"].aset
    assert aset.manifest["dtype"] == "float16" and aset.manifest["fp32_recomputed_rows"] == 40
    assert all(np.isfinite(aset[layer]).all() for layer in aset.layer_list)
    assert np.abs(aset[1]).max() > FP16_MAX  # it really would have overflowed in fp16


# --------------------------------------------------------------------------- the CLI

HUB_DRIVER = """
import os, runpy, sys
error = os.environ.get("REPMAP_TEST_HUB_ERROR")
if error:  # the hub's answer, simulated: these tests never reach the network
    import huggingface_hub
    from huggingface_hub import errors
    from huggingface_hub.errors import LocalEntryNotFoundError

    def snapshot_download(repo_id, revision=None, allow_patterns=None, local_files_only=False, **kwargs):
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        exc = getattr(errors, error).__new__(getattr(errors, error))
        Exception.__init__(exc, "simulated")
        raise exc

    huggingface_hub.snapshot_download = snapshot_download
runpy.run_module("repmap_core", run_name="__main__", alter_sys=True)
"""


def run_cli(args: list[str], cache: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, REPMAP_CACHE=str(cache), HF_HUB_OFFLINE="1", **(env or {}))
    command = [sys.executable, "-c", HUB_DRIVER, *args] if "REPMAP_TEST_HUB_ERROR" in env else \
        [sys.executable, "-m", "repmap_core", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


@pytest.fixture(scope="module")
def cli_cache(tmp_path_factory, files) -> tuple[Path, Callable[[], object]]:
    """A cache holding one good entry, and a function that reads it back (checksums verified, no model)."""
    from repmap_core.capture.activations import get_activations

    root = tmp_path_factory.mktemp("bad_inputs_cli_cache")

    def no_model(*args):
        raise AssertionError("the cached entry was not used: a model was loaded")

    def read_back(loader=no_model):
        store._verified.clear()  # verify every checksum, as a fresh process would
        return get_activations(str(files["tiny"]), "builtin:sentiment", "all", "last", limit=40, device="cpu",
                               loader=loader)

    old = os.environ.get("REPMAP_CACHE")
    os.environ["REPMAP_CACHE"] = str(root)
    try:
        read_back(loader=None)  # computed once
    finally:
        os.environ.pop("REPMAP_CACHE") if old is None else os.environ.update(REPMAP_CACHE=old)
    return root, read_back


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_answers_a_bad_input_with_one_line(case: Case, files, cli_cache, monkeypatch, no_unpickling):
    root, read_back = cli_cache
    before = cache_state(root)
    r = run_cli([fill(a, files) for a in case.cli], root, case.cli_env)
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    assert r.stderr.strip().splitlines()[-1] == fill(case.cli_says, files)
    assert "Traceback" not in r.stderr
    assert cache_state(root) == before
    monkeypatch.setenv("REPMAP_CACHE", str(root))
    aset = read_back()  # the cache still serves its entry, intact
    assert aset.n == 40 and aset.layer_list == [0, 1, 2]


def test_fp16_overflow_is_recomputed_in_fp32_and_recorded_by_the_cli(files, tmp_path, cache_dir):
    out = tmp_path / "export"
    r = run_cli(["extract", "--model", str(files["overflow"]), "--data", "builtin:sentiment", "--limit", "40",
                 "--dtype", "float16", "--device", "cpu", "--export", str(out), "--json"], cache_dir)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["dtype"] == "float16"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["fp32_recomputed_rows"] == 40
    layers = [np.load(out / f"layer_{i}.npy", allow_pickle=False) for i in range(3)]
    assert all(np.isfinite(x).all() for x in layers) and np.abs(layers[1]).max() > FP16_MAX


# --------------------------------------------------------------------------- the note


def note_table() -> str:
    """The table for the issue's closing note: paths as placeholders, and the traversal name
    (24 levels of `../` in the tests, to reach / from any folder) shortened to two."""
    def cell(text: str) -> str:
        return text.replace(TRAVERSAL, "../../etc/passwd").replace("|", "\\|")

    rows = ["| bad input | the app says | the CLI says (last line of stderr, exit 2) |", "|---|---|---|"]
    for c in CASES:
        ui = cell(c.ui_says) if c.ui is not None else f"— ({c.not_in_ui})"
        cli = cell(c.cli_says) if c.cli is not None else f"— ({c.not_in_cli})"
        rows.append(f"| {cell(c.issue)} | {ui} | {cli} |")
    rows.append("| NaN/inf in activations (fp16 overflow) | no error: the rows are recomputed in fp32 and a caption "
                "says \"N of M rows were recomputed in float32 automatically because float16 overflowed (NaN or inf) "
                "in their batch; every value shown is finite.\" | exit 0; `fp32_recomputed_rows` in the manifest |")
    rows.append("| a string where a number belongs in the URL (`?limit=abc`) | a warning: \"The link's limit='abc' is "
                "not a whole number, so the default 2000 is used instead.\" and the page computes with it | — |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(note_table())
