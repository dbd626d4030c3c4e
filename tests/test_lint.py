"""The linter as a test, so the README's pytest command (what CI runs) checks it too: `ruff check` with
pyproject.toml's rules over the library, the app (repmap_ui, views, app.py), benchmarks, tests and scripts. Skipped where ruff is not
installed (it is in requirements-dev.txt)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINTED = ["repmap_core", "repmap_ui", "views", "app.py", "bench", "tests", "scripts"]


def ruff_bin() -> str:
    pytest.importorskip("ruff")
    from ruff.__main__ import find_ruff_bin

    return str(find_ruff_bin())


def ruff_check(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([ruff_bin(), "check", "--no-cache", "--output-format", "concise", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_ruff_passes_on_the_library_benchmarks_tests_and_scripts():
    result = ruff_check(*LINTED)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_reads_this_projects_rules(tmp_path):
    """The check above means something: with pyproject.toml's settings, ruff flags an unused import,
    unsorted imports and a line past the limit, and exits non-zero."""
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text(encoding="utf-8"), encoding="utf-8")
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nimport os\n\nx = '" + "a" * 200 + "'\n", encoding="utf-8")
    result = ruff_check("bad.py", cwd=tmp_path)
    assert result.returncode == 1
    for code in ("F401", "I001", "E501"):
        assert code in result.stdout, result.stdout
