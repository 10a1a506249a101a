"""Shared fixtures: tiny models built from configs, a tokenizer that needs no download, tiny data.

Everything here is offline and CPU-only; nothing touches a hub.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

ARTICLES = [
    ("The council approved a new budget for the city library on Monday after a long debate.",
     "Council approves library budget."),
    ("Heavy rain caused flooding across the north of the country, closing roads and schools.",
     "Floods close roads and schools."),
    ("The football club signed a young striker from a rival team for an undisclosed fee.",
     "Club signs young striker."),
    ("Scientists found a new species of frog in the rainforest during a survey last year.",
     "New frog species found."),
    ("The company said profits rose sharply in the third quarter thanks to strong sales.",
     "Company profits rise sharply."),
    ("A fire at a warehouse near the port was put out by firefighters early this morning.",
     "Warehouse fire put out."),
    ("Train services were cancelled after a signal failure outside the main station.",
     "Signal failure cancels trains."),
    ("The museum will reopen next month with an exhibition of paintings by local artists.",
     "Museum to reopen with local art."),
]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models run several times faster on one thread than on two contended ones (a sync point
    per op); every test runs so, and the thread count is restored after it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_t5_config(**overrides):
    from transformers import T5Config

    values = dict(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=4, num_decoder_layers=4,
                  num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=16,
                  dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    values.update(overrides)
    return T5Config(**values)


def untie_head(model):
    """``model`` with an LM head of its own, as T5 v1.1, flan-t5, mT5 and t5-efficient checkpoints
    load: a fresh T5 of transformers 5 ties its head to the input embeddings whatever
    ``tie_word_embeddings`` says, so the head becomes a separate parameter (half the embedding)."""
    model.lm_head.weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone().mul_(0.5))
    assert model.lm_head.weight is not model.get_input_embeddings().weight
    return model


def tiny_bart_config(**overrides):
    from transformers import BartConfig

    values = dict(vocab_size=384, d_model=32, encoder_layers=4, decoder_layers=4,
                  encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                  decoder_ffn_dim=64, max_position_embeddings=128, dropout=0.0,
                  attention_dropout=0.0, activation_dropout=0.0, pad_token_id=0, bos_token_id=2,
                  eos_token_id=1, decoder_start_token_id=1, forced_eos_token_id=1)
    values.update(overrides)
    return BartConfig(**values)


def tiny_longt5_config(attention: str = "transient-global", **overrides):
    """A tiny LongT5 config (4/4 layers, d_model 32), local or transient-global encoder attention."""
    from transformers import LongT5Config

    values = dict(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=4, num_decoder_layers=4, num_heads=4,
                  encoder_attention_type=attention, local_radius=3, global_block_size=4, dropout_rate=0.0,
                  decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    values.update(overrides)
    return LongT5Config(**values)


@pytest.fixture
def byt5_tokenizer():
    """ByT5's byte-level tokenizer: 384 ids, no vocabulary file, no download."""
    from transformers import ByT5Tokenizer

    return ByT5Tokenizer()


@pytest.fixture
def tiny_t5():
    """A randomly initialised 4/4-layer T5 (d_model 32) in eval mode, seeded."""
    from transformers import T5ForConditionalGeneration

    torch.manual_seed(0)
    return T5ForConditionalGeneration(tiny_t5_config()).eval()


@pytest.fixture
def tiny_bart():
    """A randomly initialised 4/4-layer BART (d_model 32) in eval mode, seeded."""
    from transformers import BartForConditionalGeneration

    torch.manual_seed(0)
    return BartForConditionalGeneration(tiny_bart_config()).eval()


@pytest.fixture
def tiny_t5_dir(tmp_path, tiny_t5, byt5_tokenizer):
    """A saved tiny T5 checkpoint folder with its tokenizer, as a user's local folder would be."""
    path = tmp_path / "tiny-t5"
    tiny_t5.save_pretrained(path)
    byt5_tokenizer.save_pretrained(path)
    return path


