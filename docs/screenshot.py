"""Refresh the README's screenshot (``docs/screenshot.png``) from a real offline run in Chromium.

Starts the dashboard offline on a temporary runs folder, loads the committed Debian teacher (the
offline default, ``assets/models/debian-teacher``), keeps 2/2 layers, trains the student one epoch on
the first ``--pairs`` Debian package descriptions with an 8-bit copy, summarizes one real
description with the three models and saves a full-page screenshot. Needs ``../shared``, Debian's
``chromium`` and ``playwright``; a few minutes on a 2-core CPU::

    python docs/screenshot.py [--pairs 2000] [--output docs/screenshot.png]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # chromium.py: shared with the browser test

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2000, help="training pairs of the student (default: 2000)")
    parser.add_argument("--output", default=str(ROOT / "docs" / "screenshot.png"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from chromium import chromium, set_slider
    from playwright.sync_api import expect

    import app
    from components.state import AppSettings
    from compression.dataset_presets import shared_dir
    from compression.teacher import bundled_teacher

    if bundled_teacher() is None:
        sys.exit("no committed teacher in assets/models/debian-teacher")
    validation = shared_dir() / "data" / "debian-descriptions" / "validation.jsonl"
    article = json.loads(validation.read_text(encoding="utf-8").splitlines()[7])["document"]
    runs = Path(tempfile.mkdtemp(prefix="screenshot-runs-"))
    settings = AppSettings.create(runs, offline=True)
    demo = app.build_demo(settings)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo.queue(default_concurrency_limit=2).launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                                                   quiet=True, **app.launch_options(settings))
    try:
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("#load-button").click()  # the default base: the committed Debian teacher
            expect(page.locator("#model-info")).to_contain_text("d_model 256", timeout=120_000)
            set_slider(page, "encoder-layers", 2)
            set_slider(page, "decoder-layers", 2)
            expect(page.locator("#plan-estimate")).to_contain_text("encoder layers [0, 3]", timeout=30_000)
            page.locator("#train-samples input").fill(str(args.pairs))
            page.locator("#eval-samples input").fill("40")
            set_slider(page, "batch-size", 32)
            page.locator("#learning-rate input").fill("0.001")
            set_slider(page, "max-source", 128)
            page.get_by_text("Evaluation and quantization").click()
            page.locator("#quantize input").click()
            page.locator("#quantize input").fill("8bit")
            page.get_by_role("option", name="8bit", exact=True).click()
            page.locator("#run-name textarea, #run-name input").first.fill("debian 2x2")
            page.locator("#run-button").click()
            expect(page.locator("#run-progress")).to_contain_text("Run complete", timeout=1_800_000)
            expect(page.locator("#results-headline")).to_contain_text("Student", timeout=60_000)
            page.locator("#article-input textarea").fill(article)
            page.locator("#summarize-button").click()
            for box in ("summary-base", "summary-student", "summary-quantized"):
                expect(page.locator(f"#{box} textarea")).not_to_have_value("", timeout=120_000)
            page.wait_for_timeout(1000)
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.output, full_page=True)
    finally:
        demo.close()
        shutil.rmtree(runs, ignore_errors=True)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
