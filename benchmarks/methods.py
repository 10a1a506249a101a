"""SFT vs KD vs pseudo-label KD vs Modular Transformers on one teacher, at equal student shapes.

``python -m benchmarks.methods [--quick] [--dataset NAME] [--teacher DIR]`` (long: not in the
runner's default list).

Data and teacher. By default (``--dataset debian-descriptions``) the Debian package descriptions
(:mod:`compression.dataset_presets`: headline generation, 51,596 train / 1,625 validation pairs)
and the offline teacher committed with the project (``assets/models/debian-teacher``, trained by
``python -m compression teacher``; its model card has the command and scores); students train on
the first ``max_train_samples`` pairs (8,000) and everything is scored on the first 500
validation pairs, both after the preset's seeded shuffle (``DataArgs.shuffle_seed``: the files are
in package-name order). ``--dataset xsum-sample`` uses the 700 XSum pairs and, without ``--teacher``,
the T5-efficient ``tiny`` preset fine-tuned here on them (``teacher_epochs`` epochs at learning
rate 1e-3; a weak teacher, cached in ``benchmarks/cache/teacher``). ``--teacher DIR`` takes any
saved T5/BART checkpoint instead. From it, at the same student shapes (for a 4/4 teacher: **2/2** = 2×, **4/2** = decoder-only, **2/1** = 2.67×,
the closest to 3× whole layers allow; see :func:`student_shapes`), it makes:

* **SFT** (Shleifer & Rush 2020, §3): :func:`compression.layers.shrink` (``spread`` layers), then
  :func:`compression.train.finetune` for ``epochs`` epochs;
* **KD** (same paper, "KD"): the same shrunk student trained with :func:`compression.distill.distill`
  and the default :class:`compression.distill.KDArgs` (0.8 soft-target KL at T=2 + 0.2 label CE);
* **pseudo-label KD** (sequence-level KD, Kim & Rush 2016, section 3.2; Shleifer & Rush 2020's
  "PL"): the same shrunk student fine-tuned like SFT, but on the teacher's own greedy summaries of
  the training documents (:func:`compression.pseudo_labels.pseudo_labels`, generated once for all
  shapes and cached in ``cache_dir/pseudo-labels``; the generation time is reported apart);
* **Modular Transformers** (Zhou, Le Bras & Choi 2023): :func:`compression.modular.train_modules`
  *once*, for ``epochs`` epochs (the same budget as *one* SFT or KD student), granularities {2, 4}
  (on a 4-layer stack a g3 module reaches no depth that two g2 modules do not, and would only take
  training steps from the others), then :func:`compression.modular.assemble` size-first and
  speed-first at each shape's compression ratio (teacher layers / student layers), no retraining.
  The priorities pick different shapes at one ratio (2×: size-first 2/2, speed-first 3/1); where
  both pick the same plan the student is evaluated once, as ``modular (size = speed)``.

Every model, the teacher included, is scored on the same validation pairs: ROUGE-1/2/L/Lsum F1
of greedy summaries (:func:`compression.evaluate.evaluate_model`; ROUGE-L is sentence-level LCS,
ROUGE-Lsum the summary-level one distilbart's tables report), the agreement with the teacher
(ROUGE-L F1 of the student's summaries against the teacher's, :func:`compression.metrics.agreement`),
the teacher-forced validation loss (nats/token; with a weak teacher this is the figure that
separates students), parameters, size
on disk (MiB), and the generation speedup over the teacher: greedy, batch 1, forced to
``latency_tokens`` new tokens, teacher and student timed alternately (:func:`benchmarks.common.alternate`)
and reported as the median of the per-pair ratios. Results: ``benchmarks/results/methods.json``,
``methods.md`` (table + where the paper's ordering modular ≥ KD ≥ SFT holds), ``methods.html``
(Pareto chart: validation loss vs speedup and vs size) and ``methods.png`` when ``kaleido`` can
render it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import common

NAME = "methods"
CACHE_DIR = Path(__file__).resolve().parent / "cache"
COLUMNS = ["method", "shape", "enc", "dec", "params", "size MiB", "R-1", "R-2", "R-L", "R-Lsum", "agree R-L",
           "val loss", "speedup", "speedup min-max", "train s"]
#: Method names in the rows (``modular ...`` labels: :data:`MODULAR_LABELS`).
TRAINED_METHODS = ("SFT", "KD", "pseudo-labels")
#: Per-dataset defaults of the full run (tokens, pairs); ``xsum-sample`` keeps the class defaults.
DATASET_DEFAULTS = {
    "debian-descriptions": dict(max_source_length=128, max_target_length=32, max_new_tokens=32, batch_size=32,
                                max_train_samples=8000, max_eval_samples=500, logging_steps=25),
    "xsum-sample": {},
}
MODULAR_LABELS = {"size": "modular (size-first)", "speed": "modular (speed-first)", "both": "modular (size = speed)"}


@dataclass
class Settings:
    """Everything one benchmark run depends on (see :func:`quick_settings`/:func:`full_settings`).

    Data: ``train_file``/``validation_file`` when given, else the dataset preset ``dataset``
    (:data:`compression.dataset_presets.DATASET_PRESETS`). ``teacher``: a checkpoint folder, or
    ``None``: for ``debian-descriptions`` the committed offline teacher
    (:func:`compression.teacher.bundled_teacher`), otherwise the fine-tuned ``preset`` cached in
    ``cache_dir / teacher_cache`` (trained first when absent). Lengths in tokens; ``epochs`` and
    ``max_steps`` apply to every student; the one module training runs ``modular_epochs`` (default:
    ``epochs`` times the number of compared shapes, the total budget of the SFT students the modules
    stand in for) or ``max_steps`` times that number; ``latency_*``: documents,
    forced new tokens and repeats of the speedup measurement; ``device``: as
    :class:`compression.config.TrainArgs` (``"auto"``: CUDA when present), where the teacher, every
    student and every timing run.
    """

    quick: bool
    teacher: str | None = None
    dataset: str | None = "debian-descriptions"
    train_file: str | None = None
    validation_file: str | None = None
    cache_dir: Path = CACHE_DIR
    teacher_cache: str = "teacher"
    preset: str = "tiny"
    teacher_epochs: float = 3.0
    teacher_learning_rate: float = 1e-3
    teacher_max_steps: int | None = None
    epochs: float = 1.0
    modular_epochs: float | None = None
    learning_rate: float = 3e-4
    batch_size: int = 8
    max_steps: int | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = 100
    max_source_length: int = 256
    max_target_length: int = 64
    max_new_tokens: int = 64
    granularities: tuple[int, ...] = (2, 4)
    latency_docs: int = 4
    latency_tokens: int = 32
    latency_repeats: int = 5
    seed: int = 42
    png: bool = True
    logging_steps: int = 10
    device: str = "auto"


def _dataset_defaults(overrides: dict) -> dict:
    dataset = overrides.get("dataset", Settings.dataset)
    if overrides.get("train_file") or dataset not in DATASET_DEFAULTS:
        return {}
    return dict(DATASET_DEFAULTS[dataset])


def full_settings(**overrides) -> Settings:
    """The full benchmark: 1 epoch per student; on the Debian descriptions the first 8,000 training
    and 500 validation pairs of the preset's seeded shuffle (sources 128 / summaries 32 tokens, batch 32), on the XSum sample all
    700 training and 100 validation pairs (512-token articles cut to 256, summaries 64, batch 8)."""
    return Settings(quick=False, **{**_dataset_defaults(overrides), **overrides})


def quick_settings(**overrides) -> Settings:
    """A pipeline check of a few minutes: 64 training pairs, 3 steps per student, 10 validation
    pairs, short sources and summaries. Without a teacher on the XSum sample it uses the full cached
    teacher when present, otherwise trains a 10-step one in ``cache/teacher-quick`` (numbers then
    mean nothing)."""
    values = dict(quick=True, max_train_samples=64, max_steps=3, max_eval_samples=10, max_source_length=128,
                  max_target_length=32, max_new_tokens=12, latency_docs=2, latency_tokens=12, latency_repeats=2,
                  teacher_max_steps=10, logging_steps=1)
    if (CACHE_DIR / "teacher" / "config.json").is_file():
        values["teacher_cache"] = "teacher"
    else:
        values["teacher_cache"] = "teacher-quick"
    values.update(overrides)
    return Settings(**values)


def _log(message: str) -> None:
    print(f"[methods] {message}", file=sys.stderr, flush=True)


def student_shapes(n_encoder: int, n_decoder: int) -> list[tuple[str, int, int]]:
    """``(label, encoder layers, decoder layers)`` of the compared students for a teacher's depths.

    ``2x``: half of each stack (rounded up); ``decoder-only``: the whole encoder, half the decoder;
    ``~3x``: half the encoder, a quarter of the decoder (rounded up, at least 1), which for a 4/4
    teacher is 2/1 = 2.67× (3 whole layers out of 8; 8/3 is the closest ratio to 3). Shapes equal to
    the teacher or to an earlier shape are dropped.
    """
    half = lambda n: max(1, math.ceil(n / 2))  # noqa: E731
    candidates = [("2x", half(n_encoder), half(n_decoder)),
                  ("decoder-only", n_encoder, half(n_decoder)),
                  ("~3x", half(n_encoder), max(1, math.ceil(n_decoder / 4)))]
    shapes, seen = [], {(n_encoder, n_decoder)}
    for label, e, d in candidates:
        if (e, d) not in seen:
            seen.add((e, d))
            shapes.append((label, e, d))
    return shapes


def _train_args(settings: Settings, *, epochs: float, learning_rate: float, max_steps: int | None):
    from compression.config import TrainArgs

    return TrainArgs(epochs=epochs, batch_size=settings.batch_size, learning_rate=learning_rate,
                     max_steps=max_steps, seed=settings.seed, logging_steps=settings.logging_steps,
                     device=settings.device)


def _fresh(path: Path) -> Path:
    """An empty folder (the training logs append to ``loss_log.jsonl``, so old ones must go)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def load_teacher(settings: Settings, data) -> tuple[object, object, dict]:
    """``(teacher, tokenizer, facts)``: ``settings.teacher`` when given; else the cached fine-tuned
    preset, trained (and cached) first when absent. ``data`` is the tokenized ``(train, validation)``
    factory ``data(tokenizer, model)``; ``facts`` describes where the teacher came from."""
    from compression.export import save_model
    from compression.load import build_preset, load_model
    from compression.train import finetune

    if settings.teacher:
        model, tokenizer = load_model(settings.teacher)
        return model, tokenizer, {"source": str(settings.teacher), "trained_here": False}
    if getattr(settings, "dataset", None) == "debian-descriptions" and not settings.train_file:
        from compression.errors import ModelLoadError
        from compression.teacher import BUNDLED_TEACHER, bundled_teacher

        folder = bundled_teacher()
        if folder is None:
            raise ModelLoadError(f"no committed offline teacher in {BUNDLED_TEACHER}: make one with `python -m "
                                 "compression teacher --dataset debian-descriptions --output DIR` and pass "
                                 "--teacher DIR")
        model, tokenizer = load_model(folder)
        _log(f"teacher: the committed offline teacher {folder}")
        return model, tokenizer, {"source": str(folder), "trained_here": False, "bundled": True}
    folder = Path(settings.cache_dir) / settings.teacher_cache
    info_path = folder / "teacher.json"
    if (folder / "config.json").is_file():
        model, tokenizer = load_model(folder)
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        _log(f"teacher: cached {folder} ({info.get('steps')} steps, {info.get('epochs', 0):.2f} epochs; delete the "
             "folder to train it again with the current settings)")
        return model, tokenizer, {"source": str(folder), "trained_here": True, "cached": True, **info}
    model, tokenizer = build_preset(settings.preset, common.tokenizer_path(), seed=0)
    train, validation = data(tokenizer, model)
    args = _train_args(settings, epochs=settings.teacher_epochs, learning_rate=settings.teacher_learning_rate,
                       max_steps=settings.teacher_max_steps)
    budget = (f"{settings.teacher_max_steps} steps" if settings.teacher_max_steps
              else f"{settings.teacher_epochs:g} epochs")
    _log(f"teacher: fine-tuning the {settings.preset} preset on {len(train)} pairs ({budget}, "
         f"lr {settings.teacher_learning_rate:g})")
    work = _fresh(Path(settings.cache_dir) / f"{settings.teacher_cache}-training")
    result = finetune(model, tokenizer, train, validation, args, work, progress_bar=False)
    info = {"preset": settings.preset, "train_pairs": len(train), "epochs": result.epochs, "steps": result.steps,
            "learning_rate": settings.teacher_learning_rate, "train_loss": result.train_loss,
            "eval_loss": result.eval_loss, "seconds": result.seconds,
            "max_source_length": settings.max_source_length, "max_target_length": settings.max_target_length}
    save_model(model, tokenizer, folder, card={
        "model_name": f"T5-efficient {settings.preset} fine-tuned on XSum (benchmark teacher)",
        "base_model": f"preset:{settings.preset} (random init)", "dataset": Path(settings.train_file).name,
        "train_samples": len(train), "epochs": result.epochs, "learning_rate": settings.teacher_learning_rate,
        "metrics": {"teacher": {"validation_loss": result.eval_loss}}})
    info_path.write_text(json.dumps(info, indent=2))
    _log(f"teacher: {result.steps} steps in {result.seconds:.0f} s, validation loss {result.eval_loss} -> {folder}")
    return model, tokenizer, {"source": str(folder), "trained_here": True, "cached": False, **info}


