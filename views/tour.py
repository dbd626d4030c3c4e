"""The demo tour: the story in six steps on the embedded models and real built-in data, each with two
sentences and its figure; cached, so a second showing is quick; downloadable as one HTML report."""
from __future__ import annotations

import streamlit as st

from repmap_core.errors import RepmapError
from repmap_core.papers.tour import STEPS, TOUR_SOURCE, kept_step, run_step, tour_report
from repmap_ui import exports
from repmap_ui.bars import timed_bar
from repmap_ui.text import md

st.title("Demo tour")
st.caption("Six steps on the embedded SmolLM2-135M (and MiniLM) and 800 real reviews: where sentiment becomes readable, "
           "finetuning, how it moved the space, the within-model fit, a map across models, and steering. The first run "
           "computes and caches everything (a few minutes on a 2-core CPU, each step's time shown); later runs read the "
           "cache. Each step can also run on its own.")
done: dict = st.session_state.setdefault("tour.steps", {})
for key in STEPS:  # steps run before (another session, or before a refresh) are kept in the cache: shown as they are
    if key not in done and (kept := kept_step(key)) is not None:
        done[key] = kept

exports.source(TOUR_SOURCE)

c1, c2 = st.columns([1, 3])
run_all = c1.button("Run the whole tour", type="primary", key="tour.run_all")
report_slot = c2.empty()  # filled after the steps below have run, so a run's report is offered at once

cards = {}
for key, title in STEPS.items():
    card = st.container(border=True, key=f"tour.card.{key}")
    card.subheader(title)
    pressed = card.button("Run this step", key=f"tour.run.{key}")
    cards[key] = (pressed, card.empty(), card.container())  # (pressed, its state line or bar, its result)
queue = [key for key in STEPS if run_all or cards[key][0]]


def draw(key: str) -> None:
    step, body = done[key], cards[key][2]
    body.markdown(step.narrative)
    exports.plot(step.figure, f"tour.fig.{key}", f"tour_{key}", where=body)
    body.caption(f"Computed in {step.seconds:.1f} s here" + ("; read back from the cache now." if step.reused else "."))


for key in STEPS:  # what each card says before anything runs: a step about to run never reads "Not run yet"
    status = cards[key][1]
    if key in queue:
        status.caption("Running…" if key == queue[0] else f"Waiting: runs after step {STEPS[queue[queue.index(key) - 1]][0]}.")
    elif key in done:
        draw(key)
    else:
        status.caption("Not run yet: press Run this step, or Run the whole tour.")

for key in queue:
    status = cards[key][1]
    try:
        with timed_bar(f"{STEPS[key]}: starting", where=status, prefix=f"{STEPS[key]}: ") as progress:
            done[key] = run_step(key, progress=progress)
    except RepmapError as e:
        status.error(md(e), icon=":material/error:")
        continue
    status.empty()
    draw(key)

if done:
    steps = [done[k] for k in STEPS if k in done]
    report_slot.download_button(f"Download the tour as an HTML report ({len(steps)} of {len(STEPS)} steps)",
                                lambda: tour_report(steps), "repmap_tour.html", mime="text/html", key="tour.report",
                                on_click="ignore")
