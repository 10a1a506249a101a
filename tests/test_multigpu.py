"""finetune() under ``torchrun --nproc_per_node 2`` on CPU (DDP over gloo): ranks agree, rank 0 alone writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ARTICLES, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


def _gloo_available() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_gloo_available()


def _torchrun_finetune(tmp_path, model_dir, *extra):
    train = write_jsonl(tmp_path / "train.jsonl", ARTICLES)
    validation = write_jsonl(tmp_path / "validation.jsonl", ARTICLES[:4])
    out, hashes = tmp_path / "out", tmp_path / "hashes"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache"),
           "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
               str(ROOT / "tests" / "torchrun_finetune.py"), str(model_dir), str(train), str(validation),
               str(out), str(hashes), *extra]
    try:
        done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("torchrun did not finish within 120 s")
    assert done.returncode == 0, done.stderr[-4000:]
    return out, hashes


@pytest.mark.skipif(not _gloo_available(), reason="torch.distributed with gloo is unavailable")
def test_two_process_ddp_finetune(tmp_path, tiny_t5_dir):
    out, hashes = _torchrun_finetune(tmp_path, tiny_t5_dir)

    ranks = sorted(p.name for p in hashes.iterdir())
    assert ranks == ["rank0.txt", "rank1.txt"]
    digests = {(hashes / name).read_text().split()[0] for name in ranks}
    assert len(digests) == 1, "the two ranks ended with different weights"
    # 8 pairs, batch 2 per process x 2 processes = 2 steps per epoch, 2 epochs.
    assert {(hashes / name).read_text().split()[1] for name in ranks} == {"4"}

    assert sorted(p.name for p in out.iterdir()) == ["loss_log.jsonl", "model"]
    records = [json.loads(line) for line in (out / "loss_log.jsonl").read_text().splitlines()]
    keys = [(r["kind"], r["step"]) for r in records]
    assert len(keys) == len(set(keys)), "a record was written twice (more than one rank wrote the log)"
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]
    # The logged training loss is a per-token mean, not multiplied by the process count.
    assert all(0 < r["loss"] < 7.5 for r in records if r["kind"] == "train")


@pytest.mark.skipif(not _gloo_available(), reason="torch.distributed with gloo is unavailable")
def test_two_process_ddp_finetune_with_the_fused_loss_and_an_untied_head(tmp_path, byt5_tokenizer):
    """T5 v1.1, flan-t5, mT5 and t5-efficient checkpoints keep an LM head apart from the input
    embeddings. The fused loss (the CPU fp32 default) uses that head after the model's forward, which
    DDP's search for unused parameters took for a second use and stopped the first step on ("Expected
    to mark a variable ready only once"); it trains, the ranks agree on the weights and report one
    training loss (the Trainer's own adds the steps after the last logging step per rank)."""
    from transformers import T5ForConditionalGeneration

    from conftest import tiny_t5_config, untie_head

    torch.manual_seed(0)
    model = untie_head(T5ForConditionalGeneration(tiny_t5_config()))
    model.save_pretrained(tmp_path / "untied")
    byt5_tokenizer.save_pretrained(tmp_path / "untied")
    loaded = T5ForConditionalGeneration.from_pretrained(tmp_path / "untied")
    assert loaded.lm_head.weight is not loaded.shared.weight

    # Logging at step 3 of 4: the last step's loss is each rank's own until it is averaged.
    out, hashes = _torchrun_finetune(tmp_path, tmp_path / "untied", "fused", "3")
    ranks = [(hashes / name).read_text().split() for name in ("rank0.txt", "rank1.txt")]
    assert ranks[0][0] == ranks[1][0], "the two ranks ended with different weights"
    assert ranks[0][2] == ranks[1][2], "the two ranks reported different training losses"
    trained = T5ForConditionalGeneration.from_pretrained(out / "model")
    assert not torch.equal(trained.lm_head.weight, model.lm_head.weight), "the untied head was not trained"


@pytest.mark.skipif(not _gloo_available(), reason="torch.distributed with gloo is unavailable")
def test_close_distributed_ends_the_process_group_and_is_a_no_op_without_one(tmp_path):
    from compression.train import close_distributed

    close_distributed()  # no process group: nothing to do
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    assert torch.distributed.is_initialized()
    close_distributed()
    assert not torch.distributed.is_initialized()
