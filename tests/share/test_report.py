"""The HTML report: plotly.js inlined once, one div per figure drawn by Plotly.newPlot, tables,
the settings and manifests, nothing fetched from the network; and the CLI that writes it."""
from __future__ import annotations

import html
import json
import re
import subprocess
import sys

import pytest

from repmap_core.errors import RepmapError
from repmap_core.papers.published import BESIDE_A_RUN
from repmap_core.share.bundle import load_bundle, save_bundle
from repmap_core.share.report import build_report, build_sections, plotly_js, report_from_bundle
from tests.conftest import ROOT
from tests.share.test_bundle import synthetic_states

ALL = ["explorer", "shift", "within", "across", "steering", "finetune"]


@pytest.fixture(scope="module")
def states() -> dict:
    return synthetic_states()


@pytest.fixture(scope="module")
def page(states) -> str:
    settings = {"explorer.shown": [0, 2], "explorer.max_points": 500, "shift.layer": 1}
    return build_report(states, settings, ALL, meta={"repmap": "0.1.0", "created": "2025-01-01T00:00:00+00:00"},
                        beside=BESIDE_A_RUN)


def figure_specs(page: str) -> list[dict]:
    raw = re.search(r'<script type="application/json" id="repmap-figures">(.*?)</script>', page, re.S).group(1)
    return json.loads(raw)


def test_plotly_js_is_inlined_exactly_once(page):
    js = plotly_js()
    assert len(js) > 1_000_000
    assert page.count(js) == 1
    head = js[:200]  # the library's banner comment and first statement
    assert page.count(head) == 1
    assert len(re.findall(r"<script\b", page)) == 3  # plotly.js, the figures' JSON, the drawing call


