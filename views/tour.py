"""The demo tour: the story in six steps on the embedded models and real built-in data, each with two
sentences and its figure; cached, so a second showing is quick; downloadable as one HTML report."""
from __future__ import annotations

import streamlit as st

from repmap_core.errors import RepmapError
from repmap_core.papers.tour import STEPS, TOUR_SOURCE, run_step, tour_report
from repmap_ui import exports
from repmap_ui.bars import timed_bar
from repmap_ui.common import show_error

st.title("Demo tour")
st.caption("Six steps on the embedded SmolLM2-135M (and MiniLM) and 800 real reviews: where sentiment becomes readable, "
           "finetuning, how it moved the space, the within-model fit, a map across models, and steering. The first run "
           "computes and caches everything (a few minutes on a 2-core CPU, each step's time shown); later runs read the "
           "cache. Each step can also run on its own.")
done: dict = st.session_state.setdefault("tour.steps", {})
exports.source(TOUR_SOURCE)

c1, c2 = st.columns([1, 3])
run_all = c1.button("Run the whole tour", type="primary", key="tour.run_all")
if done:
    c2.download_button("Download the tour as an HTML report", tour_report([done[k] for k in STEPS if k in done]),
                       "repmap_tour.html", mime="text/html", key="tour.report")


def compute(key: str) -> None:
    try:
        with timed_bar(f"{STEPS[key]}: starting", prefix=f"{STEPS[key]}: ") as progress:
            done[key] = run_step(key, progress=progress)
    except RepmapError as e:
        show_error(e)


for key, title in STEPS.items():
    with st.container(border=True, key=f"tour.card.{key}"):
        st.subheader(title)
        if run_all or st.button("Run this step", key=f"tour.run.{key}"):
            compute(key)
        step = done.get(key)
        if step is None:
            st.caption("Not run yet in this session.")
            continue
        st.markdown(step.narrative)
        exports.plot(step.figure, f"tour.fig.{key}", f"tour_{key}")
        st.caption(f"Computed in {step.seconds:.1f} s here" + ("; read back from the cache now." if step.reused else "."))
