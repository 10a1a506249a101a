"""Named offline datasets: local pair files under ``../shared`` with the lengths and prefix that suit them.

A preset is chosen by name wherever a dataset is accepted (``--dataset debian-descriptions`` on the
command line, :attr:`compression.config.DataArgs.dataset`, the dashboard's data choices). It
resolves to the JSONL files in the shared data folder (``../shared`` beside the repository, or the
folder named by the ``COMPRESSION_SHARED_DIR`` environment variable) and carries its own source and
target lengths and task prefix, used wherever the caller left them unset.

A preset whose files are sorted carries a shuffle seed (``shuffle_seed``, the default of
:attr:`compression.config.DataArgs.shuffle_seed`), applied when the pairs are loaded: the Debian
files are in package-name order, so the first 500 validation pairs were packages from
``2ping`` to the start of the ``lib`` family and the first 16,000 training pairs stopped in the middle of
it. Measured on the committed offline teacher: a 2/2 SFT student kept 94.9 % of the teacher's
ROUGE-1 on those first 500 validation pairs and 86.0 % on all 1,625, because subsets in name order
hold few of the families (``python-``, ``r-cran-``, ``golang-`` ...) the rest of the split is made of.

``debian-descriptions`` (the default offline dataset): 51,596 train + 1,625 validation pairs of a
Debian package's long description (``document``) and its one-line synopsis (``summary``), headline
generation (see ``../shared/data/debian-descriptions/README.md``). Documents have a median of 48
words (p99 207), so 256 source tokens keep nearly all of every document; summaries a median of 7
words, so 32 target tokens keep them whole. Prefix: none. The offline teacher is trained from
random initialisation, for which a constant "summarize: " carries no information and costs two
source tokens per pair at every step (T5's prefix matters to checkpoints pre-trained multi-task
with it, Raffel et al. 2020, Appendix D; give ``--prefix "summarize: "`` when starting from one).

``xsum-sample``: the 700 + 100 XSum pairs under ``../shared/data/xsum`` with this project's general
defaults (512 / 64 tokens, the model family's prefix).

``xsum-long``: the same XSum files with consecutive articles concatenated into sources of 8,192 to
16,368 T5 tokens and their summaries into the target (:mod:`compression.long_inputs`, which says
exactly how); 16,384 source / 512 target tokens. A stress test of long inputs (use a LongT5 model),
not a benchmark: its ROUGE is not comparable to any published long-document figure.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import DatasetError

#: Environment variable naming the shared data folder (default: ``../shared`` beside the repository).
SHARED_ENV = "COMPRESSION_SHARED_DIR"
#: Source and target lengths (tokens) when neither the caller nor a preset sets them.
DEFAULT_MAX_SOURCE_LENGTH = 512
DEFAULT_MAX_TARGET_LENGTH = 64


def shared_dir() -> Path:
    """The shared data folder: ``$COMPRESSION_SHARED_DIR`` when set, else ``../shared`` beside the
    repository root. It may not exist (see :meth:`DatasetPreset.files`)."""
    override = os.environ.get(SHARED_ENV)
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parents[2] / "shared"


@dataclass(frozen=True)
class DatasetPreset:
    """A named pair of local JSONL files with their lengths (tokens) and prefix.

    ``folder`` is relative to :func:`shared_dir`; ``prefix=None`` keeps the model family's default
    (:func:`compression.data.default_prefix`).
    """

    name: str
    label: str
    folder: str
    max_source_length: int
    max_target_length: int
    prefix: str | None
    train_file: str = "train.jsonl"
    validation_file: str = "validation.jsonl"
    text_column: str = "document"
    summary_column: str = "summary"
    #: concatenate consecutive pairs into long inputs when loaded (:mod:`compression.long_inputs`)
    long_inputs: bool = False
    #: shuffle each split with this seed when loaded (files sorted by a key, such as a package name):
    #: the first N pairs a subset keeps (``max_train_samples``, ``max_eval_samples``) are then a
    #: sample of the whole split, not of its first letters. ``None``: the file's order.
    shuffle_seed: int | None = None

    def files(self, shared: str | Path | None = None) -> tuple[Path, Path]:
        """``(train file, validation file)`` of this preset under ``shared`` (default :func:`shared_dir`).

        Raises:
            DatasetError: the files are not on this machine (the message names the folder and the
                environment variable that points elsewhere).
        """
        folder = Path(shared if shared is not None else shared_dir()) / self.folder
        train, validation = folder / self.train_file, folder / self.validation_file
        if not (train.is_file() and validation.is_file()):
            raise DatasetError(
                f"dataset preset {self.name!r} reads {folder}, which is not on this machine: put the shared "
                f"data folder beside the repository (../shared), set {SHARED_ENV} to where it is, or give "
                "your own train/validation files")
        return train, validation

    def available(self, shared: str | Path | None = None) -> bool:
        """Whether the preset's files are on this machine."""
        try:
            self.files(shared)
        except DatasetError:
            return False
        return True


DATASET_PRESETS: dict[str, DatasetPreset] = {
    "debian-descriptions": DatasetPreset(
        name="debian-descriptions", label="Debian package descriptions (offline)",
        folder="data/debian-descriptions", max_source_length=256, max_target_length=32, prefix="",
        shuffle_seed=0),
    "xsum-sample": DatasetPreset(
        name="xsum-sample", label="XSum sample (offline)", folder="data/xsum",
        max_source_length=DEFAULT_MAX_SOURCE_LENGTH, max_target_length=DEFAULT_MAX_TARGET_LENGTH, prefix=None),
    "xsum-long": DatasetPreset(
        name="xsum-long", label="XSum articles concatenated to 8k-16k tokens (offline stress test)",
        folder="data/xsum", max_source_length=16_384, max_target_length=512, prefix=None, long_inputs=True),
}
#: The dataset offline runs, the teacher recipe and the dashboard use by default.
DEFAULT_OFFLINE_DATASET = "debian-descriptions"


def dataset_preset(name: str | None) -> DatasetPreset | None:
    """The preset called ``name``, or ``None`` when ``name`` is not a preset (a hub dataset id)."""
    return DATASET_PRESETS.get(name) if name else None