def test_no_external_script_or_link(page):
    tags = re.findall(r"<(?:script|link|img|iframe)\b[^>]*>", page)
    assert all(not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", t) for t in tags), tags
    assert not re.search(r"<script[^>]+src=", page)
    assert "cdn.plot.ly/plotly" not in page.split("<body>", 1)[1]  # nothing outside plotly.js itself points at a CDN


def test_one_div_per_figure_each_drawn_on_load(page, states):
    specs = figure_specs(page)
    divs = re.findall(r'<div class="figure plot" id="(figure-\d+)"', page)
    assert divs == [s["id"] for s in specs] and len(divs) == len(set(divs))
    sections = build_sections(states, {}, ALL)
    assert len(specs) == sum(kind == "figure" for s in sections for kind, _ in s.blocks)
    # explorer: curve + grid; shift: separation + scatter; within: no GD points; across: heatmap, side by side,
    # fit curve, per-dimension error; steering: heatmaps, PCA, norms, sweep curve, its side effect
    assert len(specs) == 2 + 2 + 0 + 4 + 5
    assert all(s["data"] for s in specs)
    assert not any(t.get("type") == "scattergl" for s in specs for t in s["data"])  # SVG in a report
    assert "Plotly.newPlot(f.id,f.data,f.layout" in page and "addEventListener('load'" in page
    grid = next(s for s in specs if any(a.get("text") == "layer 2" for a in s["layout"].get("annotations", [])))
    assert [a["text"] for a in grid["layout"]["annotations"]] == ["layer 0", "layer 2"]  # the layers shown in the app


def test_settings_manifests_and_tables(page, states):
    ex = states["explorer.result"].aset.manifest
    for text in (ex["model"], ex["revision"], ex["dataset_fingerprint"], ex["dataset_spec"], '"position": "last"',
                 '"dtype": "float32"', "repmap 0.1.0", "2025-01-01T00:00:00", '"method": "lstsq"',
                 "tiny/finetuned", "tiny/wide", "sha256:abc"):
        assert text in page, text
    for heading in ("Layer explorer", "Finetuning shift", "Within-model fit", "Across models", "Steering",
                    "Finetune (weak labels)"):
        assert f"<h2>{heading}</h2>" in page
    assert page.count('<table class="dataframe"><caption>') >= 6
    assert "Table 1: linear probe accuracy, layer 2" in page
    best = states["within.result"].result.delta_projection_accuracy
    assert f"{best:.3f}" in page
    assert "report made " in page


def test_only_the_chosen_views(states):
    page = build_report(states, {}, ["within"])
    assert "<h2>Within-model fit</h2>" in page and "<h2>Layer explorer</h2>" not in page
    assert "Base activations" in page  # the shift's manifests behind the fit
    with pytest.raises(RepmapError, match="Unknown view 'nope'"):
        build_report(states, {}, ["nope"])
    with pytest.raises(RepmapError, match="None of the chosen views has a result"):
        build_report({"explorer.result": None}, {}, ["explorer"])


def test_html_in_texts_is_escaped(states):
    import dataclasses

    ex = states["explorer.result"]
    ds = ex.dataset
    res = dataclasses.replace(ex, request=dict(ex.request, data="<script>alert(1)</script>"),
                              dataset=dataclasses.replace(ds, texts=["</script><script>alert(2)</script>"] + ds.texts[1:]))
    page = build_report({"explorer.result": res}, {}, ["explorer"])
    body = page.split("</head>", 1)[1]
    assert "<script>alert" not in body and "&lt;script&gt;alert(1)" in body


SCRIPTS = ["<img src=x onerror=alert(1)>", "</p><script>alert(2)</script>", "\"><svg onload=alert(3)>",
           "<a href=\"javascript:alert(4)\">x</a>", "<iframe src=//evil.example>"]


def live_markup(page: str) -> dict:
    """What the page would run or fetch: its script elements (with their types), event-handler attributes,
    and the elements that load or link anything."""
    from html.parser import HTMLParser

    found = {"scripts": [], "handlers": [], "loaders": []}

    class Watch(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "script":
                found["scripts"].append(dict(attrs).get("type"))
            found["handlers"] += [k for k, _ in attrs if k.startswith("on")]
            if tag in ("img", "iframe", "svg", "object", "embed", "link") or (tag == "a" and not dict(attrs).get(
                    "href", "").startswith("#")):
                found["loaders"].append(tag)

    Watch().feed(page)
    return found


@pytest.mark.parametrize("payload", SCRIPTS)
def test_every_meta_value_is_escaped_whatever_its_type(states, payload):
    """Item 3: a bundle's `seed: "<img src=x onerror=...>"` ran in the report (render_html formatted it raw).
    Every value is escaped now, whatever type it has: nothing in the page runs or loads but its own scripts."""
    clean = live_markup(build_report(states, {}, ["explorer"], meta={"repmap": "0.1.0"}))
    for meta in ({"seed": payload, "max_rows": 50}, {"created": payload}, {"repmap": payload},
                 {"max_rows": payload, "seed": 1}, {"report_created": payload}, {"seed": [payload], "max_rows": 3}):
        page = build_report(states, {"explorer.method": payload}, ["explorer"], meta=meta, title=payload)
        assert live_markup(page) == clean, meta
        assert payload not in page


def test_a_bundle_cannot_put_markup_into_the_report_it_loads(states, tmp_path):
    """The same through the CLI: a crafted bundle's meta is refused by type (a seed is a number) or escaped."""
    import zipfile

    from repmap_core.__main__ import main

    good = save_bundle(tmp_path / "good.zip", {"explorer.result": states["explorer.result"]})
    with zipfile.ZipFile(good) as z:
        members = {n: z.read(n) for n in z.namelist()}
    for key in ("seed", "created", "repmap"):
        doc = json.loads(members["bundle.json"])
        doc[key] = SCRIPTS[0]
        path = tmp_path / f"{key}.zip"
        with zipfile.ZipFile(path, "w") as z:
            for name, data in members.items():
                z.writestr(name, json.dumps(doc) if name == "bundle.json" else data)
        out = tmp_path / f"{key}.html"
        code = main(["report", "--bundle", str(path), "--out", str(out)])
        if key == "seed":
            assert code == 2 and not out.exists()
        else:
            assert code == 0 and SCRIPTS[0] not in out.read_text()
            assert live_markup(out.read_text())["handlers"] == [] and "img" not in live_markup(out.read_text())["loaders"]


@pytest.mark.slow
def test_cli_report_from_a_saved_bundle(states, tmp_path):
    bundle = save_bundle(tmp_path / "session.zip", {k: states[k] for k in ("explorer.result", "across.result", "across.fit",
                                                                            "across.layer_s", "across.layer_t")},
                         {"explorer.shown": [1]}, views=["explorer", "across"])
    out = tmp_path / "out" / "report.html"
    proc = subprocess.run([sys.executable, "-m", "repmap_core", "report", "--bundle", str(bundle), "--out", str(out),
                           "--views", "explorer,across", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["views"] == ["explorer", "across"] and result["figures"] == 2 + 4
    page = out.read_text(encoding="utf-8")
    assert result["bytes"] == out.stat().st_size and page.count(plotly_js()[:200]) == 1
    same = report_from_bundle(load_bundle(bundle), ["explorer", "across"])  # the CLI draws what the library draws
    assert figure_specs(page) == figure_specs(same)
    assert "<h2>Across models</h2>" in page and "<h2>Steering</h2>" not in page
    assert BESIDE_A_RUN["across"] in html.unescape(page)  # the CLI hands the papers' numbers to the report
    # a view the bundle lacks, and a file that is not a bundle: exit 2 and one line
    bad = subprocess.run([sys.executable, "-m", "repmap_core", "report", "--bundle", str(bundle), "--out", str(out),
                          "--views", "steering"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: The bundle holds no 'steering' view; it holds explorer, across."
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    bad = subprocess.run([sys.executable, "-m", "repmap_core", "report", "--bundle", str(junk), "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "not a zip file" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_cli_bundle_describes_and_subsamples(states, tmp_path):
    bundle = save_bundle(tmp_path / "session.zip", {"shift.result": states["shift.result"]}, views=["shift"])
    small = tmp_path / "small.zip"
    proc = subprocess.run([sys.executable, "-m", "repmap_core", "bundle", "--bundle", str(bundle), "--out", str(small),
                           "--max-rows", "30", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["views"] == ["shift"] and info["rows"] == {"shift.result": 120}
    back = load_bundle(small)
    assert len(back.states["shift.result"].dataset) == back.states["shift.result"].base.n == 30
    assert back.meta["max_rows"] == 30


def test_the_report_shows_the_same_intervals_and_nulls_as_the_pages(page, states):
    import html

    from repmap_core.analysis.separation import best_layer
    from repmap_core.analysis.stats import format_estimate, format_null

    text = html.unescape(page)
    rows = states["explorer.result"].rows
    best = next(r for r in rows if r.layer == best_layer(rows))
    assert format_estimate(best.cv_estimate()) in text and format_null(best.cv_estimate(), 3) in text
    within = states["within.result"].result.intervals
    for key in ("delta_projection_accuracy", "r2_test", "delta_cosine"):
        assert format_estimate(within[key]) in text, key
    assert "Nulls (random directions): sign(λ̃·δ) null 0." in text
    across = states["across.fit"].result.intervals
    for key in ("map.r2_test", "probe.source", "transfer.functional", "transfer.vector"):
        assert format_estimate(across[key]) in text, key
    assert "Paper, beside this run's A w: 0.5025" in text and "Gao et al.: vector" not in text


def test_the_report_prints_a_papers_number_only_where_its_caller_hands_it(states):
    """share/ holds no paper's numbers: without `beside` the report has this run's numbers alone."""
    import html

    text = html.unescape(build_report(states, {}, ["across", "steering"]))
    assert "Nulls: random directions of the target space" in text and "Paper, beside" not in text and "0.5025" not in text
    text = html.unescape(build_report(states, {}, ["across"], beside={"across": "Planted: 0.123."}))
    assert "(uncentred, as A w is scored); shuffled labels for the probes" in text and "Planted: 0.123." in text
    assert "debiased linear CKA of every layer pair" in text and "rows shuffled, 5 times" in text


def test_tables_wrap_their_text_keep_line_breaks_and_name_columns_for_people(states):
    """The report's tables were 1,959 px wide, with literal backslash-n in generations and raw keys (r2_test)."""
    import pandas as pd

    from repmap_core.share.report import _table_html

    table = _table_html(pd.DataFrame({"without steering": ["Yes.\nI would <not>"], "r2_test": [0.5]}), "Generations")
    assert "Yes.<br>I would &lt;not&gt;" in table and "\\n" not in table and "held-out R²" in table
    assert table.startswith('<div class="table"><table class="dataframe"><caption>Generations</caption>')
    page = build_report(states, {}, ["explorer"])
    explorer = page[page.index('id="view-explorer"'):]
    assert "probe_cv_low" not in explorer and "probe accuracy, cross-validated [95%]" in explorer
    assert re.search(r"report made \d{4}-\d\d-\d\d \d\d:\d\d", page)  # the time, not only the date


def test_the_explorer_section_draws_the_chosen_layers_or_says_which_it_drew(states):
    """It drew layers 0-11 whatever was chosen on the page; without a choice, a spread that includes the best."""
    from repmap_core.analysis.separation import best_layer
    from repmap_core.share.report_sections import spread_layers

    res = states["explorer.result"]
    chosen = build_sections(states, {"explorer.shown": [2]}, ["explorer"])[0]
    grid = [f for kind, f in chosen.blocks if kind == "figure"][1][0]
    assert [a.text for a in grid.layout.annotations if a.text.startswith("layer")] == ["layer 2"]
    best = best_layer(res.rows)
    default = build_sections(states, {}, ["explorer"])[0]
    grid = [f for kind, f in default.blocks if kind == "figure"][1][0]
    drawn = [int(a.text.split()[1]) for a in grid.layout.annotations if a.text.startswith("layer")]
    assert drawn == spread_layers(res.aset.layer_list, best) and best in drawn
    assert any(kind == "text" and "the best and the last" in v for kind, v in default.blocks)
    assert spread_layers(list(range(30)), 17) == [0, 7, 15, 17, 29]


def test_the_tours_report_names_its_numbers_and_says_when_it_was_made():
    import plotly.graph_objects as go

    from repmap_core.papers.tour import TourStep, tour_report

    steps = [TourStep("within", "4. Within", "text", go.Figure(), {"r2_test": 0.9123, "delta_accuracy": 0.8}),
             TourStep("steering", "6. Steering", "text", go.Figure(), {"positive_low": 0.1, "steers": True})]
    page = tour_report(steps)
    assert "Held-out R²" in page and "0.912" in page and "r2_test" not in page
    assert "Steers beyond a random direction" in page and ">yes<" in page and "steers True" not in page
    assert "Judged positive at α = -1" in page and ">10%<" in page
    assert re.search(r"report made \d{4}-\d\d-\d\d \d\d:\d\d", page)
