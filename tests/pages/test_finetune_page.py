"""The Finetune page and its background jobs: a finetune runs in a thread while the page reruns,
then shows its metrics and lists the model everywhere; cancel leaves nothing; weak labels make a
data set that loads; bad data stops before anything starts. Plus the job runner on its own."""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from repmap_core.analysis.stats import wilson
from repmap_core.data.load import load_dataset
from repmap_core.errors import RepmapError
from repmap_core.finetune.checkpoints import list_finetuned
from repmap_core.finetune.train import Cancelled, FinetuneConfig, finetune
from repmap_ui.jobs import get_job, start_job
from tests.conftest import ROOT
from tests.pages import tiles

START = "finetune.start"
WEAK = "FormSubmitter:finetune.weak_form-Make weak-label data set"
GOOD = ["great", "good", "lovely", "excellent", "wonderful"]
BAD = ["awful", "bad", "terrible", "horrible", "boring"]


def table_csv(n: int = 40, one_class: bool = False) -> bytes:
    rows = [f"The {['food', 'film'][i % 2]} was {(GOOD if i % 2 else BAD)[i % 5]},{1 if one_class else i % 2}"
            for i in range(n)]
    return ("text,label\n" + "\n".join(rows) + "\n").encode()


def wait(job, timeout: float = 20.0):
    deadline = time.time() + timeout
    while job.snapshot().state == "running":
        assert time.time() < deadline, "the job did not finish"
        time.sleep(0.02)
    return job.snapshot()


# ---------------------------------------------------------------- the job runner on its own

def test_job_reports_progress_and_steps_then_returns():
    def work(ctx):
        for step in range(1, 4):
            ctx.on_step(step, 1.0 / step)
            ctx.progress(step / 4, f"step {step}")
        return "trained"

    job = start_job("unit", work, title="three steps")
    snap = wait(job)
    assert (snap.state, snap.result, snap.error) == ("done", "trained", None)
    assert snap.points == [(1, 1.0), (2, 0.5), (3, 1 / 3)]
    assert snap.message == "step 3" and snap.fraction == 1.0
    assert snap.finished is not None and snap.finished >= snap.started
    assert get_job(job.id) is job


def test_job_time_left_follows_the_pace_so_far():
    from repmap_ui.jobs import Job

    job = Job(id="x", key="unit", title="finetune", started=time.time() - 30.0)
    assert job.seconds_left is None and "left" not in job.progress_text()  # no pace yet
    job.update(fraction=0.5, message="step 20 of 40")
    assert job.seconds_left == pytest.approx(30.0, rel=0.05)  # 30 s for a half: 30 s for the rest
    assert job.progress_text().startswith("finetune · step 20 of 40 · 30 s, about 30 s left")
    job.update(fraction=0.2)
    assert "about 2 min left" in job.progress_text()  # 120 s
    job.update(state="done", finished=time.time())
    assert job.seconds_left is None


def _until_cancelled(ctx):
    while not ctx.cancel.wait(0.01):
        pass
    raise Cancelled("cancelled")


def test_a_job_whose_session_is_gone_past_the_grace_is_cancelled_and_says_why():
    from repmap_ui.jobs import watch

    alive = {"now": True}
    job = start_job("unit", _until_cancelled, title="finetune")
    watcher = threading.Thread(target=watch, args=(job, lambda: alive["now"], 0.3, None, 0.02))
    watcher.start()
    time.sleep(0.5)
    assert job.snapshot().state == "running"  # connected: it runs on
    alive["now"] = False  # the tab was closed
    time.sleep(0.1)
    alive["now"] = True  # a reconnect within the grace keeps it
    time.sleep(0.4)
    assert job.snapshot().state == "running"
    alive["now"] = False
    snap = wait(job)
    watcher.join(5)
    assert snap.state == "cancelled"
    assert snap.error == "Cancelled by the server: its session ended (the tab was closed); nothing was saved."


def test_a_job_past_the_servers_time_limit_is_cancelled():
    from repmap_ui.jobs import watch

    job = start_job("unit", _until_cancelled)
    watch(job, lambda: True, None, 0.2, 0.02)  # returns once it has cancelled the job
    snap = wait(job)
    assert snap.state == "cancelled" and "limit of 0 min per job" in snap.error


