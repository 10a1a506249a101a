"""Fine-tune throughput: ``compression.train.finetune`` against a plain ``Seq2SeqTrainer``, and the
distance to this machine's GEMM limit (issue sections 1 and 2).

Same model (T5-efficient-tiny shape, randomly initialised with seed 0, real T5 vocabulary), same
data (XSum pairs of ``../shared/data/xsum/train.jsonl`` tokenized once with
``compression.data.tokenize_pairs``: ``"summarize: "`` prefix, source 512 / target 64 tokens), same
batch size (8), learning rate (3e-4), seed (42) and one epoch for every variant:

* ``trainer_default``: ``Seq2SeqTrainer`` with its defaults otherwise (random batches, fp32, the
  default optimizer) and ``DataCollatorForSeq2Seq``, as in transformers' ``run_summarization.py``;
* ``trainer_grouped``: the same with ``train_sampling_strategy="group_by_length"``;
* ``project``: ``compression.train.finetune`` with ``TrainArgs()`` defaults (what the CLI and the
  dashboard run), its validation schedule included in the timed seconds;
* ``project_fp32`` (full mode only): the same with ``bf16="no"``, to show what bf16 autocast buys
  and that it costs no loss;
* ``project_fp32_torch_masks``: ``bf16="no"`` and ``dropout_masks="torch"`` (PyTorch's own dropout
  masks instead of :mod:`compression.fast_dropout`'s), to show what the fast masks buy;
* ``project_fp32_system_allocator``: ``bf16="no"`` and ``allocator="system"`` (glibc's own ``malloc``
  settings instead of :mod:`compression.cpu_allocator`'s), to show what holding freed memory buys;
* ``project_fp32_full_logits``: ``bf16="no"`` and ``lm_head_loss="full"`` (the cross-entropy from the
  model's full logits instead of :mod:`compression.fused_cross_entropy`'s chunked head over the real
  target tokens), to show what the fused loss buys.

``python -m benchmarks.finetune --fp32 [--pair] [--quick] [--rounds N]`` compares what a CPU **without
native bf16** runs, on any CPU: ``trainer_default``, ``project_fp32`` (the project's defaults there),
``project_fp32_torch_masks``, ``project_fp32_system_allocator`` and ``project_fp32_full_logits``, and writes
``results/finetune-fp32.{json,md}`` (``-quick`` with ``--quick``); ``--pair`` runs only the first two,
the headline ratio, so more rounds fit the same time (``results/finetune-fp32-pair.*``). On a CPU that has native bf16
this runs the same fp32 code an AVX2-only CPU runs, not at its speed: the README names the machine
of every row.

Each run is a fresh process (:func:`benchmarks.common.run_child`), one at a time, alternating A, B, C,
A, B, C ... with the order rotated every round; it is timed from building its Trainer to the end of
the epoch. Each run reports real tokens/s (source + target tokens that are not padding, per second),
the fraction of processed (padded) tokens that are padding, the CPU seconds, the peak RSS of its
process during training (peak CUDA memory on a GPU), the mean training loss of the epoch and the
validation loss afterwards (fp32, token-weighted, ``compression.train.evaluate_loss``, the same
function for every variant). The project's in-training validations (its ``evaluation_loop``) are
timed apart as ``evaluation_seconds``: ``Seq2SeqTrainer``'s defaults run none, so the table also
gives the project's training-alone tokens/s against the defaults (``training_only_vs_default``).

Distance to the limit: ``torch.matmul`` of two 2048x2048 matrices in fp32 and bf16 (FLOPs = 2 n^3)
gives the GEMM peak. Training FLOPs are counted exactly with ``torch.utils.flop_counter.FlopCounterMode``
(every matmul of forward and backward, i.e. ``mm``/``bmm``/``addmm``/attention; elementwise work not
counted): the count of one batch is a polynomial a*S + b*S^2 + c*T + d*S*T + e*T^2 times the batch
size (S/T = padded source/target length), fitted exactly on a few counted shapes and summed over
the batches each run actually processed. The count includes the LM head's matmuls on padded target
positions, which the fused loss (:mod:`compression.fused_cross_entropy`, the project's fp32 default)
skips, so its FLOP/s read somewhat high (up to ~5 % at this benchmark's 28 % target padding).
"""

