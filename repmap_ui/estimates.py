"""The time a long job will take here, on screen before its Start button: measured now (two training steps of each
model), scaled by what the last job of its kind took against its estimate (`capture.speed.calibrated`), and kept
for ten minutes per request (or until the cache holds another finetune, which may be the request's own)."""
from __future__ import annotations

import streamlit as st

from repmap_core.capture.model_config import short_name
from repmap_core.capture.models import resolve_model
from repmap_core.capture.speed import calibrated
from repmap_core.data.load import load_dataset
from repmap_core.errors import RepmapError
from repmap_core.finetune.checkpoints import list_finetuned
from repmap_core.finetune.train import FinetuneConfig, auto_train_last, estimate_seconds, is_finetuned
from repmap_core.finetune.weak_to_strong import estimate_seconds as w2s_seconds
from repmap_core.progress import duration
from repmap_ui.text import md


def prepare(req: dict):
    """The request's model (resolved), data set and config, with "auto" decided for that model."""
    resolved, dataset = resolve_model(req["model"]), load_dataset(req["data"])
    values = {k: (float(v) if k in ("lr", "val_frac") else v if v is None else int(v)) for k, v in req["config"].items()}
    last = values.get("train_last")
    values["train_last"] = auto_train_last(resolved) if last is None else (last or None)
    return resolved, dataset, FinetuneConfig(**values)


def trained_part(config: FinetuneConfig) -> str:
    k = config.train_last
    return "every weight" if k is None else "the last block" if k == 1 else f"the last {k} blocks"


TIMED = ("epochs", "batch_size", "max_length", "val_frac", "train_last")  # the settings the time depends on


@st.cache_data(show_spinner=False, ttl=600, max_entries=32)
def measured_estimate(model: str, data: str, timed_config: dict, trust: bool, finetunes: int) -> dict:
    """The time of a request with these settings from two training steps measured here (`estimate_seconds`), kept for
    ten minutes or until the cache holds another finetune (`finetunes`: how many it holds; one just made may be
    this request's). The learning rate, seed and patience are left at their defaults: they do not change the time."""
    resolved, dataset, cfg = prepare({"model": model, "data": data, "config": timed_config})
    return dict(estimate_seconds(resolved, dataset, cfg, trust_remote_code=trust, reuse=False), part=trained_part(cfg))


def finetune_estimate(req: dict) -> dict | None:
    """Above Start: how long the request as set will take here (the estimate, calibrated by the last finetune here);
    returns the estimate, or None when it cannot be made (said in one line)."""
    what = f"{md(short_name(req['model']))} on {md(req['data'])}, {req['config']['epochs']} epochs"
    try:
        if is_finetuned(*prepare(req)):
            st.caption(f":material/timer: {what}: finetuned here before with these settings, so Start reads it back at once.")
            return {"seconds": 0.0, "calibrated": 0.0, "cached": True}
        with st.spinner("Estimating the time: two training steps on this data"):
            est = measured_estimate(req["model"], req["data"], {k: req["config"][k] for k in TIMED}, req["trust"],
                                    len(list_finetuned()))
    except RepmapError as e:
        st.caption(f"No time estimate for {md(req['model'])} on {md(req['data'])}: {md(e)}")
        return None
    seconds, basis = calibrated("finetune", est["seconds"])
    st.caption(f":material/timer: {what}: about {duration(seconds)} here, training {est['part']}: {est['steps']} optimiser "
               f"steps at {est['step_seconds']:.2f} s each (measured now) and {est['eval_batches']} evaluation batches"
               + (f", {basis}" if basis else "") + ".")
    return dict(est, calibrated=seconds)


@st.cache_data(show_spinner=False, ttl=600, max_entries=16)
def w2s_measured(spec: str, weak_model: str, strong_model: str, finetunes: int) -> dict:
    """Each finetune's time from two training steps measured here (0 for one cached), kept for ten minutes or until
    the cache holds another finetune (`finetunes`: how many it holds)."""
    return w2s_seconds(spec, weak_model=weak_model, strong_model=strong_model)


def w2s_estimate(spec: str, req: dict) -> dict | None:
    """Above the Run button: how long the run as set will take here, calibrated by the last one."""
    try:
        with st.spinner("Estimating the time: two training steps of each model on this data"):
            est = w2s_measured(spec, **req, finetunes=len(list_finetuned()))
    except RepmapError as e:
        st.caption(f"No time estimate: {md(e)}")
        return None
    seconds, basis = calibrated("w2s", est["total"])
    part = {r: "cached" if est[r] == 0 else duration(est[r] * seconds / max(est["total"], 1e-9))
            for r in ("weak", "strong_on_weak", "ceiling")}
    st.caption(f":material/timer: {md(short_name(req['weak_model']))} → {md(short_name(req['strong_model']))} on "
               f"{md(spec)}: about {duration(seconds)} here (teacher {part['weak']}, student {part['strong_on_weak']}, "
               f"ceiling {part['ceiling']}; two training steps of each model measured now"
               + (f", {basis}" if basis else "") + ").")
    return dict(est, calibrated=seconds)