def test_only_a_shared_server_watches_its_jobs(monkeypatch):
    from repmap_core import access

    monkeypatch.delenv("REPMAP_MODE", raising=False)
    local = access.policy()
    assert local.leave_grace_s is None and local.max_job_seconds is None  # a local user's finetune runs on
    monkeypatch.setenv("REPMAP_MODE", "shared")
    shared = access.policy()
    assert shared.leave_grace_s == 60.0 and shared.max_job_seconds == 3600.0


def test_job_that_raises_fails_with_one_sentence():
    def bad_input(ctx):
        raise RepmapError("Data file 'x.csv' does not exist; check the path.")

    def bug(ctx):
        return {}["missing"]

    failed = wait(start_job("unit", bad_input))
    assert (failed.state, failed.error) == ("failed", "Data file 'x.csv' does not exist; check the path.")
    crashed = wait(start_job("unit", bug))
    assert crashed.state == "failed" and crashed.error == "internal error (KeyError); the details are in the server log."


def test_job_cancel_stops_work_that_checks_the_event():
    started = threading.Event()

    def slow(ctx):
        started.set()
        while not ctx.cancel.wait(0.01):
            pass
        raise Cancelled("Finetuning was cancelled; nothing was saved.")

    job = start_job("unit", slow)
    assert started.wait(5) and job.snapshot().state == "running"
    job.cancel.set()
    snap = wait(job)
    assert (snap.state, snap.error) == ("cancelled", "Cancelled; nothing was saved.")


# ---------------------------------------------------------------- the page

@pytest.fixture
def page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page("views/finetune.py").run()  # straight to this page, not Home (the default)
    assert not at.exception and [t.value for t in at.title] == ["Finetune"]
    return at


def fill(at: AppTest, model: Path, data: bytes, epochs: int, batch_size: int) -> AppTest:
    at.text_input(key="finetune.model_other").set_value(str(model))
    at.file_uploader(key="finetune.upload").upload("reviews.csv", data, "text/csv")
    at.number_input(key="finetune.epochs").set_value(epochs)
    at.number_input(key="finetune.batch_size").set_value(batch_size)
    at.number_input(key="finetune.lr").set_value(3e-3)
    return at


def run_until_finished(at: AppTest, timeout: float = 120.0) -> AppTest:
    deadline = time.time() + timeout
    while True:
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        if not at.get("progress"):  # the live panel is gone: the job ended
            return at
        assert time.time() < deadline, "the finetune did not finish in time"
        time.sleep(0.3)


def session_job(at: AppTest):
    return get_job(at.session_state["jobs.finetune"][-1])


def test_finetune_runs_in_background_then_shows_metrics_and_lists_the_model(page, tiny_gpt2):
    fill(page, tiny_gpt2, table_csv(), epochs=1, batch_size=8)
    page.button(key=START).click().run()
    assert not page.exception and not page.error
    assert page.get("progress") or session_job(page).snapshot().state == "done"  # live panel, unless already done
    run_until_finished(page)

    job = session_job(page).snapshot()
    assert job.state == "done" and job.points and job.points[0][0] == 1
    metrics = {m.label: m.value for m in page.metric}
    assert set(metrics) == {"Validation accuracy", "Validation loss", "Training accuracy", "Epochs", "Seconds", "Early stop"}
    assert 0.0 <= float(metrics["Validation accuracy"]) <= 1.0 and float(metrics["Validation loss"]) > 0
    assert metrics["Epochs"] == "1" and metrics["Early stop"] == "no"
    assert "now listed in every model picker" in page.success[0].value
    path = page.main.code[0].value
    assert Path(path, "repmap_finetune.json").exists()
    assert [m.path for m in list_finetuned()] == [path] and list_finetuned()[0].base_model == str(tiny_gpt2)
    assert list(page.dataframe[0].value["path"]) == [path]
    # every picker lists it now, by a readable label ending in the checkpoint's short key
    assert any(o.startswith("finetuned gpt2 on ") and o.endswith(Path(path).name[:8])
               for o in page.selectbox(key="finetune.model_choice").options)
    assert page.get("vega_lite_chart")  # the loss curve

    page.multiselect(key="finetune.doomed").set_value([path]).run()
    page.button(key="finetune.delete").click().run()
    assert list_finetuned() == [] and not Path(path).exists()
    assert path not in page.selectbox(key="finetune.model_choice").options