def write_jsonl(path: Path, pairs, *, id_prefix: str = "") -> Path:
    """Pairs as JSONL rows ``{"id", "document", "summary"}``. ``id_prefix`` makes the file's bytes
    unique: gradio keeps uploads under a hash of their content, shared by every app in the process,
    and a closing app deletes its uploads, so two tests uploading identical bytes can lose each
    other's file."""
    with open(path, "w", encoding="utf-8") as handle:
        for i, (document, summary) in enumerate(pairs):
            handle.write(json.dumps({"id": f"{id_prefix}{i}", "document": document, "summary": summary}) + "\n")
    return path


@pytest.fixture
def tiny_jsonl(tmp_path):
    """(train_file, validation_file): 8 and 4 short article/summary pairs in JSONL."""
    train = write_jsonl(tmp_path / "train.jsonl", ARTICLES)
    validation = write_jsonl(tmp_path / "validation.jsonl", ARTICLES[:4])
    return train, validation


@pytest.fixture
def tiny_splits(tiny_jsonl, byt5_tokenizer):
    """(train, validation): :func:`tiny_jsonl`'s pairs tokenized with the ByT5 tokenizer, no prefix,
    sources 64 / targets 24 tokens (``compression.data.tokenize_pairs``)."""
    from compression.config import DataArgs
    from compression.data import load_pairs, tokenize_pairs

    pairs = load_pairs(DataArgs(train_file=str(tiny_jsonl[0]), validation_file=str(tiny_jsonl[1])))
    return tuple(tokenize_pairs(pairs[split], byt5_tokenizer, prefix="", max_source_length=64, max_target_length=24)
                 for split in ("train", "validation"))


@pytest.fixture
def shared_dir():
    """The read-only ../shared folder (real XSum pairs, T5 vocabulary); skips when absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is absent")
    return SHARED


# ---------------------------------------------------------------- dashboard panels (tests/test_*_panel.py)

@pytest.fixture
def settings(tmp_path):
    from components.state import AppSettings

    return AppSettings.create(tmp_path / "runs", [tmp_path], offline=True)


@pytest.fixture
def loaded(settings, tiny_t5_dir):
    from components import model_panel
    from components.state import Session

    session = Session()
    outputs = model_panel.load_base(settings, session, None, str(tiny_t5_dir), "byt5")
    return session, outputs


@pytest.fixture
def loaded_longt5(settings, tmp_path, byt5_tokenizer):
    """``(session, load_base outputs)`` with a saved tiny transient-global LongT5 loaded as the base."""
    from transformers import LongT5ForConditionalGeneration

    from components import model_panel
    from components.state import Session

    torch.manual_seed(0)
    folder = tmp_path / "tiny-longt5"
    LongT5ForConditionalGeneration(tiny_longt5_config()).save_pretrained(folder)
    byt5_tokenizer.save_pretrained(folder)
    session = Session()
    return session, model_panel.load_base(settings, session, None, str(folder), "byt5")


RUN_METRICS = {
    "base": {"params": 2_000_000, "size_mib": 8.0, "rouge1": 40.0, "rouge2": 20.0, "rougeL": 35.0, "rougeLsum": 36.0,
             "rouge": {k: {"precision": 50.0, "recall": 30.0, "fmeasure": v}
                       for k, v in (("rouge1", 40.0), ("rouge2", 20.0), ("rougeL", 35.0), ("rougeLsum", 36.0))},
             "rouge_ci": {"rouge1": [38.0, 42.0], "rouge2": [18.0, 22.0], "rougeL": [33.0, 37.0],
                          "rougeLsum": [34.0, 38.0]},
             "validation_loss": 2.5, "latency_ms": 40.0, "tokens_per_s": 900.0},
    "student": {"params": 1_000_000, "size_mib": 4.0, "rouge1": 36.0, "rouge2": 17.0, "rougeL": 31.5,
                "rougeLsum": 32.0, "rouge": {k: {"precision": 45.0, "recall": 28.0, "fmeasure": 1.0}
                                             for k in ("rouge1", "rouge2", "rougeL", "rougeLsum")},
                "validation_loss": 2.9, "latency_ms": 20.0, "tokens_per_s": 1800.0,
                "percent_of_base": {"rouge1": 90.0, "rouge2": 85.0, "rougeL": 90.0, "rougeLsum": 88.9}},
    "quantized": None,
}
