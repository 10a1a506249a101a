"""Run by tests/test_multigpu.py under ``torchrun --nproc_per_node 2``: fine-tune a tiny saved model with DDP on CPU.

Usage: torchrun --nproc_per_node 2 --standalone tests/torchrun_finetune.py MODEL_DIR TRAIN VALIDATION OUTPUT_DIR HASH_DIR [LM_HEAD_LOSS [LOGGING_STEPS]]

LM_HEAD_LOSS is ``TrainArgs.lm_head_loss`` (default ``auto``), LOGGING_STEPS its ``logging_steps`` (default 1).
Every rank writes ``HASH_DIR/rank<R>.txt`` with a SHA-256 of its final state_dict, its step count and
the training loss it reports; rank 0 also saves the model.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import AutoModelForSeq2SeqLM, AutoTokenizer  # noqa: E402

from compression.config import DataArgs, TrainArgs  # noqa: E402
from compression.data import load_pairs, resolve_prefix, tokenize_pairs  # noqa: E402
from compression.train import close_distributed, finetune  # noqa: E402


def state_hash(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def main(model_dir: str, train: str, validation: str, output_dir: str, hash_dir: str, lm_head_loss: str = "auto",
         logging_steps: str = "1") -> None:
    rank = int(os.environ.get("RANK", "0"))
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data_args = DataArgs(train_file=train, validation_file=validation, max_source_length=64, max_target_length=16)
    pairs = load_pairs(data_args)
    prefix = resolve_prefix(data_args, model)
    tokenized = {split: tokenize_pairs(pairs[split], tokenizer, prefix=prefix, max_source_length=64,
                                       max_target_length=16) for split in pairs}
    args = TrainArgs(epochs=2, batch_size=2, learning_rate=3e-3, device="cpu", logging_steps=int(logging_steps), seed=7,
                     lm_head_loss=lm_head_loss)
    result = finetune(model, tokenizer, tokenized["train"], tokenized["validation"], args, output_dir,
                      progress_bar=False)
    Path(hash_dir).mkdir(parents=True, exist_ok=True)
    (Path(hash_dir) / f"rank{rank}.txt").write_text(f"{state_hash(model)} {result.steps} {result.train_loss!r}\n")
    if rank == 0:
        model.save_pretrained(Path(output_dir) / "model")
    close_distributed()  # as the CLI does: without it a rank can abort at exit (SIGABRT from gloo's threads)


if __name__ == "__main__":
    main(*sys.argv[1:8])
