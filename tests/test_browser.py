"""The dashboard in a real browser: Debian's Chromium driven by Playwright (sync API).

Opens the page, loads a local tiny model folder, moves the sliders, runs a compression, waits for
the loss curve and the ROUGE bars, summarizes a typed article with the three models, and saves a
full-page screenshot (to the test's temporary folder; to the path in ``DASHBOARD_SCREENSHOT`` when
set, e.g. ``DASHBOARD_SCREENSHOT=docs/screenshot.png`` to refresh the README's picture). Skipped when chromium or
playwright is absent. The teacher is the tiny T5 of conftest, first fitted for a few seconds on the
eight tiny pairs so that its summaries (and the screenshot) show words rather than nothing.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
from chromium import chromium, set_slider

from compression.data import LABEL_PAD
from conftest import ARTICLES, write_jsonl

ARTICLE = ("The town council approved a new budget for the public library on Monday evening after a debate that "
           "lasted more than three hours, and the library will now open on Sundays.")


def _fit_teacher(model, tokenizer, steps: int = 100):
    """A few full-batch AdamW steps on the tiny pairs (the teacher memorizes them, nothing more)."""
    torch.manual_seed(0)
    sources = tokenizer(["summarize: " + a for a, _ in ARTICLES], padding=True, return_tensors="pt")
    labels = tokenizer(text_target=[s for _, s in ARTICLES], padding=True, return_tensors="pt")["input_ids"]
    labels[labels == tokenizer.pad_token_id] = LABEL_PAD
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        model(**sources, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    """One dashboard server for the module's tests (its start and the teacher's fit cost most of
    their time): ``(url, teacher folder)``."""
    pytest.importorskip("playwright.sync_api")
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    from transformers import ByT5Tokenizer, T5ForConditionalGeneration

    import app
    from components.state import AppSettings
    from conftest import tiny_t5_config

    tmp_path = tmp_path_factory.mktemp("dashboard")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model trains faster on one thread than on contended ones
    torch.manual_seed(0)
    tokenizer = ByT5Tokenizer()
    teacher = tmp_path / "tiny-teacher"
    _fit_teacher(T5ForConditionalGeneration(tiny_t5_config()).eval(), tokenizer).save_pretrained(teacher)
    tokenizer.save_pretrained(teacher)
    settings = AppSettings(runs_dir=tmp_path / "runs", allowed_dirs=(tmp_path, tmp_path_factory.getbasetemp()),
                           offline=True, shared_dir=None)
    demo = app.build_demo(settings)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo.queue(default_concurrency_limit=2).launch(server_name="127.0.0.1", server_port=port,
                                                   prevent_thread_lock=True, quiet=True,
                                                   **app.launch_options(settings))
    try:
        yield f"http://127.0.0.1:{port}/", teacher
    finally:
        demo.close()
        torch.set_num_threads(threads)


def test_dashboard_in_chromium(page_url, tmp_path):
    from playwright.sync_api import expect

    url, teacher = page_url
    screenshot = Path(os.environ.get("DASHBOARD_SCREENSHOT") or tmp_path / "screenshot.png").resolve()
    train = write_jsonl(tmp_path / "train.jsonl", ARTICLES, id_prefix=tmp_path.name)
    validation = write_jsonl(tmp_path / "validation.jsonl", ARTICLES[:4], id_prefix=tmp_path.name)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(url)
        page.locator("#model-custom textarea, #model-custom input").first.fill(str(teacher))
        page.locator("#load-button").click()
        expect(page.locator("#model-info")).to_contain_text("d_model 32", timeout=60_000)
        expect(page.locator("#plan-estimate")).to_contain_text("keeps encoder layers [0, 1, 2, 3], decoder "
                                                               "layers [0, 3]", timeout=30_000)

        set_slider(page, "encoder-layers", 3)
        set_slider(page, "decoder-layers", 1)
        expect(page.locator("#plan-estimate")).to_contain_text("encoder layers [0, 2, 3], decoder layers [0]",
                                                               timeout=30_000)

        page.locator("#train-file input[type=file]").set_input_files(str(train))
        page.locator("#validation-file input[type=file]").set_input_files(str(validation))
        expect(page.locator("#train-file table")).to_contain_text("train", timeout=30_000)
        expect(page.locator("#validation-file table")).to_contain_text("validation", timeout=30_000)
        page.locator("#epochs input").fill("10")
        page.locator("#learning-rate input").fill("0.003")
        set_slider(page, "batch-size", 4)
        # Force the quantized copy's mode: "auto" picks by CPU (no quantized copy where bf16 is not
        # native), and this test must not depend on the CPU it runs on.
        page.get_by_text("Evaluation and quantization").click()
        page.locator("#quantize input").click()
        page.locator("#quantize input").fill("8bit")
        page.get_by_role("option", name="8bit", exact=True).click()
        page.locator("#run-name textarea, #run-name input").first.fill("browser demo")
        page.locator("#run-button").click()

        expect(page.locator("#run-progress")).to_contain_text("Run complete", timeout=150_000)
        expect(page.locator("#loss-plot .scatterlayer .trace").first).to_be_visible(timeout=30_000)
        expect(page.locator("#results-headline")).to_contain_text("Student", timeout=60_000)
        expect(page.locator("#rouge-plot .barlayer .trace")).to_have_count(4, timeout=30_000)  # + deployed
        expect(page.locator("#summaries-table")).to_contain_text("Council approves library budget.")

        page.locator("#article-input textarea").fill(ARTICLE)
        page.locator("#summarize-button").click()
        for box in ("summary-base", "summary-student", "summary-quantized"):
            expect(page.locator(f"#{box} textarea")).not_to_have_value("", timeout=60_000)
        texts = [page.locator(f"#{box} textarea").input_value()
                 for box in ("summary-base", "summary-student", "summary-quantized")]
        assert all(text.strip() for text in texts)
        page.wait_for_timeout(500)  # let the plots finish their transitions
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 50_000


def test_a_run_survives_its_tab_and_another_context_sees_it_finish(page_url, tmp_path, monkeypatch):
    """Start a run in one browser context, close that context mid-run, open a second context at
    ``?run=<id>``: it reattaches to the live progress and loss curve and sees the run complete.
    The real pipeline runs; its training waits after the first logged step until the second
    context is watching (so "mid-run" does not depend on this machine's speed)."""
    import re
    import threading

    from playwright.sync_api import expect

    from compression import pipeline

    gate, real = threading.Event(), pipeline.run_pipeline

    def gated(config, *, on_progress=None, **kwargs):
        def progress(event):
            on_progress(event)
            if event.get("kind") == "train":
                gate.wait(timeout=120)
        return real(config, on_progress=progress, **kwargs)

    monkeypatch.setattr(pipeline, "run_pipeline", gated)
    url, teacher = page_url
    train = write_jsonl(tmp_path / "train.jsonl", ARTICLES, id_prefix=tmp_path.name)
    validation = write_jsonl(tmp_path / "validation.jsonl", ARTICLES[:2], id_prefix=tmp_path.name)
    with chromium() as browser:
        first = browser.new_context(viewport={"width": 1280, "height": 900})
        page = first.new_page()
        page.goto(url)
        page.locator("#model-custom textarea, #model-custom input").first.fill(str(teacher))
        page.locator("#load-button").click()
        expect(page.locator("#model-info")).to_contain_text("d_model 32", timeout=60_000)
        page.locator("#train-file input[type=file]").set_input_files(str(train))
        page.locator("#validation-file input[type=file]").set_input_files(str(validation))
        expect(page.locator("#validation-file table")).to_contain_text("validation", timeout=30_000)
        page.locator("#epochs input").fill("2")
        set_slider(page, "batch-size", 4)
        page.get_by_text("Evaluation and quantization").click()
        page.locator("#quantize input").click()
        page.locator("#quantize input").fill("none")
        page.get_by_role("option", name="none", exact=True).click()
        page.locator("#run-button").click()
        expect(page.locator("#run-progress")).to_contain_text("step", timeout=60_000)
        job_id = re.search(r"\?run=([0-9a-f]+)", page.locator("#run-progress").inner_text()).group(1)
        first.close()  # the visitor closed the tab mid-run

        second = browser.new_context(viewport={"width": 1280, "height": 900})
        watcher = second.new_page()
        watcher.goto(f"{url}?run={job_id}")
        expect(watcher.locator("#run-progress")).to_contain_text("step", timeout=30_000)
        expect(watcher.locator("#loss-plot .scatterlayer .trace").first).to_be_visible(timeout=60_000)
        gate.set()
        expect(watcher.locator("#run-progress")).to_contain_text("Run complete", timeout=120_000)
        expect(watcher.locator("#results-headline")).to_contain_text("Student", timeout=60_000)
        second.close()


# Controls a visitor must be able to tap at 400 px: buttons and the dropdowns (their input box).
CONTROLS_400PX = ["#model-choice input", "#load-button", "#data-source input", "#run-button", "#cancel-button",
                  "#quantize input", "#run-pick input", "#runs-compare-pick input"]


def test_the_page_fits_a_400px_window_and_its_controls_take_taps(page_url):
    """At 400 px wide (a phone) the document is no wider than the window (no horizontal scrolling),
    and no layer (a chart's, another panel's) lies over the Run button or the dropdowns: Playwright's
    trial click runs the actionability checks, hit target included, without clicking."""
    from playwright.sync_api import expect

    url, _ = page_url
    with chromium() as browser:
        page = browser.new_context(viewport={"width": 400, "height": 800}, is_mobile=True,
                                   has_touch=True).new_page()
        page.goto(url)
        expect(page.locator("#run-button")).to_be_visible(timeout=60_000)
        page.get_by_text("Evaluation and quantization").click()  # the accordion holding the quantize dropdown
        expect(page.locator("#quantize input")).to_be_visible(timeout=30_000)
        page.wait_for_timeout(500)  # let the plots draw at their width

        def widths():
            return page.evaluate("() => [document.documentElement.scrollWidth, document.body.scrollWidth, "
                                 "window.innerWidth]")
        document_width, body_width, window_width = widths()
        assert window_width == 400
        assert document_width <= window_width and body_width <= window_width, widths()
        # Nothing sticks out of the window, unless a box inside the window clips it or scrolls it
        # (a wide table scrolls sideways in its own box; gradio measures tabs in a hidden 1 px box).
        wider = page.evaluate("""() => {
            const limit = window.innerWidth + 1;
            const contained = e => { for (let a = e.parentElement; a; a = a.parentElement) {
                if (getComputedStyle(a).overflowX !== 'visible' && a.getBoundingClientRect().right <= limit)
                    return true; } return false; };
            return [...document.querySelectorAll('body *')]
                .filter(e => e.getClientRects().length && e.getBoundingClientRect().right > limit)
                .filter(e => !contained(e))
                .slice(0, 5).map(e => `${e.tagName}#${e.id}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`);
        }""")
        assert wider == [], wider
        for selector in CONTROLS_400PX:
            control = page.locator(selector).first
            control.scroll_into_view_if_needed()
            control.click(trial=True, timeout=10_000)  # fails when another element would receive the tap
        assert widths()[0] <= 400


def test_a_shared_link_opens_a_finished_runs_comparison(page_url):
    """``?open=<run folder>`` (the link the page gives for a finished run) opens the page on that
    run's results: the headline, the ROUGE chart and the side-by-side summaries."""
    import json

    from playwright.sync_api import expect

    from compression.runs import RunFolder
    from conftest import RUN_METRICS

    url, teacher = page_url
    run = RunFolder.open(teacher.parent / "runs" / "20250101-000000-shared")
    run.write_json("config.json", {"model": "tiny", "shrink": {"encoder_layers": 2, "decoder_layers": 1},
                                   "train": {"epochs": 1}, "eval": {"num_beams": 1, "max_new_tokens": 8}})
    run.write_json("metrics.json", RUN_METRICS)
    (run.path / "loss_log.jsonl").write_text(json.dumps({"kind": "train", "step": 1, "loss": 3.0}) + "\n")
    run.write_summaries([{"id": "0", "document": "An article.", "reference": "Its reference.",
                          "base": "The base summary.", "student": "The student summary."}])
    run.mark_complete()
    with chromium() as browser:
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.goto(f"{url}?open=20250101-000000-shared")
        expect(page.locator("#results-headline")).to_contain_text("Student (20250101-000000-shared)",
                                                                  timeout=60_000)
        expect(page.locator("#rouge-plot .barlayer .trace").first).to_be_visible(timeout=30_000)
        expect(page.locator("#summaries-table")).to_contain_text("The student summary.", timeout=30_000)
        expect(page.locator("#run-pick input")).to_have_value("20250101-000000-shared", timeout=30_000)


def test_a_shared_link_opens_a_comparison_of_runs(page_url):
    """``?compare=<run>,<run>`` (the link the page gives for a comparison) opens the page with those
    runs' loss curves overlaid, the runs picked in the compare picker and the link shown again."""
    import json

    from playwright.sync_api import expect

    from compression.runs import RunFolder
    from conftest import RUN_METRICS

    url, teacher = page_url
    names = ["20250101-000000-left", "20250102-000000-right"]
    for loss, name in enumerate(names):
        run = RunFolder.open(teacher.parent / "runs" / name)
        run.write_json("config.json", {"model": "tiny", "shrink": {"encoder_layers": 2, "decoder_layers": 1},
                                       "train": {"epochs": 1}})
        run.write_json("metrics.json", RUN_METRICS)
        (run.path / "loss_log.jsonl").write_text(json.dumps({"kind": "train", "step": 1, "loss": 3.0 - loss}) + "\n")
        run.mark_complete()
    with chromium() as browser:
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.goto(f"{url}?compare={','.join(names)}")
        expect(page.locator("#runs-compared")).to_contain_text(f"?compare={','.join(names)}", timeout=60_000)
        expect(page.locator("#runs-overlay .legendtext")).to_have_count(2, timeout=30_000)
        for name in names:
            expect(page.locator("#runs-compare-pick")).to_contain_text(name, timeout=30_000)
