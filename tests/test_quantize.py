"""compression.quantize: bitsandbytes 8/4-bit and half precision on CPU, on tiny saved T5s."""

from __future__ import annotations

import sys

import pytest
import torch

from compression.errors import ModelLoadError, QuantizationError
from compression.evaluate import size_on_disk_mib
from compression.quantize import QUANT_MODES, quantize, save_quantized
from conftest import tiny_t5_config

PREFIX = "summarize: "


def save_tiny(path, tokenizer, **overrides):
    from transformers import T5ForConditionalGeneration

    torch.manual_seed(0)
    model = T5ForConditionalGeneration(tiny_t5_config(**overrides)).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def generate_ids(model, tokenizer, text="The council approved a new budget."):
    batch = tokenizer([PREFIX + text], return_tensors="pt").to(model.device)
    with torch.inference_mode():
        return model.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=False)


def load_bnb(model_dir, mode):
    try:
        return quantize(model_dir, mode, device="cpu")
    except QuantizationError as exc:
        if "bitsandbytes" in str(exc) and "import" in str(exc):
            pytest.skip(f"bitsandbytes CPU backend unavailable: {exc}")
        raise


def test_modes_and_unknown_mode(tiny_t5_dir):
    assert QUANT_MODES == ("none", "8bit", "4bit", "fp4", "fp16", "bf16")
    with pytest.raises(QuantizationError, match="choose one of"):
        quantize(tiny_t5_dir, "int3", device="cpu")


def test_not_a_model_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="config.json"):
        quantize(tmp_path, "fp16", device="cpu")


@pytest.mark.parametrize("mode,dtype",
                         [("fp16", torch.float16), ("bf16", torch.bfloat16), ("none", torch.float32)])
def test_half_precision_casts_every_weight(tiny_t5_dir, byt5_tokenizer, mode, dtype):
    model = quantize(tiny_t5_dir, mode, device="cpu")
    assert not model.training
    assert {p.dtype for p in model.parameters()} == {dtype}
    assert generate_ids(model, byt5_tokenizer).shape == (1, 5)


def test_8bit_loads_and_generates_on_cpu(tiny_t5_dir, byt5_tokenizer):
    import bitsandbytes as bnb

    model = load_bnb(tiny_t5_dir, "8bit")
    assert not model.training
    assert model.is_loaded_in_8bit
    assert isinstance(model.encoder.block[0].layer[0].SelfAttention.q, bnb.nn.Linear8bitLt)
    assert generate_ids(model, byt5_tokenizer).shape == (1, 5)


@pytest.mark.parametrize("mode,quant_type", [("4bit", "nf4"), ("fp4", "fp4")])
def test_4bit_loads_and_generates_on_cpu(tmp_path, byt5_tokenizer, mode, quant_type):
    import bitsandbytes as bnb

    # bitsandbytes' CPU 4-bit kernel packs weights in blocks of 64 inputs: widths must be multiples of 64
    model_dir = save_tiny(tmp_path / "t5-64", byt5_tokenizer, d_model=64, d_kv=16, d_ff=128)
    model = load_bnb(model_dir, mode)
    layer = model.decoder.block[1].layer[2].DenseReluDense.wi
    assert isinstance(layer, bnb.nn.Linear4bit)
    assert layer.weight.quant_type == quant_type
    assert layer.compute_dtype == torch.float32
    assert generate_ids(model, byt5_tokenizer).shape == (1, 5)


def test_4bit_on_narrow_model_runs_or_says_what_to_do(tiny_t5_dir, byt5_tokenizer):
    """d_model 32 is below the CPU 4-bit kernel's block of 64 on CPUs that use it: either it runs, or
    quantize fails at load time with a QuantizationError naming the modes that work."""
    try:
        model = quantize(tiny_t5_dir, "4bit", device="cpu")
    except QuantizationError as exc:
        assert "multiples of 64" in str(exc) and "8bit" in str(exc)
    else:
        assert generate_ids(model, byt5_tokenizer).shape == (1, 5)


def test_missing_bitsandbytes_is_a_quantization_error(tiny_t5_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # makes `import bitsandbytes` fail
    with pytest.raises(QuantizationError, match="pip install"):
        quantize(tiny_t5_dir, "8bit", device="cpu")


def test_save_quantized_round_trips_and_shrinks(tmp_path, byt5_tokenizer):
    from transformers import AutoModelForSeq2SeqLM

    model_dir = save_tiny(tmp_path / "t5-64", byt5_tokenizer, d_model=64, d_kv=16, d_ff=128)
    full = quantize(model_dir, "none", device="cpu")
    full_size = save_quantized(full, byt5_tokenizer, tmp_path / "full")
    model = load_bnb(model_dir, "4bit")
    expected = generate_ids(model, byt5_tokenizer)
    size = save_quantized(model, byt5_tokenizer, tmp_path / "nf4")
    assert (tmp_path / "nf4" / "model.safetensors").is_file()
    assert size < full_size / 2
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "nf4", device_map={"": "cpu"}).eval()
    assert reloaded.is_loaded_in_4bit
    assert torch.equal(generate_ids(reloaded, byt5_tokenizer), expected)
    assert abs(size_on_disk_mib(reloaded) - size_on_disk_mib(model)) < 0.01  # a reloaded model can be measured