@dataclass
class _Inputs:
    """What every benchmark arm reads: the settings' ``pairs`` (:func:`compression.data.load_pairs`),
    the ``teacher`` (:func:`load_teacher`, on the settings' device, eval mode) with its ``tokenizer``
    and ``teacher_info``, the pairs tokenized for it (``train``, ``validation``) and its ``prefix``."""

    pairs: dict
    teacher: object
    tokenizer: object
    teacher_info: dict
    train: object
    validation: object
    prefix: str

    @property
    def validation_texts(self) -> tuple[list[str], list[str]]:
        """``(documents, references)`` of the validation pairs."""
        return list(self.pairs["validation"]["document"]), list(self.pairs["validation"]["summary"])


def _data_and_teacher(settings: Settings) -> _Inputs:
    """Loads the settings' pairs and teacher and tokenizes the pairs for it (:class:`_Inputs`)."""
    from compression.config import DataArgs
    from compression.data import load_pairs, resolve_prefix, tokenize_pairs
    from compression.train import resolve_device

    files = (dict(train_file=settings.train_file, validation_file=settings.validation_file) if settings.train_file
             else dict(dataset=settings.dataset))
    data_args = DataArgs(**files, max_train_samples=settings.max_train_samples,
                         max_eval_samples=settings.max_eval_samples, max_source_length=settings.max_source_length,
                         max_target_length=settings.max_target_length)
    pairs = load_pairs(data_args)

    def tokenized(tokenizer, model):
        lengths = dict(prefix=resolve_prefix(data_args, model), max_source_length=settings.max_source_length,
                       max_target_length=settings.max_target_length)
        return (tokenize_pairs(pairs["train"], tokenizer, **lengths),
                tokenize_pairs(pairs["validation"], tokenizer, **lengths))

    teacher, tokenizer, teacher_info = load_teacher(settings, tokenized)
    teacher.to(resolve_device(settings.device)).eval()  # every student is made from it and stays on its device
    train, validation = tokenized(tokenizer, teacher)
    return _Inputs(pairs, teacher, tokenizer, teacher_info, train, validation, resolve_prefix(data_args, teacher))


