"""How long a run's training will take, before it starts: optimizer steps x seconds per step.

The step count is the Trainer's own arithmetic (``ceil(pairs / batch)`` batches per epoch, ``ceil(batches /
accumulation)`` optimizer steps per epoch, ``ceil(epochs x steps per epoch)`` steps, or ``max_steps``). The
seconds per step come from a throughput in **parameter-tokens per second**: a training step costs about
``6 x parameters`` FLOPs per real (non-padding) token (forward 2, backward 4; Kaplan et al. 2020,
"Scaling Laws for Neural Language Models", section 2.1), so ``params x tokens / seconds`` is nearly the same
figure for students of different depth and for different pair lengths on one machine. It is taken from

* **measured**: the newest run in the runs folder that trained on *this* machine (its ``status.json`` host)
  for at least :data:`MIN_STEPS` steps: its real tokens/s (``train.json``) times its student's parameters
  (``architecture.json``); or else
* **modelled**: :data:`REFERENCE`, one measured training of the tiny preset on a 2-core AMD EPYC without
  AVX-512 (the slowest CPU kind these machines come in), so the estimate errs long.

The tokens per pair are the mean real source + target tokens of the first pairs of the data, truncated to
the run's max lengths (:func:`pair_tokens`). What the figure leaves out is said in :attr:`RunEstimate.basis`:
attention's cost grows faster than linearly with length, bf16 autocast and the machine's load change the
rate, and evaluation, quantization and export come on top.
"""

from __future__ import annotations

import json
import math
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import CompressionError

#: Optimizer steps a run must have trained for its rate to count as a measurement.
MIN_STEPS = 5
#: The modelled rate: the tiny preset (15.6 M parameters with the T5 vocabulary) trained at 773 real
#: tokens/s, sources 128 / targets 32 tokens, batch 32, on a busy 2-core AMD EPYC without AVX-512 (fp32).
REFERENCE = {"params": 15_570_688, "tokens_per_s": 773.0,
             "what": "the tiny preset at 773 real tokens/s on a busy 2-core AMD EPYC without AVX-512 (fp32)"}
#: Pairs of the data read to measure the mean tokens per pair.
TOKEN_SAMPLE = 256


@dataclass
class Throughput:
    """Training speed of one machine: ``param_tokens_per_s`` = parameters x real tokens per second;
    ``source``: ``"measured"`` or ``"modelled"``; ``basis``: one line saying where it comes from."""

    param_tokens_per_s: float
    source: str
    basis: str


@dataclass
class RunEstimate:
    """A training-time estimate. ``steps``: optimizer steps; ``pairs``: training pairs; ``tokens_per_pair``:
    mean real source + target tokens; ``seconds_per_step`` and ``seconds`` (the whole training, seconds);
    ``source`` and ``basis``: see :class:`Throughput`, plus what the estimate leaves out."""

    steps: int
    pairs: int
    tokens_per_pair: float
    student_params: int
    seconds_per_step: float
    seconds: float
    source: str
    basis: str

    def to_dict(self) -> dict:
        return asdict(self)


def training_steps(pairs: int, batch_size: int, gradient_accumulation_steps: int = 1, epochs: float = 1.0,
                   max_steps: int | None = None, processes: int = 1) -> int:
    """Optimizer steps the ``transformers`` Trainer takes: ``max_steps`` when given, else
    ``ceil(epochs x ceil(ceil(pairs / (batch x processes)) / accumulation))``.

    Raises:
        CompressionError: no pairs, or a batch size, accumulation or epoch count below its minimum.
    """
    if pairs < 1:
        raise CompressionError("no training pairs: nothing to train")
    if batch_size < 1 or gradient_accumulation_steps < 1 or processes < 1:
        raise CompressionError("batch size, gradient accumulation and processes must be at least 1")
    if max_steps:
        return int(max_steps)
    if not epochs > 0:
        raise CompressionError("epochs must be above 0")
    batches = math.ceil(pairs / (batch_size * processes))
    return max(1, math.ceil(epochs * math.ceil(batches / gradient_accumulation_steps)))


