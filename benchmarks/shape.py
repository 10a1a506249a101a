"""Depth vs width at equal parameters: which students of one teacher are best for their size?

``python -m benchmarks.shape [--quick] [--teacher DIR]`` (long: not in the runner's default list).

The teacher is, offline, the committed offline teacher ``assets/models/debian-teacher`` (the
T5-efficient ``tiny`` preset, 4/4 layers, d_model 256, d_ff 1024, 4 heads, trained from random
initialisation on all 51,596 Debian package description → synopsis pairs by ``python -m compression
teacher``; its model card has the command and scores). In a checkout without it, the ``tiny``
preset (:func:`compression.load.build_preset`) is fine-tuned here on the first ``max_train_samples``
pairs and cached in ``benchmarks/cache/shape-teacher``. ``--teacher DIR`` takes any saved T5
checkpoint. The pairs are read as the ``debian-descriptions`` preset reads them: no prefix, and both
files shuffled with the preset's seed before the first ``max_train_samples`` / ``max_eval_samples``
are kept (the files are sorted by package name).
At each target (75 % and 50 % of the teacher's **non-embedding** parameters; token embeddings
and ``lm_head`` are kept whole by every method), it builds:

* **depth (spread)**: :func:`compression.layers.shrink`, maximally spaced layers (SFT, Shleifer &
  Rush 2020 §3);
* **depth (importance)**: the layers with the highest drop-one loss on ``calibration`` training
  pairs (:func:`compression.importance.shrink_by_importance`);
* **width**: every layer kept, fewer feed-forward neurons and heads, ranked by their activations
  (:func:`compression.width.prune_width`; Minitron);
* **depth+width**: about half of the reduction from layers (importance-chosen), the rest from
  width.

Layer counts are whole, so the width of each student is solved to land on the target
(:func:`plan_students`); the table gives each student's exact fraction. Every student is trained
one epoch (SFT, :func:`compression.train.finetune`) on the same pairs, then scored on the same
validation pairs: ROUGE-1/2/L F1 of greedy summaries and the teacher-forced validation loss (nats
per target token) (:func:`compression.evaluate.evaluate_model`), and the generation speedup over
the teacher at batch 1 and 16 (greedy, forced ``latency_tokens`` new tokens, teacher and student
timed alternately, median of the per-round ratios; :func:`benchmarks.common.alternate`).
Results: ``benchmarks/results/shape.json``, ``shape.md`` (table and verdicts), ``shape.html`` and
``shape.png`` (Pareto chart: validation loss and ROUGE-L against speedup and against parameters);
``--quick`` writes ``shape-quick.*`` instead, so it never overwrites the default run's files.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import common
from benchmarks.methods import CACHE_DIR, _fresh, load_teacher

NAME = "shape"
METHODS = ("depth (spread)", "depth (importance)", "width", "depth+width")
FOLDERS = dict(zip(METHODS, ("spread", "importance", "width", "depth-width")))
COLUMNS = ["student", "target", "enc/dec", "heads", "d_ff", "non-emb params", "% teacher", "R-1", "R-2", "R-L",
           "val loss", "speedup b1", "speedup b16", "train s"]
STYLES = {"teacher": ("star", "#444444"), "depth (spread)": ("circle", "#1f77b4"),
          "depth (importance)": ("diamond", "#2ca02c"), "width": ("square", "#d62728"),
          "depth+width": ("triangle-up", "#9467bd")}


@dataclass
class Settings:
    """Everything one run depends on (see :func:`quick_settings` / :func:`full_settings`).

    Lengths in tokens. ``targets``: fractions of the teacher's non-embedding parameters.
    ``calibration``: training pairs the importance scores and the width ranking are computed on.
    ``latency_*``: documents per timing, forced new tokens, alternation rounds.
    """

    quick: bool
    teacher: str | None = None
    #: the dataset preset read, with its prefix and shuffle seed (:func:`data_args`)
    dataset: str = "debian-descriptions"
    cache_dir: Path = CACHE_DIR
    teacher_cache: str = "shape-teacher"
    preset: str = "tiny"
    teacher_epochs: float = 2.0
    teacher_learning_rate: float = 1e-3
    teacher_max_steps: int | None = None
    targets: tuple[float, ...] = (0.75, 0.5)
    epochs: float = 1.0
    learning_rate: float = 1e-3
    batch_size: int = 16
    max_steps: int | None = None
    max_train_samples: int | None = 4000
    max_eval_samples: int | None = 200
    max_source_length: int = 128
    max_target_length: int = 24
    max_new_tokens: int = 24
    calibration: int = 32
    latency_docs: int = 16
    latency_tokens: int = 16
    latency_repeats: int = 3
    seed: int = 42
    png: bool = True
    logging_steps: int = 25
    device: str = "cpu"
    overrides: str = ""


def _default_teacher() -> dict:
    """``{"teacher": folder}`` of the committed offline teacher when the checkout has it, else ``{}``."""
    from compression.teacher import bundled_teacher

    folder = bundled_teacher()
    return {"teacher": str(folder)} if folder else {}


def full_settings(**overrides) -> Settings:
    """The default run (about 40-60 minutes on a 2-core CPU): 4,000 training pairs, 1 epoch per student;
    the committed offline teacher when present."""
    return dataclasses.replace(Settings(quick=False), **{**_default_teacher(), **overrides})


def quick_settings(**overrides) -> Settings:
    """A pipeline check of a few minutes: 64 training pairs, 4 steps per student, 16 validation pairs.
    Uses the default cached teacher when present, else trains a 20-step one (numbers then mean nothing)."""
    values = dict(quick=True, max_train_samples=64, max_steps=4, max_eval_samples=16, max_new_tokens=12,
                  latency_docs=4, latency_tokens=8, latency_repeats=2, calibration=8, teacher_max_steps=20,
                  logging_steps=1, batch_size=8)
    values.update(_default_teacher())
    values["teacher_cache"] = ("shape-teacher" if (CACHE_DIR / "shape-teacher" / "config.json").is_file()
                               else "shape-teacher-quick")
    values.update(overrides)
    return Settings(**values)


def _log(message: str) -> None:
    print(f"[shape] {message}", file=sys.stderr, flush=True)


# --- parameter arithmetic -------------------------------------------------------------------------

def non_embedding_params(model) -> int:
    """Unique parameters minus the token embeddings and an untied ``lm_head`` (what depth and width
    pruning can remove)."""
    from compression.arch import count_parameters

    total = count_parameters(model)
    embedding = model.get_input_embeddings().weight
    total -= embedding.numel()
    head = model.get_output_embeddings()
    if head is not None and head.weight is not embedding:
        total -= head.weight.numel()
    return total


def t5_non_embedding(config, encoder_layers: int, decoder_layers: int, heads: int, d_ff: int) -> int:
    """Non-embedding parameters of a T5 of this shape (exact for T5/T5 v1.1 layers: bias-free linears,
    RMS norms, relative position bias in layer 0 of each stack)."""
    d, inner = config.d_model, heads * config.d_kv
    n_wi = 2 if config.is_gated_act else 1
    attention = 4 * d * inner
    ffn = (n_wi + 1) * d * d_ff
    encoder = attention + ffn + 2 * d
    decoder = 2 * attention + ffn + 3 * d
    bias = config.relative_attention_num_buckets * heads
    return encoder_layers * encoder + decoder_layers * decoder + 2 * bias + 2 * d


def _solve_d_ff(config, encoder_layers: int, decoder_layers: int, heads: int, target: float) -> int:
    """The d_ff (a multiple of 8, at most the teacher's) whose student is closest to ``target`` parameters."""
    fixed = t5_non_embedding(config, encoder_layers, decoder_layers, heads, 0)
    per_unit = t5_non_embedding(config, encoder_layers, decoder_layers, heads, 1) - fixed
    d_ff = round((target - fixed) / per_unit / 8) * 8
    return int(min(config.d_ff, max(8, d_ff)))


def plan_students(config, fraction: float) -> list[dict]:
    """The four students at ``fraction`` of the teacher's non-embedding parameters.

    Depth: ``round(n * fraction)`` layers per stack (at least 1). Width: ``round(heads * fraction)``
    heads, d_ff solved for the target. Depth+width: ``ceil(n * sqrt(fraction))`` layers per stack
    (one decoder layer fewer when that keeps every layer), then heads and d_ff for the rest.

    Returns:
        ``[{"method", "encoder_layers", "decoder_layers", "heads", "d_ff", "params", "fraction"}, ...]``.
    """
    n_enc, n_dec, heads, d_ff = config.num_layers, config.num_decoder_layers, config.num_heads, config.d_ff
    teacher = t5_non_embedding(config, n_enc, n_dec, heads, d_ff)
    target = fraction * teacher
    plans = []
    depth = (max(1, round(n_enc * fraction)), max(1, round(n_dec * fraction)))
    for method in METHODS[:2]:
        plans.append({"method": method, "encoder_layers": depth[0], "decoder_layers": depth[1], "heads": heads,
                      "d_ff": d_ff})
    width_heads = max(1, round(heads * fraction))
    plans.append({"method": "width", "encoder_layers": n_enc, "decoder_layers": n_dec, "heads": width_heads,
                  "d_ff": _solve_d_ff(config, n_enc, n_dec, width_heads, target)})
    root = math.sqrt(fraction)
    e, d = min(n_enc, math.ceil(n_enc * root)), min(n_dec, math.ceil(n_dec * root))
    if (e, d) == (n_enc, n_dec):
        d = max(1, n_dec - 1)
    rest = target / t5_non_embedding(config, e, d, heads, d_ff)
    both_heads = max(1, min(heads, round(heads * rest)))
    plans.append({"method": "depth+width", "encoder_layers": e, "decoder_layers": d, "heads": both_heads,
                  "d_ff": _solve_d_ff(config, e, d, both_heads, target)})
    for plan in plans:
        plan["params"] = t5_non_embedding(config, plan["encoder_layers"], plan["decoder_layers"], plan["heads"],
                                          plan["d_ff"])
        plan["fraction"] = plan["params"] / teacher
        plan["target"] = fraction
    return plans


# --- measuring ------------------------------------------------------------------------------------

class _Scorer:
    """ROUGE and validation loss on fixed pairs; speedup over the teacher at batch 1 and 16."""

    def __init__(self, settings: Settings, teacher, tokenizer, documents, references, prefix) -> None:
        from compression.config import EvalArgs

        self.settings, self.teacher, self.tokenizer = settings, teacher, tokenizer
        self.documents, self.references, self.prefix = documents, references, prefix
        self.args = EvalArgs(max_new_tokens=settings.max_new_tokens, batch_size=16, latency_samples=0)

    def _seconds(self, model, batch_size: int) -> float:
        from compression.evaluate import measure_latency

        docs = self.documents[:self.settings.latency_docs]
        timing = measure_latency(model, self.tokenizer, docs, prefix=self.prefix,
                                 max_source_length=self.settings.max_source_length,
                                 max_new_tokens=self.settings.latency_tokens, batch_size=min(batch_size, len(docs)))
        return timing["ms_per_sample"] / 1000.0

    def __call__(self, model, timed: bool = True) -> dict:
        from compression.evaluate import evaluate_model

        metrics = evaluate_model(model, self.tokenizer, self.documents, self.references, prefix=self.prefix,
                                 max_source_length=self.settings.max_source_length,
                                 max_target_length=self.settings.max_target_length, args=self.args)
        metrics.pop("predictions")
        if timed:
            for batch in (1, 16):
                pairs = common.alternate(lambda: self._seconds(self.teacher, batch),  # noqa: B023
                                         lambda: self._seconds(model, batch), self.settings.latency_repeats)  # noqa: B023
                metrics[f"speedup_b{batch}"] = pairs["ratio_median"]
                metrics[f"speedup_b{batch}_range"] = (pairs["ratio_min"], pairs["ratio_max"])
        return metrics


def _row(method: str, plan: dict | None, model, metrics: dict, teacher_params: int, train_s: float | None) -> dict:
    from compression.layers import get_layer_stacks

    encoder, decoder = get_layer_stacks(model)
    params = non_embedding_params(model)
    return {"method": method, "target": plan["target"] if plan else 1.0, "encoder_layers": len(encoder),
            "decoder_layers": len(decoder), "heads": model.config.num_heads, "d_ff": model.config.d_ff,
            "non_embedding_params": params, "fraction": params / teacher_params, "params": metrics["params"],
            "rouge1": metrics["rouge1"], "rouge2": metrics["rouge2"], "rougeL": metrics["rougeL"],
            "validation_loss": metrics["validation_loss"], "speedup_b1": metrics.get("speedup_b1", 1.0),
            "speedup_b16": metrics.get("speedup_b16", 1.0), "speedup_b1_range": metrics.get("speedup_b1_range"),
            "speedup_b16_range": metrics.get("speedup_b16_range"), "train_seconds": train_s,
            "kept": {stack: (getattr(model.config, "shrink", None) or {}).get(f"{stack}_layers_kept")
                     for stack in ("encoder", "decoder")}}


def _table_rows(rows: list[dict]) -> list[dict]:
    return [{"student": row["method"], "target": f"{100 * row['target']:.0f} %",
             "enc/dec": f"{row['encoder_layers']}/{row['decoder_layers']}", "heads": row["heads"], "d_ff": row["d_ff"],
             "non-emb params": row["non_embedding_params"], "% teacher": f"{100 * row['fraction']:.1f}",
             "R-1": row["rouge1"], "R-2": row["rouge2"], "R-L": row["rougeL"], "val loss": row["validation_loss"],
             "speedup b1": row["speedup_b1"], "speedup b16": row["speedup_b16"], "train s": row["train_seconds"]}
            for row in rows]


def verdicts(rows: list[dict]) -> dict:
    """Per target: the best student by validation loss, DeepNarrow's claim (keeping depth and cutting
    width beats cutting depth at equal parameters), and importance vs spread (no worse than 0.01 nats,
    better somewhere). Returns ``{"text": markdown, "targets": [...]}``."""
    checks, parts = [], []
    for target in sorted({row["target"] for row in rows if row["method"] != "teacher"}, reverse=True):
        at = {row["method"]: row for row in rows if row["target"] == target and row["method"] != "teacher"}
        ranking = sorted(at.values(), key=lambda row: row["validation_loss"])
        depth_best = min((at[m] for m in METHODS[:2] if m in at), key=lambda row: row["validation_loss"])
        width = at.get("width")
        narrow_wins = bool(width and width["validation_loss"] < depth_best["validation_loss"])
        spread, importance = at.get("depth (spread)"), at.get("depth (importance)")
        delta = importance["validation_loss"] - spread["validation_loss"] if spread and importance else None
        same_layers = bool(spread and importance and spread["kept"] == importance["kept"])
        checks.append({"target": target, "ranking": [(row["method"], row["validation_loss"]) for row in ranking],
                       "deepnarrow_holds": narrow_wins, "importance_minus_spread": delta,
                       "importance_same_layers": same_layers})
        order = " < ".join(f"{row['method']} {row['validation_loss']:.3f}" for row in ranking)
        speed = ", ".join(f"{row['method']} {row['speedup_b1']:.2f}x/{row['speedup_b16']:.2f}x" for row in ranking)
        text = (f"- **{100 * target:.0f} %**: validation loss {order} nats/token; speedup at batch 1/16: {speed}. "
                f"DeepNarrow (width cut, depth kept, beats the best depth cut): "
                f"**{'holds' if narrow_wins else 'does not hold'}**")
        if delta is not None:
            text += (f"; importance − spread = {delta:+.3f} nats"
                     + (" (the same layers were kept)" if same_layers else
                        f" (importance kept enc {importance['kept']['encoder']} dec {importance['kept']['decoder']},"
                        f" spread enc {spread['kept']['encoder']} dec {spread['kept']['decoder']})"))
        parts.append(text + ".")
    return {"text": "\n".join(parts), "targets": checks}


def _figure(rows: list[dict], title: str):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    panels = (("speedup_b1", "validation_loss"), ("non_embedding_params", "validation_loss"),
              ("speedup_b1", "rougeL"), ("non_embedding_params", "rougeL"))
    labels = {"speedup_b1": "generation speedup vs teacher (×, greedy, batch 1)",
              "non_embedding_params": "non-embedding parameters", "validation_loss": "validation loss (nats/token)",
              "rougeL": "ROUGE-L F1"}
    better = {"speedup_b1": 1, "non_embedding_params": -1, "validation_loss": -1, "rougeL": 1}
    fig = make_subplots(rows=2, cols=2, subplot_titles=[f"{labels[y].split(' (')[0]} against {labels[x].split(' (')[0]}"
                                                        for x, y in panels], vertical_spacing=0.14)
    for index, (x_key, y_key) in enumerate(panels):
        row, col = index // 2 + 1, index % 2 + 1
        for method, (symbol, color) in STYLES.items():
            points = [r for r in rows if r["method"] == method]
            if not points:
                continue
            fig.add_trace(go.Scatter(
                x=[p[x_key] for p in points], y=[p[y_key] for p in points], mode="markers+text", name=method,
                legendgroup=method, showlegend=index == 0, marker={"symbol": symbol, "color": color, "size": 11},
                text=[f"{p['encoder_layers']}/{p['decoder_layers']} h{p['heads']} ff{p['d_ff']}" for p in points],
                textposition="top center", textfont={"size": 9}), row=row, col=col)
        front = sorted((r for r in rows), key=lambda r: -better[x_key] * r[x_key])
        pareto, best = [], None
        for point in front:
            value = better[y_key] * point[y_key]
            if best is None or value > best:
                pareto.append(point)
                best = value
        fig.add_trace(go.Scatter(x=[p[x_key] for p in pareto], y=[p[y_key] for p in pareto], mode="lines",
                                 line={"dash": "dot", "color": "#888888"}, name="Pareto front",
                                 legendgroup="pareto", showlegend=index == 0), row=row, col=col)
        fig.update_xaxes(title_text=labels[x_key], row=row, col=col)
        fig.update_yaxes(title_text=labels[y_key], row=row, col=col)
    fig.update_layout(title=title, height=820, width=1200, template="plotly_white")
    return fig


def _write_outputs(payload: dict, rows: list[dict], settings: Settings) -> dict:
    name = f"{NAME}-quick" if settings.quick else NAME  # a quick check never overwrites the default run's files
    paths = {"json": str(common.write_result(name, payload))}
    results = common.RESULTS_DIR
    figure = _figure(rows, f"Depth vs width at equal parameters ({payload['teacher_label']})")
    figure.write_html(str(results / f"{name}.html"), include_plotlyjs="cdn", full_html=True)
    paths["html"] = str(results / f"{name}.html")
    if settings.png:
        try:
            figure.write_image(str(results / f"{name}.png"), width=1200, height=820, scale=1)
            paths["png"] = str(results / f"{name}.png")
        except Exception as error:  # kaleido missing or no browser: the PNG is optional
            _log(f"no PNG ({type(error).__name__}: {str(error).splitlines()[0][:120]})")
    s = payload["settings"]
    mode = "quick mode: a pipeline check, the numbers mean nothing" if settings.quick else (
        f"default run with {settings.overrides}" if settings.overrides else "default run")
    lines = [
        f"# Depth vs width at equal parameters ({mode})", "",
        f"Teacher: {payload['teacher_label']}. Students trained "
        + (f"{s['max_steps']} optimizer step(s)" if s["max_steps"] else f"{s['epochs']:g} epoch(s)")
        + f" each (SFT) on {payload['train_pairs']} pairs (batch {s['batch_size']}, lr {s['learning_rate']:g}, "
        f"sources {s['max_source_length']} tokens); importance and width ranking on {s['calibration']} training "
        f"pairs. Scored on {payload['eval_pairs']} validation pairs (greedy, {s['max_new_tokens']} new tokens at "
        f"most); speedup: greedy, {s['latency_tokens']} forced new tokens, {s['latency_docs']} articles, batch 1 "
        f"and 16, median of {s['latency_repeats']} teacher/student alternations. Machine: {payload['machine_note']}. "
        f"Took {payload['seconds'] / 60:.0f} min.", "",
        common.markdown_table(_table_rows(rows), COLUMNS), "",
        payload["verdicts"]["text"], "",
        f"Chart: [{name}.html]({name}.html)" + (f", ![chart]({name}.png)" if "png" in paths else ""), "",
    ]
    (results / f"{name}.md").write_text("\n".join(lines), encoding="utf-8")
    paths["md"] = str(results / f"{name}.md")
    return paths


def data_args(settings: Settings):
    """The :class:`compression.config.DataArgs` the benchmark reads: the settings' dataset preset
    (its prefix and shuffle seed: for the Debian descriptions no prefix, as the committed teacher
    was trained, and seed 0, the files being sorted by package name) with the settings' lengths and
    pair counts."""
    from compression.config import DataArgs

    return DataArgs(dataset=settings.dataset, max_train_samples=settings.max_train_samples,
                    max_eval_samples=settings.max_eval_samples, max_source_length=settings.max_source_length,
                    max_target_length=settings.max_target_length)


def benchmark(settings: Settings) -> dict:
    """Run the comparison of the module docstring; returns the JSON payload.

    Raises:
        benchmarks.common.SharedDataMissing: the default data or tokenizer files are absent.
        compression.errors.CompressionError: bad settings, a teacher that cannot be loaded or is not a T5.
    """
    from compression.arch import model_family
    from compression.config import TrainArgs
    from compression.data import load_pairs, resolve_prefix, tokenize_pairs
    from compression.dataset_presets import DATASET_PRESETS
    from compression.errors import CompressionError
    from compression.importance import shrink_by_importance
    from compression.layers import shrink
    from compression.train import finetune
    from compression.width import prune_width

    started = time.perf_counter()
    if not DATASET_PRESETS[settings.dataset].available():
        raise common.SharedDataMissing(f"the {settings.dataset} files are not on this machine: the shape benchmark "
                                       "reads them from ../shared/data (or COMPRESSION_SHARED_DIR)")
    data = data_args(settings)
    pairs = load_pairs(data)

    def tokenized(tokenizer, model):
        lengths = {"prefix": resolve_prefix(data, model), "max_source_length": settings.max_source_length,
                   "max_target_length": settings.max_target_length}
        return (tokenize_pairs(pairs["train"], tokenizer, **lengths),
                tokenize_pairs(pairs["validation"], tokenizer, **lengths))

    teacher, tokenizer, teacher_info = load_teacher(settings, tokenized)
    if model_family(teacher) != "t5":
        raise CompressionError("the shape benchmark prunes heads, which only T5 checkpoints can hold: give a T5 teacher")
    teacher.eval()
    train, validation = tokenized(tokenizer, teacher)
    calibration = train.select(range(min(settings.calibration, len(train))))
    prefix = resolve_prefix(data, teacher)
    score = _Scorer(settings, teacher, tokenizer, list(pairs["validation"]["document"]),
                    list(pairs["validation"]["summary"]), prefix)
    teacher_params = non_embedding_params(teacher)
    config = teacher.config
    assert t5_non_embedding(config, config.num_layers, config.num_decoder_layers, config.num_heads,
                            config.d_ff) == teacher_params, "parameter arithmetic out of step with the model"
    args = TrainArgs(epochs=settings.epochs, batch_size=settings.batch_size, learning_rate=settings.learning_rate,
                     max_steps=settings.max_steps, seed=settings.seed, logging_steps=settings.logging_steps,
                     device=settings.device)
    work = Path(settings.cache_dir) / "work" / ("shape-quick" if settings.quick else "shape")

    _log(f"evaluating the teacher on {len(validation)} validation pairs")
    rows = [_row("teacher", None, teacher, score(teacher, timed=False), teacher_params, None)]
    importance_students: dict = {}
    for fraction in settings.targets:
        for plan in plan_students(config, fraction):
            method = plan["method"]
            e, d = plan["encoder_layers"], plan["decoder_layers"]
            if method == "depth (spread)":
                student = shrink(teacher, e, d, "spread")
            elif method == "width":
                student = prune_width(teacher, tokenizer, calibration, ffn_keep=plan["d_ff"], heads_keep=plan["heads"])
            else:  # importance-chosen layers, then (depth+width) the width on top
                if (e, d) not in importance_students:
                    importance_students[(e, d)] = shrink_by_importance(teacher, tokenizer, calibration, e, d)[0]
                student = importance_students[(e, d)]
                if method == "depth+width":
                    student = prune_width(student, tokenizer, calibration, ffn_keep=plan["d_ff"],
                                          heads_keep=plan["heads"])
                else:
                    student = copy.deepcopy(student)
            label = f"{method} {e}/{d} h{plan['heads']} ff{plan['d_ff']} ({100 * plan['fraction']:.1f} %)"
            _log(f"{label}: training on {len(train)} pairs")
            folder = _fresh(work / f"{FOLDERS[method]}-{round(100 * fraction)}")
            result = finetune(student, tokenizer, train, validation, args, folder, progress_bar=False)
            _log(f"{label}: {result.steps} steps in {result.seconds:.0f} s; evaluating")
            row = _row(method, plan, student, score(student), teacher_params, result.seconds)
            _log(f"{label}: validation loss {row['validation_loss']:.4f}, R-L {row['rougeL']:.2f}, speedup "
                 f"{row['speedup_b1']:.2f}x / {row['speedup_b16']:.2f}x")
            rows.append(row)
            (work / "rows.json").write_text(json.dumps(rows, indent=1, default=str))  # kept if a later step fails
    machine = common.machine_info()
    from compression.teacher import BUNDLED_TEACHER

    source = teacher_info["source"]
    teacher_label = (f"T5-efficient `{teacher_info.get('preset')}` preset (4/4 layers, d_model 256) fine-tuned here "
                     f"for {teacher_info.get('epochs', 0):.3g} epoch(s) ({teacher_info.get('steps')} steps, lr "
                     f"{teacher_info.get('learning_rate')}) on {teacher_info.get('train_pairs')} Debian description "
                     f"pairs, validation loss {teacher_info.get('eval_loss') or float('nan'):.3f} nats"
                     if teacher_info.get("trained_here") and teacher_info.get("preset")
                     else "the committed offline teacher `assets/models/debian-teacher` (tiny preset, 4/4 layers, "
                     "d_model 256, trained from random initialisation on all 51,596 Debian pairs; its model card has "
                     "the command and scores)" if Path(source).resolve() == BUNDLED_TEACHER.resolve()
                     else f"`{source}`")
    payload = {
        "mode": "quick" if settings.quick else "default",
        "teacher": teacher_info, "teacher_label": teacher_label,
        "teacher_non_embedding_params": teacher_params,
        "train_pairs": len(train), "eval_pairs": len(validation),
        "settings": {key: (str(value) if isinstance(value, Path) else value)
                     for key, value in dataclasses.asdict(settings).items()},
        "rows": rows,
        "verdicts": verdicts(rows),
        "machine_note": common.machine_note(machine),
        "seconds": time.perf_counter() - started,
    }
    print(table(payload))
    payload["files"] = _write_outputs(payload, rows, settings)
    _log(f"done in {payload['seconds']:.0f} s: {payload['files']}")
    return payload


def table(payload: dict) -> str:
    """The printed table (one line per model) and the verdicts."""
    return common.format_table(_table_rows(payload["rows"]), COLUMNS) + "\n\n" + payload["verdicts"]["text"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.shape", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes: proves the pipeline only")
    parser.add_argument("--teacher", help="T5 teacher checkpoint folder (default: the committed offline teacher, "
                                          "else the cached fine-tuned tiny preset)")
    parser.add_argument("--teacher-epochs", type=float, help="epochs of the teacher's fine-tuning when not cached")
    parser.add_argument("--max-train-samples", type=int, help="training pairs (default 4000; quick 64)")
    parser.add_argument("--max-eval-samples", type=int, help="validation pairs (default 200; quick 16)")
    parser.add_argument("--latency-docs", type=int, help="articles per speed timing (default 16; quick 4)")
    parser.add_argument("--no-png", action="store_true", help="skip the PNG (needs kaleido and a Chromium)")
    args = parser.parse_args(argv)
    overrides = {"teacher": args.teacher, "teacher_epochs": args.teacher_epochs,
                 "max_train_samples": args.max_train_samples, "max_eval_samples": args.max_eval_samples,
                 "latency_docs": args.latency_docs}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if overrides:
        overrides["overrides"] = ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in overrides.items())
    if args.no_png:
        overrides["png"] = False
    settings = quick_settings(**overrides) if args.quick else full_settings(**overrides)
    from compression.errors import CompressionError

    try:
        benchmark(settings)
    except (CompressionError, common.SharedDataMissing) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