def _modular_budget(settings: Settings, n_shapes: int):
    """The module training's TrainArgs: the total budget of the ``n_shapes`` SFT students it stands in
    for (``modular_epochs`` when set)."""
    return _train_args(settings, epochs=settings.modular_epochs or settings.epochs * n_shapes,
                       learning_rate=settings.learning_rate,
                       max_steps=settings.max_steps * n_shapes if settings.max_steps else None)


class _Evaluator:
    """Scores models on fixed validation pairs and times them against the teacher; the first model
    scored must be the teacher (its summaries are what the others' agreement is measured against)."""

    def __init__(self, settings: Settings, teacher, tokenizer, documents: list[str], references: list[str],
                 prefix: str) -> None:
        from compression.config import EvalArgs

        self.settings, self.teacher, self.tokenizer = settings, teacher, tokenizer
        self.documents, self.references, self.prefix = documents, references, prefix
        self.args = EvalArgs(max_new_tokens=settings.max_new_tokens, num_beams=1, batch_size=16,
                             latency_samples=0)
        self.teacher_predictions: list[str] | None = None

    def _seconds_per_summary(self, model) -> float:
        from compression.evaluate import measure_latency

        timing = measure_latency(model, self.tokenizer, self.documents[:self.settings.latency_docs],
                                 prefix=self.prefix, max_source_length=self.settings.max_source_length,
                                 max_new_tokens=self.settings.latency_tokens, batch_size=1)
        return timing["ms_per_sample"] / 1000.0

    def __call__(self, model, timed: bool = True) -> dict:
        from compression.evaluate import evaluate_model
        from compression.metrics import agreement

        metrics = evaluate_model(model, self.tokenizer, self.documents, self.references, prefix=self.prefix,
                                 max_source_length=self.settings.max_source_length,
                                 max_target_length=self.settings.max_target_length, args=self.args)
        predictions = metrics.pop("predictions")
        if self.teacher_predictions is None:  # the first model scored is the teacher
            self.teacher_predictions = predictions
        metrics["agreement"] = agreement(predictions, self.teacher_predictions)
        if timed:
            pairs = common.alternate(lambda: self._seconds_per_summary(self.teacher),
                                     lambda: self._seconds_per_summary(model), self.settings.latency_repeats)
            metrics.update(speedup=pairs["ratio_median"], speedup_min=pairs["ratio_min"],
                           speedup_max=pairs["ratio_max"], latency_ms=1000 * pairs["b_median"],
                           teacher_latency_ms=1000 * pairs["a_median"])
        return metrics


