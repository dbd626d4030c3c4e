"""Weak to strong: a small model's labels train a bigger one; how much of the gap to its ceiling does it recover?"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from repmap_core.capture.speed import timed
from repmap_core.errors import RepmapError
from repmap_core.finetune.weak_to_strong import STRONG_DEFAULT, WEAK_DEFAULT, pgr_reading, weak_to_strong
from repmap_ui.common import show_error
from repmap_ui.estimates import w2s_estimate
from repmap_ui.jobs import LIVE_REFRESH_S, latest_job, start_job
from repmap_ui.pickers import chosen_data, chosen_model, two_models_and_data
from repmap_ui.tiles import estimate_tile

JOB = "w2s"
st.title("Weak to strong")
st.caption("Burns et al.'s weak-to-strong generalisation, the motivation of Gao et al.'s Table 2, on real models offline: "
           "the weak teacher is finetuned on ground truth; its predictions label the strong student's training rows; the "
           "student is finetuned on those weak labels; its ceiling is the same model finetuned on ground truth. All three "
           "are scored on held-out rows. PGR = (student − teacher) / (ceiling − teacher): 1 means the student reaches its "
           "ceiling, 0 that it only imitates its teacher. The teacher trains its last block and head, the student and "
           "its ceiling their last 4 blocks and head (fully finetuned, MiniLM reaches SmolLM2's ceiling on these reviews, "
           "which leaves no gap to recover). Each finetune is cached, so a second run is quick.")
st.session_state.setdefault("w2s.weak.model_choice", WEAK_DEFAULT)
st.session_state.setdefault("w2s.strong.model_choice", STRONG_DEFAULT)

with st.container(border=True, key="w2s.form"):  # no st.form: the estimate above Run follows each change
    weak, strong, data = two_models_and_data("w2s", (("weak", "Weak teacher"), ("strong", "Strong student")),
                                             with_upload=False)

job = latest_job(JOB)
running = job is not None and job.snapshot().state == "running"
try:
    req = {"weak_model": chosen_model(*weak), "strong_model": chosen_model(*strong)}
    spec = chosen_data(*data)
    est = None if running else w2s_estimate(spec, req)
    go = st.button("Run weak to strong", type="primary", key="w2s.run")
    if go and running:
        st.warning("A weak-to-strong run is already going in this session; wait for it or cancel it.")
    elif go:
        start_job(JOB, lambda ctx: timed("w2s", est and est["total"], lambda: weak_to_strong(
            spec, progress=ctx.progress, cancel=ctx.cancel, estimate=est, **req)),
                  title=f"{req['weak_model']} → {req['strong_model']} on {spec}", estimate=est and est["calibrated"])
        st.rerun()
except RepmapError as e:
    show_error(e)


@st.fragment(run_every=LIVE_REFRESH_S)
def live(job) -> None:
    snap = job.snapshot()
    if snap.state != "running":
        st.rerun()
    bar, stop = st.columns([6, 1], vertical_alignment="bottom")
    bar.progress(snap.fraction, text=snap.progress_text())
    if not job.cancel.is_set() and stop.button("Cancel", key="w2s.cancel", icon=":material/stop:"):
        job.cancel.set()


if job is not None:
    snap = job.snapshot()
    if snap.state == "running":
        live(job)
    elif snap.state != "done":
        st.error(snap.error, icon=":material/error:")
    else:
        r = snap.result
        st.session_state["w2s.result"] = r
if (r := st.session_state.get("w2s.result")) is not None:
    c = st.columns(4)
    estimate_tile("Weak teacher", r.weak, where=c[0], help="held-out accuracy, its 95% interval below")
    estimate_tile("Student on weak labels", r.strong_on_weak, where=c[1], help="held-out accuracy")
    estimate_tile("Student's ceiling (ground truth)", r.ceiling, where=c[2], help="held-out accuracy")
    pgr_text = "–" if r.pgr.value != r.pgr.value else f"{r.pgr.value:.2f}"
    c[3].metric("PGR", pgr_text, help="(student − teacher) / (ceiling − teacher)")
    c[3].caption("undefined: the ceiling does not beat the teacher" if pgr_text == "–" else
                 f"95% [{r.pgr.low:.2f}, {r.pgr.high:.2f}], bootstrap over held-out rows")
    st.markdown(pgr_reading(r))
    st.caption(f"Rows: teacher {r.rows['weak_train']}, student {r.rows['strong_train']}, held out {r.rows['test']}. "
               f"The teacher's labels on the student's rows are right {r.weak_label_accuracy:.0%} of the time. "
               f"Finetuning took {r.seconds['weak']:.0f} s, {r.seconds['strong_on_weak']:.0f} s and {r.seconds['ceiling']:.0f} s.")
    if r.within_weak:
        st.subheader("The student's representations, fitted with weak labels (Gao et al.'s Table 2 setting)")
        st.caption(f"λ̃ ≈ Aλ + b + yδ at layer {r.within_weak['layer']} of the student vs its base, δ fitted with the "
                   f"teacher's labels on the held-out rows; held-out R² {r.within_weak['fit']['r2_test']:.3f}.")
        st.dataframe(pd.DataFrame(r.within_weak["table"]).style.format({"train": "{:.3f}", "test": "{:.3f}"}),
                     hide_index=True, key="w2s.table")
