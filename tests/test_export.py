"""compression.export: atomic model folders, model cards, a mocked Hub push, zips."""

from __future__ import annotations

import logging
import os
import stat
import zipfile

import pytest
import torch

from compression import export
from compression.errors import CompressionError
from compression.export import HubError, model_card, push_to_hub, save_model, zip_folder

TOKEN = "hf_SuperSecretTokenValue1234567890"


def logits(model, tokenizer):
    batch = tokenizer(["summarize: The council approved a budget."], return_tensors="pt")
    with torch.no_grad():
        return model(**batch, decoder_input_ids=torch.tensor([[0, 72, 101]])).logits


def test_save_model_writes_complete_folder_and_round_trips(tmp_path, tiny_t5, byt5_tokenizer):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    out = save_model(tiny_t5, byt5_tokenizer, tmp_path / "student",
                     card={"method": "sft", "base_model": "t5-small", "encoder_layers": [0, 3],
                           "decoder_layers": [0, 2, 3]})
    assert out == tmp_path / "student"
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer_config.json",
            "README.md"} <= names
    assert [p.name for p in tmp_path.iterdir()] == ["student"]  # no staging folder left behind
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert torch.equal(logits(reloaded, tokenizer), logits(tiny_t5, byt5_tokenizer))
    readme = (out / "README.md").read_text()
    assert "Kept encoder layers: 0, 3" in readme and "Kept decoder layers: 0, 2, 3" in readme


def test_saved_folder_is_readable_like_any_written_folder(tmp_path, tiny_t5, byt5_tokenizer):
    old = os.umask(0o022)
    try:
        out = save_model(tiny_t5, byt5_tokenizer, tmp_path / "student")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755  # not mkdtemp's 0700
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {0o644}


def test_save_model_replaces_a_model_folder_but_not_other_folders(tmp_path, tiny_t5, byt5_tokenizer):
    out = tmp_path / "model"
    save_model(tiny_t5, byt5_tokenizer, out)
    (out / "stale.txt").write_text("old")
    save_model(tiny_t5, byt5_tokenizer, out)
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]

    precious = tmp_path / "documents"
    precious.mkdir()
    (precious / "thesis.txt").write_text("keep me")
    with pytest.raises(CompressionError, match="not a model folder"):
        save_model(tiny_t5, byt5_tokenizer, precious)
    assert [p.name for p in precious.iterdir()] == ["thesis.txt"]


