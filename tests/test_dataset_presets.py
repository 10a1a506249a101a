"""Dataset presets: ``--dataset debian-descriptions`` resolves to the shared files with its own lengths."""

from __future__ import annotations

import pytest

from compression.__main__ import main
from compression.config import DataArgs
from compression.data import load_pairs
from compression.dataset_presets import DATASET_PRESETS, DEFAULT_OFFLINE_DATASET, SHARED_ENV
from compression.errors import DatasetError


def test_preset_carries_lengths_and_prefix():
    data = DataArgs(dataset="debian-descriptions")
    assert (data.max_source_length, data.max_target_length, data.prefix) == (256, 32, "")
    assert DEFAULT_OFFLINE_DATASET == "debian-descriptions"
    # explicit values win; without a preset the general defaults apply
    data = DataArgs(dataset="debian-descriptions", max_source_length=128, prefix="summarize: ")
    assert (data.max_source_length, data.max_target_length, data.prefix) == (128, 32, "summarize: ")
    assert (DataArgs().max_source_length, DataArgs().max_target_length, DataArgs().prefix) == (512, 64, None)


def test_preset_resolves_to_shared_files(shared_dir, monkeypatch):
    monkeypatch.delenv(SHARED_ENV, raising=False)
    train, validation = DATASET_PRESETS["debian-descriptions"].files()
    assert train == shared_dir / "data" / "debian-descriptions" / "train.jsonl" and validation.is_file()
    pairs = load_pairs(DataArgs(dataset="debian-descriptions", max_train_samples=5, max_eval_samples=3))
    assert (len(pairs["train"]), len(pairs["validation"])) == (5, 3)
    assert pairs["train"].column_names == ["document", "summary"]


def test_shuffle_seed_keeps_a_sample_of_the_whole_file_not_its_first_rows(tiny_jsonl):
    """A sorted file's first N rows are one end of it; with a shuffle seed the first N are a seeded
    sample (datasets' own shuffle), the same on every load, and every row is still there."""
    import datasets

    train, validation = (str(path) for path in tiny_jsonl)
    plain = load_pairs(DataArgs(train_file=train, validation_file=validation))["train"]
    assert DataArgs(train_file=train).shuffle_seed is None
    shuffled = load_pairs(DataArgs(train_file=train, validation_file=validation, shuffle_seed=3))["train"]
    expected = datasets.Dataset.from_list(list(plain)).shuffle(seed=3)
    assert list(shuffled["document"]) == list(expected["document"]) != list(plain["document"])
    assert sorted(shuffled["document"]) == sorted(plain["document"])
    first = load_pairs(DataArgs(train_file=train, validation_file=validation, shuffle_seed=3, max_train_samples=3))
    assert list(first["train"]["document"]) == list(shuffled["document"][:3])


def test_debian_preset_is_shuffled_so_subsets_span_the_alphabet(shared_dir, monkeypatch):
    """The Debian files are in package-name order: the preset's default seed makes the first 200
    validation pairs a sample of all of them, the same on every load; a seed given explicitly wins."""
    monkeypatch.delenv(SHARED_ENV, raising=False)
    assert DataArgs(dataset="debian-descriptions").shuffle_seed == 0
    assert DataArgs(dataset="debian-descriptions", shuffle_seed=5).shuffle_seed == 5
    args = DataArgs(dataset="debian-descriptions", max_train_samples=2, max_eval_samples=200)
    first, again = load_pairs(args), load_pairs(args)
    documents = list(first["validation"]["document"])
    assert documents == list(again["validation"]["document"])
    _, validation_file = DATASET_PRESETS["debian-descriptions"].files()
    in_file_order = load_pairs(DataArgs(train_file=str(validation_file), max_train_samples=1625))["train"]
    file_position = {document: i for i, document in enumerate(in_file_order["document"])}
    positions = sorted(file_position[document] for document in documents)
    assert positions[0] < 200 < 1425 < positions[-1]  # both ends of the file, not its first 200 rows


def test_preset_without_shared_is_a_typed_error(tmp_path, tiny_t5_dir, monkeypatch, capsys):
    monkeypatch.setenv(SHARED_ENV, str(tmp_path / "absent"))
    assert not DATASET_PRESETS["debian-descriptions"].available()
    with pytest.raises(DatasetError, match="not on this machine"):
        load_pairs(DataArgs(dataset="debian-descriptions"))
    # the CLI: one line on stderr, exit status 2, nothing written
    assert main(["finetune", "--model", str(tiny_t5_dir), "--dataset", "debian-descriptions",
                 "--output", str(tmp_path / "out")]) == 2
    assert "not on this machine" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_preset_and_files_together_are_refused(tiny_jsonl):
    with pytest.raises(DatasetError, match="not both"):
        load_pairs(DataArgs(dataset="debian-descriptions", train_file=str(tiny_jsonl[0])))


def test_dashboard_offers_debian_first(tmp_path, shared_dir):
    from components import train_panel
    from components.state import AppSettings

    settings = AppSettings.create(runs_dir=tmp_path / "runs", offline=True)
    choices = train_panel.data_choices(settings)
    assert train_panel.default_data_choice(choices) == train_panel.DEBIAN
    assert train_panel.preset_lengths(train_panel.DEBIAN) == (256, 32)
    data = train_panel.data_args(settings, train_panel.DEBIAN, None, None, None, None, 20, 10, 256, 32)
    assert data.train_file.endswith("debian-descriptions/train.jsonl") and data.prefix == ""
    bare = AppSettings(runs_dir=tmp_path / "runs", offline=True, shared_dir=None)
    assert train_panel.default_data_choice(train_panel.data_choices(bare)) == train_panel.UPLOAD
