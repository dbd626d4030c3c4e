"""repmap_core: representation maps of language models, headless (no streamlit here).

Data flow: DATA SPEC -> TextDataset; model id or folder -> LoadedModel; both -> extract ->
ActivationSet (cached on disk) -> analyses (probes, projections, maps) -> pages / CLI.
"""
from __future__ import annotations

__version__ = "0.1.0"

from repmap_core.errors import RepmapError

__all__ = ["RepmapError", "__version__"]
