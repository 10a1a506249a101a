"""Long inputs from real short documents: consecutive articles concatenated into 8k-16k-token sources.

No long-document summarization corpus is on these machines (arXiv, PubMed, BookSum... need a hub), so
the long-input run is built from real text that is: the shared XSum articles (BBC news, the longest
documents under ``../shared``; Debian descriptions are a few dozen words). Exactly how:

1. Read the pairs in file order (``document``, ``summary``; blank rows already dropped).
2. Count each article's tokens with the shared T5 SentencePiece vocabulary
   (``../shared/tokenizers/t5``), without special tokens, so the dataset is the same whatever model
   reads it (a model with another vocabulary truncates at ``max_source_length`` as usual).
3. Walk the articles in order, appending each to the current group; the group is closed as soon as
   its joined text (plus the end-of-sequence token) reaches ``min_tokens`` (default 8,192). An article that would take a group past ``max_tokens`` (default 16,368, room left
   for a task prefix under 16,384) starts a new group instead and the short group is dropped;
   so is the last, incomplete group of the file. Nothing is cut mid-article.
4. The source is the group's articles joined by a blank line (``"\\n\\n"``); the target is their
   reference summaries joined by a space, in the same order (one XSum summary is one sentence).

So each long pair is a run of 10-20 unrelated news stories whose "summary" is the list of their
one-sentence summaries. ROUGE and loss on it are a **stress test** of memory, time and long-range
attention at 8k-16k tokens, **not a benchmark** of long-document summarization quality: real long
documents are one coherent text with one abstract, and no published figure is comparable.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from .errors import DatasetError

#: Source length range of a long pair (tokens of the shared T5 vocabulary, end-of-sequence included).
MIN_TOKENS, MAX_TOKENS = 8_192, 16_368
#: How the articles and the summaries of a group are joined.
DOCUMENT_SEPARATOR, SUMMARY_SEPARATOR = "\n\n", " "


def concatenate_documents(pairs: Iterable[Mapping[str, str]], count_tokens: Callable[[str], int], *,
                          min_tokens: int = MIN_TOKENS, max_tokens: int = MAX_TOKENS) -> list[dict]:
    """Group consecutive ``{"document", "summary"}`` pairs into long pairs (see the module docstring).

    Args:
        pairs: article/summary pairs in their file order.
        count_tokens: tokens of one text without special tokens (e.g. ``len(tokenizer(text,
            add_special_tokens=False)["input_ids"])``).
        min_tokens, max_tokens: the source length range, in tokens: ``count_tokens(joined articles)``
            + 1 end-of-sequence token (while filling, each separator is counted as one token, an upper
            bound, so no group overshoots ``max_tokens``).

    Returns:
        list of ``{"document": joined articles, "summary": joined summaries, "articles": how many,
        "tokens": the source tokens, end-of-sequence included}``, in order.

    Raises:
        DatasetError: ``min_tokens`` below 1 or above ``max_tokens``.
    """
    if not 1 <= min_tokens <= max_tokens:
        raise DatasetError(f"long inputs need 1 <= min tokens <= max tokens (got {min_tokens}, {max_tokens})")
    out: list[dict] = []
    documents: list[str] = []
    summaries: list[str] = []
    tokens = 1  # the end-of-sequence token
    for pair in pairs:
        article, summary = pair["document"], pair["summary"]
        size = count_tokens(article) + (1 if documents else 0)
        if tokens + size > max_tokens:  # would overshoot: drop the short group, start afresh
            documents, summaries, tokens = [], [], 1
            size = count_tokens(article)
            if tokens + size > max_tokens:
                continue  # one article longer than the whole range
        documents.append(article)
        summaries.append(summary)
        tokens += size
        if tokens >= min_tokens:  # a separator may cost no token: count the joined text itself
            joined = DOCUMENT_SEPARATOR.join(documents)
            exact = count_tokens(joined) + 1
            if exact > max_tokens:
                documents, summaries, tokens = [], [], 1
            elif exact >= min_tokens:
                out.append({"document": joined, "summary": SUMMARY_SEPARATOR.join(summaries),
                            "articles": len(documents), "tokens": exact})
                documents, summaries, tokens = [], [], 1
    return out


def t5_token_counter(tokenizer_dir: str | Path | None = None) -> Callable[[str], int]:
    """``count_tokens`` for :func:`concatenate_documents` with the shared T5 vocabulary
    (``../shared/tokenizers/t5``, or ``tokenizer_dir``).

    Raises:
        DatasetError: the vocabulary is not on this machine.
    """
    from .dataset_presets import shared_dir
    from .errors import ModelLoadError

    folder = Path(tokenizer_dir) if tokenizer_dir is not None else shared_dir() / "tokenizers" / "t5"
    try:
        tokenizer = _cached_tokenizer(str(folder.resolve()))
    except ModelLoadError as error:
        raise DatasetError(f"the long-input dataset counts tokens with the T5 vocabulary at {folder}: {error}") from None
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


@functools.lru_cache(maxsize=2)
def _cached_tokenizer(folder: str):
    from .load import load_tokenizer

    return load_tokenizer(folder)


def long_input_dataset(dataset, count_tokens: Callable[[str], int] | None = None, *,
                       min_tokens: int = MIN_TOKENS, max_tokens: int = MAX_TOKENS):
    """A ``datasets.Dataset`` of long pairs (columns ``document``, ``summary``) made from ``dataset``'s
    pairs by :func:`concatenate_documents` (default counter: :func:`t5_token_counter`).

    Raises:
        DatasetError: too few tokens in ``dataset`` for even one long pair (the message says how many
            the split holds), or the T5 vocabulary is missing.
    """
    import datasets

    counter = count_tokens if count_tokens is not None else t5_token_counter()
    pairs = concatenate_documents(dataset, counter, min_tokens=min_tokens, max_tokens=max_tokens)
    if not pairs:
        raise DatasetError(f"the {len(dataset)} pairs hold fewer than {min_tokens:,} tokens of consecutive articles: "
                           "too few for one long input; give more pairs")
    return datasets.Dataset.from_list([{"document": p["document"], "summary": p["summary"]} for p in pairs])
