"""compression.vocab: pruned vocabularies keep logits, generation, saving and loading exact."""

from __future__ import annotations

import pytest
import torch

from compression.data import LABEL_PAD
from compression.errors import CompressionError, DatasetError
from compression.generation import generate
from compression.vocab import (
    kept_token_ids,
    prune_for_texts,
    prune_vocabulary,
    pruning_info,
    to_model_ids,
    to_tokenizer_ids,
)
from conftest import ARTICLES, tiny_bart_config, tiny_t5_config, untie_head

PREFIX = "summarize: "
TEXTS = [PREFIX + a for a, _ in ARTICLES] + [s for _, s in ARTICLES]

def t5(**overrides):
    from transformers import T5ForConditionalGeneration

    torch.manual_seed(0)
    return T5ForConditionalGeneration(tiny_t5_config(**overrides)).eval()


def bart():
    from transformers import BartForConditionalGeneration

    torch.manual_seed(0)
    return BartForConditionalGeneration(tiny_bart_config()).eval()


def kept_only_head(model, kept):
    """Make every dropped id a bad choice, so the unpruned model only ever picks kept ids."""
    dropped = torch.ones(model.config.vocab_size, dtype=torch.bool)
    dropped[kept] = False
    with torch.no_grad():
        if hasattr(model, "final_logits_bias"):
            model.final_logits_bias[0, dropped] = -1e4
        else:  # T5 ties lm_head to the embedding: untie to change only the output layer
            model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.clone())
            model.config.tie_word_embeddings = False
            model.lm_head.weight[dropped] = 0.0
    return model


def test_kept_ids_cover_texts_and_specials(byt5_tokenizer):
    kept = kept_token_ids(byt5_tokenizer, TEXTS, model=t5())
    assert kept == sorted(set(kept))
    used = {i for text in TEXTS for i in byt5_tokenizer(text)["input_ids"]}
    assert used <= set(kept)
    assert {0, 1, 2} <= set(kept)  # pad, eos, unk (and T5's decoder start 0)
    assert len(kept) < 384
    with pytest.raises(DatasetError):
        kept_token_ids(byt5_tokenizer, [])


