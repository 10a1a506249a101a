"""Size on disk and in memory of students at every precision, what the size options cost in
validation loss, and how fast the quantized models generate.

``python -m benchmarks.size [--quick] [--teacher DIR]``; part of ``python -m benchmarks``.

1. **Size** (t5-small shape, :data:`compression.load.PRESETS` ``"small"``, 6/6, d_model 512, the real
   32,128-piece T5 vocabulary; weights random - size does not depend on them). The fp32 base and
   its SFT students (quick: 3/3; full: 6/3, 3/3, 6/1) at fp32, fp16, bf16, bitsandbytes 8-bit and
   4-bit (NF4, double quantization) - each bitsandbytes mode with the weights it leaves unquantized
   (embedding = tied ``lm_head``, T5's ``wo``, norms) in float32 (plain bitsandbytes) and in bfloat16
   (``rest_dtype``, the default of :func:`compression.quantize.quantize`) - and with the vocabulary
   pruned to the ids XSum's 800 pairs use (:mod:`compression.vocab`), then with ``wo`` quantized
   too (``quantize_wo``: loads with :func:`compression.load.load_model`, not plain transformers). Columns: parameters, MiB on
   disk (``save_pretrained``: weights + config), % of the fp32 base's file, MiB in memory
   (``get_memory_footprint``). Target (the issue): 3/3 at 8-bit <= 20 % of the fp32 base, 4-bit
   <= 12 %.
2. **Cost in validation loss** of each choice, on a fine-tuned teacher (the ``tiny`` preset trained
   on the XSum train pairs; ``benchmarks/cache/teacher`` shared with ``benchmarks/methods.py``, or
   ``--teacher``): teacher-forced cross-entropy in nats per target token on the validation pairs
   (:func:`compression.evaluate.compute_validation_loss`); the teacher-forced top-1 agreement with
   the fp32 full-vocabulary model (share of target positions where both pick the same next token);
   and the share of greedy summaries (32 new tokens) identical to that model's. With a tiny teacher trained
   offline ROUGE is near 0, so these are the meaningful figures. Pruned rows: the loss is over the
   model's own, smaller vocabulary (softmax renormalised over the kept ids, which lowers it by
   itself), so each row's delta is taken against fp32 *with the same vocabulary*; a validation
   token outside the kept ids counts as the unknown token. The ``train-only`` row keeps only the
   training texts' ids, so validation text it never saw shows what pruning costs on new text (its
   summaries differ from the full model's wherever that model would write a dropped piece).
3. **Quantized speed**: greedy generation, batch 1, fixed length, of the 3/3 student on the CPU (and
   on CUDA when present), each mode against fp32 alternately (:func:`benchmarks.common.alternate`;
   speedup = fp32 time / mode time, so below 1 means slower than fp32), wall clock and CPU time, one
   thread. The fastest CPU mode measured is named below the table.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from benchmarks import common
from benchmarks.generation import _batches, _pair, _runner

NAME = "size"
TARGETS = {"8bit": 20.0, "4bit": 12.0}  # % of the fp32 base's file, for a 3/3 student
STUDENTS = {"6/3": (None, 3), "3/3": (3, 3), "6/1": (None, 1)}
CACHE_TEACHER = Path(__file__).resolve().parent / "cache" / "teacher"
PREFIX = "summarize: "

# (label, quantize mode, rest dtype, vocabulary, quantize_wo) - vocabulary "full", "pruned"
# (train+validation texts) or "train-only" (quality table only); quantize_wo: T5's ``wo`` quantized
# too (compression.quantize's ``quantize_wo``)
VARIANTS = [
    ("fp32", "none", "float32", "full", False),
    ("fp16", "fp16", "float32", "full", False),
    ("bf16", "bf16", "float32", "full", False),
    ("8bit (rest fp32)", "8bit", "float32", "full", False),
    ("8bit (rest bf16)", "8bit", "bfloat16", "full", False),
    ("4bit (rest fp32)", "4bit", "float32", "full", False),
    ("4bit (rest bf16)", "4bit", "bfloat16", "full", False),
    ("bf16 + pruned vocab", "bf16", "float32", "pruned", False),
    ("8bit (rest bf16) + pruned vocab", "8bit", "bfloat16", "pruned", False),
    ("4bit (rest bf16) + pruned vocab", "4bit", "bfloat16", "pruned", False),
    ("8bit (rest bf16, wo too) + pruned vocab", "8bit", "bfloat16", "pruned", True),
    ("4bit (rest bf16, wo too) + pruned vocab", "4bit", "bfloat16", "pruned", True),
]
QUALITY_EXTRA = [("fp32 + pruned vocab", "none", "float32", "pruned", False),
                 ("fp32 + pruned vocab (train-only ids)", "none", "float32", "train-only", False)]
SPEED_MODES = [("bf16", "bf16", "float32", False), ("8bit (rest bf16)", "8bit", "bfloat16", False),
               ("8bit (rest fp32)", "8bit", "float32", False), ("4bit (rest bf16)", "4bit", "bfloat16", False),
               ("4bit (rest fp32)", "4bit", "float32", False), ("4bit (rest bf16, wo too)", "4bit", "bfloat16", True)]


def _texts(pairs: list[dict]) -> list[str]:
    return [PREFIX + p["document"] for p in pairs] + [p["summary"] for p in pairs]


def _save(model, tokenizer, folder: Path) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _folders(model, tokenizer, work: Path, pairs: dict) -> dict[str, Path]:
    """The fp32 model saved with its full vocabulary and pruned to each vocabulary choice."""
    from compression.vocab import prune_for_texts

    folders = {"full": _save(model, tokenizer, work / "full")}
    for name, texts in pairs.items():
        folders[name] = _save(prune_for_texts(model, tokenizer, texts), tokenizer, work / name)
    return folders


def _load(folders: dict[str, Path], mode: str, rest: str, vocab: str, wo: bool = False, device: str = "cpu"):
    from compression.quantize import quantize

    return quantize(folders[vocab], mode, device=device, rest_dtype=rest, quantize_wo=wo)


def size_table(students: list[str]) -> tuple[list[dict], dict]:
    from compression.evaluate import count_parameters, memory_footprint_mib, size_on_disk_mib
    from compression.layers import shrink
    from compression.load import build_preset

    tokenizer = common.t5_tokenizer()
    base, _ = build_preset("small", common.tokenizer_path(), seed=0)
    base_mib = size_on_disk_mib(base)
    rows = [{"model": "6/6 (base)", "variant": "fp32", "params": count_parameters(base), "vocab": base.config.vocab_size,
             "disk_mib": base_mib, "pct_of_base": 100.0, "memory_mib": memory_footprint_mib(base)}]
    texts = {"pruned": _texts(common.xsum_pairs("train") + common.xsum_pairs("validation"))}
    for label in students:
        enc, dec = STUDENTS[label]
        student = shrink(base, enc, dec).eval()
        with tempfile.TemporaryDirectory(prefix="size-") as work:
            folders = _folders(student, tokenizer, Path(work), texts)
            for name, mode, rest, vocab, wo in VARIANTS:
                print(f"[size] {label} {name}", flush=True)
                model = _load(folders, mode, rest, vocab, wo)
                disk = size_on_disk_mib(model)
                rows.append({"model": label, "variant": name, "params": count_parameters(model),
                             "vocab": model.config.vocab_size, "disk_mib": disk, "pct_of_base": 100.0 * disk / base_mib,
                             "memory_mib": memory_footprint_mib(model)})
                del model
        del student
    verdict = {}
    for mode, limit in TARGETS.items():
        for row in rows:
            if row["model"] == "3/3" and row["variant"].startswith(mode):
                verdict[f"3/3 {row['variant']}"] = {"pct_of_base": row["pct_of_base"], "limit_pct": limit,
                                                    "met": row["pct_of_base"] <= limit}
    return rows, verdict


def _teacher(path: str | None, quick: bool):
    """``(model, tokenizer, source)`` of the fine-tuned teacher, or ``None`` in quick mode without one."""
    from compression.load import load_model

    if path:
        model, tokenizer = load_model(path)
        return model, tokenizer, str(path)
    if (CACHE_TEACHER / "config.json").is_file():
        model, tokenizer = load_model(CACHE_TEACHER)
        return model, tokenizer, str(CACHE_TEACHER)
    if quick:
        return None
    from benchmarks import methods
    from compression.config import DataArgs
    from compression.data import load_pairs, tokenize_pairs

    settings = methods.full_settings()

    def data(tokenizer, model):
        pairs = load_pairs(DataArgs(train_file=settings.train_file, validation_file=settings.validation_file))
        kw = dict(prefix=PREFIX, max_source_length=settings.max_source_length,
                  max_target_length=settings.max_target_length)
        return tokenize_pairs(pairs["train"], tokenizer, **kw), tokenize_pairs(pairs["validation"], tokenizer, **kw)

    model, tokenizer, _ = methods.load_teacher(settings, data)
    return model, tokenizer, str(CACHE_TEACHER)


def _top1(model, tokenizer, documents: list[str], references: list[str], batch_size: int = 16) -> torch.Tensor:
    """Teacher-forced argmax (as tokenizer ids) at every real target position of the pairs, 1-D."""
    from compression.data import LABEL_PAD
    from compression.vocab import to_model_ids, to_tokenizer_ids

    picks = []
    with torch.inference_mode():
        for start in range(0, len(documents), batch_size):
            source = tokenizer([PREFIX + d for d in documents[start:start + batch_size]], max_length=512,
                               truncation=True, padding=True, return_tensors="pt")
            target = tokenizer(text_target=references[start:start + batch_size], max_length=64, truncation=True,
                               padding=True, return_tensors="pt")
            labels = to_model_ids(model, target["input_ids"].masked_fill(target["attention_mask"] == 0, LABEL_PAD))
            logits = model(input_ids=to_model_ids(model, source["input_ids"]),
                           attention_mask=source["attention_mask"], labels=labels).logits
            picks.append(to_tokenizer_ids(model, logits.argmax(-1))[target["attention_mask"].bool()])
    return torch.cat(picks)


def quality_table(teacher, tokenizer, n_pairs: int, n_summaries: int) -> list[dict]:
    """Validation loss, top-1 agreement and greedy-summary agreement of every size choice applied
    to ``teacher``."""
    from compression.config import EvalArgs
    from compression.evaluate import compute_validation_loss, generate_summaries, size_on_disk_mib

    train, validation = common.xsum_pairs("train"), common.xsum_pairs("validation", n_pairs)
    documents, references = [p["document"] for p in validation], [p["summary"] for p in validation]
    texts = {"pruned": _texts(train + common.xsum_pairs("validation")), "train-only": _texts(train)}
    args = EvalArgs(max_new_tokens=32, batch_size=16)
    rows, same_vocab, summaries, top1 = [], {}, None, None
    with tempfile.TemporaryDirectory(prefix="quality-") as work:
        folders = _folders(teacher, tokenizer, Path(work), texts)
        for name, mode, rest, vocab, wo in VARIANTS[:1] + QUALITY_EXTRA + VARIANTS[1:]:
            print(f"[size] validation loss: {name}", flush=True)
            model = _load(folders, mode, rest, vocab, wo)
            loss = compute_validation_loss(model, tokenizer, documents, references, prefix=PREFIX,
                                           max_source_length=512, max_target_length=64, batch_size=16)
            outputs = generate_summaries(model, tokenizer, documents[:n_summaries], prefix=PREFIX,
                                         max_source_length=512, args=args)
            summaries = outputs if summaries is None else summaries
            picks = _top1(model, tokenizer, documents, references)
            top1 = picks if top1 is None else top1
            same_vocab.setdefault(vocab, loss)  # the fp32 row of each vocabulary comes first
            rows.append({"variant": name, "vocab": model.config.vocab_size, "disk_mib": size_on_disk_mib(model),
                         "validation_loss": loss, "delta_same_vocab": loss - same_vocab[vocab],
                         "top1_agreement_pct": 100.0 * float((picks == top1).float().mean()),
                         "same_summaries_pct": 100.0 * sum(a == b for a, b in zip(outputs, summaries)) / len(outputs)})
            del model
    return rows


def speed_table(repeats: int, new_tokens: int) -> list[dict]:
    from compression.layers import shrink
    from compression.load import build_preset

    tokenizer = common.t5_tokenizer()
    base, _ = build_preset("small", common.tokenizer_path(), seed=0)
    student = shrink(base, 3, 3).eval()
    del base
    docs = [p["document"] for p in common.xsum_pairs("validation", 1)]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="speed-") as work:
        folders = {"full": _save(student, tokenizer, Path(work) / "full")}
        for device in devices:
            reference = _load(folders, "none", "float32", "full", device=device)
            batches = [{k: v.to(device) for k, v in b.items()} for b in _batches(tokenizer, docs, 1, 512)]
            fp32 = _runner(reference, batches, new_tokens, 1)
            for name, mode, rest, wo in SPEED_MODES:
                print(f"[size] speed on {device}: fp32 vs {name}", flush=True)
                model = _load(folders, mode, rest, "full", wo, device)
                pair = _pair(fp32, _runner(model, batches, new_tokens, 1), repeats)
                rows.append({"device": device, "mode": name, "fp32_ms": 1000 * pair["a_median"],
                             "mode_ms": 1000 * pair["b_median"], "speedup": pair["ratio_median"],
                             "speedup_min": pair["ratio_min"], "speedup_max": pair["ratio_max"],
                             "cpu_speedup": pair["cpu_ratio_median"]})
                del model
            fastest = max((r for r in rows if r["device"] == device), key=lambda r: r["cpu_speedup"])
            best = fastest["mode"] if fastest["cpu_speedup"] > 1 else "fp32"
            rows.append({"device": device, "mode": f"fastest measured: {best}"})
    return rows


SIZE_COLUMNS = ["model", "variant", "params", "vocab", "disk_mib", "pct_of_base", "memory_mib"]
QUALITY_COLUMNS = ["variant", "vocab", "disk_mib", "validation_loss", "delta_same_vocab", "top1_agreement_pct",
                   "same_summaries_pct"]
SPEED_COLUMNS = ["device", "mode", "fp32_ms", "mode_ms", "speedup", "speedup_min", "speedup_max", "cpu_speedup"]


def report(payload: dict) -> str:
    parts = ["Size on disk (t5-small shape; % of the fp32 6/6 base's file):",
             common.format_table(payload["size"], SIZE_COLUMNS), ""]
    for name, v in payload["target"].items():
        parts.append(f"target {name}: {v['pct_of_base']:.1f}% of base (limit {v['limit_pct']:.0f}%): "
                     f"{'met' if v['met'] else 'NOT met'}")
    parts.append("")
    if payload["quality"]:
        parts += [f"Validation loss (nats/token; delta against fp32 with the same vocabulary), teacher-forced "
                  f"top-1 agreement and identical greedy summaries vs fp32 full vocabulary (teacher {payload['teacher']}):",
                  common.format_table(payload["quality"], QUALITY_COLUMNS), ""]
    else:
        parts += ["Validation loss: skipped (no fine-tuned teacher cached: run `python -m benchmarks.size` "
                  "once in full mode, or pass --teacher DIR)", ""]
    parts += ["Quantized generation speed, 3/3 student, greedy, batch 1 (speedup = fp32 time / mode time):",
              common.format_table(payload["speed"], SPEED_COLUMNS)]
    return "\n".join(parts)


def table(payload: dict) -> str:
    """The printed tables (for the suite runner)."""
    return report(payload)


def headline(payload: dict) -> list[dict]:
    """Summary rows for the README: the 3/3 student's size targets, and CPU speed by precision."""
    rows = []
    base = payload["size"][0]
    for name, v in payload["target"].items():
        if "rest fp32" in name:
            continue
        row = next(r for r in payload["size"] if f"{r['model']} {r['variant']}" == name)
        rows.append({"benchmark": "Size on disk, t5-small shape", "measure": f"MiB (target <= {v['limit_pct']:.0f}%)",
                     "result": f"{row['disk_mib']:.1f} ({name})", "baseline": f"{base['disk_mib']:.1f} (6/6 fp32)",
                     "ratio": f"{v['pct_of_base']:.1f}% ({'met' if v['met'] else 'not met'})"})
    for r in payload["speed"]:
        if r.get("speedup") is None:
            continue
        rows.append({"benchmark": f"Quantized generation, 3/3, {r['device']}, greedy, batch 1",
                     "measure": "ms per summary", "result": f"{r['mode_ms']:,.0f} ({r['mode']})",
                     "baseline": f"{r['fp32_ms']:,.0f} (fp32)",
                     "ratio": f"{r['speedup']:.2f}x ({r['speedup_min']:.2f}-{r['speedup_max']:.2f})"})
    return rows


def run(quick: bool = False, teacher: str | None = None) -> dict:
    """Measure, print the tables, write ``benchmarks/results/size.json``; returns the payload."""
    with common.intra_op_threads(1):
        size_rows, verdict = size_table(["3/3"] if quick else list(STUDENTS))
        found = _teacher(teacher, quick)
        quality, source = [], None
        if found is not None:
            model, tokenizer, source = found
            quality = quality_table(model, tokenizer, 32 if quick else 100, 16 if quick else 100)
        speed = speed_table(repeats=3 if quick else 5, new_tokens=16 if quick else 32)
    payload = {"settings": {"quick": quick, "threads": 1, "shape": "t5-small (preset small)"},
               "size": size_rows, "target": verdict, "teacher": source, "quality": quality, "speed": speed}
    text = report(payload)
    print(text)
    common.write_result(NAME, payload, text)
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3/3 student only, fewer repeats")
    parser.add_argument("--teacher", help="a fine-tuned checkpoint folder for the validation-loss table")
    args = parser.parse_args(argv)
    common.use_results_dir(args.quick)
    run(args.quick, args.teacher)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
