"""Loading base checkpoints (hub id or local folder), architecture presets, and family detection.

A *base* model is what the student is shrunk from (the teacher). With a model hub it is any
encoder-decoder checkpoint (``t5-small``, ``google/flan-t5-small``, ``google/long-t5-tglobal-base``,
``facebook/bart-base``...); without one, it is an architecture preset from the T5-efficient table
(Tay et al. 2022, "Scale Efficiently", table of model shapes; configs as published under
``google/t5-efficient-*``) or a LongT5 preset of the same widths (Guo et al. 2022, "LongT5", section
2.1: ``local`` or ``transient-global`` encoder attention for long inputs), randomly initialised with a
tokenizer you point to, and fine-tuned here as the teacher.

No checkpoint ever runs its own code: ``trust_remote_code`` is always ``False``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    ByT5Tokenizer,
    LongT5Config,
    PretrainedConfig,
    PreTrainedModel,
    T5Config,
    T5Tokenizer,
)

from .arch import (  # noqa: F401  (model_family, seq2seq_class and the families are re-exported)
    BART_FAMILY,
    QUANTIZED_WO,
    T5_FAMILY,
    count_parameters,
    get_layer_stacks,
    guard_empty_inputs,
    model_family,
    seq2seq_class,
    set_t5_decoder_depth,
)
from .errors import ModelLoadError, RemoteCodeError
from .preflight import check_checkpoint

# T5-efficient shapes as published in the google/t5-efficient-* configs (relu feed-forward,
# tied embeddings, 32 relative-position buckets). Parameter counts at the 32128-piece T5 vocab:
# tiny 15.58M, mini 31.23M, small 60.52M, base 222.9M, large 737.7M.
_EFFICIENT = {
    "tiny": dict(num_layers=4, d_ff=1024, d_model=256, d_kv=64, num_heads=4),
    "mini": dict(num_layers=4, d_ff=1536, d_model=384, d_kv=64, num_heads=8),
    "small": dict(num_layers=6, d_ff=2048, d_model=512, d_kv=64, num_heads=8),
    "base": dict(num_layers=12, d_ff=3072, d_model=768, d_kv=64, num_heads=12),
    "large": dict(num_layers=24, d_ff=4096, d_model=1024, d_kv=64, num_heads=16),
}
PRESETS: dict[str, dict] = {name: dict(shape) for name, shape in _EFFICIENT.items()}
# DeepNarrow variants (Tay et al.): the Tiny width at other depths, e.g. t5-efficient-tiny-nl8.
for _depth in (2, 6, 8, 12, 16):
    PRESETS[f"tiny-nl{_depth}"] = dict(_EFFICIENT["tiny"], num_layers=_depth)
for _depth in (8, 12, 16):
    PRESETS[f"mini-nl{_depth}"] = dict(_EFFICIENT["mini"], num_layers=_depth)
#: LongT5 encoder attention of the ``longt5-*`` presets (Guo et al. 2022, "LongT5", section 2.1):
#: ``local``: each token attends to the 127 tokens either side (``local_radius``); ``tglobal``
#: (transient global): that, plus one summary token per block of 16 input tokens
#: (``global_block_size``), made afresh in every layer from the layer's input. The decoder is T5's.
LONGT5_ATTENTION = {"local": "local", "tglobal": "transient-global"}
#: LongT5 presets: the T5-efficient tiny/mini/small shapes (relu feed-forward, tied embeddings) with
#: LongT5 encoder attention, e.g. ``longt5-tglobal-tiny``. The published LongT5 checkpoints
#: (``google/long-t5-tglobal-base``...) are base width and up with gated-gelu feed-forward; these
#: smaller ones keep the T5-efficient shapes so they compare layer for layer with ``tiny``/``mini``/``small``.
for _width in ("tiny", "mini", "small"):
    for _name, _attention in LONGT5_ATTENTION.items():
        PRESETS[f"longt5-{_name}-{_width}"] = dict(_EFFICIENT[_width], encoder_attention_type=_attention)

# Hub checkpoints the dashboard offers; the first is the blog post's t5-small headline generator.
HUB_PRESETS = (
    "JulesBelveze/t5-small-headline-generator",
    "t5-small",
    "google/flan-t5-small",
    "google/t5-efficient-tiny",
    "google/t5-efficient-mini",
    "google/t5-efficient-small",
    "google/long-t5-tglobal-base",
    "google/long-t5-local-base",
    "facebook/bart-base",
    "sshleifer/distilbart-cnn-12-6",
)


def load_tokenizer(name_or_path: str | Path, *, token: str | None = None):
    """Load a tokenizer from a folder or hub id.

    ``"byt5"`` gives ByT5's byte tokenizer (no files, no download). A folder that holds only a
    SentencePiece ``spiece.model`` (like ``../shared/tokenizers/t5``) loads as ``T5Tokenizer``.

    Raises:
        ModelLoadError: nothing loadable there.
    """
    if str(name_or_path) == "byt5":
        return ByT5Tokenizer()
    path = Path(name_or_path)
    try:
        if path.is_dir() and (path / "spiece.model").is_file() and not (path / "tokenizer_config.json").exists():
            return T5Tokenizer.from_pretrained(str(path))
        return AutoTokenizer.from_pretrained(str(name_or_path), token=token, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise ModelLoadError(
            f"could not load a tokenizer from {name_or_path}: {error}. Point to a folder with "
            "tokenizer files (e.g. ../shared/tokenizers/t5) or a hub id reachable from this machine"
        ) from None


def _load_config(name_or_path: str, token: str | None) -> PretrainedConfig:
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{path} is not a model folder (no config.json): point to a folder written by "
                "save_pretrained, e.g. one made by `python -m compression init`"
            )
    elif name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ModelLoadError(f"folder {name_or_path} does not exist: check the path")
    try:
        return AutoConfig.from_pretrained(str(path) if path.exists() else name_or_path, token=token,
                                          trust_remote_code=False)
    except ValueError as error:
        if "trust_remote_code" in str(error) or "custom code" in str(error):
            raise RemoteCodeError(
                f"{name_or_path} needs its own code to run (trust_remote_code); this tool never runs a "
                "checkpoint's code. Use a checkpoint of a standard transformers architecture"
            ) from None
        raise ModelLoadError(f"could not read the config of {name_or_path}: {error}") from None
    except OSError as error:
        raise ModelLoadError(
            f"could not load {name_or_path!r} from the Hugging Face hub ({type(error).__name__}): check the "
            "id, your network and token; offline, pass a local model folder instead (e.g. one made by "
            "`python -m compression init --preset tiny`)"
        ) from None


def load_model(name_or_path: str | Path, *, tokenizer: str | Path | None = None,
               token: str | None = None) -> tuple[PreTrainedModel, object]:
    """Load a base checkpoint and its tokenizer, refusing anything this tool cannot shrink.

    Args:
        name_or_path: hub id (``t5-small``) or local folder written by ``save_pretrained``.
        tokenizer: tokenizer folder or id when the checkpoint has none (default: same as the model).
        token: hub token for private checkpoints; never logged or written anywhere.

    Returns:
        ``(model, tokenizer)``; the model is in eval mode, fp32 on CPU.

    Raises:
        ModelLoadError: unknown hub id, hub unreachable, folder without a model.
        RemoteCodeError: the checkpoint needs ``trust_remote_code``.
        NotSeq2SeqError: the checkpoint is not a T5- or BART-family encoder-decoder.
    """
    name = str(name_or_path)
    check_checkpoint(name)  # a local folder's config.json and weight headers, before transformers reads them
    config = _load_config(name, token)
    if getattr(config, "auto_map", None) and config.model_type not in T5_FAMILY + BART_FAMILY:
        raise RemoteCodeError(f"{name} maps to custom code (auto_map); this tool never runs a checkpoint's code")
    model_family(config)
    source = str(Path(name).expanduser()) if Path(name).expanduser().exists() else name
    try:
        if getattr(config, QUANTIZED_WO, False):  # bitsandbytes-quantized ``wo``: see seq2seq_class
            model = seq2seq_class(config).from_pretrained(source, token=token)
        else:
            # fp32 whatever the stored dtype (transformers 5 loads a checkpoint's own dtype by default, and a
            # bf16 checkpoint such as the committed offline teacher must train and score in fp32 on a CPU)
            model = AutoModelForSeq2SeqLM.from_pretrained(source, token=token, trust_remote_code=False,
                                                          dtype=torch.float32)
    except OSError as error:
        raise ModelLoadError(f"{name} has a config but no loadable weights: {error}") from None
    guard_empty_inputs(model)  # a saved 4-bit copy: bitsandbytes' CPU kernel and empty inputs
    tok = load_tokenizer(tokenizer if tokenizer is not None else source, token=token)
    set_t5_decoder_depth(model.config)
    return model.eval(), tok


def preset_config(preset: str, vocab_size: int = 32128) -> T5Config | LongT5Config:
    """The config of an architecture preset (see :data:`PRESETS`): a ``T5Config``, or for the
    ``longt5-*`` presets a ``LongT5Config`` with the published LongT5 attention settings (local
    radius 127 tokens, global blocks of 16 tokens; Guo et al. 2022, section 2.1 and the
    ``google/long-t5-*`` configs).

    Raises:
        ModelLoadError: unknown preset name (the message lists the known ones).
    """
    if preset not in PRESETS:
        raise ModelLoadError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    shape = dict(PRESETS[preset])
    common = dict(vocab_size=vocab_size, num_decoder_layers=shape["num_layers"], feed_forward_proj="relu",
                  relative_attention_num_buckets=32, relative_attention_max_distance=128,
                  dropout_rate=0.1, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
                  tie_word_embeddings=True)
    if "encoder_attention_type" in shape:
        return LongT5Config(**common, local_radius=127, global_block_size=16, **shape)
    return T5Config(**common, **shape)


def build_preset(preset: str, tokenizer: str | Path, *, seed: int = 0) -> tuple[PreTrainedModel, object]:
    """A randomly initialised T5 (or LongT5, for the ``longt5-*`` presets) of a preset shape, with the
    tokenizer at ``tokenizer``.

    The vocabulary size is the tokenizer's length rounded up to a multiple of 128 (T5's 32,100
    pieces give the usual 32,128). The model is *untrained*: fine-tune it as a teacher first. Its
    config carries ``untrained_preset`` (the preset's name, saved in ``config.json``) until it is
    trained (:func:`is_untrained`; :func:`compression.train.run_trainer` removes the mark).

    Raises:
        ModelLoadError: unknown preset or unloadable tokenizer.
    """
    tok = load_tokenizer(tokenizer)
    vocab_size = int(math.ceil(len(tok) / 128) * 128)
    config = preset_config(preset, vocab_size)
    torch.manual_seed(seed)
    model = seq2seq_class(config)(config)
    model.generation_config.decoder_start_token_id = 0
    model.config.untrained_preset = preset
    return model.eval(), tok


#: Config attribute marking a randomly initialised preset that was never trained.
UNTRAINED_MARK = "untrained_preset"


def is_untrained(model_or_config) -> bool:
    """Whether a model is an architecture preset with random weights, never trained (its config's
    ``untrained_preset`` mark, set by :func:`build_preset`)."""
    config = getattr(model_or_config, "config", model_or_config)
    return bool(getattr(config, UNTRAINED_MARK, None))


def describe_model(model: PreTrainedModel) -> dict:
    """Plain facts about a model for tables and the dashboard.

    Returns:
        dict with ``family``, ``model_type``, ``encoder_layers``, ``decoder_layers``, ``d_model``,
        ``vocab_size``, ``params`` (:func:`compression.arch.count_parameters`), ``size_mib`` (bytes of
        those parameters and buffers at their dtypes / 2**20, i.e. the fp32 file size for an fp32
        model), ``shrink`` (kept indices when the model is a student, else ``None``) and ``prefix``
        (the source prefix it expects: the one its checkpoint records, else its family's,
        :func:`compression.data.default_prefix`).
    """
    from .data import default_prefix

    family = model_family(model)
    encoder, decoder = get_layer_stacks(model)
    tensors = {id(t): t for t in list(model.parameters()) + list(model.buffers())}.values()
    size = sum(tensor.numel() * tensor.element_size() for tensor in tensors)
    config = model.config
    return {
        "family": family,
        "model_type": config.model_type,
        "encoder_layers": len(encoder),
        "decoder_layers": len(decoder),
        "d_model": getattr(config, "d_model", None),
        "vocab_size": config.vocab_size,
        "params": count_parameters(model),
        "size_mib": size / 2**20,
        "shrink": getattr(config, "shrink", None),
        "prefix": default_prefix(model),
    }
