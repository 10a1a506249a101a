"""Typed errors a user can cause.

Every error here carries a message that says what went wrong *and what to do*. The CLI turns any
:class:`CompressionError` into a one-line message on stderr and exit status 2; the dashboard shows it
with ``gr.Error``. Anything else is an internal failure (exit status 1).
"""

from __future__ import annotations


class CompressionError(Exception):
    """Base class of every error a user can cause (bad id, bad folder, bad layer counts, bad data...)."""


class ModelLoadError(CompressionError):
    """A checkpoint could not be loaded: unknown hub id, hub unreachable, folder without a model."""


class NotSeq2SeqError(CompressionError):
    """The checkpoint is not an encoder-decoder (e.g. GPT-2, BERT), so it cannot be shrunk here."""


class RemoteCodeError(CompressionError):
    """The checkpoint needs ``trust_remote_code``; this tool never runs a checkpoint's own code."""


class LayerSelectionError(CompressionError):
    """Layer counts or indices that make no sense for the model (<= 0, above depth, duplicated...)."""


class DatasetError(CompressionError):
    """A dataset is missing, unreadable, empty, or lacks the named columns."""


class OutOfMemoryError(CompressionError):
    """Training or generation ran out of (GPU) memory; lower the batch size or the max lengths."""


class QuantizationError(CompressionError):
    """Quantization is unavailable (no bitsandbytes, unsupported device) or the mode is unknown."""


class PathNotAllowedError(CompressionError):
    """A path typed or uploaded by a visitor lies outside the folders the operator allowed."""


class RunError(CompressionError):
    """A run folder is missing, incomplete or not a run."""


class ModularError(CompressionError):
    """Modular Transformers: a ratio the trained modules cannot reach, or missing modules."""


class WidthPruningError(CompressionError):
    """Width pruning asked for a width the checkpoint cannot hold (0 or above the current neurons or
    heads; fewer heads for BART, whose head size is d_model / heads)."""


class DeployUnsupportedError(CompressionError):
    """No deployed (CTranslate2) copy can be made: CTranslate2 is missing, or its converter has no
    loader for this model family (e.g. LongT5). Runs record it as a note, not a failure."""


class OutputError(CompressionError):
    """An output folder that cannot be used: an existing file, not writable, or a run folder already
    holding a run (without ``--overwrite`` or ``--resume``)."""
