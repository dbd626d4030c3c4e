"""Reproduce the papers: one card per published experiment, checked before it starts, with a
scaled-down version that runs here (the embedded SmolLM2, and MiniLM, on built-in real data)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from repmap_core.capture.speed import timed
from repmap_core.errors import RepmapError
from repmap_core.papers.presets import PRESETS, SCALED_LABEL, check, format_seconds, needs, run
from repmap_ui.bars import timed_bar
from repmap_ui.common import show_error

st.title("Reproduce the papers")
scaled_times = [needs(p, scaled=True)["seconds"] for p in PRESETS.values()]
st.caption("Each card is one published experiment. The full version needs the paper's models and data (checked here "
           "before anything starts); the scaled-down version follows the same protocol on the embedded SmolLM2-135M (a "
           "causal LM, as the papers' models are; MiniLM where a smaller model sits beside a larger one) and built-in "
           f"real data, in {format_seconds(min(scaled_times))} to {format_seconds(max(scaled_times))} here by the cards' "
           "estimates: its numbers are **not comparable in value** with the paper's, and the table says \"paper\" beside "
           "each number of this run. Times are estimated from this CPU's speed measured now, scaled by how long the last "
           "run of a preset here took against its estimate.")


@st.cache_data(show_spinner=False, ttl=60)
def _checks(name: str) -> tuple[list[str], list[str]]:
    preset = PRESETS[name]
    return check(preset), check(preset, scaled=True)


def _fmt(x) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.3f}"
    return str(x)


def results_table(rows: list[dict]) -> pd.DataFrame:
    """Published vs this run, as text: the columns mix numbers, ranges and notes."""
    return pd.DataFrame([{"quantity": r["quantity"], "paper": "—" if r["published"] is None else str(r["published"]),
                          "this run": _fmt(r["this run"])} for r in rows])  # the paper's numbers as printed there


for name, preset in PRESETS.items():
    problems, scaled_problems = _checks(name)
    with st.container(border=True, key=f"presets.card.{name}"):
        st.subheader(preset.title)
        st.markdown(preset.reproduces)
        full, small = needs(preset), needs(preset, scaled=True)
        c1, c2 = st.columns(2)
        c1.markdown(f"**Full** · {'; '.join(full['models'])} · `{full['data']}`  \n"
                    f"memory ≈ {full['memory_gb']} GB · time {full['time']} on {full['device']}",
                    help=f"Memory: {full['memory_basis']}. Time: {full['time_basis']}.")
        c2.markdown(f"**Scaled down** · {'; '.join(small['models'])} · `{small['data']}`  \n"
                    f"memory ≈ {small['memory_gb']} GB · time {small['time']}", help=f"Time: {small['time_basis']}.")
        if small.get("stands_in"):
            c2.caption(small["stands_in"])
        if problems:
            c1.warning("\n".join(f"- {p}" for p in problems), icon=":material/block:")
        else:
            c1.success("Checks passed: the models, data and memory are here.", icon=":material/check_circle:")
        if scaled_problems:
            c2.warning("\n".join(f"- {p}" for p in scaled_problems), icon=":material/block:")
        b1, b2 = st.columns(2)
        go_full = b1.button("Run", key=f"presets.run.{name}", disabled=bool(problems),
                            help=problems[0] if problems else "Run the paper's full setup here.")
        go_scaled = b2.button("Run scaled-down here", key=f"presets.run_scaled.{name}", disabled=bool(scaled_problems),
                              type="primary", help=SCALED_LABEL)
        if go_full or go_scaled:
            chosen = small if go_scaled else full
            try:
                with timed_bar("Starting", chosen["seconds"]) as progress:
                    result = timed("preset", chosen["raw_seconds"], lambda p=preset, s=go_scaled, f=progress: run(p, scaled=s, progress=f))
                st.session_state[f"presets.result.{name}"] = result.as_dict()
            except RepmapError as e:
                show_error(e)
        done = st.session_state.get(f"presets.result.{name}")
        if done:
            st.caption(f"**{done['label']}** · {done['seconds']:.0f} s")
            st.dataframe(results_table(done["table"]), hide_index=True, key=f"presets.table.{name}")
