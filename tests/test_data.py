"""compression.data: loading pairs from files, cleaning, prefixes, tokenization, collation."""

from __future__ import annotations

import json
import warnings

import datasets
import pytest
import torch

from compression.config import DataArgs
from compression.data import (
    LABEL_PAD,
    count_tokens,
    default_prefix,
    load_pairs,
    make_collator,
    resolve_prefix,
    tokenize_pairs,
)
from compression.errors import DatasetError
from conftest import ARTICLES, tiny_bart_config, tiny_t5_config


def _rows(pairs, text="document", summary="summary"):
    return {"id": [str(i) for i in range(len(pairs))], text: [d for d, _ in pairs], summary: [s for _, s in pairs]}


def test_jsonl_train_and_validation(tiny_jsonl):
    train, validation = tiny_jsonl
    pairs = load_pairs(DataArgs(train_file=str(train), validation_file=str(validation)))
    assert set(pairs) == {"train", "validation"}
    assert pairs["train"].column_names == ["document", "summary"]
    assert len(pairs["train"]) == 8 and len(pairs["validation"]) == 4
    assert pairs["train"][0] == {"document": ARTICLES[0][0], "summary": ARTICLES[0][1]}


def test_train_only_has_no_validation_split(tiny_jsonl):
    pairs = load_pairs(DataArgs(train_file=str(tiny_jsonl[0])))
    assert list(pairs) == ["train"]


@pytest.mark.parametrize("suffix", ["csv", "parquet", "json"])
def test_csv_parquet_json_with_column_mapping(tmp_path, suffix):
    table = datasets.Dataset.from_dict(_rows(ARTICLES[:5], text="article", summary="highlights"))
    path = tmp_path / f"pairs.{suffix}"
    if suffix == "csv":
        table.to_csv(str(path), index=False)
    elif suffix == "parquet":
        table.to_parquet(str(path))
    else:
        path.write_text(json.dumps([dict(zip(table.column_names, row)) for row in zip(*table.to_dict().values())]))
    pairs = load_pairs(DataArgs(train_file=str(path), text_column="article", summary_column="highlights"))
    assert pairs["train"].column_names == ["document", "summary"]
    assert pairs["train"]["summary"] == [s for _, s in ARTICLES[:5]]


def test_swapped_column_names(tiny_jsonl):
    pairs = load_pairs(DataArgs(train_file=str(tiny_jsonl[0]), text_column="summary", summary_column="document"))
    assert pairs["train"][0] == {"document": ARTICLES[0][1], "summary": ARTICLES[0][0]}


