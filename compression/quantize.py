"""Post-training quantization of a saved checkpoint: bitsandbytes 8/4-bit, or half precision.

- ``"8bit"``: LLM.int8() (Dettmers et al. 2022), ``bitsandbytes`` ``Linear8bitLt`` layers.
- ``"4bit"``: NF4, 4-bit NormalFloat (Dettmers et al. 2023, QLoRA, section 3); ``"fp4"``: 4-bit float.
  Both via ``bitsandbytes`` ``Linear4bit``, computing in float32 on CPU and bfloat16 on CUDA.
- ``"fp16"``/``"bf16"``: every weight cast to half precision (note: original T5 checkpoints overflow
  in fp16; prefer bf16 for them).
- ``"none"``: the float32 checkpoint as saved.

Loading goes through transformers' ``BitsAndBytesConfig`` integration, so the result saves with
``save_pretrained`` and reloads with ``from_pretrained``. bitsandbytes >= 0.45 also runs on CPU.

What bitsandbytes leaves alone, and the two options that deal with it. bitsandbytes quantizes the
``nn.Linear`` layers only: the shared embedding (tied to ``lm_head``, which transformers also skips)
and T5's feed-forward output layers ``wo`` (``T5PreTrainedModel._keep_in_fp32_modules``) stay in
the dtype they are loaded in. At t5-small's shape the 32,128 x 512 embedding alone is 63 MiB in
float32, more than all the 8-bit layers of a 3/3 student together. Hence:

- ``rest_dtype`` (default ``"bfloat16"``): load those unquantized weights (embedding, ``lm_head``,
  ``wo``, layer norms) in bfloat16 instead of float32 - half their bytes on disk and in memory. The
  saved folder reloads with plain ``from_pretrained`` in the same dtypes.
- ``vocab_texts``: prune the vocabulary to the token ids these texts use before quantizing
  (:mod:`compression.vocab`, TextPruner's vocabulary pruning), which shrinks the embedding to the
  kept rows.

- ``quantize_wo`` (default off): quantize ``wo`` too. transformers keeps ``wo`` out of
  bitsandbytes when loading (``_keep_in_fp32_modules``, added for fp16 overflow in flan-t5-xxl,
  transformers issue #20287), so the model is loaded through a subclass of its own transformers
  class that empties that list (:func:`compression.load.seq2seq_class`); the 4-bit weights are packed in a tensor of
  the rest dtype (bitsandbytes' ``quant_storage``), because T5's feed-forward casts its activations
  to ``wo.weight.dtype`` and a ``uint8`` storage would turn them into integers. The checkpoint is
  marked ``config.quantized_wo = True``; :func:`compression.load.load_model` reads the mark and
  loads it the same way (and keeps bitsandbytes from repacking the 4-bit ``wo`` into ``uint8`` for
  its CPU kernel, for the same cast's sake). Plain ``from_pretrained`` fails loudly on such a folder
  (4-bit: size mismatch on ``wo`` at load; 8-bit: int8 ``wo`` weights at the first forward) rather
  than running it wrongly - the price of the smaller file (at t5-small's shape, 3/3, 4-bit, pruned
  vocabulary: 11.7% of the float32 base instead of 15.5%).
``benchmarks/size.py`` measures each choice's size and validation-loss cost.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .arch import QUANTIZED_WO, guard_empty_inputs, seq2seq_class
from .device import resolve_device
from .errors import ModelLoadError, NotSeq2SeqError, QuantizationError, RemoteCodeError

QUANT_MODES = ("none", "8bit", "4bit", "fp4", "fp16", "bf16")
#: ``quantize(..., mode=AUTO_MODE)``: the smallest mode not slower than float32 here, measured
#: (:func:`compression.auto_quantize.auto_quantization`); never ``"none"``.
AUTO_MODE = "auto"
REST_DTYPES = ("bfloat16", "float32")
_BNB_MODES = ("8bit", "4bit", "fp4")
_HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}
# bitsandbytes logs a warning on every 8-bit matmul of fp32 inputs (the cast is expected here).
logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)


def _resolve_device(device: str | torch.device) -> torch.device:
    return resolve_device(device, allowed=("cpu", "cuda"), error=QuantizationError)


def _bnb_config(mode: str, device: torch.device, storage: torch.dtype = torch.uint8):
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except Exception as exc:  # ImportError, or a broken native library raising at import
        raise QuantizationError(
            f"{mode} quantization needs bitsandbytes, which could not be imported ({exc}): "
            "run `pip install 'bitsandbytes>=0.45'`, or choose fp16, bf16 or none"
        ) from exc
    if mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4" if mode == "4bit" else "fp4",
        bnb_4bit_compute_dtype=torch.bfloat16 if device.type == "cuda" else torch.float32,
        # QLoRA's double quantization (Dettmers et al. 2023, section 3): the per-block absmax
        # constants are themselves quantized, ~0.37 bits per weight less
        bnb_4bit_use_double_quant=True,
        # packed 4-bit weights in a float tensor when ``wo`` is quantized (see the module docstring)
        bnb_4bit_quant_storage=storage,
    )


def _load(model_dir: Path, quantize_wo: bool = False, **kwargs):
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    if not (model_dir / "config.json").is_file():
        raise ModelLoadError(
            f"{model_dir} is not a saved model folder (no config.json): give the folder written by "
            "the fine-tuning step (save_model)"
        )
    try:
        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
        if quantize_wo or getattr(config, QUANTIZED_WO, False):
            model = seq2seq_class(config, quantize_wo=True).from_pretrained(model_dir, **kwargs)
        else:
            model = AutoModelForSeq2SeqLM.from_pretrained(model_dir, **kwargs)
        guard_empty_inputs(model)  # bitsandbytes' 4-bit CPU kernel and empty inputs: see there
        return model
    except ValueError as exc:
        text = str(exc)
        if "trust_remote_code" in text:
            raise RemoteCodeError(
                f"{model_dir} needs its own code (trust_remote_code), which this tool never runs: "
                "use a checkpoint of a built-in architecture (T5, BART)"
            ) from exc
        if "Unrecognized configuration class" in text:
            raise NotSeq2SeqError(
                f"{model_dir} is not an encoder-decoder model: quantize a T5 or BART checkpoint"
            ) from exc
        raise ModelLoadError(f"could not load {model_dir}: {text}") from exc
    except OSError as exc:
        raise ModelLoadError(f"could not load {model_dir}: {exc}; check the folder holds "
                             "config.json and model.safetensors") from exc


def _smoke_test(model, mode: str) -> None:
    """One decoder step on a one-token input, so a kernel that cannot run fails here, not later."""
    config = model.config
    start = next((t for t in (config.decoder_start_token_id, config.pad_token_id) if t is not None), 0)
    token = config.eos_token_id if config.eos_token_id is not None else 1
    device = model.device
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([[token]], device=device),
                  decoder_input_ids=torch.tensor([[start]], device=device))
    except (RuntimeError, AssertionError, NotImplementedError) as exc:
        hint = ""
        if mode != "8bit" and device.type == "cpu":
            hint = (" bitsandbytes' 4-bit CPU kernel needs layer widths (d_model, d_ff, heads x d_kv) "
                    "that are multiples of 64;")
        others = ", ".join(m for m in ("8bit", "fp16", "bf16", "none") if m != mode)
        raise QuantizationError(
            f"{mode} layers were built but cannot run on {device} ({exc}).{hint} choose {others}, "
            "or run on a CUDA GPU"
        ) from exc


def _pruned_copy(model_dir: Path, texts, workdir: Path) -> Path:
    """Prune the float checkpoint in ``model_dir`` to ``texts``' vocabulary into ``workdir``."""
    from .load import load_tokenizer
    from .vocab import prune_for_texts

    tokenizer = load_tokenizer(model_dir)
    pruned = prune_for_texts(_load(model_dir), tokenizer, texts)
    pruned.save_pretrained(workdir)
    return workdir


