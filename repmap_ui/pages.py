"""The one list of pages: file, title, icon, URL path, one line for Home, and the bundle view it shares.

app.py builds the navigation from it, Home draws a card per page from it, and Share maps a bundle's
views back to their pages through it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PageInfo:
    file: str  # under the project root
    title: str
    icon: str
    blurb: str  # one line, for Home
    url_path: str | None = None  # None: Streamlit derives it from the file name
    view: str | None = None  # the bundle view (repmap_core.share.bundle.VIEWS) holding this page's results
    default: bool = False


PAGES: list[PageInfo] = [
    PageInfo("views/home.py", "Home", ":material/home:", "What repmap is, and where it runs.", default=True),
    PageInfo("views/tour.py", "Demo tour", ":material/tour:",
             "The whole story in six steps on real models and data, each with its figure and two sentences."),
    PageInfo("views/layer_explorer.py", "Layer explorer", ":material/stacked_line_chart:",
             "Where a concept separates: per-layer projections, probe accuracy and separation.", "layer_explorer",
             "explorer"),
    PageInfo("views/shift.py", "Finetuning shift", ":material/moving:", "Base vs finetuned activations on shared axes.",
             view="shift"),
    PageInfo("views/within_fit.py", "Within-model fit", ":material/functions:", "λ̃ ≈ Aλ + b + yδ and Gao et al.'s Table 1.",
             view="within"),
    PageInfo("views/finetune.py", "Finetune", ":material/model_training:", "Finetune a model with a linear head, here.",
             view="finetune"),
    PageInfo("views/weak_to_strong.py", "Weak to strong", ":material/trending_up:",
             "A small teacher's labels train a bigger student: the gap it recovers (PGR)."),
    PageInfo("views/across.py", "Across models", ":material/compare_arrows:",
             "Maps between models or layers; probes carried across.", view="across"),
    PageInfo("views/steering.py", "Steering", ":material/explore:",
             "CAA vectors per layer, their cosines, steering with baselines, and transfer.", view="steering"),
    PageInfo("views/share.py", "Share", ":material/share:", "A session bundle or an HTML report of what you found."),
    PageInfo("views/presets.py", "Reproduce the papers", ":material/science:", "The papers' experiments, full or scaled down."),
    PageInfo("views/cache.py", "Cache", ":material/storage:", "What has been computed or stored, and deleting it."),
]

PAGE_OF_VIEW = {p.view: p.file for p in PAGES if p.view}
