"""Test set-up: offline hub, a private cache per test, tiny random models built once per session."""
from __future__ import annotations

import os

# before anything imports huggingface_hub, which reads these at import time
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["REPMAP_NO_WARMUP"] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.tiny_models import build_tiny_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
needs_shared_data = pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is not present (a user's fresh clone has none)")


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