def estimate_training(*, pairs: int, tokens_per_pair: float, student_params: int, batch_size: int,
                      throughput: Throughput, epochs: float = 1.0, gradient_accumulation_steps: int = 1,
                      max_steps: int | None = None) -> RunEstimate:
    """Training time = steps (:func:`training_steps`) x seconds per step, a step being ``batch x
    accumulation`` pairs of ``tokens_per_pair`` real tokens through ``student_params`` parameters at
    ``throughput.param_tokens_per_s``. The last step of an epoch may be short; that is ignored (errs long).

    Raises:
        CompressionError: see :func:`training_steps`; no tokens, no parameters or a zero throughput.
    """
    steps = training_steps(pairs, batch_size, gradient_accumulation_steps, epochs, max_steps)
    if not (tokens_per_pair > 0 and student_params > 0 and throughput.param_tokens_per_s > 0):
        raise CompressionError("an estimate needs tokens per pair, student parameters and a throughput above 0")
    per_step = min(batch_size * gradient_accumulation_steps, pairs) * tokens_per_pair * student_params \
        / throughput.param_tokens_per_s
    basis = (f"{throughput.basis}; scaled to {student_params / 1e6:.2f} M parameters and {tokens_per_pair:.0f} "
             "real tokens per pair (training cost ~ parameters x tokens). Leaves out the growth of attention's "
             "cost with length, the machine's load, and evaluation, quantization and export after training")
    return RunEstimate(steps=steps, pairs=pairs, tokens_per_pair=tokens_per_pair, student_params=int(student_params),
                       seconds_per_step=per_step, seconds=steps * per_step, source=throughput.source, basis=basis)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def measured_throughput(runs_dir: str | Path, host: str | None = None) -> Throughput | None:
    """The rate of the newest run under ``runs_dir`` that trained on ``host`` (default: this machine)
    for at least :data:`MIN_STEPS` steps and recorded its tokens/s and student size, or ``None``."""
    host = host or socket.gethostname()
    try:
        folders = sorted((p for p in Path(runs_dir).iterdir() if p.is_dir()), key=lambda p: p.name, reverse=True)
    except OSError:
        return None
    for folder in folders:
        status, train = _read(folder / "status.json"), _read(folder / "train.json")
        student = (_read(folder / "architecture.json") or {}).get("student") if (folder / "architecture.json").is_file() else None
        if not (isinstance(status, dict) and isinstance(train, dict) and isinstance(student, dict)):
            continue
        rate, steps, params = train.get("tokens_per_s"), train.get("steps"), student.get("params")
        if status.get("host") != host or not isinstance(steps, int) or steps < MIN_STEPS \
                or not isinstance(rate, (int, float)) or rate <= 0 or not isinstance(params, int) or params <= 0:
            continue
        return Throughput(rate * params, "measured",
                          f"measured: run {folder.name} trained a {params / 1e6:.2f} M-parameter student at "
                          f"{rate:,.0f} real tokens/s on this machine")
    return None


def reference_throughput() -> Throughput:
    """The modelled rate (:data:`REFERENCE`), for a machine with no run of its own yet."""
    return Throughput(REFERENCE["tokens_per_s"] * REFERENCE["params"], "modelled",
                      f"modelled: no run on this machine yet, so from {REFERENCE['what']}")


def pair_tokens(documents: list[str], summaries: list[str], tokenizer: Any, *, prefix: str,
                max_source_length: int, max_target_length: int) -> float:
    """Mean real tokens per pair: source (``prefix`` + document, truncated to ``max_source_length``)
    plus target (summary, truncated to ``max_target_length``), over the pairs given.

    Raises:
        CompressionError: no pairs.
    """
    if not documents:
        raise CompressionError("no pairs to measure")
    sources = tokenizer([prefix + d for d in documents], truncation=True, max_length=max_source_length)["input_ids"]
    targets = tokenizer(text_target=list(summaries), truncation=True, max_length=max_target_length)["input_ids"]
    return (sum(map(len, sources)) + sum(map(len, targets))) / len(documents)


def estimate_run(config, tokenizer: Any, student_params: int, runs_dir: str | Path, *,
                 model_prefix: str | None = None) -> RunEstimate:
    """The training-time estimate of the run ``config`` (:class:`compression.config.RunConfig`) for a
    student of ``student_params`` parameters: its data's pairs (``max_train_samples`` of them at most)
    and mean tokens per pair over the first :data:`TOKEN_SAMPLE` (:func:`pair_tokens`; the data's prefix,
    else ``model_prefix`` - the prefix the base model expects, ``describe_model(...)["prefix"]``: the
    one its checkpoint records, else its family's -, else none), and this machine's rate
    (:func:`measured_throughput` in ``runs_dir``, else :func:`reference_throughput`).

    Raises:
        DatasetError: the data cannot be read (see :func:`compression.data.load_pairs`).
    """
    from .data import load_pairs

    train = load_pairs(config.data)["train"]
    count = len(train)
    sample = train.select(range(min(TOKEN_SAMPLE, len(train))))
    prefix = config.data.prefix if config.data.prefix is not None else (model_prefix or "")
    tokens = pair_tokens(list(sample["document"]), list(sample["summary"]), tokenizer, prefix=prefix,
                         max_source_length=config.data.max_source_length,
                         max_target_length=config.data.max_target_length)
    throughput = measured_throughput(runs_dir) or reference_throughput()
    t = config.train
    return estimate_training(pairs=count, tokens_per_pair=tokens, student_params=student_params,
                             batch_size=t.batch_size, throughput=throughput, epochs=t.epochs,
                             gradient_accumulation_steps=t.gradient_accumulation_steps, max_steps=t.max_steps)