def quantize(model_dir: str | Path, mode: str, *, device: str | torch.device = "auto",
             rest_dtype: str = "bfloat16", vocab_texts=None, quantize_wo: bool = False):
    """Load the float32 checkpoint in ``model_dir`` quantized as ``mode``; returned in eval mode.

    ``mode`` is one of :data:`QUANT_MODES`, or :data:`AUTO_MODE`: the smallest mode not slower than
    float32 on this machine, timed (:func:`compression.auto_quantize.auto_quantization`, cached per
    machine), with its rest dtype; never the float32 model. bitsandbytes modes load with ``AutoModelForSeq2SeqLM.from_pretrained(model_dir,
    quantization_config=BitsAndBytesConfig(...), device_map={"": device}, dtype=rest_dtype)`` and
    run one tiny forward pass to check the kernels work on this device; ``fp16``/``bf16`` load in
    float32 and cast with ``.to(dtype)``. ``device`` is ``"auto"`` (CUDA when visible, else CPU),
    ``"cpu"``, ``"cuda"`` or a ``torch.device``. ``trust_remote_code`` is never set.

    Args:
        rest_dtype: for the bitsandbytes modes, the dtype of the weights bitsandbytes does not
            quantize (embedding, ``lm_head``, T5's ``wo``, norms): ``"bfloat16"`` (default, half
            the bytes) or ``"float32"`` (bitsandbytes' plain behaviour). Ignored by other modes.
        vocab_texts: optional texts (sources with their prefix, and summaries) whose token ids the
            model keeps; the rest of the vocabulary is pruned before quantizing
            (:func:`compression.vocab.prune_for_texts`). Needs the tokenizer in ``model_dir``.
            The result maps ids through ``config.vocab_pruning``; generate and evaluate it with
            :mod:`compression.generation` / :mod:`compression.evaluate`, which apply the mapping.
        quantize_wo: for the bitsandbytes modes, quantize T5's feed-forward output layers ``wo``
            too (see the module docstring): the smallest file, marked ``config.quantized_wo``,
            which loads with :func:`compression.load.load_model` but not with plain
            ``from_pretrained``. No effect on architectures without ``wo`` (BART) or other modes.

    Raises:
        QuantizationError: unknown mode, device or rest dtype; bitsandbytes missing, broken, or
            unable to run on this device (the message says which modes to use instead).
        ModelLoadError: ``model_dir`` is not a loadable model folder (or has no tokenizer when
            ``vocab_texts`` is given).
        NotSeq2SeqError, RemoteCodeError: the checkpoint is not a built-in encoder-decoder.
        DatasetError: ``vocab_texts`` is empty.
    """
    if mode == AUTO_MODE:
        from .auto_quantize import auto_quantization

        choice = auto_quantization(model_dir, device=device)
        mode, rest_dtype = choice.mode, choice.rest_dtype
    if mode not in QUANT_MODES:
        raise QuantizationError(f"unknown quantization mode {mode!r}: choose one of "
                                f"{', '.join(QUANT_MODES + (AUTO_MODE,))}")
    if rest_dtype not in REST_DTYPES:
        raise QuantizationError(f"unknown rest dtype {rest_dtype!r}: choose {' or '.join(REST_DTYPES)}")
    model_dir = Path(model_dir)
    target = _resolve_device(device)
    if vocab_texts is not None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="pruned-") as workdir:
            source = _pruned_copy(model_dir, vocab_texts, Path(workdir))
            return _quantize_folder(source, mode, target, rest_dtype, quantize_wo)
    return _quantize_folder(model_dir, mode, target, rest_dtype, quantize_wo)