def _last_granularity_losses(loss_log: Path) -> dict[str, float]:
    """``{"g2": nats, ...}``: the last evaluation's validation loss of each granularity's full
    replacement (every span of the stacks replaced by its g-layer modules), from the module
    training's ``loss_log.jsonl``; empty when it has no evaluation."""
    last: dict[str, float] = {}
    if loss_log.is_file():
        for line in loss_log.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            found = {key.removeprefix("eval_loss_"): value for key, value in record.items()
                     if key.startswith("eval_loss_g")}
            last = found or last
    return last


def _row(method: str, shape: str, model, metrics: dict, train_s: float | None, **extra) -> dict:
    from compression.layers import get_layer_stacks

    encoder, decoder = get_layer_stacks(model)
    row = {"method": method, "shape": shape, "encoder_layers": len(encoder), "decoder_layers": len(decoder),
           "params": metrics["params"], "size_mib": metrics["size_mib"], "rouge1": metrics["rouge1"],
           "rouge2": metrics["rouge2"], "rougeL": metrics["rougeL"], "rougeLsum": metrics["rougeLsum"],
           "agreement": metrics["agreement"], "validation_loss": metrics["validation_loss"],
           "rouge_ci": metrics.get("rouge_ci"), "speedup": metrics.get("speedup", 1.0),
           "speedup_min": metrics.get("speedup_min"), "speedup_max": metrics.get("speedup_max"),
           "latency_ms": metrics.get("latency_ms"), "train_seconds": train_s}
    row.update(extra)
    return row


