"""What a served app may read, load, download and compute: the operator's policy.

The CLI runs as its own user's shell and has full access. The app is different: it is shown to
collaborators, and a link can carry any data spec or model name. So the app turns the policy on
(`enforce(policy())`) and then `load_dataset`, `resolve_model` and the pages check every request
against it, whatever its source (a form, a link, a rebuilt view):

- **Allowed roots.** `file:` data and model folders (and `.gguf` files) resolve only under the
  configured roots, symlinks resolved first. Defaults: `./data` under the working directory, the
  cache (uploads, finetuned models, converted GGUF files, saved data sets), the HF cache and the
  embedded models. `REPMAP_DATA_ROOTS` / `REPMAP_MODEL_ROOTS` (paths joined by `os.pathsep`) add more.
- **Downloads.** Hub models and `hf:` data sets are fetched only when `REPMAP_ALLOW_DOWNLOADS=1`;
  otherwise only what is already local resolves (`HF_HUB_OFFLINE` is honoured everywhere).
- **Caps.** Rows per request, points per projection, rows for t-SNE/UMAP, the expanded size of an
  uploaded table, the upload store's quota: each refused (or cut) with one sentence naming the cap.

`REPMAP_MODE=shared` (the documented set-up for a lab server) sets the tighter caps and no downloads.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from repmap_core.errors import RepmapError
from repmap_core.locations import cache_root, embedded_model_path

__all__ = ["Policy", "Refused", "policy", "enforce", "active", "check_data_path", "check_model_path", "check_download",
           "cap_rows", "cap"]


class Refused(RepmapError):
    """A request the operator's policy refuses (a path outside the roots, a download): never hidden behind a
    softer answer such as "its cost is not known"."""


@dataclass(frozen=True)
class Policy:
    """The operator's limits for a served app."""

    data_roots: tuple[Path, ...]
    model_roots: tuple[Path, ...]
    allow_downloads: bool = False
    max_rows: int = 20_000  # rows per request (a limit of 0, "all", is cut to this)
    max_points: int = 20_000  # points drawn per projection
    max_embed_rows: int = 5_000  # rows for t-SNE / UMAP (the slow projections)
    max_table_bytes: int = 200 * 1024 * 1024  # a table (uploaded, or a file: under the roots) once decoded
    upload_quota_bytes: int = 2 * 1024 ** 3  # the whole upload store
    shared: bool = False
    # a background job (finetune, weak to strong) is cancelled once its visitor's session has been gone
    # this long (None: it runs on, as a local user expects), and when it has run this long (None: no limit)
    leave_grace_s: float | None = None
    max_job_seconds: float | None = None

    def roots_text(self, kind: str) -> str:
        roots = self.data_roots if kind == "data" else self.model_roots
        return ", ".join(str(r) for r in roots)


def _paths(env: str) -> tuple[Path, ...]:
    return tuple(Path(p).expanduser() for p in os.environ.get(env, "").split(os.pathsep) if p.strip())


def _resolved(paths) -> tuple[Path, ...]:
    out = []
    for p in paths:
        try:
            out.append(Path(p).expanduser().resolve())
        except OSError:
            continue
    return tuple(dict.fromkeys(out))


def policy() -> Policy:
    """The policy from the environment (REPMAP_MODE, REPMAP_DATA_ROOTS, REPMAP_MODEL_ROOTS,
    REPMAP_ALLOW_DOWNLOADS, REPMAP_MAX_ROWS)."""
    cache = cache_root()
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    embedded = [p for p in (embedded_model_path(),) if p is not None]
    data_roots = _resolved([Path.cwd() / "data", cache / "uploads", cache / "datasets", *_paths("REPMAP_DATA_ROOTS")])
    model_roots = _resolved([cache / "models", cache / "gguf", hf_home, *embedded, *_paths("REPMAP_MODEL_ROOTS")])
    shared = os.environ.get("REPMAP_MODE", "").strip().lower() == "shared"
    base = Policy(data_roots, model_roots, allow_downloads=os.environ.get("REPMAP_ALLOW_DOWNLOADS") == "1", shared=shared)
    if shared:
        base = replace(base, max_rows=5_000, max_points=10_000, max_embed_rows=3_000,
                       max_table_bytes=50 * 1024 * 1024, upload_quota_bytes=500 * 1024 * 1024,
                       leave_grace_s=60.0, max_job_seconds=3600.0)
    if (rows := os.environ.get("REPMAP_MAX_ROWS", "").strip()).isdigit() and int(rows) > 0:
        base = replace(base, max_rows=int(rows))
    return base


_ENFORCED: Policy | None = None


def enforce(p: Policy | None) -> None:
    """Turn the policy on for this process (the app does; the CLI never does), or off with None."""
    global _ENFORCED
    _ENFORCED = p


def active() -> Policy | None:
    """The enforced policy, or None (full access: the CLI, the library)."""
    return _ENFORCED


def _inside(path: Path, roots: tuple[Path, ...]) -> bool:
    try:
        real = path.expanduser().resolve()  # symlinks resolved before the check
    except OSError:
        return False
    return any(real == r or real.is_relative_to(r) for r in roots)


def check_data_path(path: str | Path) -> None:
    """Refuse a data file outside the allowed roots (when a policy is enforced). The sentence never
    says whether the file exists, and nothing of it is read."""
    p = active()
    if p is not None and not _inside(Path(path), p.data_roots):
        raise Refused(f"This server reads data files only under {p.roots_text('data')}; that path is outside them, so "
                          "it was not opened. Upload the table instead, or ask the operator to add its folder to "
                          "REPMAP_DATA_ROOTS.")


def check_model_path(path: str | Path) -> None:
    """Refuse a model folder or GGUF file outside the allowed roots (when a policy is enforced)."""
    p = active()
    if p is not None and not _inside(Path(path), p.model_roots):
        raise Refused(f"This server loads model folders only under {p.roots_text('model')}; that path is outside "
                          "them, so it was not opened. Ask the operator to add its folder to REPMAP_MODEL_ROOTS.")


def check_download(what: str) -> None:
    """Refuse fetching `what` (a hub model or data set) unless the operator allows downloads."""
    p = active()
    if p is not None and not p.allow_downloads:
        raise Refused(f"{what} is not on this server, and it does not download from the hub (the operator can allow "
                          "it with REPMAP_ALLOW_DOWNLOADS=1); pick a model or data set listed as available here.")


def cap_rows(limit: int | None) -> tuple[int | None, str | None]:
    """A row limit within the policy's cap: (limit to use, a sentence when it was cut, else None)."""
    p = active()
    if p is None or (limit and 0 < limit <= p.max_rows):
        return limit, None
    if not limit:  # "all rows": only a data set longer than the cap is cut, which the page cannot know yet
        return p.max_rows, (f"This server computes at most {p.max_rows:,} rows per request, so a data set with more "
                            f"is cut to its first {p.max_rows:,}.")
    return p.max_rows, f"This server computes at most {p.max_rows:,} rows per request, so {limit:,} rows became {p.max_rows:,}."


def cap(value: int, limit_name: str, what: str) -> tuple[int, str | None]:
    """`value` within the policy's `limit_name` cap (max_points, max_embed_rows): (value, sentence or None)."""
    p = active()
    most = getattr(p, limit_name) if p is not None else None
    if most is None or value <= most:
        return value, None
    return most, f"This server draws at most {most:,} {what}, so {value:,} became {most:,}."