def test_cancel_stops_the_finetune_and_saves_nothing(page, tiny_gpt2, cache_dir, monkeypatch):
    fill(page, tiny_gpt2, table_csv(), epochs=500, batch_size=2)  # thousands of steps: only a cancel ends it soon
    page.button(key=START).click().run()
    # a source edit makes Streamlit re-import the app's modules; the running job must not be forgotten
    monkeypatch.delitem(sys.modules, "repmap_ui.jobs")
    page.run()
    assert sys.modules["repmap_ui.jobs"].get_job(page.session_state["jobs.finetune"][-1]) is session_job(page)
    progress = page.get("progress")
    assert len(progress) == 1 and "reviews" not in progress[0].proto.text  # uploads are stored by hash
    assert progress[0].proto.text.startswith(f"{tiny_gpt2} on file:")
    assert any("runs in the background" in c.value for c in page.caption)
    started = time.time()
    page.button(key="finetune.cancel").click().run()
    run_until_finished(page, timeout=60)
    assert time.time() - started < 30
    assert session_job(page).snapshot().state == "cancelled"
    assert [w.value for w in page.warning] == ["Cancelled; nothing was saved."]
    assert not page.metric and list_finetuned() == []
    models = cache_dir / "models"
    assert not models.exists() or not [p for p in models.iterdir() if p.is_dir()]


@pytest.mark.slow
def test_weak_labels_make_a_data_set_that_loads(page, tiny_gpt2, tmp_path):
    data = tmp_path / "reviews.csv"
    data.write_bytes(table_csv())
    weak = finetune(str(tiny_gpt2), load_dataset(f"file:{data}"), FinetuneConfig(epochs=2, lr=3e-3, val_frac=0.25))
    page.run()
    assert page.selectbox(key="weak.model").value == weak.path
    page.text_input(key="weak.data_other").set_value(f"file:{data}")
    page.button(key=WEAK).click().run()
    assert not page.exception and not page.error
    spec = page.main.code[-1].value
    assert spec.startswith("file:") and any("any data picker" in c.value for c in page.main.caption)
    made, original = load_dataset(spec), load_dataset(f"file:{data}")
    assert made.texts == original.texts
    agree = made.labels == original.labels  # 40 unpaired rows: a Wilson interval over rows
    low, high = wilson(agree.sum(), len(agree))
    metrics = tiles(page)
    assert metrics["Agreement with the true labels"] == f"{agree.mean():.3f} [{low:.3f}, {high:.3f}]"
    assert page.session_state["finetune.weak"].agreement.n == 40
    assert "in-sample" in page.metric[0].proto.help  # the weak model was trained on these very rows
    assert metrics["Rows"] == "40" and metrics["Labelled 1 by the weak model"] == str(int(made.labels.sum()))


def test_one_class_data_shows_one_sentence_and_starts_nothing(page, tiny_gpt2):
    fill(page, tiny_gpt2, table_csv(one_class=True), epochs=1, batch_size=8)
    page.button(key=START).click().run()
    errors = [e.value for e in page.error]
    assert len(errors) == 1 and "has only rows labelled 1" in errors[0] and "\n" not in errors[0], errors
    assert "jobs.finetune" not in page.session_state and not page.get("progress")
    assert page.button(key=START).disabled is False


def test_the_estimate_is_on_screen_before_start_names_what_auto_trains_and_starts_nothing(page, tiny_gpt2):
    """No 'Estimate time' button: the form's estimate stands under it before Start, calibrated by the last finetune.
    "Train last blocks" starts empty (auto): a tiny model trains every weight; 1 trains the last block."""
    from repmap_core.capture import speed

    assert not any(b.label == "Estimate time" for b in page.button)
    fill(page, tiny_gpt2, table_csv(), epochs=1, batch_size=8).run()
    assert page.number_input(key="finetune.train_last").value is None
    assert not page.exception and not page.error

    def estimate() -> str:
        found = [c.value for c in page.caption if c.value.startswith(":material/timer:")]
        assert len(found) == 1, found
        return found[0]

    assert tiny_gpt2.name in estimate() and "training every weight" in estimate() and "(measured now)" in estimate()
    assert "the last finetune here" not in estimate()  # nothing measured here yet: the estimate as made
    page.number_input(key="finetune.train_last").set_value(1).run()
    assert "training the last block:" in estimate()
    speed.record_run("finetune", 10.0, 25.0)  # the last finetune here took 2.5 times its estimate
    page.run()
    assert "× 2.50: the last finetune here took 2.50× its estimate (25 s" in estimate()
    assert "jobs.finetune" not in page.session_state and not list_finetuned()
