"""Bad and edge inputs through the command line: each is refused before anything is written or loaded.

Every case must end with exit status 2, exactly one line on stderr (``error: ...``), no traceback,
and nothing left behind: no output folder, no run folder. The cases are those of the CLI probe in
issue #11 (read-only and file outputs, damaged or mismatched checkpoints, non-UTF-8 data, every
numeric flag's range...). They run in-process (``compression.__main__.main``), so the whole set
takes seconds.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from compression.__main__ import main
from conftest import ARTICLES, write_jsonl

#: Outputs that must not exist after a refused command.
OUT = "{tmp}/out"
READ_ONLY = "/proc/compression-test/out"  # not writable, even for root


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A folder of good and broken inputs: a tiny T5, damaged copies of it, data files, a modular folder."""
    from transformers import ByT5Tokenizer, T5ForConditionalGeneration

    from conftest import tiny_t5_config

    root = tmp_path_factory.mktemp("cli-inputs")
    model = root / "model"
    T5ForConditionalGeneration(tiny_t5_config()).save_pretrained(model)
    ByT5Tokenizer().save_pretrained(model)
    weights = (model / "model.safetensors").read_bytes()

    def variant(name, *, weights_bytes=None, config_edit=None, config_text=None):
        folder = root / name
        shutil.copytree(model, folder)
        if weights_bytes is not None:
            (folder / "model.safetensors").write_bytes(weights_bytes)
        if config_edit is not None:
            config = json.loads((folder / "config.json").read_text())
            config.update(config_edit)
            (folder / "config.json").write_text(json.dumps(config))
        if config_text is not None:
            (folder / "config.json").write_text(config_text)

    variant("truncated", weights_bytes=weights[: len(weights) // 2])
    variant("header-corrupt", weights_bytes=struct.pack("<Q", 64) + b"{not json" + weights[17:])
    variant("header-huge", weights_bytes=struct.pack("<Q", 1 << 40) + weights[8:])
    variant("empty-weights", weights_bytes=b"")
    variant("six-layers", config_edit={"num_layers": 6, "num_decoder_layers": 6})
    variant("wide", config_edit={"d_model": 64})
    variant("bad-config", config_text="{this is not json")
    (root / "no-config").mkdir()

    train = write_jsonl(root / "train.jsonl", ARTICLES)
    write_jsonl(root / "validation.jsonl", ARTICLES[:4])
    (root / "latin1.jsonl").write_bytes(train.read_bytes() + '{"document": "caf\xe9", "summary": "x"}\n'.encode("latin-1"))
    (root / "half-broken.jsonl").write_text(train.read_text() + '{"document": "cut short\n')
    (root / "list-row.jsonl").write_text('["document", "summary"]\n')
    (root / "pairs.txt").write_text("hello")
    (root / "pairs.csv").write_text("article,highlights\nA text.,A summary.\n")
    (root / "latin1.csv").write_bytes("document,summary\ncaf\xe9,x\n".encode("latin-1"))
    (root / "a-file").write_text("I am a file")

    modular = root / "modular"
    modular.mkdir()
    shutil.copytree(model, modular / "teacher")
    (modular / "modular.json").write_text(json.dumps({"format_version": 1, "granularities": [2]}))
    (modular / "modules.safetensors").write_bytes(weights[:100])
    broken_teacher = root / "modular-bad-teacher"
    shutil.copytree(modular, broken_teacher)
    (broken_teacher / "teacher" / "model.safetensors").write_bytes(weights[: len(weights) // 3])
    return root


def _argv(template: list[str], root: Path, tmp: Path) -> list[str]:
    values = {"root": str(root), "tmp": str(tmp), "model": str(root / "model"), "train": str(root / "train.jsonl"),
              "validation": str(root / "validation.jsonl")}
    return [part.format(**values) for part in template]


RUN = ["run", "--model", "{model}", "--train-file", "{train}", "--validation-file", "{validation}",
       "--encoder-layers", "2", "--decoder-layers", "2", "--quantize", "none", "--output", OUT]
FINETUNE = ["finetune", "--model", "{model}", "--train-file", "{train}", "--output", OUT]
DISTILL = ["distill", "--teacher", "{model}", "--encoder-layers", "2", "--decoder-layers", "1", "--train-file",
           "{train}", "--output", OUT]
MODULAR = ["modular-train", "--teacher", "{model}", "--train-file", "{train}", "--output", OUT]


def _with(base: list[str], *extra: str, output: str | None = None) -> list[str]:
    argv = list(base) + list(extra)
    if output is not None:
        argv[argv.index(OUT)] = output
    return argv


CASES = {
    # outputs: read-only, an existing file, under a file
    "init read-only": (["init", "--preset", "tiny", "--tokenizer", "byt5", "--output", READ_ONLY], "cannot be written"),
    "shrink read-only": (["shrink", "--model", "{model}", "--encoder-layers", "2", "--output", READ_ONLY],
                         "cannot be written"),
    "finetune read-only": (_with(FINETUNE, output=READ_ONLY), "cannot be written"),
    "quantize read-only": (["quantize", "--model", "{model}", "--mode", "fp16", "--output", READ_ONLY],
                           "cannot be written"),
    "run read-only": (_with(RUN, output=READ_ONLY), "cannot be written"),
    "modular-train read-only": (_with(MODULAR, output=READ_ONLY), "cannot be written"),
    "assemble read-only": (["assemble", "--modular", "{root}/modular", "--ratio", "2", "--output", READ_ONLY],
                           "cannot be written"),
    "distill read-only": (_with(DISTILL, output=READ_ONLY), "cannot be written"),
    "finetune output is a file": (_with(FINETUNE, output="{root}/a-file"), "existing file"),
    "distill output is a file": (_with(DISTILL, output="{root}/a-file"), "existing file"),
    "modular-train output is a file": (_with(MODULAR, output="{root}/a-file"), "existing file"),
    "run output is a file": (_with(RUN, output="{root}/a-file"), "existing file"),
    "shrink output under a file": (["shrink", "--model", "{model}", "--encoder-layers", "2", "--output",
                                    "{root}/a-file/student"], "is a file"),
    # damaged or mismatched checkpoints
    "shrink truncated weights": (["shrink", "--model", "{root}/truncated", "--encoder-layers", "2", "--output", OUT],
                                 "truncated"),
    "evaluate truncated weights": (["evaluate", "--model", "{root}/truncated", "--validation-file", "{validation}"],
                                   "truncated"),
    "quantize truncated weights": (["quantize", "--model", "{root}/truncated", "--output", OUT], "truncated"),
    "run truncated weights": (["run", "--model", "{root}/truncated", "--train-file", "{train}", "--output", OUT],
                              "truncated"),
    "shrink header-corrupt weights": (["shrink", "--model", "{root}/header-corrupt", "--output", OUT], "corrupt"),
    "evaluate header-corrupt weights": (["evaluate", "--model", "{root}/header-corrupt", "--validation-file",
                                         "{validation}"], "corrupt"),
    "quantize header-corrupt weights": (["quantize", "--model", "{root}/header-corrupt", "--output", OUT], "corrupt"),
    "shrink header length past the end": (["shrink", "--model", "{root}/header-huge", "--output", OUT], "damaged"),
    "finetune empty weights file": (["finetune", "--model", "{root}/empty-weights", "--train-file", "{train}",
                                     "--output", OUT], "damaged"),
    "assemble truncated modules": (["assemble", "--modular", "{root}/modular", "--ratio", "2", "--output", OUT],
                                   "modules.safetensors"),
    "assemble truncated teacher": (["assemble", "--modular", "{root}/modular-bad-teacher", "--ratio", "2",
                                    "--output", OUT], "truncated"),
    "config says 6 layers, weights hold 4": (["shrink", "--model", "{root}/six-layers", "--encoder-layers", "2",
                                              "--output", OUT], "weights hold 4"),
    "evaluate 6-layer config on 4 layers": (["evaluate", "--model", "{root}/six-layers", "--validation-file",
                                             "{validation}"], "weights hold 4"),
    "d_model mismatch": (["shrink", "--model", "{root}/wide", "--encoder-layers", "2", "--output", OUT], "d_model"),
    "run d_model mismatch": (["run", "--model", "{root}/wide", "--train-file", "{train}", "--output", OUT],
                             "d_model"),
    "invalid local config.json": (["shrink", "--model", "{root}/bad-config", "--output", OUT], "config.json"),
    "folder without config.json": (["shrink", "--model", "{root}/no-config", "--output", OUT], "no config.json"),
    "missing model folder": (["finetune", "--model", "{tmp}/absent", "--train-file", "{train}", "--output", OUT],
                             "does not exist"),
    # layer counts against the checkpoint (no weights loaded)
    "shrink 9 of 4 layers": (["shrink", "--model", "{model}", "--encoder-layers", "9", "--output", OUT], "only 4"),
    "run 9 of 4 layers": (_with(RUN, "--decoder-layers", "9"), "only 4"),
    "shrink 0 layers": (["shrink", "--model", "{model}", "--decoder-layers", "0", "--output", OUT], "at least 1"),
    "shrink repeated indices": (["shrink", "--model", "{model}", "--decoder-layers", "1,1", "--output", OUT],
                                "repeat"),
    "shrink index out of range": (["shrink", "--model", "{model}", "--encoder-layers", "0,7", "--output", OUT],
                                  "range"),
    "encoder layers 2.5": (["shrink", "--model", "{model}", "--encoder-layers", "2.5", "--output", OUT], "2.5"),
    "distill 9 layers": (_with(DISTILL, "--encoder-layers", "9"), "only 4"),
    # data files
    "non-UTF-8 JSONL": (_with(RUN, "--train-file", "{root}/latin1.jsonl"), "latin1.jsonl line 9 is not UTF-8"),
    "finetune non-UTF-8 JSONL": (_with(FINETUNE, "--train-file", "{root}/latin1.jsonl"), "not UTF-8"),
    "non-UTF-8 CSV": (_with(RUN, "--train-file", "{root}/latin1.csv"), "latin1.csv line 2"),
    "half-broken JSONL": (_with(RUN, "--train-file", "{root}/half-broken.jsonl"), "half-broken.jsonl line 9"),
    "JSONL row not an object": (_with(RUN, "--train-file", "{root}/list-row.jsonl"), "not a JSON object"),
    "missing data file": (_with(RUN, "--train-file", "{tmp}/none.jsonl"), "none.jsonl: no such file"),
    "unsupported data type": (_with(RUN, "--train-file", "{root}/pairs.txt"), "unsupported file type"),
    "wrong text column": (_with(RUN, "--text-column", "body"), "'body'"),
    "CSV without the columns": (_with(FINETUNE, "--train-file", "{root}/pairs.csv"), "'document'"),
    "modular-train missing validation file": (_with(MODULAR, "--validation-file", "{tmp}/none.jsonl"),
                                              "no such file"),
    "evaluate missing validation file": (["evaluate", "--model", "{model}", "--validation-file", "{tmp}/v.jsonl"],
                                         "no such file"),
    # every numeric flag's range, and choices
    "--quantize 8-bit": (_with(RUN, "--quantize", "8-bit"), "invalid choice: '8-bit'"),
    "--quantize 3bit": (_with(RUN, "--quantize", "3bit"), "invalid choice"),
    "quantize --mode 3bit": (["quantize", "--model", "{model}", "--mode", "3bit", "--output", OUT], "3bit"),
    "--max-steps 0": (_with(RUN, "--max-steps", "0"), "max steps must be >= 1"),
    "--max-steps -5": (_with(RUN, "--max-steps", "-5"), "max steps must be >= 1"),
    "--epochs nan": (_with(RUN, "--epochs", "nan"), "epochs must be a finite number"),
    "--epochs inf": (_with(RUN, "--epochs", "inf"), "epochs must be a finite number"),
    "--epochs nan with --max-steps": (_with(RUN, "--epochs", "nan", "--max-steps", "2"), "finite"),
    "--epochs 0": (_with(FINETUNE, "--epochs", "0"), "epochs must be > 0"),
    "--gradient-accumulation-steps 0": (_with(RUN, "--gradient-accumulation-steps", "0"),
                                        "gradient accumulation steps"),
    "--dataloader-workers -1": (_with(RUN, "--dataloader-workers", "-1"), "dataloader workers"),
    "--weight-decay -1": (_with(RUN, "--weight-decay", "-1"), "weight decay"),
    "--warmup-ratio 5": (_with(FINETUNE, "--warmup-ratio", "5"), "warmup ratio"),
    "--eval-steps 0": (_with(RUN, "--eval-steps", "0"), "eval steps"),
    "--latency-samples -2": (_with(RUN, "--latency-samples", "-2"), "latency samples"),
    "--bootstrap-samples 0": (_with(RUN, "--bootstrap-samples", "0"), "bootstrap samples"),
    "--bootstrap-samples -3": (["evaluate", "--model", "{model}", "--validation-file", "{validation}",
                                "--bootstrap-samples", "-3"], "bootstrap samples"),
    "--batch-size 0": (_with(FINETUNE, "--batch-size", "0"), "batch size"),
    "--batch-size 2.5": (_with(RUN, "--batch-size", "2.5"), "invalid int value"),
    "--learning-rate -1": (_with(RUN, "--learning-rate", "-1"), "learning rate"),
    "--learning-rate abc": (_with(RUN, "--learning-rate", "abc"), "invalid float value"),
    "--generation-batch-size 0": (_with(RUN, "--generation-batch-size", "0"), "generation batch size"),
    "--num-beams 0": (_with(RUN, "--num-beams", "0"), "num beams"),
    "--confidence 1.5": (_with(RUN, "--confidence", "1.5"), "confidence"),
    "--max-source-length 0": (_with(RUN, "--max-source-length", "0"), "max source length"),
    "--max-train-samples 0": (_with(RUN, "--max-train-samples", "0"), "max train samples"),
    "--seed -1": (_with(RUN, "--seed", "-1"), "seed"),
    "--temperature 0": (_with(RUN, "--method", "kd", "--temperature", "0"), "temperature"),
    "--alpha-kl -1": (_with(DISTILL, "--alpha-kl", "-1"), "alpha_kl"),
    "--teacher-dtype int8": (_with(DISTILL, "--teacher-dtype", "int8"), "invalid choice"),
    "--method theseus": (_with(RUN, "--method", "theseus"), "invalid choice"),
    "--strategy random": (["shrink", "--model", "{model}", "--encoder-layers", "2", "--strategy", "random",
                           "--output", OUT], "invalid choice"),
    "--granularities 1": (_with(MODULAR, "--granularities", "1"), "at least 2"),
    "--replace-rate-start 0": (_with(MODULAR, "--replace-rate-start", "0"), "replace rate start"),
    "--bf16 maybe": (_with(FINETUNE, "--bf16", "maybe"), "invalid choice"),
    "--device tpu": (_with(FINETUNE, "--device", "tpu"), "invalid choice"),
    "unknown flag": (_with(RUN, "--turbo"), "unrecognized arguments"),
    "missing --model": (["run", "--train-file", "{train}"], "required"),
    "unknown command": (["compress"], "invalid choice"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_nothing_left(name, inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default runs/ folder would appear here
    template, message = CASES[name]
    before = sorted(p.name for p in inputs.iterdir())
    assert main(_argv(template, inputs, tmp_path)) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert message in lines[0] and "Traceback" not in captured.err
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()
    assert sorted(p.name for p in inputs.iterdir()) == before


def test_at_least_sixty_cases():
    assert len(CASES) >= 60