from __future__ import annotations

import copy
import gc
import statistics
import tempfile
import time
from pathlib import Path

import torch

from . import common

NAME = "finetune"
SOURCE_LENGTH, TARGET_LENGTH, BATCH_SIZE, LEARNING_RATE, SEED = 512, 64, 8, 3e-4, 42
VARIANTS = ("trainer_default", "trainer_grouped", "project", "project_fp32", "project_fp32_torch_masks",
            "project_fp32_system_allocator", "project_fp32_full_logits")
#: Variants of each mode: quick, full (the fp32 ablation added) and ``--fp32`` (what a CPU without bf16 runs).
QUICK_VARIANTS, FULL_VARIANTS = VARIANTS[:3], VARIANTS[:4]
FP32_VARIANTS = ("trainer_default", "project_fp32", "project_fp32_torch_masks", "project_fp32_system_allocator",
                 "project_fp32_full_logits")
GEMM_SIZE = 2048


# ----------------------------------------------------------------------------------------- limit


def gemm_gflops(dtype: torch.dtype, n: int = GEMM_SIZE, repeats: int = 5) -> dict:
    """GFLOP/s of ``torch.matmul`` of two ``n x n`` matrices of ``dtype`` (2 n^3 FLOPs per product).

    Returns ``{"peak": best, "median": median}`` over ``repeats`` timed products after one warm-up,
    or ``None`` values when the dtype is not supported here.
    """
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        torch.matmul(a, b)
    except RuntimeError:
        return {"peak": None, "median": None}
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.matmul(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    flops = 2 * n**3
    return {"peak": flops / min(times) / 1e9, "median": flops / statistics.median(times) / 1e9}


def count_step_flops(model: torch.nn.Module, source: int, target: int, batch: int = 1) -> int:
    """Exact matmul FLOPs of one training step (forward + backward) on a ``[batch, source]`` /
    ``[batch, target]`` batch, counted with ``FlopCounterMode`` (the model is deep-copied)."""
    from torch.utils.flop_counter import FlopCounterMode

    from compression.train import token_loss

    model = copy.deepcopy(model).train()
    ids = torch.randint(2, 100, (batch, source))
    labels = torch.randint(2, 100, (batch, target))
    decoder_ids = model._shift_right(labels) if hasattr(model, "_shift_right") else labels
    with FlopCounterMode(display=False) as counter:
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), decoder_input_ids=decoder_ids)
        token_loss(out, labels, int(labels.numel())).backward()
    return int(counter.get_total_flops())


class FlopModel:
    """Matmul FLOPs of a training step as an exact polynomial in the padded lengths.

    ``flops(B, S, T) = B * (a*S + b*S^2 + c*T + d*S*T + e*T^2)``: linear layers cost ``S`` (encoder) or
    ``T`` (decoder, LM head), encoder self-attention ``S^2``, cross-attention ``S*T``, decoder
    self-attention ``T^2``. Fitted on counted shapes; ``max_error`` is the relative error on a held-out
    counted shape (0 when the polynomial is exact).
    """

    SHAPES = ((16, 8), (32, 8), (16, 16), (48, 8), (32, 24), (64, 16))

    def __init__(self, model: torch.nn.Module) -> None:
        rows, counts = [], []
        for s, t in self.SHAPES:
            rows.append(self._terms(s, t))
            counts.append(float(count_step_flops(model, s, t)))
        solution = torch.linalg.lstsq(torch.tensor(rows, dtype=torch.float64),
                                      torch.tensor(counts, dtype=torch.float64)[:, None]).solution
        self.coefficients = [float(x) for x in solution[:, 0]]
        check_s, check_t = 96, 20
        counted = count_step_flops(model, check_s, check_t, batch=2)
        self.max_error = abs(self.flops(2, check_s, check_t) - counted) / counted

    @staticmethod
    def _terms(s: int, t: int) -> list[float]:
        return [s, s * s, t, s * t, t * t]

    def flops(self, batch: int, source: int, target: int) -> float:
        """Training FLOPs of one ``[batch, source]``/``[batch, target]`` step."""
        return batch * sum(c * x for c, x in zip(self.coefficients, self._terms(source, target)))