def _quantize_folder(model_dir: Path, mode: str, target: torch.device, rest_dtype: str, quantize_wo: bool):
    if mode in _BNB_MODES:
        rest = getattr(torch, rest_dtype)
        config = _bnb_config(mode, target, storage=rest if quantize_wo else torch.uint8)
        try:
            model = _load(model_dir, quantize_wo, quantization_config=config, device_map={"": str(target)},
                          dtype=rest)
        except (ImportError, RuntimeError) as exc:
            raise QuantizationError(
                f"bitsandbytes could not quantize to {mode} on {target} ({exc}): run "
                "`pip install -U 'bitsandbytes>=0.45'`, or choose fp16, bf16 or none"
            ) from exc
        model.eval()
        if type(model) is not seq2seq_class(model.config, quantize_wo=False):  # its ``wo`` is quantized
            setattr(model.config, QUANTIZED_WO, True)  # read back by load_model and _load
        _smoke_test(model, mode)
        return model
    model = _load(model_dir)
    if mode in _HALF:
        model = model.to(_HALF[mode])
    return model.to(target).eval()


def save_quantized(model, tokenizer, out_dir: str | Path, *, card: dict | None = None) -> float:
    """Save a (quantized) model with its tokenizer into ``out_dir``; returns its size in MiB.

    Delegates to :func:`compression.export.save_model` (safetensors, atomic folder, model card);
    bitsandbytes 8/4-bit models save their packed weights and quantization config, and reload with
    ``from_pretrained`` alone. The size is the sum of the weight, config and tokenizer files
    (2**20 bytes per MiB).
    """
    from .export import model_files_size_mib, save_model

    folder = save_model(model, tokenizer, out_dir, card=card)
    return model_files_size_mib(folder)
