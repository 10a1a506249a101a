"""Soak test of the dashboard as a server: ``python -m benchmarks.soak`` (bounded, loopback only).

Starts the dashboard in this process on 127.0.0.1 with a tiny T5 (built here, ByT5 bytes, no
download) and eight short article/summary pairs, then drives it through ``gradio_client`` as real
visitors would:

1. **Visitors**: 3 clients at once, each loading the model and submitting 3 short runs (one epoch
   on 8 pairs). One visitor's watcher (its ``/run`` call) is cancelled client-side while its run
   trains, as a closed tab would. Checked: all 9 runs complete (status.json), none mixed (each run
   folder's name and config belong to the visitor who submitted it, each job's owner is that
   visitor's session), queue order kept (jobs started in the order they were submitted).
2. **Memory**: 5 sequential runs through one client in the same process; the resident set size
   after the fifth is compared with the size after the first (goal: within 10 %).

Prints a table and writes ``benchmarks/results/soak.json`` with the machine. ``--runs-per-visitor``
and ``--visitors`` change the sizes. The training is tiny on purpose: this measures the server's
handling of jobs and sessions, not training speed.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from .common import current_rss_mib, format_table, write_result

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [
    ("The town council approved a new budget for the public library on Monday evening.", "Library budget approved."),
    ("Heavy rain flooded several streets in the city centre, closing shops and schools.", "Rain floods city centre."),
    ("The local football club signed a young striker from a rival team for an undisclosed fee.", "Club signs striker."),
    ("Scientists found a new species of frog in the rainforest during a two-week survey.", "New frog species found."),
    ("A bakery on the high street won a national prize for its sourdough bread this year.", "Bakery wins bread prize."),
    ("The museum will reopen next month after a long renovation of its main gallery.", "Museum to reopen."),
    ("Train services were delayed for hours after a signal failure near the main station.", "Signal failure delays trains."),
    ("Volunteers planted five hundred trees in the park to mark the school's anniversary.", "Volunteers plant trees."),
]


def _write_data(folder: Path) -> tuple[Path, Path]:
    train, validation = folder / "train.jsonl", folder / "validation.jsonl"
    lines = [json.dumps({"id": str(i), "document": a, "summary": s}) for i, (a, s) in enumerate(PAIRS)]
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    validation.write_text("\n".join(lines[:2]) + "\n", encoding="utf-8")
    return train, validation


def _tiny_teacher(folder: Path) -> Path:
    import torch
    from transformers import ByT5Tokenizer, T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=4, num_decoder_layers=4, num_heads=4,
                      relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    path = folder / "tiny-teacher"
    T5ForConditionalGeneration(config).save_pretrained(path)
    ByT5Tokenizer().save_pretrained(path)
    return path


def _start(runs_dir: Path, allowed: Path):
    import app
    from components.state import AppSettings

    settings = AppSettings.create(runs_dir, [allowed], offline=True)
    demo = app.build_demo(settings)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo.queue(default_concurrency_limit=2).launch(server_name="127.0.0.1", server_port=port,
                                                   prevent_thread_lock=True, quiet=True,
                                                   **app.launch_options(settings))
    return demo, settings, f"http://127.0.0.1:{port}/"


def _run_args(train, validation, name):
    from gradio_client import handle_file

    return (3, 2, "spread", "", "", "Upload JSONL/CSV files", handle_file(str(train)), handle_file(str(validation)),
            "document", "summary", 8, 2, 1, 4, 3e-4, 64, 16, False, False, "none", 1, 8, name,
            "sft", 0.2, 0.8, 0.0, 2.0, False, False)


def visitors_phase(url, settings, teacher, train, validation, visitors: int, runs: int) -> dict:
    """Phase 1: ``visitors`` clients at once, ``runs`` runs each, one watcher closed mid-run."""
    from gradio_client import Client

    clients = [Client(url, verbose=False) for _ in range(visitors)]
    for client in clients:
        client.predict(None, str(teacher), "byt5", api_name="/load_model")
    outcomes: dict[str, str] = {}
    lock = threading.Lock()

    def visitor(index: int, client) -> None:
        for run in range(runs):
            name = f"visitor{index}-run{run}"
            job = client.submit(*_run_args(train, validation, name), api_name="/run")
            if index == 0 and run == 1:  # this visitor closes the tab while the run trains
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline and not any(
                        j.label.endswith(name) and j.status == "running" for j in settings.jobs.jobs()):
                    time.sleep(0.2)
                job.cancel()
                final = "watcher closed"
                while not any(j.label.endswith(name) and j.done for j in settings.jobs.jobs()):
                    time.sleep(0.5)
            else:
                final = job.result()[0]
            with lock:
                outcomes[name] = final

    threads = [threading.Thread(target=visitor, args=(i, c)) for i, c in enumerate(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=1800)
    seconds = time.perf_counter() - started
    jobs = [j for j in settings.jobs.jobs() if j.kind == "run"]
    complete = mixed = 0
    owners: dict[str, set] = {}
    problems: list[str] = []
    for job in jobs:
        run_dir = Path(job.info["run_dir"])
        status = json.loads((run_dir / "status.json").read_text())["status"]
        config = json.loads((run_dir / "config.json").read_text())
        complete += status == "complete"
        owners.setdefault(config["name"].split("-")[0], set()).add(job.owner)
        if not (run_dir.name.endswith(config["name"]) and job.label.endswith(config["name"])):
            mixed += 1
            problems.append(f"{job.label}: folder {run_dir.name}, config name {config['name']}")
    # one owner per visitor, a different one for each visitor
    for name, found in owners.items():
        if len(found) != 1:
            mixed += 1
            problems.append(f"{name}: jobs owned by {sorted(found)}")
    if len(set().union(*owners.values())) != len(owners):
        mixed += 1
        problems.append(f"visitors share owners: {owners}")
    by_submission = sorted(jobs, key=lambda j: j.order)
    order_kept = all(a.started <= b.started for a, b in zip(by_submission, by_submission[1:]))
    own_message = all(name in text or text == "watcher closed" for name, text in outcomes.items())
    for client in clients:
        client.close()
    return {"visitors": visitors, "runs_per_visitor": runs, "runs": len(jobs), "complete": complete,
            "mixed": mixed, "queue_order_kept": order_kept, "watcher_closed_run_complete":
            any(t == "watcher closed" for t in outcomes.values()) and complete == len(jobs),
            "each_visitor_saw_only_its_runs": own_message, "seconds": round(seconds, 1), "problems": problems}


def memory_phase(url, teacher, train, validation, runs: int) -> dict:
    """Phase 2: ``runs`` sequential runs through one client; RSS of this (server) process after each."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    client.predict(None, str(teacher), "byt5", api_name="/load_model")
    rss = []
    for run in range(runs):
        client.predict(*_run_args(train, validation, f"memory-run{run}"), api_name="/run")
        client.predict(api_name="/show_results")
        rss.append(round(current_rss_mib(), 1))
    client.close()
    return {"runs": runs, "rss_mib": rss, "growth_percent": round(100 * (rss[-1] - rss[0]) / rss[0], 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=3)
    parser.add_argument("--runs-per-visitor", type=int, default=3)
    parser.add_argument("--memory-runs", type=int, default=5)
    args = parser.parse_args(argv)
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        folder = Path(tmp)
        train, validation = _write_data(folder)
        teacher = _tiny_teacher(folder)
        demo, settings, url = _start(folder / "runs", folder)
        try:
            visitors = visitors_phase(url, settings, teacher, train, validation, args.visitors, args.runs_per_visitor)
            memory = memory_phase(url, teacher, train, validation, args.memory_runs)
        finally:
            demo.close()
    rows = [{"check": "runs complete", "value": f"{visitors['complete']} / {visitors['runs']}"},
            {"check": "runs mixed between visitors", "value": visitors["mixed"]},
            {"check": "queue order kept", "value": visitors["queue_order_kept"]},
            {"check": "run whose watcher closed mid-run completed", "value": visitors["watcher_closed_run_complete"]},
            {"check": "each visitor's messages name its own runs", "value": visitors["each_visitor_saw_only_its_runs"]},
            {"check": f"{args.visitors} visitors x {args.runs_per_visitor} runs, wall s", "value": visitors["seconds"]},
            {"check": "RSS after each sequential run (MiB)", "value": " ".join(map(str, memory["rss_mib"]))},
            {"check": "RSS growth, last vs first run", "value": f"{memory['growth_percent']:+.1f} %"}]
    table = format_table(rows, ["check", "value"])
    print(table)
    for problem in visitors["problems"]:
        print("problem:", problem)
    write_result("soak", {"visitors": visitors, "memory": memory}, table)
    ok = (visitors["complete"] == visitors["runs"] == args.visitors * args.runs_per_visitor and not visitors["mixed"]
          and visitors["queue_order_kept"] and abs(memory["growth_percent"]) <= 10)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
