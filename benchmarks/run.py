"""Run the benchmark suite: ``python -m benchmarks [--quick] [--only NAME ...]`` (or ``python benchmarks/run.py``).

Runs the modules in :data:`MODULES` order, each writing ``benchmarks/results/<name>.json``, then
prints every table and writes ``benchmarks/results/summary.json`` and ``summary.md`` (the markdown
table the README's Performance section quotes, with the machine it ran on). That is ``--quick``;
the full mode writes the same files under ``benchmarks/results/full/``. A module that is not
there is skipped with a message; one that fails is reported and the others still run (exit status 1).
With ``--only``, the summary keeps the other modules' rows from the last run of the same mode.
``--quick`` is the few-minute version for a reader; the full mode takes tens of minutes on 2 cores.
Unless ``OMP_WAIT_POLICY`` is already set, it is set to ``PASSIVE`` for the whole suite (recorded in
every result's ``machine``).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
import time
import traceback
from pathlib import Path

# Before anything imports torch (OpenMP reads it once): threads waiting at a barrier sleep instead of
# spinning. On a shared 2-core machine the default spinning made every variant 5-7x slower whenever
# another process was busy, drowning the differences being measured; see the README. Set the variable
# yourself (e.g. OMP_WAIT_POLICY=ACTIVE) to measure the other policy.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402

#: Benchmark modules, in run order.
MODULES = ("finetune", "evaluation", "generation", "size", "scaling", "deploy")
SUMMARY_COLUMNS = ["benchmark", "measure", "result", "baseline", "ratio"]


def _load(name: str):
    try:
        return importlib.import_module(f"benchmarks.{name}")
    except ModuleNotFoundError as err:
        if err.name in (f"benchmarks.{name}",):
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes: fewer pairs, points and repeats")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=MODULES,
                        help=f"run only these modules (of {', '.join(MODULES)})")
    parser.add_argument("--teacher", metavar="DIR",
                        help="a fine-tuned checkpoint for the modules that measure quality on one (size)")
    return parser


def _machine_text(machine: dict) -> str:
    """One line naming the machine and software a result was measured with."""
    gpu = f", GPU {machine['gpu']} ({machine['gpu_memory_gib']} GiB)" if machine.get("gpu") else ", no GPU"
    return (f"{machine['cpu']} ({machine['cpu_count']} cores, {machine['ram_gib']} GiB RAM{gpu}; CPU flags "
            f"{', '.join(machine['isa']) or '-'}), torch {machine['torch']}, transformers {machine['transformers']}, "
            f"{machine['date'][:10]}, OMP_WAIT_POLICY={machine['env'].get('OMP_WAIT_POLICY') or 'default'}")


def summary_markdown(summary: dict) -> str:
    """The README table: headline rows of every module that ran, then the machine(s).

    Modules kept from an earlier run (``--only``) may have been measured on another machine or day:
    then the header says which modules were measured where (each module's ``machine``)."""
    rows = [row for module in summary["modules"].values() for row in module.get("headline", [])]
    mode = "quick" if summary["quick"] else "full"
    command = f"`python -m benchmarks{' --quick' if summary['quick'] else ''}` ({mode} mode)"
    where: dict[str, list[str]] = {}
    for name, module in summary["modules"].items():
        if module.get("status") == "ok":
            where.setdefault(_machine_text(module.get("machine") or summary["machine"]), []).append(name)
    if len(where) <= 1:
        header = f"Measured with {command} on {next(iter(where), _machine_text(summary['machine']))}."
    else:
        header = f"Measured with {command}, module by module: " + "; ".join(
            f"{', '.join(names)} on {text}" for text, names in where.items()) + "."
    lines = [
        header + " Ratios are medians over rounds of A/B runs measured alternately in the same session "
        "(min-max in brackets; one round in quick mode).",
        "",
        common.markdown_table(rows, SUMMARY_COLUMNS) if rows else "(no results)",
    ]
    for name, module in summary["modules"].items():
        if module["status"] != "ok":
            lines.append(f"\n{name}: {module['status']}")
    return "\n".join(lines) + "\n"


def _previous_modules() -> dict:
    path = common.RESULTS_DIR / "summary.json"
    try:
        modules = json.loads(path.read_text(encoding="utf-8"))["results"]["modules"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    kept = {name: modules[name] for name in MODULES if name in modules}
    for module in kept.values():  # summaries written before modules recorded their machine
        if "machine" not in module and module.get("result_file"):
            try:
                result = json.loads((common.ROOT / module["result_file"]).read_text(encoding="utf-8"))
                module["machine"] = result["machine"]
            except (OSError, ValueError, KeyError, TypeError):
                pass
    return kept


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    common.use_results_dir(args.quick)  # the quick tables are the README's; the full ones live beside them
    names = [name for name in MODULES if not args.only or name in args.only]
    summary = {"machine": common.machine_info(), "quick": args.quick, "modules": {}}
    if args.only:  # keep the other modules' rows from the last run of the same mode
        summary["modules"] = _previous_modules()
    tables: list[str] = []
    failed = False
    for name in names:
        module = _load(name)
        if module is None:
            print(f"[benchmarks] {name}: module benchmarks/{name}.py is not there; skipped", flush=True)
            summary["modules"][name] = {"status": "skipped (module missing)"}
            continue
        print(f"[benchmarks] {name} ({'quick' if args.quick else 'full'}) ...", flush=True)
        start = time.perf_counter()
        try:
            options = {"teacher": args.teacher} if args.teacher and "teacher" in inspect.signature(module.run).parameters else {}
            payload = module.run(args.quick, **options)
        except common.SharedDataMissing as err:
            print(f"[benchmarks] {name}: skipped: {err}", flush=True)
            summary["modules"][name] = {"status": f"skipped ({err})"}
            continue
        except Exception as err:  # one module failing must not lose the others' results
            traceback.print_exc()
            failed = True
            summary["modules"][name] = {"status": f"failed ({type(err).__name__}: {err})"}
            continue
        seconds = time.perf_counter() - start
        headline = module.headline(payload) if hasattr(module, "headline") else []
        summary["modules"][name] = {"status": "ok", "seconds": seconds, "headline": headline,
                                    "machine": common.machine_info(),
                                    "result_file": str((common.RESULTS_DIR / f"{name}.json").relative_to(common.ROOT))}
        if hasattr(module, "table"):
            tables.append(module.table(payload))
        print(f"[benchmarks] {name} done in {seconds:.0f} s", flush=True)

    summary["modules"] = {name: summary["modules"][name] for name in MODULES if name in summary["modules"]}
    print("\n\n".join(tables))
    common.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    markdown = summary_markdown(summary)
    (common.RESULTS_DIR / "summary.md").write_text(markdown, encoding="utf-8")
    common.write_result("summary", {key: value for key, value in summary.items() if key != "machine"})
    print("\n" + markdown)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