# ------------------------------------------------------------------------------------ variants


class CountingCollator:
    """Wraps a collator; records shape and real/padded token counts of every *training* batch.

    Validation batches (recognised by their rows' ``input_ids``) are not counted.
    """

    def __init__(self, collator, eval_rows: set[tuple[int, ...]] | None = None) -> None:
        self.collator = collator
        self.eval_rows = eval_rows or set()
        self.shapes: list[tuple[int, int, int]] = []
        self.real = 0
        self.processed = 0

    def __call__(self, features):
        batch = self.collator(features)
        if self.eval_rows and tuple(features[0]["input_ids"]) in self.eval_rows:
            return batch
        from compression.data import count_tokens

        self.shapes.append((int(batch["input_ids"].shape[0]), int(batch["input_ids"].shape[1]),
                            int(batch["labels"].shape[1])))
        self.real += int(count_tokens(batch))
        self.processed += int(batch["input_ids"].numel() + batch["labels"].numel())
        return batch


def _memory_reset() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    common.reset_peak_rss()


def _memory_peak() -> dict:
    out = {"peak_rss_mib": common.peak_rss_mib()}
    if torch.cuda.is_available():
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _plain_trainer(model, tokenizer, train, output_dir: Path, grouped: bool) -> tuple[float, CountingCollator]:
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from compression.data import make_collator

    args = Seq2SeqTrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=BATCH_SIZE, num_train_epochs=1,
        learning_rate=LEARNING_RATE, seed=SEED, report_to=[], save_strategy="no", disable_tqdm=True,
        train_sampling_strategy="group_by_length" if grouped else "random",
    )
    collator = CountingCollator(make_collator(tokenizer, model))
    trainer = Seq2SeqTrainer(model=model, args=args, data_collator=collator, train_dataset=train,
                             processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)  # it prints the end-of-training dict to stdout
    output = trainer.train()
    return float(output.training_loss), collator