def test_failed_save_leaves_nothing_half_written(tmp_path, tiny_t5, byt5_tokenizer, monkeypatch):
    out = tmp_path / "model"
    save_model(tiny_t5, byt5_tokenizer, out, card={"model_name": "first"})

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(byt5_tokenizer), "save_pretrained", broken)
    with pytest.raises(CompressionError, match="disk space"):
        save_model(tiny_t5, byt5_tokenizer, out, card={"model_name": "second"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert "# first" in (out / "README.md").read_text()  # the earlier folder is intact
    with pytest.raises(CompressionError):
        save_model(tiny_t5, byt5_tokenizer, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_model_card_front_matter_and_metrics():
    card = model_card({
        "family": "bart", "base_model": "facebook/bart-large-xsum", "encoder_layers": [0, 1, 2],
        "decoder_layers": [0, 5, 11], "teacher_decoder_layers": 12, "datasets": ["xsum", "data/train.jsonl"],
        "epochs": 1.0, "quantization": "8bit",
        "metrics": {"base": {"rouge1": 45.1, "rouge2": 22.3, "rougeL": 37.0, "rougeLsum": 37.1,
                             "validation_loss": 1.234567, "size_mib": 1550.0, "latency_ms": 300.0},
                    "student": {"rouge1": 42.0, "rougeL": None}},
    })
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "library_name: transformers" in front
    assert "base_model: facebook/bart-large-xsum" in front
    for tag in ("summarization", "bart", "distillation", "sft"):
        assert f"- {tag}" in front
    assert "- xsum" in front and "train.jsonl" not in front  # only hub ids go in the metadata
    assert "`data/train.jsonl`" in body
    assert "Kept decoder layers: 0, 5, 11 (of 12 teacher layers)" in body
    assert "Kept encoder layers: 0, 1, 2" in body
    assert "| base | 45.10 | 22.30 | 37.00 | 37.10 | 1.2346 | 1550.0 | 300.0 |" in body
    assert "| student | 42.00 | - | - | - | - | - | - |" in body
    assert "Epochs: 1.0" in body and "Quantization: 8bit" in body


def test_model_card_keeps_local_base_out_of_metadata(tmp_path):
    card = model_card({"family": "t5", "base_model": str(tmp_path), "encoder_layers": 2})
    assert "base_model:" not in card.split("---\n")[1]
    assert str(tmp_path) in card and "- t5" in card


class FakeApi:
    calls: list = []
    fail: Exception | None = None

    def __init__(self, token=None):
        FakeApi.calls.append(("init", token))

    def create_repo(self, repo_id, **kwargs):
        FakeApi.calls.append(("create_repo", repo_id, kwargs))
        if FakeApi.fail is not None:
            raise FakeApi.fail
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs):
        FakeApi.calls.append(("upload_folder", kwargs))


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub

    FakeApi.calls, FakeApi.fail = [], None
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    return FakeApi


def all_text(folder):
    return "".join(p.read_text(errors="ignore") for p in folder.rglob("*") if p.is_file())


def test_push_to_hub_uploads_privately(tmp_path, tiny_t5, byt5_tokenizer, fake_hub, caplog):
    folder = save_model(tiny_t5, byt5_tokenizer, tmp_path / "model")
    with caplog.at_level(logging.DEBUG):
        url = push_to_hub(folder, "me/tiny-sft", token=TOKEN)
    assert url == "https://huggingface.co/me/tiny-sft"
    create = next(c for c in fake_hub.calls if c[0] == "create_repo")
    assert create[2]["private"] is True and create[2]["exist_ok"] is True
    upload = next(c for c in fake_hub.calls if c[0] == "upload_folder")
    assert upload[1]["folder_path"] == str(folder) and upload[1]["repo_id"] == "me/tiny-sft"
    assert TOKEN not in all_text(tmp_path) and TOKEN not in caplog.text


def test_push_to_hub_error_never_shows_the_token(tmp_path, tiny_t5, byt5_tokenizer, fake_hub, caplog):
    folder = save_model(tiny_t5, byt5_tokenizer, tmp_path / "model")
    fake_hub.fail = RuntimeError(f"401 Unauthorized for token {TOKEN} (header Authorization: Bearer {TOKEN})")
    with caplog.at_level(logging.DEBUG), pytest.raises(HubError) as info:
        push_to_hub(folder, "me/tiny-sft", token=TOKEN)
    error = info.value
    assert isinstance(error, CompressionError)
    assert "401 Unauthorized" in str(error) and "write access" in str(error)
    assert TOKEN not in str(error) and TOKEN not in repr(error)
    assert error.__cause__ is None and error.__context__ is None
    assert TOKEN not in all_text(tmp_path) and TOKEN not in caplog.text


def test_push_to_hub_checks_inputs(tmp_path, fake_hub):
    with pytest.raises(CompressionError, match="export the model first"):
        push_to_hub(tmp_path, "me/x", token=TOKEN)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CompressionError, match="your-name/model-name"):
        push_to_hub(tmp_path, "no slash here", token=TOKEN)
    assert fake_hub.calls == []


def test_zip_folder(tmp_path, tiny_t5, byt5_tokenizer):
    folder = save_model(tiny_t5, byt5_tokenizer, tmp_path / "student")
    archive = zip_folder(folder, tmp_path / "out" / "student.zip")
    assert archive == tmp_path / "out" / "student.zip"
    with zipfile.ZipFile(archive) as handle:
        names = set(handle.namelist())
    assert {"student/config.json", "student/model.safetensors", "student/README.md"} <= names
    with pytest.raises(CompressionError):
        zip_folder(tmp_path / "missing", tmp_path / "x.zip")


def test_sizes_in_mib(tmp_path, tiny_t5, byt5_tokenizer):
    folder = save_model(tiny_t5, byt5_tokenizer, tmp_path / "m")
    weights = (folder / "model.safetensors").stat().st_size / 2**20
    assert weights < export.model_files_size_mib(folder) < export.folder_size_mib(folder)


@pytest.mark.parametrize("method, says, tag", [
    ("sft", "Shrink and Fine-Tune", "sft"),
    ("kd", "knowledge distillation", "knowledge-distillation"),
    ("pseudo-label-kd", "pseudo-label distillation", "pseudo-labels"),
    ("modular", "Modular Transformers", "modular-transformers"),
    ("fine-tune", "fine-tuned", "fine-tuned"),
])
def test_model_card_method_line_matches_how_the_model_was_made(method, says, tag):
    from compression.card import METHODS, ModelCard

    text = ModelCard(method=method, base_model="t5-small").render()
    assert says in text and f"- {tag}" in text.split("---\n")[1]
    others = [name for code, (name, _, _) in METHODS.items() if code != method]
    assert f"- Method: {METHODS[method][0]}" in text and not any(f"- Method: {o}\n" in text for o in others)
    if method != "sft":
        assert "Shrink and Fine-Tune" not in text


def test_model_card_reads_the_method_from_the_checkpoint(tiny_t5):
    from compression.card import ModelCard
    from compression.layers import shrink
    from compression.modular import ModularModel, assemble

    assert ModelCard.from_model(tiny_t5).method == "fine-tune"
    student = shrink(tiny_t5, 2, 2)
    card = ModelCard.from_model(student)
    assert card.method == "sft" and card.encoder_layers == student.config.shrink["encoder_layers_kept"]
    assembled = assemble(ModularModel(tiny_t5, (2,)), 2.0)
    card = ModelCard.from_model(assembled)
    assert card.method == "modular" and card.ratio == 2.0 and card.teacher_decoder_layers == 4
    assert ModelCard.from_model(student).updated({"method": "KD (distilled from the base model)"}).method == "kd"
    with pytest.raises(CompressionError, match="unknown model-card method"):
        ModelCard(method="magic")