@pytest.mark.parametrize("make", [t5, bart, lambda: untie_head(t5())], ids=["t5", "bart", "t5-untied"])
def test_pruned_logits_equal_unpruned_logits_at_kept_ids(byt5_tokenizer, make):
    model = make()
    kept = kept_token_ids(byt5_tokenizer, TEXTS, model=model)
    pruned = prune_vocabulary(model, kept, unk_id=byt5_tokenizer.unk_token_id)
    assert pruned.config.vocab_size == len(kept)
    assert pruned.get_input_embeddings().weight.shape[0] == len(kept)
    assert pruned.get_output_embeddings().weight.shape[0] == len(kept)
    assert model.config.vocab_size == 384 and pruning_info(model) is None  # original untouched
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert (pruned.get_output_embeddings().weight is pruned.get_input_embeddings().weight) == tied
    batch = byt5_tokenizer([PREFIX + ARTICLES[0][0], PREFIX + ARTICLES[3][0]], padding=True, return_tensors="pt")
    decoder = byt5_tokenizer(["Council approves", "New frog"], padding=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        full = model(**batch, decoder_input_ids=decoder).logits
        small = pruned(input_ids=to_model_ids(pruned, batch["input_ids"]), attention_mask=batch["attention_mask"],
                       decoder_input_ids=to_model_ids(pruned, decoder)).logits
    assert small.shape[-1] == len(kept)
    torch.testing.assert_close(small, full[..., kept], rtol=0, atol=1e-6)


@pytest.mark.parametrize("make", [t5, bart])
def test_generation_mapped_back_is_identical(byt5_tokenizer, make):
    model = make()
    kept = kept_token_ids(byt5_tokenizer, TEXTS, model=model)
    model = kept_only_head(model, kept)
    pruned = prune_vocabulary(model, kept, unk_id=byt5_tokenizer.unk_token_id)
    assert pruned.generation_config.eos_token_id == kept.index(model.generation_config.eos_token_id)
    batch = byt5_tokenizer([PREFIX + a for a, _ in ARTICLES[:4]], padding=True, return_tensors="pt")
    for min_new in (0, 12):
        with torch.inference_mode():
            expected = model.generate(**batch, max_new_tokens=12, min_new_tokens=min_new, do_sample=False)
        got = generate(pruned, batch["input_ids"], batch["attention_mask"], max_new_tokens=12,
                       min_new_tokens=min_new)
        assert torch.equal(got, expected)
        beams = generate(pruned, batch["input_ids"], batch["attention_mask"], max_new_tokens=6, num_beams=2)
        with torch.inference_mode():
            assert torch.equal(beams, model.generate(**batch, max_new_tokens=6, num_beams=2, do_sample=False))


def test_id_mapping_round_trip_unknowns_and_label_padding(byt5_tokenizer):
    pruned = prune_for_texts(t5(), byt5_tokenizer, TEXTS)
    kept = pruning_info(pruned)["kept_ids"]
    ids = torch.tensor([[kept[5], kept[0], LABEL_PAD], [kept[-1], kept[3], kept[2]]])
    model_ids = to_model_ids(pruned, ids)
    assert model_ids.tolist() == [[5, 0, LABEL_PAD], [len(kept) - 1, 3, 2]]
    assert torch.equal(to_tokenizer_ids(pruned, model_ids), ids)
    dropped = next(i for i in range(384) if i not in kept)
    unk = pruning_info(pruned)["unk_model_id"]
    assert kept[unk] == byt5_tokenizer.unk_token_id
    assert to_model_ids(pruned, torch.tensor([dropped])).tolist() == [unk]
    with pytest.raises(CompressionError, match="original vocabulary"):
        to_model_ids(pruned, torch.tensor([384]))
    plain = t5()
    same = torch.tensor([[4, 5]])
    assert to_model_ids(plain, same) is same and to_tokenizer_ids(plain, same) is same


def test_without_unknown_token_dropped_ids_raise(byt5_tokenizer):
    model = t5()
    pruned = prune_vocabulary(model, kept_token_ids(byt5_tokenizer, TEXTS, model=model))
    kept = pruning_info(pruned)["kept_ids"]
    dropped = next(i for i in range(384) if i not in kept)
    with pytest.raises(CompressionError, match="unknown token"):
        to_model_ids(pruned, torch.tensor([dropped]))


def test_pruned_model_saves_and_loads_with_plain_transformers(tmp_path, byt5_tokenizer):
    from transformers import AutoModelForSeq2SeqLM

    pruned = prune_for_texts(t5(), byt5_tokenizer, TEXTS)
    pruned.save_pretrained(tmp_path)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert pruning_info(loaded) == pruning_info(pruned)
    assert loaded.config.vocab_size == pruned.config.vocab_size
    batch = byt5_tokenizer([PREFIX + ARTICLES[1][0]], return_tensors="pt")
    a = generate(pruned, batch["input_ids"], batch["attention_mask"], max_new_tokens=8)
    b = generate(loaded, batch["input_ids"], batch["attention_mask"], max_new_tokens=8)
    assert torch.equal(a, b)
    assert set(a.flatten().tolist()) <= set(pruning_info(pruned)["kept_ids"])


def test_refuses_bad_input(byt5_tokenizer):
    model = t5()
    with pytest.raises(CompressionError, match="0..383"):
        prune_vocabulary(model, [0, 1, 999])
    with pytest.raises(CompressionError, match="no token ids"):
        prune_vocabulary(model, [])
    with pytest.raises(CompressionError, match="unknown token"):
        prune_vocabulary(model, [0, 1, 5, 6], unk_id=2)
    with pytest.raises(CompressionError, match="pad_token_id"):
        prune_vocabulary(model, [1, 2, 5])
    pruned = prune_vocabulary(model, [0, 1, 2, 5])
    with pytest.raises(CompressionError, match="already pruned"):
        prune_vocabulary(pruned, [0, 1])


def test_evaluate_maps_ids_for_pruned_models(byt5_tokenizer):
    from compression.config import EvalArgs
    from compression.evaluate import compute_validation_loss, generate_summaries

    model = t5()
    kept = kept_token_ids(byt5_tokenizer, TEXTS, model=model)
    model = kept_only_head(model, kept)
    pruned = prune_vocabulary(model, kept, unk_id=byt5_tokenizer.unk_token_id)
    docs, refs = [a for a, _ in ARTICLES[:4]], [s for _, s in ARTICLES[:4]]
    args = EvalArgs(max_new_tokens=10, batch_size=2)
    kwargs = dict(prefix=PREFIX, max_source_length=64)
    assert generate_summaries(pruned, byt5_tokenizer, docs, args=args, **kwargs) == \
        generate_summaries(model, byt5_tokenizer, docs, args=args, **kwargs)
    loss_kw = dict(prefix=PREFIX, max_source_length=64, max_target_length=16, batch_size=2)
    full = compute_validation_loss(model, byt5_tokenizer, docs, refs, **loss_kw)
    small = compute_validation_loss(pruned, byt5_tokenizer, docs, refs, **loss_kw)
    # every target id is kept, so renormalising over fewer ids can only raise their probability
    assert 0 < small <= full
