"""Post-training quantization of a saved checkpoint: bitsandbytes 8/4-bit, or half precision.

- ``"8bit"``: LLM.int8() (Dettmers et al. 2022), ``bitsandbytes`` ``Linear8bitLt`` layers.
- ``"4bit"``: NF4, 4-bit NormalFloat (Dettmers et al. 2023, QLoRA, section 3); ``"fp4"``: 4-bit float.
  Both via ``bitsandbytes`` ``Linear4bit``, computing in float32 on CPU and bfloat16 on CUDA.
- ``"fp16"``/``"bf16"``: every weight cast to half precision (note: original T5 checkpoints overflow
  in fp16; prefer bf16 for them).
- ``"none"``: the float32 checkpoint as saved.

Loading goes through transformers' ``BitsAndBytesConfig`` integration, so the result saves with
``save_pretrained`` and reloads with ``from_pretrained``. bitsandbytes >= 0.45 also runs on CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .errors import ModelLoadError, NotSeq2SeqError, QuantizationError, RemoteCodeError

QUANT_MODES = ("none", "8bit", "4bit", "fp4", "fp16", "bf16")
_BNB_MODES = ("8bit", "4bit", "fp4")
_HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}
# bitsandbytes logs a warning on every 8-bit matmul of fp32 inputs (the cast is expected here).
logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise QuantizationError(f"unknown device {device!r}: use 'auto', 'cpu' or 'cuda'") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise QuantizationError("device 'cuda' asked for but no CUDA GPU is visible: use 'cpu' or 'auto'")
    return resolved


def _bnb_config(mode: str, device: torch.device):
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
    )


def _load(model_dir: Path, **kwargs):
    from transformers import AutoModelForSeq2SeqLM

    if not (model_dir / "config.json").is_file():
        raise ModelLoadError(
            f"{model_dir} is not a saved model folder (no config.json): give the folder written by "
            "the fine-tuning step (save_model)"
        )
    try:
        return AutoModelForSeq2SeqLM.from_pretrained(model_dir, **kwargs)
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


def quantize(model_dir: str | Path, mode: str, *, device: str | torch.device = "auto"):
    """Load the float32 checkpoint in ``model_dir`` quantized as ``mode``; returned in eval mode.

    ``mode`` is one of :data:`QUANT_MODES`. bitsandbytes modes load with
    ``AutoModelForSeq2SeqLM.from_pretrained(model_dir, quantization_config=BitsAndBytesConfig(...),
    device_map={"": device})`` and run one tiny forward pass to check the kernels work on this
    device; ``fp16``/``bf16`` load in float32 and cast with ``.to(dtype)``. ``device`` is ``"auto"``
    (CUDA when visible, else CPU), ``"cpu"``, ``"cuda"`` or a ``torch.device``.
    ``trust_remote_code`` is never set.

    Raises:
        QuantizationError: unknown mode or device; bitsandbytes missing, broken, or unable to run
            on this device (the message says which modes to use instead).
        ModelLoadError: ``model_dir`` is not a loadable model folder.
        NotSeq2SeqError, RemoteCodeError: the checkpoint is not a built-in encoder-decoder.
    """
    if mode not in QUANT_MODES:
        raise QuantizationError(f"unknown quantization mode {mode!r}: choose one of {', '.join(QUANT_MODES)}")
    model_dir = Path(model_dir)
    target = _resolve_device(device)
    if mode in _BNB_MODES:
        config = _bnb_config(mode, target)
        try:
            model = _load(model_dir, quantization_config=config, device_map={"": str(target)})
        except (ImportError, RuntimeError) as exc:
            raise QuantizationError(
                f"bitsandbytes could not quantize to {mode} on {target} ({exc}): run "
                "`pip install -U 'bitsandbytes>=0.45'`, or choose fp16, bf16 or none"
            ) from exc
        model.eval()
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
