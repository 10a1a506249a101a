"""A deployed copy of a student: CTranslate2 (int8 by default), converted, scored and timed.

CTranslate2 (OpenNMT, https://opennmt.net/CTranslate2) is an inference engine for Transformer
models with int8 weights and CPU kernels (oneDNN / Intel MKL / Ruy) that a CPU server would use to
serve a T5 or BART summarizer. The conversion is CTranslate2's own
``ctranslate2.converters.TransformersConverter``; it reads a ``save_pretrained`` folder with its
tokenizer and writes ``model.bin`` + ``config.json`` + ``shared_vocabulary.json``. The copy is
loaded with ``ctranslate2.Translator`` and generates with ``Translator.translate_batch`` (token
strings in, token strings out); its validation loss comes from ``Translator.score_batch`` (the
log-probability of each target token, the end token included).

What this module adds to the converter, through its two public loading hooks
(``load_model``/``load_tokenizer``), for checkpoints transformers 5 and this project write:

- BART configs written by transformers 5 have no ``normalize_before`` (BART is post-norm), which
  CTranslate2 4.x reads: it is set to ``False`` on the loaded config when absent.
- transformers 5 always sets T5's ``tie_word_embeddings = True`` and keeps the fact the converter
  needs (scale the decoder output by ``d_model**-0.5``, original T5, not T5 v1.1) in
  ``scale_decoder_outputs``; its mT5 class never scales: the converter is shown
  :func:`scales_decoder_outputs`.
- The vocabulary is given in the *model's* ids: a vocabulary-pruned student
  (:mod:`compression.vocab`) has fewer rows than its tokenizer, so the vocabulary is the kept
  tokens in model-id order (``config.vocab_pruning["kept_ids"]``); rows beyond the tokenizer
  (T5's padding of 32,100 pieces to 32,128 rows) get unique unused names. Source tokens outside
  the kept vocabulary then map to the unknown token, as :func:`compression.vocab.to_model_ids` does.

Shrunk T5 students store ``num_decoder_layers`` (and a ``decoder_layers`` mirror) different from
``num_layers``; the converter reads ``num_layers``/``num_decoder_layers`` and the tests convert
such a student. Families the converter has no loader for (LongT5, ...) raise
:class:`~compression.errors.DeployUnsupportedError`, which the pipeline records as a note.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from .arch import T5_FAMILY
from .config import DEPLOY_QUANTIZATIONS, EvalArgs
from .errors import CompressionError, DeployUnsupportedError, ModelLoadError
from .files import atomic_write_text, replace_folder, staging_dir

#: Weight types of the converted copy (``TransformersConverter.convert(..., quantization=...)``).
CT2_QUANTIZATIONS = DEPLOY_QUANTIZATIONS
#: Formats ``export --format`` writes.
DEPLOY_FORMATS = ("ct2",)
#: File in the deployed folder with what this tool needs to use it (family, prefix, quantization).
DEPLOY_INFO = "deploy.json"
_CT2_FILES = ("model.bin", "config.json", "shared_vocabulary.json", "shared_vocabulary.txt",
              "source_vocabulary.json", "target_vocabulary.json")


def ct2_version() -> str | None:
    """The installed CTranslate2 version, or ``None`` when it cannot be imported."""
    try:
        import ctranslate2
    except Exception:  # ImportError or a broken native library
        return None
    return ctranslate2.__version__


def _require_ct2():
    try:
        import ctranslate2
        import ctranslate2.converters  # noqa: F401
    except Exception as exc:
        raise DeployUnsupportedError(
            f"the deployed copy needs CTranslate2, which could not be imported ({exc}): run "
            "`pip install 'ctranslate2>=4.5,<5'`") from exc
    return ctranslate2


class _ModelVocabulary:
    """The tokenizer as CTranslate2's loaders read it, but in the model's ids (see the module doc).

    Offers what ``T5Loader``/``BartLoader`` call: ``get_vocab()``, ``convert_ids_to_tokens`` and the
    special-token attributes.
    """

    def __init__(self, tokenizer, config):
        from .vocab import pruning_info

        info = pruning_info(config)
        size = int(config.vocab_size)
        if info is not None:
            ids = list(info["kept_ids"])
            self.unk_model_id = info.get("unk_model_id")
        else:
            ids = list(range(size))
            self.unk_model_id = tokenizer.unk_token_id
        count = len(tokenizer)
        tokens, seen = [], set()
        for model_id, token_id in enumerate(ids[:size]):
            token = tokenizer.convert_ids_to_tokens(token_id) if token_id < count else None
            if token is None or token in seen:  # past the tokenizer, or a duplicate string
                token = f"<ct2_unused_{model_id}>"
            seen.add(token)
            tokens.append(token)
        self.tokens = tokens
        self._tokenizer = tokenizer
        self._config = config

    def get_vocab(self) -> dict:
        return {token: i for i, token in enumerate(self.tokens)}

    def convert_ids_to_tokens(self, model_id):
        return self.tokens[int(model_id)]

    def _special(self, name: str):
        model_id = getattr(self._config, f"{name}_token_id", None)
        if model_id is not None and 0 <= model_id < len(self.tokens):
            return self.tokens[model_id]
        return getattr(self._tokenizer, f"{name}_token", None)

    @property
    def pad_token(self):
        return self._special("pad")

    @property
    def eos_token(self):
        return self._special("eos")

    @property
    def bos_token(self):
        return self._special("bos") or self.pad_token

    @property
    def unk_token(self):
        if self.unk_model_id is not None and 0 <= self.unk_model_id < len(self.tokens):
            return self.tokens[self.unk_model_id]
        return self._tokenizer.unk_token


def scales_decoder_outputs(config) -> bool:
    """Whether transformers 5 multiplies a T5-family decoder's output by ``d_model ** -0.5`` before
    the LM head, as the original T5 did with its tied embeddings: T5, UMT5 and LongT5 when
    ``config.scale_decoder_outputs`` (read from ``tie_word_embeddings`` in the checkpoint's
    config); ``MT5ForConditionalGeneration`` never does (mT5 is untied), whatever its config says.
    CTranslate2's T5 converter scales exactly when ``tie_word_embeddings`` is true, so the
    converted copy is given this answer."""
    if config.model_type == "mt5":
        return False
    return bool(getattr(config, "scale_decoder_outputs", getattr(config, "tie_word_embeddings", True)))


def _converter_class():
    ctranslate2 = _require_ct2()

    class StudentConverter(ctranslate2.converters.TransformersConverter):
        """``TransformersConverter`` with the loading fixes of the module docstring."""

        def load_model(self, model_class, model_name_or_path, **kwargs):
            kwargs.pop("trust_remote_code", None)  # never: built-in architectures only
            model = super().load_model(model_class, model_name_or_path, **kwargs)
            config = model.config
            if config.model_type == "bart" and not hasattr(config, "normalize_before"):
                config.normalize_before = False
            if config.model_type in T5_FAMILY:
                # the converter scales the decoder output by d_model**-0.5 when this says "tied"
                config.tie_word_embeddings = scales_decoder_outputs(config)
            self.model_config = config
            return model

        def load_tokenizer(self, tokenizer_class, model_name_or_path, **kwargs):
            from .load import load_tokenizer

            return _ModelVocabulary(load_tokenizer(model_name_or_path), self.model_config)

    return StudentConverter


def _generation_settings(model_dir: Path, tokenizer, model_config) -> dict:
    """The settings of the checkpoint's ``generation_config.json`` that change greedy/beam output,
    as ``translate_batch`` options (forced BOS/EOS as token strings of the tokenizer)."""
    from transformers import GenerationConfig

    try:
        config = GenerationConfig.from_pretrained(model_dir)
    except OSError:
        return {}
    from .vocab import pruning_info

    info = pruning_info(model_config)
    kept = info["kept_ids"] if info else None

    def token(model_id):
        if model_id is None:
            return None
        return tokenizer.convert_ids_to_tokens(kept[model_id] if kept else model_id)

    return {"forced_bos_token": token(config.forced_bos_token_id),
            "forced_eos_token": token(config.forced_eos_token_id),
            "no_repeat_ngram_size": config.no_repeat_ngram_size or 0,
            "repetition_penalty": config.repetition_penalty or 1.0,
            "length_penalty": 1.0 if config.length_penalty is None else config.length_penalty,
            "min_length": max(0, (config.min_length or 0) - 1)}


def deploy_card(info: dict, metrics: dict | None = None) -> str:
    """The README.md of a deployed folder: what it is, how to load it with ``ctranslate2.Translator``,
    and, given the copy's ``metrics`` (:func:`evaluate_deployed`'s, with ``agreement_with_student``
    where the run compared it with its student), what it measured."""
    prefix = info.get("prefix") or ""
    lines = [
        f"# {info.get('name', 'student')} - CTranslate2 {info['quantization']} copy",
        "",
        f"A {info['family']} summarizer converted with CTranslate2 {info['ctranslate2']}'s "
        f"`TransformersConverter` (quantization `{info['quantization']}`) from `{info['source']}`. "
        "The tokenizer files beside the model are the student's own.",
        "",
        "## Load and summarize",
        "",
        "```python",
        "import ctranslate2",
        "from transformers import AutoTokenizer",
        "",
        "translator = ctranslate2.Translator(\"PATH/TO/THIS/FOLDER\", device=\"cpu\", compute_type=\"default\")",
        "tokenizer = AutoTokenizer.from_pretrained(\"PATH/TO/THIS/FOLDER\")",
        f"ids = tokenizer({prefix!r} + article, truncation=True, max_length=512).input_ids",
        "result = translator.translate_batch([tokenizer.convert_ids_to_tokens(ids)], beam_size=1,",
        "                                    max_decoding_length=64)",
        "tokens = result[0].hypotheses[0]",
        "print(tokenizer.decode(tokenizer.convert_tokens_to_ids(tokens), skip_special_tokens=True))",
        "```",
        "",
        "`compute_type=\"default\"` keeps the stored weight type where the CPU/GPU supports it;",
        "`Translator.score_batch` gives each target token's log-probability (validation loss).",
    ]
    if info.get("pruned_vocab"):
        lines += ["", "The vocabulary is pruned to the data's tokens: pieces outside it become the "
                      "unknown token."]
    if metrics:
        lines += ["", "## Measured", "", "| ROUGE-1 | ROUGE-2 | ROUGE-L | val loss (nats) | MiB | "
                  "ms/summary batch 1 | ms/summary batched |", "|---|---|---|---|---|---|---|"]
        cells = [metrics.get(k) for k in ("rouge1", "rouge2", "rougeL", "validation_loss", "size_mib",
                                          "latency_ms", "latency_ms_batched")]
        lines.append("| " + " | ".join("-" if v is None else f"{v:.4g}" for v in cells) + " |")
        same = (metrics.get("agreement_with_student") or {}).get("identical")
        if same is not None:
            advice = ("" if info.get("quantization") == "float32" else
                      " Rounding flips near-ties between two next tokens, and a flipped token changes the rest "
                      "of the summary: convert with `float32` quantization where identical output matters "
                      "more than speed.")
            lines += ["", f"{same:.1f} % of the validation summaries are identical to the PyTorch float32 "
                          f"student's.{advice}"]
    return "\n".join(lines) + "\n"


def export_ct2(model_dir: str | Path, out_dir: str | Path, *, quantization: str = "int8",
               prefix: str | None = None, name: str | None = None) -> Path:
    """Convert the saved checkpoint in ``model_dir`` to a CTranslate2 folder ``out_dir``.

    ``model_dir`` is a ``save_pretrained`` folder with its tokenizer (a run's ``student/``).
    Conversion: ``TransformersConverter(model_dir).convert(staging, quantization=quantization)``
    (CTranslate2's own converter, see the module docstring for the loading hooks); the tokenizer
    files, ``deploy.json`` (family, ``prefix`` - ``None``: the family's default, ``"summarize: "``
    for T5 -, quantization, source, generation settings, CTranslate2 version) and a
    ``README.md`` card are added; the folder is built beside ``out_dir`` and renamed into place,
    so ``out_dir`` is never half-written (an existing one is replaced). Returns ``out_dir``.

    Raises:
        CompressionError: unknown quantization, or ``out_dir`` is a non-empty folder that is not a
            deployed copy.
        ModelLoadError: ``model_dir`` has no checkpoint or no tokenizer, or is a bitsandbytes-quantized
            copy (convert the float student instead).
        DeployUnsupportedError: CTranslate2 is missing or has no converter for this family
            (e.g. LongT5); nothing is written.
    """
    if quantization not in CT2_QUANTIZATIONS:
        raise CompressionError(f"unknown CTranslate2 quantization {quantization!r}: choose one of "
                               f"{', '.join(CT2_QUANTIZATIONS)}")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not (model_dir / "config.json").is_file():
        raise ModelLoadError(f"{model_dir} is not a saved model folder (no config.json): give the "
                             "student folder written by the run (RUN_DIR/student)")
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / DEPLOY_INFO).is_file():
        raise CompressionError(f"{out_dir} already exists and is not a deployed copy: choose a new "
                               "or empty output folder")
    ctranslate2 = _require_ct2()
    from transformers import AutoConfig

    from .load import load_tokenizer, model_family

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    quantized = getattr(config, "quantization_config", None)
    if quantized:
        method = quantized.get("quant_method", "quantized") if isinstance(quantized, dict) else "quantized"
        raise ModelLoadError(f"{model_dir} is a {method} copy; CTranslate2 converts float weights and quantizes "
                             "them itself: export the float32 student (RUN_DIR/student) with --quantization int8")
    if prefix is None:
        from .data import default_prefix

        prefix = default_prefix(config)
    try:
        family = model_family(config)
    except CompressionError:
        family = config.model_type
    tokenizer = load_tokenizer(model_dir)
    staging = staging_dir(out_dir)
    try:
        target = staging / "model"
        try:
            _converter_class()(str(model_dir)).convert(str(target), quantization=quantization)
        except (ValueError, NotImplementedError, KeyError, AttributeError) as exc:
            raise DeployUnsupportedError(
                f"not supported by CTranslate2 {ctranslate2.__version__}: its converter refuses "
                f"this {config.model_type} checkpoint ({str(exc).splitlines()[0][:200]}); the "
                "PyTorch student and quantized copy are unaffected") from exc
        for entry in target.iterdir():
            shutil.move(str(entry), staging / entry.name)
        target.rmdir()
        tokenizer.save_pretrained(staging)
        info = {"format": "ct2", "quantization": quantization, "family": family,
                "model_type": config.model_type, "source": str(model_dir), "prefix": prefix,
                "name": name or model_dir.name, "ctranslate2": ctranslate2.__version__,
                "pruned_vocab": getattr(config, "vocab_pruning", None) is not None,
                "generation": _generation_settings(model_dir, tokenizer, config),
                "encoder_layers": getattr(config, "num_layers", getattr(config, "encoder_layers", None)),
                "decoder_layers": getattr(config, "num_decoder_layers", getattr(config, "decoder_layers", None))}
        atomic_write_text(staging / DEPLOY_INFO, json.dumps(info, indent=2) + "\n")
        atomic_write_text(staging / "README.md", deploy_card(info))
        replace_folder(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def deployed_size_mib(folder: str | Path) -> float:
    """Size in MiB (2**20 bytes) of the CTranslate2 model files (``model.bin``, ``config.json``,
    vocabulary), leaving out the tokenizer files and the card, as sizes of the PyTorch copies do."""
    folder = Path(folder)
    return sum((folder / name).stat().st_size for name in _CT2_FILES if (folder / name).is_file()) / 2**20


def is_deployed_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder holding a CTranslate2 model (``model.bin``), as
    :func:`export_ct2` writes, rather than a transformers checkpoint."""
    return (Path(path).expanduser() / "model.bin").is_file()


class DeployedModel:
    """A CTranslate2 copy loaded for generation and scoring, taking and returning tokenizer ids.

    Args:
        folder: written by :func:`export_ct2`.
        compute_type: CTranslate2 compute type (``"default"``: the stored weight type, or the
            nearest one this device supports, e.g. ``int8_bfloat16`` -> ``int8_float32`` on a CPU
            without bf16; the type in use is :attr:`compute_type`).
        threads: intra-op threads (0: CTranslate2's default, all cores).
        device: ``"cpu"`` or ``"cuda"``.

    Raises:
        ModelLoadError: not a deployed folder, or CTranslate2 cannot load it.
        DeployUnsupportedError: CTranslate2 is not installed.
    """

    def __init__(self, folder: str | Path, *, compute_type: str = "default", threads: int = 0,
                 device: str = "cpu"):
        ctranslate2 = _require_ct2()
        from .load import load_tokenizer

        self.folder = Path(folder)
        if not is_deployed_folder(self.folder):
            raise ModelLoadError(f"{self.folder} is not a deployed copy (no model.bin): write one with "
                                 "`python -m compression export --format ct2`")
        info_path = self.folder / DEPLOY_INFO
        self.info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
        level = ctranslate2.get_log_level()
        # CTranslate2 logs a warning when it falls back from the stored type (int8 with bf16 weights,
        # as a bf16 checkpoint converts) to one this device runs; :attr:`compute_type` reports it.
        ctranslate2.set_log_level(logging.ERROR)
        try:
            self.translator = ctranslate2.Translator(str(self.folder), device=device,
                                                     compute_type=compute_type, intra_threads=threads)
        except (RuntimeError, ValueError) as exc:
            raise ModelLoadError(f"CTranslate2 could not load {self.folder}: {exc}") from exc
        finally:
            ctranslate2.set_log_level(level)
        self.tokenizer = load_tokenizer(self.folder)
        self.prefix = self.info.get("prefix") or ""

    @property
    def compute_type(self) -> str:
        """The compute type CTranslate2 runs with on this device (e.g. ``"int8_float32"``)."""
        return self.translator.compute_type

    def source_tokens(self, documents: list[str], *, prefix: str | None, max_source_length: int) -> list[list[str]]:
        """``prefix + document`` tokenized (truncated, with the tokenizer's special tokens) as strings."""
        prefix = self.prefix if prefix is None else prefix
        encoded = self.tokenizer([prefix + d for d in documents], max_length=max_source_length,
                                 truncation=True)["input_ids"]
        return [self.tokenizer.convert_ids_to_tokens(ids) for ids in encoded]

    def generate_ids(self, sources: list[list[str]], *, max_new_tokens: int, num_beams: int = 1,
                     min_new_tokens: int = 0, batch_size: int = 16,
                     on_progress: Callable[[int, int], None] | None = None) -> list[list[int]]:
        """Greedy (``num_beams == 1``) or beam search with ``Translator.translate_batch``.

        ``on_progress(done, total)``, when given, is called as the translator finishes its batches
        (of at most ``batch_size`` sources, sorted by length) with the sources done so far: the same
        call, made asynchronously (``asynchronous=True``, so the same batches and the same ids) and
        polled every :data:`PROGRESS_POLL_S` seconds.

        Returns, per source, the generated tokenizer ids without the decoder start and end token
        (``max_decoding_length = max_new_tokens``, ``min_decoding_length = min_new_tokens``). The
        checkpoint's generation config, as transformers' ``generate`` applies it, is followed:
        forced BOS (a target prefix), forced EOS, ``no_repeat_ngram_size``,
        ``repetition_penalty``, ``length_penalty`` (beam search) and ``min_length``.
        """
        settings = self.info.get("generation") or {}
        options = dict(no_repeat_ngram_size=settings.get("no_repeat_ngram_size", 0),
                       repetition_penalty=settings.get("repetition_penalty", 1.0))
        if num_beams > 1:
            options["length_penalty"] = settings.get("length_penalty", 1.0)
        # transformers forces the end token at the last step where forced_eos_token_id is set; the
        # end token is dropped from the output either way, so one step less gives the same ids
        steps = max_new_tokens - 1 if settings.get("forced_eos_token") and max_new_tokens > 1 else max_new_tokens
        low = min(max(min_new_tokens, settings.get("min_length", 0)), steps)
        prefix = [[settings["forced_bos_token"]] for _ in sources] if settings.get("forced_bos_token") else None
        results = self.translator.translate_batch(
            sources, prefix, beam_size=num_beams, max_batch_size=batch_size, max_decoding_length=steps,
            min_decoding_length=low, max_input_length=0, asynchronous=on_progress is not None, **options)
        if on_progress is not None:
            results = _collect(results, on_progress)
        unk = self.tokenizer.unk_token_id
        out = []
        for result in results:
            ids = self.tokenizer.convert_tokens_to_ids(result.hypotheses[0])
            out.append([unk if i is None else i for i in ids])
        return out

    def summarize(self, documents: list[str], *, prefix: str | None = None, max_source_length: int = 512,
                  max_new_tokens: int = 64, num_beams: int = 1, batch_size: int = 16,
                  on_progress: Callable[[int, int], None] | None = None) -> list[str]:
        """One stripped summary per document (special tokens dropped), in input order.
        ``on_progress(done, total)``: documents summarized so far (see :meth:`generate_ids`)."""
        if not documents:
            return []
        sources = self.source_tokens(documents, prefix=prefix, max_source_length=max_source_length)
        ids = self.generate_ids(sources, max_new_tokens=max_new_tokens, num_beams=num_beams,
                                batch_size=batch_size, on_progress=on_progress)
        return [text.strip() for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def validation_loss(self, documents: list[str], references: list[str], *, prefix: str | None = None,
                        max_source_length: int = 512, max_target_length: int = 64,
                        batch_size: int = 16) -> float:
        """Teacher-forced cross-entropy in nats per target token with ``Translator.score_batch``.

        The same tokens and weighting as :func:`compression.evaluate.compute_validation_loss`:
        references truncated to ``max_target_length`` tokens with their end token, every target
        token (the end token included) weighted alike across the whole set.

        Raises:
            ValueError: lists differ in length or are empty.
        """
        if len(documents) != len(references):
            raise ValueError(f"{len(documents)} documents but {len(references)} references")
        if not documents:
            raise ValueError("no pairs for the validation loss: give at least one document/reference")
        sources = self.source_tokens(documents, prefix=prefix, max_source_length=max_source_length)
        labels = self.tokenizer(text_target=list(references), max_length=max_target_length,
                                truncation=True)["input_ids"]
        eos = self.tokenizer.eos_token_id
        targets = [self.tokenizer.convert_ids_to_tokens(ids[:-1] if ids and ids[-1] == eos else ids)
                   for ids in labels]
        results = self.translator.score_batch(sources, targets, max_batch_size=batch_size, max_input_length=0)
        total = sum(-sum(r.log_probs) for r in results)
        tokens = sum(len(r.log_probs) for r in results)
        return total / tokens

    def measure_latency(self, documents: list[str], *, prefix: str | None = None, max_source_length: int = 512,
                        max_new_tokens: int = 64, batch_size: int = 1, num_beams: int = 1,
                        repeats: int = 1) -> dict:
        """Forced-length generation speed, as :func:`compression.evaluate.measure_latency` measures
        PyTorch models: exactly ``max_new_tokens`` new tokens per document, one untimed warm-up
        batch, ``repeats`` timed passes in batches of ``batch_size`` (``time.perf_counter``).

        Returns ``{"ms_per_sample": ms per document, "tokens_per_s": generated tokens/s,
        "batch_size": int}``.

        Raises:
            ValueError: no documents or non-positive sizes.
        """
        if not documents:
            raise ValueError("no documents to time: give at least one document")
        if batch_size <= 0 or max_new_tokens <= 0 or repeats <= 0 or num_beams <= 0:
            raise ValueError("batch size, max new tokens, beams and repeats must be positive")
        sources = self.source_tokens(documents, prefix=prefix, max_source_length=max_source_length)
        batches = [sources[i:i + batch_size] for i in range(0, len(sources), batch_size)]
        kwargs = dict(max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, num_beams=num_beams,
                      batch_size=batch_size)
        self.generate_ids(batches[0], **kwargs)
        generated = 0
        start = time.perf_counter()
        for _ in range(repeats):
            for batch in batches:
                generated += sum(len(ids) for ids in self.generate_ids(batch, **kwargs))
        elapsed = time.perf_counter() - start
        return {"ms_per_sample": 1000.0 * elapsed / (repeats * len(documents)),
                "tokens_per_s": generated / elapsed if elapsed > 0 else float("inf"),
                "batch_size": batch_size}


def evaluate_deployed(folder: str | Path, documents: list[str], references: list[str], *, prefix: str | None,
                      max_source_length: int, max_target_length: int, args: EvalArgs,
                      threads: int = 0, on_progress: Callable[[int, int], None] | None = None) -> dict:
    """The comparison-table entry of a deployed copy, with the keys of
    :func:`compression.evaluate.evaluate_model`.

    ROUGE-1/2/L/Lsum (``rouge_score``, with bootstrap CIs) of ``Translator.translate_batch``
    summaries, ``output_health`` (their degenerate-output flags, :func:`compression.metrics.output_health`),
    validation loss in nats/token (:meth:`DeployedModel.validation_loss`), size on disk
    (:func:`deployed_size_mib`, MiB), ``latency_ms`` (ms per summary, greedy or ``args.num_beams``,
    batch 1) and ``latency_ms_batched`` (batch ``args.batch_size``, the timed documents repeated
    to fill one batch) on the first ``args.latency_samples`` documents with ``args.max_new_tokens``
    forced new tokens; plus ``format``, ``quantization`` (stored weights), ``compute_type`` (used
    here), ``params`` (``None``: CTranslate2 does not report it) and ``predictions``.
    ``on_progress(done, total)``: validation summaries written so far, as
    :func:`compression.evaluate.evaluate_model` reports them for PyTorch models. ``prefix``: put
    before every document (``None``: the one the copy's ``deploy.json`` records).

    Raises:
        ValueError: documents and references differ in length, or are empty.
    """
    from .metrics import ROUGE_TYPES, bootstrap_ci, output_health, rouge_scores

    if len(documents) != len(references):
        raise ValueError(f"{len(documents)} documents but {len(references)} references")
    model = DeployedModel(folder, threads=threads)
    common = dict(prefix=prefix, max_source_length=max_source_length)
    predictions = model.summarize(documents, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
                                  batch_size=args.batch_size, on_progress=on_progress, **common)
    rouge = rouge_scores(predictions, references)
    per_sample = rouge.pop("per_sample")
    result: dict = {"params": None, "size_mib": deployed_size_mib(folder), "format": "ct2",
                    "quantization": model.info.get("quantization"), "compute_type": model.compute_type}
    result.update({rouge_type: rouge[rouge_type]["fmeasure"] for rouge_type in ROUGE_TYPES})
    result["rouge"] = rouge
    result["rouge_ci"] = {rouge_type: list(bootstrap_ci(per_sample[rouge_type], samples=args.bootstrap_samples,
                                                        confidence=args.confidence))
                          for rouge_type in ROUGE_TYPES}
    result["output_health"] = output_health(predictions)
    result["validation_loss"] = model.validation_loss(documents, references, max_target_length=max_target_length,
                                                      batch_size=args.batch_size, **common)
    result.update(latency_ms=None, latency_ms_batched=None, tokens_per_s=None, latency_batch_size=None)
    timed = documents[:max(0, args.latency_samples)]
    if timed:
        timing = dict(max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, **common)
        single = model.measure_latency(timed, batch_size=1, **timing)
        filled = (timed * args.batch_size)[:max(args.batch_size, len(timed))]
        batched = model.measure_latency(filled, batch_size=args.batch_size, **timing)
        result.update(latency_ms=single["ms_per_sample"], latency_ms_batched=batched["ms_per_sample"],
                      tokens_per_s=batched["tokens_per_s"], latency_batch_size=args.batch_size)
    result["predictions"] = predictions
    return result


#: Seconds between two looks at the translator's pending batches when progress is reported.
PROGRESS_POLL_S = 0.05


def _collect(pending: list, on_progress: Callable[[int, int], None]) -> list:
    """The results of ``translate_batch(..., asynchronous=True)`` (``AsyncTranslationResult`` s,
    in input order), calling ``on_progress(done, total)`` each time more of them are done."""
    total, reported = len(pending), 0
    while reported < total:
        done = sum(1 for result in pending if result.done())
        if done > reported:
            reported = done
            on_progress(done, total)
        else:
            time.sleep(PROGRESS_POLL_S)
    return [result.result() for result in pending]
