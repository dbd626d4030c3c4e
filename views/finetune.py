"""Finetune: train a model with a linear head on a data set's labels, in the background, and make
weak-label data sets from a finetuned model (Gao et al.'s Table 2)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from repmap_core.capture import store
from repmap_core.capture.speed import timed
from repmap_core.data.load import load_dataset
from repmap_core.errors import RepmapError
from repmap_core.finetune.checkpoints import list_finetuned
from repmap_core.finetune.train import FinetuneConfig, check_finetune_data, finetune
from repmap_core.results.view_results import weak_label_result
from repmap_ui.common import local_models, show_error
from repmap_ui.estimates import finetune_estimate, prepare, trained_part
from repmap_ui.jobs import LIVE_REFRESH_S, Job, latest_job, start_job
from repmap_ui.pickers import chosen_data, chosen_model, data_picker, model_picker
from repmap_ui.text import md
from repmap_ui.tiles import estimate_tile

st.title("Finetune")
st.caption("Train a model with a 2-way linear head on a data set's 0/1 labels (AdamW, early stopping on a validation "
           "split that keeps pairs whole): every weight, or only the last blocks (with a CPU, training SmolLM2's last 4 "
           "of 30 blocks is what makes it a minute rather than several). The result is an ordinary model folder in the "
           "cache, listed in every model picker, so the other pages can compare it with its base model.")

DEFAULTS = FinetuneConfig()
JOB = "finetune"


def config_form() -> dict:
    """The request as set now (no st.form: the estimate under it follows each change)."""
    with st.container(border=True, key="finetune.form"):
        c1, c2 = st.columns(2)
        with c1:
            model = model_picker("finetune", "Base model")
        with c2:
            data = data_picker("finetune")
        cols = st.columns(8)
        config = dict(
            epochs=cols[0].number_input("Epochs", 1, 1000, DEFAULTS.epochs, key="finetune.epochs"),
            lr=cols[1].number_input("Learning rate", 1e-7, 1.0, DEFAULTS.lr, step=1e-5, format="%.1e", key="finetune.lr"),
            batch_size=cols[2].number_input("Batch size", 1, 4096, DEFAULTS.batch_size, key="finetune.batch_size"),
            max_length=cols[3].number_input("Max tokens per text", 2, 32768, DEFAULTS.max_length, key="finetune.max_length"),
            seed=cols[4].number_input("Seed", 0, 2**31 - 1, DEFAULTS.seed, key="finetune.seed"),
            val_frac=cols[5].number_input("Validation fraction", 0.0, 0.9, DEFAULTS.val_frac, step=0.05,
                                          key="finetune.val_frac", help="0 trains on every row, without early stopping"),
            patience=cols[6].number_input("Patience", 1, 100, DEFAULTS.patience, key="finetune.patience",
                                          help="evaluations without improvement before stopping early"),
            train_last=cols[7].number_input("Train last blocks", 0, 10_000, None, key="finetune.train_last",
                                            placeholder="auto",
                                            help="k trains only the last k blocks, the final norm and the head (backward "
                                                 "and AdamW then skip the frozen blocks); 0 trains every weight; empty "
                                                 "(auto): every weight of a model up to 60M parameters or on a GPU, the "
                                                 "last 4 blocks of a larger one on a CPU"),
        )
        trust = st.checkbox("Trust remote code (runs the model's own Python code)", key="finetune.trust")
    return {"model": chosen_model(*model), "data": chosen_data(*data), "config": config, "trust": bool(trust)}


def start(req: dict, est: dict | None) -> None:
    """Everything that can be wrong with the request fails here, before a thread starts."""
    resolved, dataset, config = prepare(req)
    check_finetune_data(dataset, config)  # rows, labels, and a split it can make
    raw = est["seconds"] if est else None
    start_job(JOB, lambda ctx: timed("finetune", raw, lambda: finetune(
        resolved, dataset, config, trust_remote_code=req["trust"], progress=ctx.progress, on_step=ctx.on_step,
        cancel=ctx.cancel), measured=lambda r: not r.reused),
              title=f"{req['model']} on {dataset.name}, {trained_part(config)}", estimate=est and est["calibrated"])


def loss_chart(points: list[tuple[int, float]]) -> None:
    if not points:
        return
    frame = pd.DataFrame(points, columns=["step", "loss"]).set_index("step")
    frame["mean of last 10 steps"] = frame["loss"].rolling(10, min_periods=1).mean()
    st.line_chart(frame, x_label="optimiser step", y_label="training loss", height=260,
                  color=["#9ecae1", "#08519c"])


@st.fragment(run_every=LIVE_REFRESH_S)
def live_panel(job: Job) -> None:
    snap = job.snapshot()
    if snap.state != "running":
        st.rerun()  # the whole page: result, table and the Start button update together
    bar, stop = st.columns([6, 1], vertical_alignment="bottom")
    bar.progress(snap.fraction, text=snap.progress_text())
    if not job.cancel.is_set() and stop.button("Cancel", key="finetune.cancel", icon=":material/stop:"):
        job.cancel.set()
    st.caption("Cancelling after the current step…" if job.cancel.is_set()
               else "Training runs in the background: you can use other pages and come back.")
    loss_chart(snap.points)


def finished_panel(snap: Job) -> None:
    if snap.state == "cancelled":
        st.warning(snap.error, icon=":material/cancel:")
        return
    if snap.state == "failed":
        st.error(snap.error, icon=":material/error:")
        return
    result = snap.result
    m = result.manifest["metrics"]
    fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    cols = st.columns(6)
    cols[0].metric("Validation accuracy", fmt(m["val_acc"]), help=f"{result.manifest['dataset']['val_rows']} rows held out")
    cols[1].metric("Validation loss", fmt(m["val_loss"]))
    cols[2].metric("Training accuracy", fmt(m["train_acc"]), help=f"{result.manifest['dataset']['train_rows']} rows")
    cols[3].metric("Epochs", f"{m['epochs_run']:g}", help=f"{m['steps']} optimiser steps")
    cols[4].metric("Seconds", f"{m['seconds']:.1f}", help="training time on " + result.manifest["device"])
    cols[5].metric("Early stop", f"step {m['best_step']}" if m["stopped_early"] else "no",
                   help="the weights kept are those of the best validation loss")
    how = "Reused the finetune cached earlier for this exact request" if result.reused else "Saved"
    st.success(f"{how}: {md(snap.title)}. It is now listed in every model picker under its folder path:",
               icon=":material/check_circle:")
    st.code(result.path, language=None)
    loss_chart(snap.points or [(h["step"], h["loss"]) for h in result.manifest["history"]])


def finetuned_table(models: list) -> None:
    st.subheader("Finetuned models")
    if not models:
        st.info("No finetuned models in the cache yet.")
        return
    st.dataframe(pd.DataFrame([{"base model": m.base_model, "data set": m.dataset, "val acc": m.val_acc,
                                "created": m.created, "path": m.path} for m in models]),
                 hide_index=True, key="finetune.table", column_config={"val acc": st.column_config.NumberColumn(format="%.3f")})
    names = {m.path: describe(m) for m in models}
    doomed = st.multiselect("Finetuned models to delete", list(names), format_func=names.get, key="finetune.doomed")
    if st.button("Delete selected", disabled=not doomed, key="finetune.delete"):
        for path in doomed:
            store.delete_entry(Path(path).name, "models")
        st.session_state.pop("finetune.doomed", None)
        local_models.clear()  # the pickers must stop offering them
        st.toast(f"Deleted {len(doomed)} finetuned model{'s' if len(doomed) > 1 else ''}.")
        st.rerun()


def describe(m) -> str:
    acc = "" if m.val_acc is None else f", val acc {m.val_acc:.3f}"
    return f"{m.base_model.split('/')[-1]} on {m.dataset}{acc} · {Path(m.path).name[:8]}"


def weak_label_section(models: list) -> None:
    st.subheader("Weak labels")
    st.caption("Gao et al.'s Table 2: relabel a data set with a finetuned (weak) model's predictions "
               "(label 1 where P(1) ≥ 0.5), then study a model finetuned on those labels instead of the true ones.")
    if not models and not st.session_state.get("finetune.weak"):  # an imported weak-label set (Share page) still shows
        st.info("Finetune a model first; it then serves as the weak labeller here.")
        return
    names = {m.path: describe(m) for m in models}
    with st.form("finetune.weak_form"):
        weak = st.selectbox("Weak model (finetuned)", list(names), format_func=names.get, key="weak.model")
        data = data_picker("weak", with_upload=False)
        go = st.form_submit_button("Make weak-label data set", disabled=not models)
    if go:
        try:
            dataset = load_dataset(chosen_data(*data))
            with st.spinner(f"Predicting {len(dataset)} rows with {names[weak]}"):
                st.session_state["finetune.weak"] = weak_label_result(weak, names[weak], dataset)
        except RepmapError as e:
            show_error(e)  # the last weak-label data set stays below
    made = st.session_state.get("finetune.weak")
    if made:
        c1, c2, c3 = st.columns(3)
        estimate_tile("Agreement with the true labels", made.agreement, where=c1,
                      help="95% interval. " + ("Mostly in-sample: the weak model was trained on these rows."
                                               if made.in_sample else "The weak model was not trained on these rows."))
        c2.metric("Rows", f"{made.rows:,}")
        c3.metric("Labelled 1 by the weak model", f"{made.ones:,}")
        st.caption(f"{md(made.source)} relabelled by {md(made.model)}. Type this data spec into any data picker's "
                   "“…or a data spec” box:")
        st.code(made.spec, language=None)


job = latest_job(JOB)
snap = job.snapshot() if job else None
running = snap is not None and snap.state == "running"
announced = st.session_state.setdefault("finetune.announced", set())
if snap is not None and snap.state == "done" and snap.id not in announced:
    local_models.clear()  # list the new model in every picker now, not when the cache expires
    announced.add(snap.id)

try:
    req = config_form()
    est = None if running else finetune_estimate(req)
    if st.button("Start finetuning", type="primary", disabled=running, key="finetune.start",
                 help="one finetune at a time per session" if running else None):
        start(req, est)
        st.rerun()
except RepmapError as e:
    show_error(e)  # nothing was started

if snap is not None:
    if running:
        live_panel(job)
    else:
        finished_panel(snap)
finetuned = list_finetuned()
finetuned_table(finetuned)
weak_label_section(finetuned)