def _project(model, tokenizer, train, validation, output_dir: Path, train_args):
    import compression.train as train_module

    eval_rows = {tuple(ids) for ids in validation["input_ids"]} if validation is not None else set()
    original = train_module.make_collator
    holder: list[CountingCollator] = []

    def counting(tok, mdl=None):
        holder.append(CountingCollator(original(tok, mdl), eval_rows))
        return holder[-1]

    loop = train_module.CompressionTrainer.evaluation_loop
    evaluation_seconds = [0.0]

    def timed_loop(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return loop(self, *args, **kwargs)
        finally:
            evaluation_seconds[0] += time.perf_counter() - start

    train_module.make_collator = counting
    train_module.CompressionTrainer.evaluation_loop = timed_loop
    try:
        result = train_module.finetune(model, tokenizer, train, validation, train_args, output_dir,
                                       progress_bar=False)
    finally:
        train_module.make_collator = original
        train_module.CompressionTrainer.evaluation_loop = loop
    return result, holder[0], evaluation_seconds[0]


def child_main(variant: str, n_train: int | None, n_validation: int | None) -> None:
    """One variant in its own process, for :func:`benchmarks.common.run_child`: load the data and the
    model (untimed), one epoch (timed, wall and CPU seconds), then the fp32 validation loss and the
    counts, reported as JSON."""
    import warnings

    from compression.config import TrainArgs
    from compression.train import evaluate_loss

    warnings.simplefilter("ignore")
    tokenizer = common.t5_tokenizer()
    train, validation = load_data(n_train, n_validation, tokenizer)
    model, _ = common.tiny_teacher()
    _memory_reset()
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    extra = {}
    with tempfile.TemporaryDirectory(prefix=f"bench-{variant}-") as tmp:
        if variant in ("trainer_default", "trainer_grouped"):
            train_loss, counter = _plain_trainer(model, tokenizer, train, Path(tmp), variant == "trainer_grouped")
        else:
            train_args = {"project": TrainArgs(), "project_fp32": TrainArgs(bf16="no"),
                          "project_fp32_torch_masks": TrainArgs(bf16="no", dropout_masks="torch"),
                          "project_fp32_system_allocator": TrainArgs(bf16="no", allocator="system"),
                          "project_fp32_full_logits": TrainArgs(bf16="no", lm_head_loss="full")}[variant]
            result, counter, evaluation_seconds = _project(model, tokenizer, train, validation, Path(tmp), train_args)
            train_loss = result.train_loss
            extra = {"in_training_eval_loss": result.eval_loss, "evaluation_seconds": evaluation_seconds,
                     "evaluations": sum(1 for r in result.log_history if r["kind"] == "eval"),
                     "reported_padding_fraction": result.padding_fraction}
    seconds, cpu_seconds = time.perf_counter() - wall_start, time.process_time() - cpu_start
    memory = _memory_peak()
    model.float().eval()
    validation_loss = evaluate_loss(model, tokenizer, validation, batch_size=16)
    common.report({"variant": variant, "train_loss": train_loss, "validation_loss": validation_loss,
                   "seconds": seconds, "cpu_seconds": cpu_seconds,
                   "real_tokens": counter.real, "processed_tokens": counter.processed,
                   "shapes": counter.shapes, **memory, **extra})


def run_round(variants: list[str], n_train: int | None, n_validation: int | None,
              flop_model: FlopModel) -> list[dict]:
    """One epoch of every variant in ``variants`` order, each in a fresh process; one row per variant."""
    import sys

    argv = [sys.executable, "-m", "benchmarks.finetune", "--train", str(n_train or 0),
            "--validation", str(n_validation or 0)]
    rows = []
    for variant in variants:
        result = common.run_child(argv + ["--variant", variant], env=common.child_env())
        flops = sum(flop_model.flops(*shape) for shape in result.pop("shapes"))
        seconds = result["seconds"]
        training_seconds = seconds - result.get("evaluation_seconds", 0.0)
        rows.append({
            "variant": variant,
            "real_tokens_per_s": result["real_tokens"] / seconds,
            "training_seconds": training_seconds,
            "training_tokens_per_s": result["real_tokens"] / training_seconds,
            "evaluation_seconds": result.get("evaluation_seconds", 0.0),
            "padding_fraction": 1 - result["real_tokens"] / result["processed_tokens"],
            "gflops_per_s": flops / seconds / 1e9,
            "train_gflop": flops / 1e9,
            **result,
        })
    return rows


def load_data(n_train: int | None, n_validation: int | None, tokenizer):
    """Tokenized XSum train/validation sets (``compression.data``), T5 prefix, 512/64 tokens."""
    import warnings

    from compression.config import DataArgs
    from compression.data import load_pairs, tokenize_pairs

    train_file, validation_file = common.xsum_files()
    args = DataArgs(train_file=str(train_file), validation_file=str(validation_file),
                    max_train_samples=n_train, max_eval_samples=n_validation)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the one blank XSum row
        pairs = load_pairs(args)
    lengths = dict(prefix="summarize: ", max_source_length=SOURCE_LENGTH, max_target_length=TARGET_LENGTH)
    return tokenize_pairs(pairs["train"], tokenizer, **lengths), tokenize_pairs(pairs["validation"], tokenizer, **lengths)


def _summary(rows: list[dict], variants: tuple[str, ...]) -> list[dict]:
    by = {v: [r for r in rows if r["variant"] == v] for v in variants}
    out = []
    for v in variants:
        rs = by[v]
        if not rs:
            continue
        med = {key: statistics.median([r[key] for r in rs if r.get(key) is not None] or [float("nan")])
               for key in ("seconds", "cpu_seconds", "real_tokens_per_s", "padding_fraction", "train_loss",
                           "validation_loss", "gflops_per_s", "peak_rss_mib", "evaluation_seconds")}
        out.append({"variant": v, "runs": len(rs), **med})
    base = {v: by[v] for v in variants}
    for row in out:
        for ref in ("trainer_default", "trainer_grouped"):
            if base.get(ref) and row["variant"] != ref:
                ratios = [r["real_tokens_per_s"] / b["real_tokens_per_s"] for r, b in zip(base[row["variant"]], base[ref])]
                row[f"speedup_vs_{ref.split('_')[1]}"] = statistics.median(ratios)
                row[f"speedup_vs_{ref.split('_')[1]}_range"] = [min(ratios), max(ratios)]
        if base.get("trainer_default") and row["variant"].startswith("project"):
            ratios = [r["training_tokens_per_s"] / b["real_tokens_per_s"]
                      for r, b in zip(base[row["variant"]], base["trainer_default"])]
            row["training_only_vs_default"] = statistics.median(ratios)
            row["training_only_vs_default_range"] = [min(ratios), max(ratios)]
    return out


def run(quick: bool, *, variants: tuple[str, ...] | None = None, repeats: int | None = None,
        name: str = NAME, bf16_peak: bool = True) -> dict:
    """Run the comparison (quick: 168 train / 24 validation pairs, 1 round, :data:`QUICK_VARIANTS`;
    full: 699 / 100, 3 rounds, :data:`FULL_VARIANTS`; ``variants`` and ``repeats`` override), print
    the tables, write ``results/<name>.json`` (and ``.md``) and return the payload. ``bf16_peak=False``
    skips the bf16 GEMM peak (``--fp32``: no variant uses bf16, and without native bf16 the emulated
    2048^3 products take minutes)."""
    from compression.config import TrainArgs
    from compression.train import bf16_enabled, resolve_device

    # Quick: a subset with the full set's 7:1 train:validation ratio (699:100), so that the in-training
    # validation costs the same share of the epoch.
    n_train, n_validation, default_repeats = (168, 24, 1) if quick else (None, None, 3)
    repeats = repeats or default_repeats
    tokenizer = common.t5_tokenizer()
    train, validation = load_data(n_train, n_validation, tokenizer)  # also fills the datasets cache
    model, _ = common.tiny_teacher()
    flop_model = FlopModel(model)
    del model

    def peaks() -> dict:
        return {"fp32": gemm_gflops(torch.float32),
                "bf16": gemm_gflops(torch.bfloat16) if bf16_peak else {"peak": None, "median": None}}

    gemm = peaks()
    rows = []
    variants = variants or (QUICK_VARIANTS if quick else FULL_VARIANTS)
    for round_index in range(repeats):
        order = common.rotated(list(variants), round_index)
        for row in run_round(order, n_train, n_validation, flop_model):
            row["round"] = round_index
            rows.append(row)
            print(f"[finetune] round {round_index + 1}/{repeats} {row['variant']}: {row['seconds']:.1f} s, "
                  f"{row['real_tokens_per_s']:,.0f} real tokens/s, padding {row['padding_fraction']:.1%}, "
                  f"train loss {row['train_loss']:.3f}, validation loss {row['validation_loss']:.3f}", flush=True)
    gemm_after = peaks()
    summary = _summary(rows, variants)
    peak = {k: max(x for x in (gemm[k]["peak"], gemm_after[k]["peak"]) if x is not None)
            if gemm[k]["peak"] is not None else None for k in gemm}
    for row in summary:
        row["fraction_of_fp32_peak"] = row["gflops_per_s"] / peak["fp32"] if peak["fp32"] else None
        row["fraction_of_bf16_peak"] = row["gflops_per_s"] / peak["bf16"] if peak["bf16"] else None

    device = resolve_device("auto")
    payload = {
        "quick": quick,
        "settings": {"model": "T5-efficient-tiny shape, random init (seed 0), T5 vocabulary",
                     "train_pairs": len(train), "validation_pairs": len(validation),
                     "max_source_length": SOURCE_LENGTH, "max_target_length": TARGET_LENGTH,
                     "batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE, "seed": SEED, "epochs": 1,
                     "rounds": repeats, "project_defaults": TrainArgs().__dict__,
                     "project_bf16": bf16_enabled(TrainArgs(), device), "device": str(device),
                     "timing": "one fresh process per run, one at a time; order rotated every round"},
        "gemm_gflops": {"before": gemm, "after": gemm_after, "peak": peak, "size": GEMM_SIZE},
        "flop_formula": ("exact matmul FLOPs (forward+backward) from torch.utils.flop_counter.FlopCounterMode, "
                         "per batch B*(a*S + b*S^2 + c*T + d*S*T + e*T^2) over padded lengths S, T"),
        "flop_coefficients": flop_model.coefficients,
        "flop_fit_relative_error": flop_model.max_error,
        "summary": summary,
        "runs": rows,
    }
    text = table(payload)
    print(text)
    common.write_result(name, payload, text)
    return payload


COLUMNS = ["variant", "seconds", "real_tokens_per_s", "padding_fraction", "train_loss", "validation_loss",
           "peak_rss_mib", "speedup_vs_default", "speedup_vs_grouped", "gflops_per_s",
           "fraction_of_fp32_peak", "fraction_of_bf16_peak"]


def table(payload: dict) -> str:
    """The printed table: one line per variant (medians over rounds) and the GEMM peaks."""
    rows = []
    for row in payload["summary"]:
        row = dict(row)
        for key in ("speedup_vs_default", "speedup_vs_grouped"):
            if row.get(key) is not None:
                lo, hi = row[f"{key}_range"]
                row[key] = f"{row[key]:.2f}x ({lo:.2f}-{hi:.2f})"
        row["padding_fraction"] = f"{row['padding_fraction']:.1%}"
        rows.append(row)
    peak = payload["gemm_gflops"]["peak"]
    lines = [f"Fine-tune throughput ({payload['settings']['train_pairs']} pairs, batch {BATCH_SIZE}, "
             f"{SOURCE_LENGTH}/{TARGET_LENGTH} tokens, {payload['settings']['rounds']} round(s); medians)",
             common.format_table(rows, COLUMNS),
             f"GEMM peak at {GEMM_SIZE}^3: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 "
             + (f"{peak['bf16']:.0f}" if peak["bf16"] else "-") + " GFLOP/s; training FLOPs: "
             + payload["flop_formula"]]
    variants = {row["variant"] for row in payload["summary"]}
    for row in payload["summary"]:
        if row.get("training_only_vs_default") is not None:
            lo, hi = row["training_only_vs_default_range"]
            lines.append(f"{row['variant']}: {row['evaluation_seconds']:.1f} s of its {row['seconds']:.1f} s are its "
                         "in-training validations (Seq2SeqTrainer's defaults run none); training alone "
                         f"{row['training_only_vs_default']:.2f}x ({lo:.2f}-{hi:.2f}) the defaults' tokens/s")
    if {"project_fp32", "project_fp32_torch_masks"} <= variants:
        lines.append("fast dropout masks (compression.fast_dropout) against PyTorch's, both fp32: "
                     + _ratio_text(payload["runs"], "project_fp32", "project_fp32_torch_masks"))
    if {"project_fp32", "project_fp32_system_allocator"} <= variants:
        lines.append("freed memory held for reuse (compression.cpu_allocator) against glibc's defaults, both fp32: "
                     + _ratio_text(payload["runs"], "project_fp32", "project_fp32_system_allocator"))
    if {"project_fp32", "project_fp32_full_logits"} <= variants:
        lines.append("cross-entropy fused with the LM head (compression.fused_cross_entropy) against the full "
                     "logits, both fp32: " + _ratio_text(payload["runs"], "project_fp32", "project_fp32_full_logits"))
    return "\n".join(lines)


def headline(payload: dict) -> list[dict]:
    """Summary rows: tokens/s against both baselines, padding, validation loss, share of the GEMM peak."""
    rows = {row["variant"]: row for row in payload["summary"]}
    project, default, grouped = rows.get("project"), rows.get("trainer_default"), rows.get("trainer_grouped")
    if not (project and default and grouped):
        return []
    peak = payload["gemm_gflops"]["peak"]

    def ratio(key: str) -> str:
        lo, hi = project[f"{key}_range"]
        return f"{project[key]:.2f}x ({lo:.2f}-{hi:.2f})"

    n = payload["settings"]["train_pairs"]
    return [
        {"benchmark": f"Fine-tune, 1 epoch of {n} XSum pairs", "measure": "real tokens/s",
         "result": f"{project['real_tokens_per_s']:,.0f} (finetune defaults)",
         "baseline": f"{default['real_tokens_per_s']:,.0f} (Seq2SeqTrainer defaults)",
         "ratio": ratio("speedup_vs_default")},
        {"benchmark": f"Fine-tune, 1 epoch of {n} XSum pairs", "measure": "real tokens/s",
         "result": f"{project['real_tokens_per_s']:,.0f} (finetune defaults)",
         "baseline": f"{grouped['real_tokens_per_s']:,.0f} (Seq2SeqTrainer, group_by_length)",
         "ratio": ratio("speedup_vs_grouped")},
        {"benchmark": "Fine-tune", "measure": "padding share / validation loss (nats)",
         "result": f"{project['padding_fraction']:.1%} / {project['validation_loss']:.3f}",
         "baseline": f"{default['padding_fraction']:.1%} / {default['validation_loss']:.3f} (defaults)",
         "ratio": "-"},
        {"benchmark": "Fine-tune vs GEMM limit", "measure": "matmul GFLOP/s",
         "result": f"{project['gflops_per_s']:.0f}",
         "baseline": f"GEMM 2048^3: fp32 {peak['fp32']:.0f}, bf16 " + (f"{peak['bf16']:.0f}" if peak["bf16"] else "-"),
         "ratio": f"{project['fraction_of_fp32_peak']:.0%} of fp32, "
                  + (f"{project['fraction_of_bf16_peak']:.0%} of bf16" if project["fraction_of_bf16_peak"] else "-")},
    ] + ([{
        "benchmark": "Fine-tune: bf16 autocast vs fp32 (same finetune defaults)",
        "measure": "real tokens/s / validation loss",
        "result": f"{project['real_tokens_per_s']:,.0f} / {project['validation_loss']:.3f} (bf16)",
        "baseline": f"{rows['project_fp32']['real_tokens_per_s']:,.0f} / {rows['project_fp32']['validation_loss']:.3f} (fp32)",
        "ratio": _ratio_text(payload["runs"], "project", "project_fp32")}] if "project_fp32" in rows else [])


def _ratio_text(runs: list[dict], a: str, b: str) -> str:
    """Median (min-max) over rounds of real tokens/s of variant ``a`` / variant ``b``."""
    by_round = {}
    for row in runs:
        by_round.setdefault(row["round"], {})[row["variant"]] = row["real_tokens_per_s"]
    ratios = [r[a] / r[b] for r in by_round.values() if a in r and b in r]
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})" if ratios else "-"


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="--fp32: what a CPU without native bf16 runs, against "
                                                 "Seq2SeqTrainer's defaults; --variant: one run, as a child of run_child")
    parser.add_argument("--fp32", action="store_true", help="trainer_default, project_fp32, project_fp32_torch_masks, "
                                                            "project_fp32_system_allocator and "
                                                            "project_fp32_full_logits; writes "
                                                            "results/finetune-fp32.*")
    parser.add_argument("--pair", action="store_true", help="with --fp32: only trainer_default and project_fp32 "
                                                            "(the headline ratio; more rounds in the same time); "
                                                            "writes results/finetune-fp32-pair.*")
    parser.add_argument("--quick", action="store_true", help="with --fp32: 168 pairs, 1 round")
    parser.add_argument("--rounds", type=int, help="with --fp32: rounds (default: 1 quick, 3 full)")
    parser.add_argument("--variant", choices=VARIANTS)
    parser.add_argument("--train", type=int, default=0, help="training pairs (0: all)")
    parser.add_argument("--validation", type=int, default=0, help="validation pairs (0: all)")
    cli = parser.parse_args()
    if cli.pair and not cli.fp32:
        parser.error("--pair goes with --fp32")
    if cli.fp32:
        name = "finetune-fp32" + ("-pair" if cli.pair else "") + ("-quick" if cli.quick else "")
        run(cli.quick, variants=FP32_VARIANTS[:2] if cli.pair else FP32_VARIANTS, repeats=cli.rounds, name=name,
            bf16_peak=False)
    elif cli.variant:
        child_main(cli.variant, cli.train or None, cli.validation or None)
    else:
        parser.error("give --fp32 or --variant")