# ---- size options: rest dtype, vocabulary pruning, fastest mode ---------------------------------

def test_rest_dtype_halves_what_bitsandbytes_leaves(tmp_path, byt5_tokenizer):
    import bitsandbytes as bnb

    model_dir = save_tiny(tmp_path / "t5-64", byt5_tokenizer, d_model=64, d_kv=16, d_ff=128)
    compact = load_bnb(model_dir, "8bit")  # default rest_dtype="bfloat16"
    plain = quantize(model_dir, "8bit", device="cpu", rest_dtype="float32")
    for model, dtype in ((compact, torch.bfloat16), (plain, torch.float32)):
        assert model.shared.weight.dtype == dtype
        assert model.decoder.block[0].layer[2].DenseReluDense.wo.weight.dtype == dtype
        assert isinstance(model.decoder.block[0].layer[2].DenseReluDense.wi, bnb.nn.Linear8bitLt)
        assert generate_ids(model, byt5_tokenizer).shape == (1, 5)
    small = save_quantized(compact, byt5_tokenizer, tmp_path / "compact")
    large = save_quantized(plain, byt5_tokenizer, tmp_path / "plain")
    assert small < large
    with pytest.raises(QuantizationError, match="rest dtype"):
        quantize(model_dir, "8bit", device="cpu", rest_dtype="int8")


def test_4bit_with_pruned_vocabulary_loads_generates_and_reloads(tmp_path, byt5_tokenizer):
    from transformers import AutoModelForSeq2SeqLM

    from compression.generation import generate
    from compression.vocab import pruning_info
    from conftest import ARTICLES

    model_dir = save_tiny(tmp_path / "t5-64", byt5_tokenizer, d_model=64, d_kv=16, d_ff=128)
    texts = [PREFIX + a for a, _ in ARTICLES] + [s for _, s in ARTICLES]
    model = load_bnb_options(model_dir, "4bit", vocab_texts=texts)
    info = pruning_info(model)
    assert info is not None and info["original_vocab_size"] == 384
    assert model.shared.weight.shape[0] == len(info["kept_ids"]) < 384
    batch = byt5_tokenizer([PREFIX + ARTICLES[2][0]], return_tensors="pt")
    out = generate(model, batch["input_ids"], batch["attention_mask"], max_new_tokens=4, min_new_tokens=4)
    assert out.shape == (1, 5) and set(out.flatten().tolist()) <= set(info["kept_ids"])
    full_size = save_quantized(quantize(model_dir, "4bit", device="cpu"), byt5_tokenizer, tmp_path / "full")
    size = save_quantized(model, byt5_tokenizer, tmp_path / "pruned")
    assert size < full_size
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "pruned", device_map={"": "cpu"}).eval()
    assert pruning_info(reloaded) == info
    assert torch.equal(generate(reloaded, batch["input_ids"], batch["attention_mask"], max_new_tokens=4,
                                min_new_tokens=4), out)


def load_bnb_options(model_dir, mode, **options):
    try:
        return quantize(model_dir, mode, device="cpu", **options)
    except QuantizationError as exc:
        if "bitsandbytes" in str(exc) and "import" in str(exc):
            pytest.skip(f"bitsandbytes CPU backend unavailable: {exc}")
        raise


def _logits(model, tokenizer, text="The council approved a new budget."):
    batch = tokenizer([PREFIX + text], return_tensors="pt")
    with torch.inference_mode():
        return model(**batch, decoder_input_ids=torch.tensor([[0, 5, 6]])).logits.float()


