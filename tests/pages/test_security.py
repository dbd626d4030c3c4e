"""Security defaults, checked where they live: no code path unpickles or runs a model's code
without the opt-in, the server config is private by default, and no cache path is ever built
from a user's string. SECURITY.md explains each of these to people who run the app."""
from __future__ import annotations

import ast
import fnmatch
import io
import json
import re
import subprocess
import sys
import tokenize
import tomllib
from pathlib import Path

import numpy as np
import pytest

from repmap_core.capture import store
from repmap_core.capture.models import HUB_PATTERNS
from tests.conftest import ROOT

CONFIG = ROOT / ".streamlit" / "config.toml"
SECURITY = ROOT / "SECURITY.md"

# (what is forbidden, a regex). `eval(`/`exec(` only as bare calls: `model.eval()` is fine.
FORBIDDEN = [
    ("pickle.load / pickle.loads / Unpickler", r"\bpickle\s*\.\s*(load|loads|Unpickler)\b"),
    ("importing cPickle, dill, cloudpickle, joblib, shelve or marshal",
     r"^\s*(import|from)\s+(_?pickle|cPickle|dill|cloudpickle|joblib|shelve|marshal)\b"),
    ("dill, cloudpickle, joblib, shelve or marshal loading", r"\b(dill|cloudpickle|joblib|shelve|marshal)\s*\.\s*(load|loads|open)\b"),
    ("pandas read_pickle", r"\bread_pickle\b"),
    ("torch.load (unpickles)", r"\btorch\s*\.\s*load\s*\("),
    ("allow_pickle=True", r"allow_pickle\s*=\s*True"),
    ("weights_only=False", r"weights_only\s*=\s*False"),
    ("use_safetensors=False", r"use_safetensors\s*=\s*False"),
    ("trust_remote_code=True", r"trust_remote_code\s*=\s*True"),
    ("st.cache_data(persist=...) pickles to disk", r"\bpersist\s*=\s*(True|[\"']disk)"),
    ("yaml.load (use safe_load)", r"\byaml\s*\.\s*(load|unsafe_load)\s*\("),
    ("bare eval/exec", r"(?<![.\w])(eval|exec)\s*\("),
    ("subprocess with shell=True", r"shell\s*=\s*True"),
]
# code that runs on what users give the app or the CLI (the benchmark loads only folders it wrote itself)
USER_FACING = ("app.py", "repmap_core/", "repmap_ui/", "views/")