def test_blank_rows_dropped_with_warning(tmp_path):
    path = tmp_path / "dirty.jsonl"
    rows = [{"document": d, "summary": s} for d, s in ARTICLES[:4]]
    rows += [{"document": "An article.", "summary": ""}, {"document": "   \n", "summary": "A summary."},
             {"document": None, "summary": "x"}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.warns(UserWarning, match="dropped 3 of 7 rows"):
        pairs = load_pairs(DataArgs(train_file=str(path)))
    assert len(pairs["train"]) == 4


def test_no_warning_when_clean(tiny_jsonl):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_pairs(DataArgs(train_file=str(tiny_jsonl[0])))


def test_all_blank_is_an_error(tmp_path):
    path = tmp_path / "blank.jsonl"
    path.write_text(json.dumps({"document": "", "summary": "x"}) + "\n")
    with pytest.raises(DatasetError, match="no usable pairs"):
        load_pairs(DataArgs(train_file=str(path)))


def test_missing_columns_lists_the_columns(tiny_jsonl):
    with pytest.raises(DatasetError) as info:
        load_pairs(DataArgs(train_file=str(tiny_jsonl[0]), text_column="article"))
    message = str(info.value)
    assert "'article'" in message and "'id', 'document', 'summary'" in message


def test_missing_file_and_bad_extension(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        load_pairs(DataArgs(train_file=str(tmp_path / "absent.jsonl")))
    (tmp_path / "pairs.txt").write_text("hello")
    with pytest.raises(DatasetError, match="unsupported file type '.txt'"):
        load_pairs(DataArgs(train_file=str(tmp_path / "pairs.txt")))


def test_unreadable_file(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text("{not json\n")
    with pytest.raises(DatasetError, match="could not be read as JSON"):
        load_pairs(DataArgs(train_file=str(path)))


def test_source_errors(tiny_jsonl):
    with pytest.raises(DatasetError, match="no data given"):
        load_pairs(DataArgs())
    with pytest.raises(DatasetError, match="not both"):
        load_pairs(DataArgs(train_file=str(tiny_jsonl[0]), dataset="xsum"))
    with pytest.raises(DatasetError, match="without a train file"):
        load_pairs(DataArgs(validation_file=str(tiny_jsonl[1])))


def test_hub_offline_says_local_files_work(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'xsum' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DatasetError, match="local train/validation file, which works offline"):
        load_pairs(DataArgs(dataset="xsum"))


def test_hub_dataset_splits_and_columns(monkeypatch):
    tables = {"train": datasets.Dataset.from_dict(_rows(ARTICLES, text="article", summary="highlights")),
              "test": datasets.Dataset.from_dict(_rows(ARTICLES[:2], text="article", summary="highlights"))}
    seen = []

    def fake(name, config, split):
        seen.append((name, config, split))
        return tables[split]

    monkeypatch.setattr(datasets, "load_dataset", fake)
    pairs = load_pairs(DataArgs(dataset="cnn_dailymail", dataset_config="3.0.0", validation_split="test",
                                text_column="article", summary_column="highlights", max_train_samples=3))
    assert seen == [("cnn_dailymail", "3.0.0", "train"), ("cnn_dailymail", "3.0.0", "test")]
    assert len(pairs["train"]) == 3 and len(pairs["validation"]) == 2


def test_max_samples_take_the_first(tiny_jsonl):
    train, validation = tiny_jsonl
    pairs = load_pairs(DataArgs(train_file=str(train), validation_file=str(validation),
                                max_train_samples=3, max_eval_samples=100))
    assert pairs["train"]["document"] == [d for d, _ in ARTICLES[:3]]
    assert len(pairs["validation"]) == 4


def test_default_prefix_by_family():
    from transformers import BartConfig, MT5Config

    assert default_prefix(tiny_t5_config()) == "summarize: "
    assert default_prefix(MT5Config()) == "summarize: "
    assert default_prefix("umt5") == "summarize: "
    assert default_prefix(tiny_bart_config()) == ""
    assert default_prefix(BartConfig()) == ""


def test_resolve_prefix(tiny_t5, tiny_bart):
    assert resolve_prefix(DataArgs(), tiny_t5) == "summarize: "
    assert resolve_prefix(DataArgs(), tiny_bart) == ""
    assert resolve_prefix(DataArgs(prefix=""), tiny_t5) == ""
    assert resolve_prefix(DataArgs(prefix="tl;dr: "), tiny_bart) == "tl;dr: "


def test_a_recorded_prefix_wins_over_the_family_default(tiny_t5, tmp_path):
    """A checkpoint trained without a prefix records it (``task_specific_params``, where the hub's
    T5 checkpoints keep ``"summarize: "``) and is read back with it, not with T5's default."""
    from transformers import AutoConfig

    from compression.data import record_prefix, recorded_prefix

    assert recorded_prefix(tiny_t5) is None
    tiny_t5.config.task_specific_params = {"translation_en_to_de": {"prefix": "translate: "}}
    record_prefix(tiny_t5, "")
    assert tiny_t5.config.task_specific_params == {"translation_en_to_de": {"prefix": "translate: "},
                                                   "summarization": {"prefix": ""}}
    assert default_prefix(tiny_t5) == "" and resolve_prefix(DataArgs(), tiny_t5) == ""
    assert resolve_prefix(DataArgs(prefix="summarize: "), tiny_t5) == "summarize: "  # an explicit prefix wins
    tiny_t5.config.save_pretrained(tmp_path)
    assert default_prefix(AutoConfig.from_pretrained(tmp_path)) == ""
    hub_like = tiny_t5_config(task_specific_params={"summarization": {"prefix": "summarize: ", "max_length": 200}})
    assert default_prefix(hub_like) == "summarize: "
    assert default_prefix("t5") == "summarize: "  # a model type alone has nothing recorded


def test_the_committed_teacher_records_that_it_was_trained_without_a_prefix():
    from transformers import AutoConfig

    from compression.teacher import BUNDLED_TEACHER

    assert default_prefix(AutoConfig.from_pretrained(BUNDLED_TEACHER)) == ""


def test_tokenize_truncates_without_padding(tiny_jsonl, byt5_tokenizer):
    pairs = load_pairs(DataArgs(train_file=str(tiny_jsonl[0])))
    tokens = tokenize_pairs(pairs["train"], byt5_tokenizer, prefix="summarize: ", max_source_length=40,
                            max_target_length=12)
    assert tokens.column_names == ["input_ids", "attention_mask", "labels"]
    assert all(len(ids) == 40 for ids in tokens["input_ids"])  # every article is longer than 40 bytes
    assert all(len(ids) <= 12 and ids[-1] == byt5_tokenizer.eos_token_id for ids in tokens["labels"])
    assert tokens[0]["input_ids"][:11] == byt5_tokenizer("summarize: ")["input_ids"][:11]
    long = tokenize_pairs(pairs["train"], byt5_tokenizer, prefix="", max_source_length=512, max_target_length=512)
    lengths = {len(ids) for ids in long["input_ids"]}
    assert len(lengths) > 1  # not padded
    assert [len(ids) for ids in long["labels"]] == [len(s.encode()) + 1 for _, s in ARTICLES]
    assert all(set(mask) == {1} for mask in long["attention_mask"])


def test_tokenize_needs_pairs(byt5_tokenizer):
    table = datasets.Dataset.from_dict({"text": ["a"]})
    with pytest.raises(DatasetError, match="load_pairs"):
        tokenize_pairs(table, byt5_tokenizer, prefix="", max_source_length=8, max_target_length=8)


def test_collator_pads_dynamically_and_counts_real_tokens(tiny_jsonl, byt5_tokenizer, tiny_t5):
    pairs = load_pairs(DataArgs(train_file=str(tiny_jsonl[0])))
    tokens = tokenize_pairs(pairs["train"], byt5_tokenizer, prefix="", max_source_length=512, max_target_length=64)
    rows = [tokens[i] for i in range(3)]
    batch = make_collator(byt5_tokenizer, tiny_t5)(rows)
    longest_source = max(len(row["input_ids"]) for row in rows)
    longest_target = max(len(row["labels"]) for row in rows)
    assert batch["input_ids"].shape == (3, longest_source)
    assert batch["labels"].shape == batch["decoder_input_ids"].shape == (3, longest_target)
    assert (batch["labels"] == LABEL_PAD).sum() == sum(longest_target - len(row["labels"]) for row in rows)
    real = sum(len(row["input_ids"]) + len(row["labels"]) for row in rows)
    assert int(count_tokens(batch)) == real
    assert count_tokens(batch).dtype == torch.int64


def test_real_xsum_with_t5_vocabulary(shared_dir):
    from transformers import T5Tokenizer

    xsum = shared_dir / "data" / "xsum"
    with pytest.warns(UserWarning, match="dropped 1 of 700 rows"):
        pairs = load_pairs(DataArgs(train_file=str(xsum / "train.jsonl"),
                                    validation_file=str(xsum / "validation.jsonl")))
    assert len(pairs["train"]) == 699 and len(pairs["validation"]) == 100
    tokenizer = T5Tokenizer.from_pretrained(str(shared_dir / "tokenizers" / "t5"))
    tokens = tokenize_pairs(pairs["validation"], tokenizer, prefix=default_prefix("t5"), max_source_length=512,
                            max_target_length=64)
    assert len(tokens) == 100
    assert all(ids[:2] == [21603, 10] for ids in tokens["input_ids"])  # "summarize:"
    assert max(len(ids) for ids in tokens["input_ids"]) == 512
    assert all(1 < len(ids) <= 64 and ids[-1] == 1 for ids in tokens["labels"])