@pytest.mark.parametrize("mode", ["4bit", "8bit"])
def test_quantize_wo_too_is_smaller_stays_correct_and_reloads_with_load_model(tmp_path, byt5_tokenizer, mode):
    import bitsandbytes as bnb
    from transformers import AutoModelForSeq2SeqLM

    from compression.load import load_model
    from compression.quantize import QUANTIZED_WO

    layer = {"4bit": bnb.nn.Linear4bit, "8bit": bnb.nn.Linear8bitLt}[mode]
    model_dir = save_tiny(tmp_path / "t5-64", byt5_tokenizer, d_model=64, d_kv=16, d_ff=128)
    reference = _logits(quantize(model_dir, "none", device="cpu"), byt5_tokenizer)
    kept = load_bnb_options(model_dir, mode)
    model = load_bnb_options(model_dir, mode, quantize_wo=True)
    assert not isinstance(kept.decoder.block[0].layer[2].DenseReluDense.wo, layer)
    assert isinstance(model.decoder.block[0].layer[2].DenseReluDense.wo, layer)
    assert isinstance(model.encoder.block[0].layer[1].DenseReluDense.wo, layer)
    assert getattr(model.config, QUANTIZED_WO) is True and not getattr(kept.config, QUANTIZED_WO, False)
    # every forward, not only the first, sees the same weights (bitsandbytes repacks 4-bit weights
    # for its CPU kernel at the first forward; T5 casts wo's input to the storage dtype)
    first, second = _logits(model, byt5_tokenizer), _logits(model, byt5_tokenizer)
    assert torch.equal(first, second)
    error = (first - reference).norm() / reference.norm()
    assert error < 2 * (_logits(kept, byt5_tokenizer) - reference).norm() / reference.norm() + 0.05
    small = save_quantized(model, byt5_tokenizer, tmp_path / "all")
    assert small < save_quantized(kept, byt5_tokenizer, tmp_path / "kept")
    reloaded, _ = load_model(tmp_path / "all")
    assert isinstance(reloaded.decoder.block[0].layer[2].DenseReluDense.wo, layer)
    again = _logits(reloaded, byt5_tokenizer)
    assert torch.equal(again, _logits(reloaded, byt5_tokenizer))
    assert (again - first).norm() / first.norm() < 0.05
    assert abs(size_on_disk_mib(reloaded) - size_on_disk_mib(model)) < 0.01
    # plain transformers fails loudly (4-bit: size mismatch at load; 8-bit: int8 wo at the first
    # forward), it never runs the file with wrong weights
    with pytest.raises(RuntimeError):
        _logits(AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "all"), byt5_tokenizer)


GUARD_SCRIPT = """
import sys, torch
from transformers import ByT5Tokenizer, LongT5ForConditionalGeneration
sys.path.insert(0, sys.argv[2])
from conftest import tiny_longt5_config
from compression.load import load_model
from compression.quantize import quantize, save_quantized

torch.manual_seed(0)
# widths that are multiples of 64, which bitsandbytes' 4-bit CPU kernel runs on every CPU kind
config = tiny_longt5_config(d_model=64, d_kv=32, num_heads=2, d_ff=128, global_block_size=16, local_radius=8)
LongT5ForConditionalGeneration(config).save_pretrained(sys.argv[1] + "/fp32")
ByT5Tokenizer().save_pretrained(sys.argv[1] + "/fp32")
model = quantize(sys.argv[1] + "/fp32", "4bit", device="cpu", rest_dtype="float32")
save_quantized(model, ByT5Tokenizer(), sys.argv[1] + "/4bit")
reloaded, _ = load_model(sys.argv[1] + "/4bit")
for each in (model, reloaded):
    with torch.no_grad():  # 5 source tokens: fewer than one global block, so the global aggregates are empty
        logits = each(input_ids=torch.full((1, 5), 7), decoder_input_ids=torch.zeros(1, 1, dtype=torch.long)).logits
    print(tuple(logits.shape), bool(torch.isfinite(logits).all()))
"""


def test_4bit_layers_take_empty_inputs(tmp_path):
    """bitsandbytes' 4-bit CPU matmul divides by the row count, so an empty input stopped the process
    with SIGFPE; a 4-bit LongT5 gives its layers one for a source shorter than a global block. Its
    4-bit copy, made and reloaded, now reads a 5-token source (run in a child process, so a
    regression is a failed test, not a crashed suite); an empty input gives an empty output."""
    import subprocess

    pytest.importorskip("bitsandbytes")
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    done = subprocess.run([sys.executable, "-c", GUARD_SCRIPT, str(tmp_path), str(tests)], cwd=tests.parent,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    assert done.stdout.split("\n")[:2] == ["(1, 1, 384) True"] * 2


def test_guard_empty_inputs_keeps_other_inputs_and_is_applied_once():
    bnb = pytest.importorskip("bitsandbytes")
    from compression.arch import guard_empty_inputs

    torch.manual_seed(0)
    model = torch.nn.Sequential(bnb.nn.Linear4bit(64, 128, bias=False, compute_dtype=torch.float32,
                                                 quant_type="nf4").to("cpu"), torch.nn.Linear(128, 4))
    x = torch.randn(3, 64)
    with torch.no_grad():
        before = model(x)
        assert guard_empty_inputs(model) == 1 and guard_empty_inputs(model) == 0
        assert torch.equal(model(x), before)
        empty = model[0](torch.randn(2, 0, 64))
    assert empty.shape == (2, 0, 128) and empty.dtype == torch.float32
    assert guard_empty_inputs(torch.nn.Linear(2, 2)) == 0