def source_files() -> list[Path]:
    """Every Python file of the project except the tests: tracked files, and new ones not yet
    committed (so a file being written is checked too); without git, every .py under the root."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
        files = [ROOT / f for f in out]
    except (OSError, subprocess.CalledProcessError):
        files = [p for p in ROOT.rglob("*.py") if not {".git", ".venv", "venv", "cache"} & set(p.parts)]
    files = [p for p in files if p.is_file() and p.relative_to(ROOT).parts[0] != "tests"]
    assert any(p.name == "store.py" for p in files) and len(files) > 20, files  # the scan really saw the code
    return sorted(files)


def code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, code) with comments and docstrings blanked, so prose about pickles is allowed."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            lines[row - 1] = lines[row - 1][:col]
    for node in ast.walk(ast.parse(text)):  # docstrings: the first statement of a module, class or function
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                for i in range(first.lineno - 1, first.end_lineno):
                    lines[i] = ""
    return list(enumerate(lines, start=1))


def test_no_code_path_unpickles_or_runs_untrusted_code():
    hits = []
    for path in source_files():
        for lineno, line in code_lines(path):
            for what, pattern in FORBIDDEN:
                if re.search(pattern, line):
                    hits.append(f"{path.relative_to(ROOT)}:{lineno}: {what}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_the_grep_catches_what_it_is_meant_to(tmp_path):
    """The patterns above, tried on lines that must be caught and lines that must not."""
    caught = ["x = pickle.load(f)", "import pickle", "from joblib import load", "dill.loads(b)", "np.load(p, allow_pickle=True)",
              "torch.load(p, weights_only=False)",
              "AutoModel.from_pretrained(p, trust_remote_code=True)", "eval(user_input)", "import joblib",
              "@st.cache_data(persist='disk')", "yaml.load(s)", "subprocess.run(cmd, shell=True)"]
    allowed = ["model.eval()", 'SUFFIXES = (".pkl", ".joblib")', "never_pickle = True", "np.load(p, allow_pickle=False)",
               "trust_remote_code=trust_remote_code",
               "st.cache_data(show_spinner=False)", "yaml.safe_load(s)", "lm.model.eval().requires_grad_(False)"]
    for line in caught:
        assert any(re.search(p, line) for _, p in FORBIDDEN), line
    for line in allowed:
        assert not any(re.search(p, line) for _, p in FORBIDDEN), line
    # comments and docstrings may talk about pickles
    f = tmp_path / "m.py"
    f.write_text('"""Never pickle.load anything."""\nx = 1  # not torch.load(p)\ny = "#"\n', encoding="utf-8")
    assert not [line for _, line in code_lines(f) if any(re.search(p, line) for _, p in FORBIDDEN)]


def calls(tree: ast.AST, name: str):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if (isinstance(func, ast.Attribute) and func.attr == name) or (isinstance(func, ast.Name) and func.id == name):
                yield node


def test_remote_code_is_only_ever_the_users_choice():
    """Every `trust_remote_code` parameter defaults to False, every call passes the caller's
    variable (never a literal True), and every 'trust remote code' checkbox starts unticked."""
    problems = []
    for path in source_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                args = node.args
                params = args.args + args.kwonlyargs
                defaults = [None] * (len(args.args) - len(args.defaults)) + list(args.defaults) + list(args.kw_defaults)
                for arg, default in zip(params, defaults):
                    # no default (every caller must choose) or False; never on unless the user turns it on
                    if arg.arg == "trust_remote_code" and default is not None and not (
                            isinstance(default, ast.Constant) and default.value is False):
                        problems.append(f"{where}:{node.lineno}: parameter trust_remote_code must default to False")
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg == "trust_remote_code" and isinstance(kw.value, ast.Constant) and kw.value.value is not False:
                        problems.append(f"{where}:{node.lineno}: trust_remote_code={kw.value.value!r}")
        for call in calls(tree, "checkbox"):
            label = call.args[0].value if call.args and isinstance(call.args[0], ast.Constant) else ""
            if "remote code" in str(label).lower():
                value = next((kw.value for kw in call.keywords if kw.arg == "value"), None)
                if value is not None and not (isinstance(value, ast.Constant) and value.value is False):
                    problems.append(f"{where}:{call.lineno}: the remote-code checkbox must start unticked")
    assert not problems, "\n".join(problems)


def test_models_load_safetensors_only_and_arrays_never_with_pickle():
    """In code that handles users' models and files, every model `from_pretrained` passes
    `use_safetensors=True` and every `np.load` passes `allow_pickle=False`."""
    problems, seen = [], 0
    for path in source_files():
        rel = path.relative_to(ROOT).as_posix()
        if not rel.startswith(USER_FACING):
            continue
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        for call in calls(tree, "from_pretrained"):
            receiver = ast.get_source_segment(text, call.func.value) if isinstance(call.func, ast.Attribute) else ""
            if "Tokenizer" in receiver or "Config" in receiver:
                continue  # tokenizers and configs are JSON/text files, never pickles
            seen += 1
            safe = any(kw.arg == "use_safetensors" and isinstance(kw.value, ast.Constant) and kw.value.value is True
                       for kw in call.keywords)
            # a GGUF file holds tensors and key-value metadata read by the gguf package, never a pickle
            safe = safe or any(kw.arg == "gguf_file" for kw in call.keywords)
            if not safe:
                problems.append(f"{rel}:{call.lineno}: {receiver}.from_pretrained without use_safetensors=True or gguf_file")
        for call in calls(tree, "load"):
            if isinstance(call.func, ast.Attribute) and ast.get_source_segment(text, call.func.value) in ("np", "numpy"):
                safe = any(kw.arg == "allow_pickle" and isinstance(kw.value, ast.Constant) and kw.value.value is False
                           for kw in call.keywords)
                if not safe:
                    problems.append(f"{rel}:{call.lineno}: np.load without allow_pickle=False")
    assert not problems, "\n".join(problems)
    assert seen >= 1  # the model loader was found and checked


def test_hub_downloads_fetch_no_code_and_no_pickles():
    wanted = ["config.json", "model.safetensors", "model-00001-of-00002.safetensors", "tokenizer.json",
              "tokenizer_config.json", "vocab.txt", "merges.txt", "tokenizer.model", "special_tokens_map.json"]
    refused = ["pytorch_model.bin", "model.pt", "training_args.bin", "modeling_custom.py", "tokenization_x.py",
               "model.ckpt", "optimizer.pkl", "flax_model.msgpack", "tf_model.h5"]
    matches = lambda name: any(fnmatch.fnmatch(name, p) for p in HUB_PATTERNS)  # noqa: E731
    assert all(matches(n) for n in wanted), [n for n in wanted if not matches(n)]
    assert not any(matches(n) for n in refused), [n for n in refused if matches(n)]


def test_pyarrow_is_past_the_parquet_code_execution_bug():
    """pyarrow before 14.0.1 unpickled extension types found in a parquet file (CVE-2023-47248),
    and repmap reads uploaded parquet files."""
    import pyarrow

    major, minor, patch = (int(re.match(r"\d+", x).group()) for x in pyarrow.__version__.split(".")[:3])
    assert (major, minor, patch) >= (14, 0, 1), pyarrow.__version__


# --------------------------------------------------------------------------- server config


def test_server_config_is_private_by_default():
    config = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    server, client = config["server"], config["client"]
    assert server["address"] in ("localhost", "127.0.0.1")  # not 0.0.0.0: nothing off this machine reaches it
    assert server["enableXsrfProtection"] is True
    assert server["enableCORS"] is True
    assert isinstance(server["maxUploadSize"], int) and 1 <= server["maxUploadSize"] <= 1000
    assert server.get("enableStaticServing", False) is False
    assert config["browser"]["gatherUsageStats"] is False
    assert client["toolbarMode"] == "viewer"  # no "clear cache" or "rerun" for every visitor
    # error details: a documented choice, with the shared-server value named next to it
    assert client["showErrorDetails"] in ("full", "stacktrace", "type", "none")
    line = next(x for x in CONFIG.read_text(encoding="utf-8").splitlines() if x.strip().startswith("showErrorDetails"))
    assert '"none"' in line and "shared" in line, line


def test_streamlit_reads_the_config_as_written():
    """Streamlit itself, started in the project folder, sees these values (not its own defaults)."""
    code = ("import json, streamlit.config as c; print(json.dumps({k: c.get_option(k) for k in "
            "['server.address', 'server.enableXsrfProtection', 'server.maxUploadSize', 'client.showErrorDetails', "
            "'browser.gatherUsageStats']}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    config = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    assert seen == {"server.address": config["server"]["address"], "server.enableXsrfProtection": True,
                    "server.maxUploadSize": config["server"]["maxUploadSize"],
                    "client.showErrorDetails": config["client"]["showErrorDetails"], "browser.gatherUsageStats": False}


def test_security_note_names_valid_settings_and_is_linked():
    from streamlit.config import ShowErrorDetailsConfigOptions

    text = SECURITY.read_text(encoding="utf-8")
    assert 'showErrorDetails = "none"' in text and "none" in {o.value for o in ShowErrorDetailsConfigOptions}
    for phrase in ("maxUploadSize", "localhost", "safetensors", "pickle", "trust_remote_code", "auth", "TLS",
                   "REPMAP_CACHE", "Reporting"):
        assert phrase in text, phrase
    for option in re.findall(r"--([a-z]+\.[A-Za-z]+)", text):  # every streamlit option it names exists
        from streamlit import config

        assert option in config._config_options_template, option
    assert "SECURITY.md" in (ROOT / "README.md").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- cache names


BAD_KEYS = ["../../etc/passwd", "..", ".", "", "/etc", "a" * 31 + "/", "../" + "a" * 29, "A" * 32, "g" * 32,
            "a" * 33, "a" * 16 + "\x00" + "a" * 15, "ａ" * 32, "a" * 31 + "\n"]


@pytest.mark.parametrize("bad", BAD_KEYS, ids=[repr(b)[:20] for b in BAD_KEYS])
def test_no_cache_path_is_built_from_a_non_key(bad, tmp_path, cache_dir):
    before = sorted(tmp_path.rglob("*"))
    for build in (lambda: store.entry_dir(bad), lambda: store.layer_path(bad, 0), lambda: store.delete_entry(bad),
                  lambda: store.entry_lock(bad).__enter__(), lambda: store.read_layer(bad, 0, {}),
                  lambda: store.clean_temp_files(bad), lambda: store.delete_entry(bad, "models")):
        with pytest.raises(ValueError, match="not a cache key"):
            build()
    assert sorted(tmp_path.rglob("*")) == before  # nothing was created, inside the cache or out


@pytest.mark.parametrize("kind", ["../activations", "", "x/y", "..", "/tmp", "ａctivations", "models\\.."])
def test_no_cache_path_is_built_from_a_bad_kind(kind, tmp_path, cache_dir):
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ValueError, match="not a cache key"):
        store.entry_dir("a" * 32, kind)
    with pytest.raises(ValueError, match="not a cache key"):
        store.delete_entry("a" * 32, kind)
    assert sorted(tmp_path.rglob("*")) == before


def test_keys_of_hostile_names_are_plain_hex(cache_dir):
    for name in ("../../etc/passwd", "/etc/passwd", "a/../../b", "C:\\Windows", "x\x00y", "名前"):
        key = store.entry_key({"model": name, "dataset_spec": f"file:{name}"})
        assert store.is_key(key)
        assert store.entry_dir(key).parent == cache_dir / "activations"


def test_the_cache_listing_ignores_folders_repmap_did_not_make(cache_dir):
    """A folder someone put in the cache is not an entry: not listed, so never offered for deletion."""
    good = store.entry_key({"model": "m"})
    store.write_file(store.layer_path(good, 0), {"activations": np.zeros((2, 3), np.float32)},
                     {"model": "m", "layer": 0, "created": store.now_iso()})
    stray = cache_dir / "activations" / "not-a-key"
    stray.mkdir()
    store.write_file(stray / "layer_0.safetensors", {"activations": np.zeros((2, 3), np.float32)}, {"model": "x", "layer": 0})
    assert [e.key for e in store.list_entries()] == [good]


class FakeUpload:
    """What `st.file_uploader` returns, as far as `save_upload` looks at it."""

    def __init__(self, name: str, data: bytes):
        self.name, self._data, self.size = name, data, len(data)

    def getvalue(self) -> bytes:
        return self._data


@pytest.mark.parametrize("name", ["../../evil.csv", "/etc/cron.d/x.csv", "..\\..\\x.csv", "a\x00b.csv", "ok.csv"])
def test_uploads_are_stored_under_their_content_hash(name, tmp_path, cache_dir):
    from repmap_ui.common import save_upload

    data = b"text,label\nfine,1\nbad,0\n"
    spec = save_upload(FakeUpload(name, data))
    path = Path(spec.removeprefix("file:"))
    assert path.parent == cache_dir / "uploads" and path.read_bytes() == data
    assert re.fullmatch(r"[0-9a-f]{32}\.csv", path.name)
    outside = [p for p in tmp_path.rglob("*") if cache_dir not in p.parents and p != cache_dir]
    assert outside == []


@pytest.fixture
def read_only():
    """Make a folder read-only for this process: a read-only bind mount when run as root (root writes through any
    mode bits), its mode bits otherwise. Undone after the test."""
    import contextlib
    import os
    import stat

    done = []

    def make(folder: Path) -> None:
        if os.geteuid() == 0:
            mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
            if mounted.returncode != 0:
                pytest.skip("a read-only cache needs a bind mount here, and mount is not allowed")
            done.append(("umount", folder))
            subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True, capture_output=True)
        else:
            for p in [folder, *folder.rglob("*")]:
                p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
                done.append(("chmod", p))
        with contextlib.suppress(OSError):
            (folder / ".probe").write_text("x")
            pytest.fail("the folder is still writable")

    yield make
    for how, path in reversed(done):
        if how == "umount":
            subprocess.run(["umount", "-l", str(path)], capture_output=True)  # lazily: the test still maps its files
        else:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


def test_a_read_only_cache_serves_what_it_holds_and_skips_writes_with_one_notice(cache_dir, read_only, monkeypatch):
    """Issue 21, item 13: a read-only cache holding every activation crashed the layer explorer (`remember()`
    wrote even for a cached view). Reading works; a write the cache can do without is skipped, said once."""
    from streamlit.testing.v1 import AppTest

    from repmap_core.analysis import projection

    def run(query: dict) -> AppTest:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        at.switch_page("views/layer_explorer.py")
        for k, v in query.items():
            at.query_params[k] = v
        return at.run()

    first = run({"limit": "40", "layers": "0,2"})
    first.button(key="explorer.link_compute").click().run()
    assert not first.exception and first.metric
    before = sorted(str(p) for p in cache_dir.rglob("*"))
    read_only(cache_dir)
    monkeypatch.setattr(projection, "umap", lambda X, seed=0, **kw: np.zeros((len(X), 2), np.float32))
    for query in ({"limit": "40", "layers": "0,2"}, {"limit": "40", "layers": "0,2", "max_length": "300"},
                  {"limit": "40", "layers": "0,2", "method": "umap", "seed": "3"}):
        at = run(query)
        buttons = [b.key for b in at.button if b.key and b.key.endswith("link_compute")]
        for key in buttons:  # a link's view: compute it (it cannot be kept)
            at.button(key=key).click().run()
        assert not at.exception, (query, [e.value for e in at.exception])
        errors = [e.value for e in at.error]
        assert all("cannot be written" in e for e in errors), errors  # only a new extraction is refused, in one sentence
        notes = [c.value for c in at.caption if "cannot be written" in c.value]
        assert len(notes) <= 1  # the sidebar's one notice
    assert at.metric and at.get("plotly_chart")  # the cached activations, drawn with an uncached UMAP
    assert any("cannot be written" in c.value for c in at.caption)
    assert sorted(str(p) for p in cache_dir.rglob("*")) == before
