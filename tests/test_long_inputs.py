"""Long inputs from real short documents (compression.long_inputs, the ``xsum-long`` preset)."""

from __future__ import annotations

import pytest

from compression.config import DataArgs
from compression.errors import DatasetError
from compression.long_inputs import MAX_TOKENS, MIN_TOKENS, concatenate_documents, long_input_dataset


def words(text: str) -> int:
    return len(text.split())


def pair(i: int, n: int) -> dict:
    return {"document": " ".join([f"a{i}"] * n), "summary": f"summary {i}."}


def test_groups_consecutive_articles_until_the_minimum():
    pairs = [pair(i, 30) for i in range(10)]
    out = concatenate_documents(pairs, words, min_tokens=100, max_tokens=200)
    # 1 (EOS) + 4 x 30 = 121 >= 100: four articles a group, the last two left over
    assert [p["articles"] for p in out] == [4, 4] and [p["tokens"] for p in out] == [121, 121]
    assert out[0]["document"] == "\n\n".join(p["document"] for p in pairs[:4])
    assert out[1]["summary"] == "summary 4. summary 5. summary 6. summary 7."
    assert all(100 <= p["tokens"] <= 200 for p in out)


def test_an_article_that_would_overshoot_starts_afresh_and_too_long_ones_are_skipped():
    pairs = [pair(0, 50), pair(1, 180), pair(2, 500), pair(3, 60), pair(4, 60)]
    out = concatenate_documents(pairs, words, min_tokens=100, max_tokens=200)
    # 0 then 1 would make 232 > 200: 0 is dropped; 1 alone is 181 >= 100; 2 is longer than the range
    assert [p["document"].split()[0] for p in out] == ["a1", "a3"]
    assert [p["tokens"] for p in out] == [181, 121]
    with pytest.raises(DatasetError, match="min tokens"):
        concatenate_documents(pairs, words, min_tokens=300, max_tokens=200)


def test_long_input_dataset_refuses_too_little_text():
    import datasets

    small = datasets.Dataset.from_list([pair(0, 10)])
    with pytest.raises(DatasetError, match="too few"):
        long_input_dataset(small, words)
    assert long_input_dataset(datasets.Dataset.from_list([pair(i, 30) for i in range(4)]), words,
                              min_tokens=100).column_names == ["document", "summary"]


def test_xsum_long_preset_makes_8k_to_16k_token_sources(shared_dir):
    from compression.data import load_pairs
    from compression.load import load_tokenizer

    data = DataArgs(dataset="xsum-long")
    assert (data.max_source_length, data.max_target_length) == (16_384, 512)
    pairs = load_pairs(data)
    tokenizer = load_tokenizer(shared_dir / "tokenizers" / "t5")
    train = pairs["train"]
    assert len(train) >= 20 and len(pairs["validation"]) >= 2
    lengths = [len(tokenizer(doc)["input_ids"]) for doc in train["document"]]
    assert all(MIN_TOKENS <= n <= MAX_TOKENS for n in lengths), lengths
    assert all(len(summary.split(". ")) >= 2 for summary in train["summary"])  # several summaries joined