def _table_rows(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        low, high = row.get("speedup_min"), row.get("speedup_max")
        out.append({"method": row["method"], "shape": row["shape"], "enc": row["encoder_layers"],
                    "dec": row["decoder_layers"], "params": row["params"], "size MiB": row["size_mib"],
                    "R-1": row["rouge1"], "R-2": row["rouge2"], "R-L": row["rougeL"],
                    "R-Lsum": row.get("rougeLsum"), "agree R-L": (row.get("agreement") or {}).get("rougeL"),
                    "val loss": row["validation_loss"], "speedup": row["speedup"],
                    "speedup min-max": f"{low:.2f}-{high:.2f}" if low is not None and high is not None else None,
                    "train s": row.get("train_seconds")})
    return out


def ordering_verdict(rows: list[dict]) -> tuple[str, list[dict]]:
    """Where the paper's ordering (modular ≥ KD ≥ SFT at equal size) holds, judged by validation loss.

    Equal size = the same encoder/decoder layer counts (hence the same parameters). For each SFT
    shape, the SFT, KD and modular rows of that shape are ranked by validation loss (lower is
    better); the ordering holds when every modular row ≤ KD ≤ SFT. ROUGE-L is reported beside it.

    Returns:
        ``(one markdown paragraph, [{"shape", "encoder_layers", "decoder_layers", "ranking":
        [(method, validation loss, ROUGE-L), ...] best first, "holds": bool}, ...])``.
    """
    checks = []
    for sft in (r for r in rows if r["method"] == "SFT"):
        key = (sft["encoder_layers"], sft["decoder_layers"])
        same = [r for r in rows if (r["encoder_layers"], r["decoder_layers"]) == key and r["method"] != "teacher"]
        kd = [r for r in same if r["method"] == "KD"]
        modular = [r for r in same if r["method"].startswith("modular")]
        ranking = sorted(same, key=lambda r: r["validation_loss"])
        holds = bool(kd and modular and all(m["validation_loss"] <= kd[0]["validation_loss"] for m in modular)
                     and kd[0]["validation_loss"] <= sft["validation_loss"])
        checks.append({"shape": sft["shape"], "encoder_layers": key[0], "decoder_layers": key[1], "holds": holds,
                       "has_modular": bool(modular),
                       "ranking": [(r["method"], r["validation_loss"], r["rougeL"]) for r in ranking]})
    if not checks:
        return "No SFT students to compare.", checks
    parts = []
    for check in checks:
        order = " < ".join(f"{method} {loss:.3f}" for method, loss, _ in check["ranking"])
        if not check["has_modular"]:
            verdict = "no modular assembly has this shape"
        else:
            verdict = "the ordering **holds**" if check["holds"] else "the ordering **does not hold**"
        parts.append(f"at {check['encoder_layers']}/{check['decoder_layers']} ({check['shape']}) validation loss "
                     f"ranks {order} nats/token: {verdict}")
    held = sum(c["holds"] for c in checks)
    comparable = sum(c["has_modular"] for c in checks)
    text = (f"Paper's ordering modular ≥ KD ≥ SFT at equal size (judged by validation loss): holds at {held} of "
            f"{comparable} shapes with a modular student of the same layer counts; " + "; ".join(parts) + ".")
    return text, checks


def _figure(rows: list[dict], teacher_label: str):
    from components.modular_charts import tradeoff_figure

    points = [dict(row, label=f"{row['encoder_layers']}/{row['decoder_layers']}") for row in rows]
    return tradeoff_figure(points, (("speedup", "validation_loss"), ("size_mib", "validation_loss")),
                           title=f"SFT vs KD vs Modular Transformers on one teacher ({teacher_label})", pareto=True)


def _write_outputs(payload: dict, rows: list[dict], settings: Settings, figure) -> dict:
    """methods.json (common.write_result), methods.md, methods.html and (when kaleido works) methods.png."""
    paths = {"json": str(common.write_result(NAME, payload))}
    results = common.RESULTS_DIR
    html = results / f"{NAME}.html"
    figure.write_html(str(html), include_plotlyjs="cdn", full_html=True)
    paths["html"] = str(html)
    if settings.png:
        try:
            figure.write_image(str(results / f"{NAME}.png"), width=1200, height=560, scale=1)
            paths["png"] = str(results / f"{NAME}.png")
        except Exception as error:  # kaleido missing or no browser: the PNG is optional
            _log(f"no PNG ({type(error).__name__}: {str(error).splitlines()[0][:120]})")
    teacher = payload["teacher"]
    where = (f"the T5-efficient `{teacher.get('preset')}` preset fine-tuned here for {teacher.get('epochs', 0):.3g} "
             f"epoch(s) ({teacher.get('steps')} steps, lr {teacher.get('learning_rate')}) on "
             f"{teacher.get('train_pairs')} XSum pairs" if teacher.get("trained_here") and teacher.get("preset")
             else "the committed offline teacher `assets/models/debian-teacher` (trained from random initialisation "
             "by `python -m compression teacher`; its model card has the command and scores)" if teacher.get("bundled")
             else f"`{teacher['source']}`")
    s = payload["settings"]
    pseudo = payload["pseudo_labels"]
    mode = "quick mode: a pipeline check, the numbers mean nothing" if settings.quick else "full run"
    lines = [
        f"# SFT vs KD vs pseudo-label KD vs Modular Transformers ({mode})",
        "",
        f"Data: {payload['data']}. Teacher: {where}; {payload['teacher_layers']} encoder/decoder layers. Students "
        "trained " + (f"{s['max_steps']} optimizer step(s)" if s["max_steps"] else f"{s['epochs']:g} epoch(s)")
        + f" each on {payload['train_pairs']} pairs (batch {s['batch_size']}, lr {s['learning_rate']:g}, sources "
        f"{s['max_source_length']} tokens, summaries {s['max_target_length']}); pseudo-label KD on the teacher's "
        f"greedy summaries of the same documents ({pseudo['pseudo']} kept, {pseudo['dropped_empty']} empty "
        f"dropped; generating them took {pseudo['seconds']:.0f} s"
        + (", read from the cache this time" if pseudo["cached"] else "") + ", not counted in `train s`); "
        f"the modules trained **once** for {payload['modular']['epochs']:g} epoch(s), the total of the SFT students "
        "they stand in for "
        f"(granularities {', '.join(map(str, s['granularities']))}; {payload['modular']['train_seconds']:.0f} s; "
        "validation loss with every span replaced by its modules: "
        + (", ".join(f"{g} {loss:.3f}" for g, loss in payload["modular"]["eval_loss_by_granularity"].items())
           or "not evaluated") + " nats/token) "
        "and every modular row is assembled from them without retraining. Scored on "
        f"{payload['eval_pairs']} validation pairs (greedy, {s['max_new_tokens']} new tokens at most); speedup: "
        f"greedy, batch 1, {s['latency_tokens']} forced new tokens, median of {s['latency_repeats']} teacher/student "
        f"alternation(s) on {s['latency_docs']} article(s). Machine: {payload['machine_note']}.",
        "",
        common.markdown_table(_table_rows(rows), COLUMNS),
        "",
        "R-L is sentence-level ROUGE-L, R-Lsum summary-level (the one distilbart's tables report); agree R-L: "
        "ROUGE-L F1 of the model's summaries against the teacher's (100 = writes what the teacher writes).",
        "",
        payload["verdict"],
        "",
        f"Chart: [{NAME}.html]({NAME}.html)" + (f", ![chart]({NAME}.png)" if "png" in paths else ""),
        "",
    ]
    md = results / f"{NAME}.md"
    md.write_text("\n".join(lines), encoding="utf-8")
    paths["md"] = str(md)
    return paths


def benchmark(settings: Settings) -> dict:
    """Run the comparison described in the module docstring; returns the JSON payload.

    Raises:
        benchmarks.common.SharedDataMissing: the default data or tokenizer files are absent.
        compression.errors.CompressionError: bad settings or a teacher folder that cannot be loaded.
    """
    from compression.config import PseudoArgs
    from compression.data import tokenize_pairs
    from compression.distill import KDArgs, distill
    from compression.layers import get_layer_stacks, shrink
    from compression.modular import ModularArgs, assemble, train_modules
    from compression.pseudo_labels import pseudo_label_pairs, pseudo_labels
    from compression.train import finetune

    started = time.perf_counter()
    inputs = _data_and_teacher(settings)
    pairs, teacher, tokenizer, train, validation, prefix = (inputs.pairs, inputs.teacher, inputs.tokenizer,
                                                            inputs.train, inputs.validation, inputs.prefix)
    evaluate = _Evaluator(settings, teacher, tokenizer, *inputs.validation_texts, prefix)
    n_enc, n_dec = (len(stack) for stack in get_layer_stacks(teacher))
    shapes = student_shapes(n_enc, n_dec)
    work = Path(settings.cache_dir) / "work" / ("quick" if settings.quick else "full")
    args = _train_args(settings, epochs=settings.epochs, learning_rate=settings.learning_rate,
                       max_steps=settings.max_steps)

    _log(f"evaluating the teacher ({n_enc}/{n_dec}) on {len(validation)} validation pairs")
    rows = [_row("teacher", "teacher", teacher, evaluate(teacher, timed=False), None)]
    _log(f"pseudo-labels: the teacher summarizes the {len(pairs['train'])} training documents (cached)")
    pseudo_started = time.perf_counter()
    labels, pseudo_info = pseudo_labels(teacher, tokenizer, list(pairs["train"]["document"]), prefix=prefix,
                                        max_source_length=settings.max_source_length,
                                        max_new_tokens=settings.max_target_length, batch_size=32,
                                        cache_dir=Path(settings.cache_dir) / "pseudo-labels")
    pseudo_info["seconds"] = time.perf_counter() - pseudo_started
    pseudo_pairs, counts = pseudo_label_pairs(pairs["train"], labels, PseudoArgs())
    pseudo_info.update(counts)
    pseudo_train = tokenize_pairs(pseudo_pairs, tokenizer, prefix=prefix, max_source_length=settings.max_source_length,
                                  max_target_length=settings.max_target_length)
    how = "read from the cache" if pseudo_info["cached"] else f"generated in {pseudo_info['seconds']:.0f} s"
    _log(f"pseudo-labels: {counts['pseudo']} kept, {counts['dropped_empty']} empty dropped ({how})")
    for label, e, d in shapes:
        for method in TRAINED_METHODS:
            student = shrink(teacher, e, d, "spread")
            method_train = pseudo_train if method == "pseudo-labels" else train
            _log(f"{method} {e}/{d}: training on {len(method_train)} pairs")
            folder = _fresh(work / f"{method.lower()}-e{e}d{d}")
            if method == "KD":
                result = distill(student, teacher, tokenizer, train, validation, args, KDArgs(), folder,
                                 progress_bar=False)
            else:
                result = finetune(student, tokenizer, method_train, validation, args, folder, progress_bar=False)
            _log(f"{method} {e}/{d}: {result.steps} steps in {result.seconds:.0f} s; evaluating")
            rows.append(_row(method, label, student, evaluate(student), result.seconds,
                             kept={"encoder": student.config.shrink["encoder_layers_kept"],
                                   "decoder": student.config.shrink["decoder_layers_kept"]}))

    modular_args = ModularArgs(granularities=settings.granularities)
    modular_budget = _modular_budget(settings, len(shapes))
    _log(f"modular: training modules (granularities {settings.granularities}) once on {len(train)} pairs for "
         f"{modular_budget.epochs:g} epoch(s), the budget of the {len(shapes)} SFT students they stand in for")
    modular_folder = _fresh(work / "modular")
    modular = train_modules(teacher, tokenizer, train, validation, modular_budget, modular_args, modular_folder,
                            progress_bar=False)
    modular_train = modular.info["training"]
    modular_granularity_loss = _last_granularity_losses(modular_folder / "loss_log.jsonl")
    total = n_enc + n_dec
    for label, e, d in shapes:
        ratio = total / (e + d)
        models = {priority: assemble(modular, ratio, priority) for priority in ("size", "speed")}
        plans = {priority: [span["module"] for span in m.config.modular["replaced"]] for priority, m in models.items()}
        chosen = {"both": models["size"]} if plans["size"] == plans["speed"] else models
        for priority, model in chosen.items():
            record = model.config.modular
            _log(f"{MODULAR_LABELS[priority]} at {ratio:.2f}x: {record['encoder_layers']}/{record['decoder_layers']} "
                 f"({', '.join(span['module'] for span in record['replaced'])}); evaluating")
            rows.append(_row(MODULAR_LABELS[priority], label, model, evaluate(model), None,
                             ratio=record["ratio"], replaced=[span["module"] for span in record["replaced"]]))
    verdict, checks = ordering_verdict(rows)
    machine = common.machine_info()
    payload = {
        "mode": "quick" if settings.quick else "full",
        "teacher": inputs.teacher_info,
        "teacher_layers": f"{n_enc}/{n_dec}",
        "data": (f"`{settings.train_file}` / `{settings.validation_file}`" if settings.train_file
                 else f"the `{settings.dataset}` preset"),
        "pseudo_labels": pseudo_info,
        "train_pairs": len(train),
        "eval_pairs": len(validation),
        "shapes": [{"label": label, "encoder_layers": e, "decoder_layers": d, "ratio": total / (e + d)}
                   for label, e, d in shapes],
        "settings": {key: (str(value) if isinstance(value, Path) else value)
                     for key, value in dataclasses.asdict(settings).items()},
        "modular": {"granularities": list(settings.granularities), "train_seconds": modular_train["seconds"],
                    "epochs": modular_budget.epochs, "max_steps": modular_budget.max_steps,
                    "steps": modular_train["steps"], "eval_loss": modular_train["eval_loss"],
                    "eval_loss_by_granularity": modular_granularity_loss},
        "rows": rows,
        "verdict": verdict,
        "checks": checks,
        "machine_note": common.machine_note(machine),
        "seconds": time.perf_counter() - started,
    }
    print(table(payload))
    payload["files"] = _write_outputs(payload, rows, settings, _figure(rows, Path(inputs.teacher_info["source"]).name))
    _log(f"done in {payload['seconds']:.0f} s: {payload['files']}")
    return payload


#: Module-training objectives compared by :func:`modular_ablation`: (alpha_ce, alpha_hidden, alpha_attention).
ABLATIONS = {"CE + hidden + attention (default)": (1.0, 1.0, 1.0), "CE + hidden": (1.0, 1.0, 0.0),
             "CE only": (1.0, 0.0, 0.0)}


def modular_ablation(settings: Settings, variants: dict[str, tuple[float, float, float]] | None = None) -> dict:
    """Why the modular students trail SFT: the same module training (same data, budget and seed as
    :func:`benchmark`'s) with the distillation terms of the objective switched off in turn
    (:data:`ABLATIONS`; Zhou, Le Bras & Choi 2023 train with CE + hidden-state + attention
    distillation), each scored by the validation loss (nats/token) of every granularity's full
    replacement and of the size-first and speed-first students :func:`benchmark` assembles.
    No ROUGE, no timing. Writes ``methods-modular-ablation.{json,md}``; returns the payload.

    Raises:
        compression.errors.CompressionError: as :func:`benchmark`.
    """
    from compression.evaluate import compute_validation_loss
    from compression.files import atomic_write_text
    from compression.layers import get_layer_stacks
    from compression.modular import ModularArgs, assemble, train_modules

    started = time.perf_counter()
    variants = variants or ABLATIONS
    inputs = _data_and_teacher(settings)
    teacher, tokenizer, train, validation, prefix = (inputs.teacher, inputs.tokenizer, inputs.train,
                                                     inputs.validation, inputs.prefix)
    documents, references = inputs.validation_texts

    def loss(model) -> float:
        return compute_validation_loss(model, tokenizer, documents, references, prefix=prefix, batch_size=32,
                                       max_source_length=settings.max_source_length,
                                       max_target_length=settings.max_target_length)

    n_enc, n_dec = (len(stack) for stack in get_layer_stacks(teacher))
    shapes = student_shapes(n_enc, n_dec)
    budget = _modular_budget(settings, len(shapes))
    rows = []
    for name, (ce, hidden, attention) in variants.items():
        _log(f"ablation {name}: training modules for {budget.epochs:g} epoch(s)")
        folder = _fresh(Path(settings.cache_dir) / "work" / "ablation" / name.split(" (")[0].replace(" + ", "-"))
        modular = train_modules(teacher, tokenizer, train, validation, budget,
                                ModularArgs(granularities=settings.granularities, alpha_ce=ce, alpha_hidden=hidden,
                                            alpha_attention=attention), folder, progress_bar=False)
        row = {"objective": name, "alpha_ce": ce, "alpha_hidden": hidden, "alpha_attention": attention,
               "train_seconds": modular.info["training"]["seconds"],
               **{f"full {g}": value for g, value in _last_granularity_losses(folder / "loss_log.jsonl").items()}}
        for _, e, d in shapes:
            ratio = (n_enc + n_dec) / (e + d)
            for priority in ("size", "speed"):
                model = assemble(modular, ratio, priority)
                record = model.config.modular
                row[f"{priority}-first {ratio:.2f}x ({record['encoder_layers']}/{record['decoder_layers']})"] = (
                    loss(model))
        _log(f"ablation {name}: {row}")
        rows.append(row)
    columns = list(rows[0])
    payload = {"teacher_layers": f"{n_enc}/{n_dec}", "train_pairs": len(train), "eval_pairs": len(documents),
               "epochs": budget.epochs, "max_steps": budget.max_steps, "rows": rows,
               "seconds": time.perf_counter() - started}
    common.write_result(f"{NAME}-modular-ablation", payload)
    text = common.format_table(rows, columns)
    print(text)
    atomic_write_text(
        common.RESULTS_DIR / f"{NAME}-modular-ablation.md",
        f"# Modular Transformers: which distillation terms help ({'quick' if settings.quick else 'full'} run)\n\n"
        f"Validation loss (nats/token) on {len(documents)} validation pairs; modules trained once per objective "
        f"on {len(train)} pairs for {budget.epochs:g} epoch(s) (lr {settings.learning_rate:g}, batch "
        f"{settings.batch_size}). `full gN`: every span replaced by its N-layer modules; the other columns: the "
        "students assembled without retraining.\n\n" + common.markdown_table(rows, columns) + "\n")
    return payload


def table(payload: dict) -> str:
    """The printed table (one line per model) and the ordering verdict, for the runner."""
    return common.format_table(_table_rows(payload["rows"]), COLUMNS) + "\n\n" + payload["verdict"]


def headline(payload: dict) -> list[dict]:
    """Runner summary rows: per compared shape, KD's and the modular students' validation loss
    against SFT's, and whether the paper's ordering modular ≥ KD ≥ SFT holds there."""
    rows = []
    for check in payload["checks"]:
        losses = {method: loss for method, loss, _ in check["ranking"]}
        others = ", ".join(f"{method} {loss:.3f}" for method, loss in losses.items() if method != "SFT")
        rows.append({"benchmark": f"SFT vs KD vs modular, {check['encoder_layers']}/{check['decoder_layers']} "
                                  f"({check['shape']})",
                     "measure": "validation loss (nats/token)", "result": others,
                     "baseline": f"SFT {losses['SFT']:.3f}",
                     "ratio": "ordering holds" if check["holds"] else "ordering does not hold"})
    return rows


def run(quick: bool = False) -> dict:
    """The runner's entry point: :func:`benchmark` with :func:`quick_settings` or :func:`full_settings`."""
    return benchmark(quick_settings() if quick else full_settings())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.methods", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a couple of minutes: proves the pipeline only")
    parser.add_argument("--dataset", choices=sorted(DATASET_DEFAULTS), default="debian-descriptions",
                        help="data preset (default debian-descriptions: the committed offline teacher's data)")
    parser.add_argument("--teacher", help="teacher checkpoint folder (default: the committed offline teacher for "
                                          "debian-descriptions, the cached fine-tuned tiny preset for xsum-sample)")
    parser.add_argument("--teacher-epochs", type=float,
                        help="epochs of the teacher's fine-tuning when it is not cached yet (default 3)")
    parser.add_argument("--epochs", type=float, help="epochs per student and for the module training (default 1)")
    parser.add_argument("--learning-rate", type=float,
                        help="peak AdamW learning rate of the students and the module training (default 3e-4)")
    parser.add_argument("--max-source-length", type=int,
                        help="source tokens (default: 128 Debian, 256 XSum; 128 quick)")
    parser.add_argument("--max-train-samples", type=int, help="training pairs (default: 8,000 Debian, all XSum)")
    parser.add_argument("--max-eval-samples", type=int, help="validation pairs (default: 500 Debian, 100 XSum)")
    parser.add_argument("--granularities", help="module granularities, e.g. 2,4 (default) or 2,3,4")
    parser.add_argument("--no-png", action="store_true", help="skip the PNG (needs kaleido and a Chromium)")
    parser.add_argument("--modular-ablation", action="store_true",
                        help="instead: module training with each distillation term switched off in turn")
    args = parser.parse_args(argv)
    overrides = {"teacher": args.teacher, "teacher_epochs": args.teacher_epochs, "epochs": args.epochs,
                 "learning_rate": args.learning_rate, "max_source_length": args.max_source_length, "max_train_samples": args.max_train_samples,
                 "max_eval_samples": args.max_eval_samples, "dataset": args.dataset}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if args.granularities:
        overrides["granularities"] = tuple(int(g) for g in args.granularities.split(","))
    if args.no_png:
        overrides["png"] = False
    settings = quick_settings(**overrides) if args.quick else full_settings(**overrides)
    from compression.errors import CompressionError

    try:
        modular_ablation(settings) if args.modular_ablation else benchmark(settings)
    except (CompressionError, common.SharedDataMissing) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
