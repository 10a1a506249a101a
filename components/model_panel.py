"""Panel 1, base model: pick a hub checkpoint, an (untrained) architecture preset or a local folder,
load it, and show its architecture.

Local folders typed by a visitor must lie inside the operator's allowed folders
(:func:`compression.runs.resolve_inside`). A preset is built with
:func:`compression.load.build_preset` and saved once under ``<runs>/.bases/`` so that a run, and
later the article comparison, can load it by path.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from compression.errors import ModelLoadError
from compression.layers import layer_footprint

from .feedback import user_errors
from .state import AppSettings, Session

PRESET_PREFIX = "preset:"
#: The dropdown value of the offline teacher committed with the project (``assets/models/debian-teacher``).
BUNDLED_TEACHER_CHOICE = "bundled:debian-teacher"


def model_choices(settings: AppSettings) -> list[tuple[str, str]]:
    """Dropdown entries ``(label, value)``: offline, the committed Debian teacher first (when the
    checkout has it, :func:`compression.teacher.bundled_teacher`), then hub checkpoints (hidden when
    offline), then the architecture presets, labelled ``"preset: tiny (untrained)"`` with value
    ``"preset:tiny"``."""
    from compression.load import HUB_PRESETS, PRESETS
    from compression.teacher import bundled_teacher

    teacher = [("Debian teacher (trained offline here, tiny 4/4)", BUNDLED_TEACHER_CHOICE)] \
        if bundled_teacher() is not None else []
    hub = [] if settings.is_offline() else [(f"{name} (hub)", name) for name in HUB_PRESETS]
    presets = [(f"preset: {name} (untrained)", f"{PRESET_PREFIX}{name}") for name in PRESETS]
    return (teacher + hub if settings.is_offline() else hub + teacher) + presets


def default_tokenizer(settings: AppSettings) -> str:
    """``../shared/tokenizers/t5`` (the real T5 vocabulary) when it exists, else ``"byt5"``."""
    if settings.shared_dir is not None and (settings.shared_dir / "tokenizers" / "t5" / "spiece.model").is_file():
        return str(settings.shared_dir / "tokenizers" / "t5")
    return "byt5"


def _looks_local(text: str) -> bool:
    """True for anything that names a folder on this machine rather than a hub id."""
    if text.startswith((".", "/", "~", "\\")) or (len(text) > 1 and text[1] == ":"):
        return True
    if Path(text).expanduser().exists():
        return True
    return text.count("/") > 1 or os.sep != "/" and os.sep in text


def resolve_source(settings: AppSettings, choice: str | None, custom: str | None) -> tuple[str, str]:
    """What to load: ``("preset", name)``, ``("folder", resolved path)`` or ``("hub", id)``.

    ``custom`` (free text) wins over ``choice`` (dropdown) when filled in.

    Raises:
        ModelLoadError: nothing chosen, or a hub id while offline.
        PathNotAllowedError: a local folder outside the allowed folders.
    """
    from compression.runs import resolve_inside

    text = (custom or "").strip() or (choice or "").strip()
    if not text:
        raise ModelLoadError("choose a base model in the list, or type a hub id or a local folder")
    if text.startswith(PRESET_PREFIX):
        return "preset", text[len(PRESET_PREFIX):].strip()
    if text == BUNDLED_TEACHER_CHOICE:  # shipped with the project, not typed: no allowed-folder check
        from compression.teacher import bundled_teacher

        folder = bundled_teacher()
        if folder is None:
            raise ModelLoadError("this checkout has no committed Debian teacher (assets/models/debian-teacher): "
                                 "train one with the teacher button or `python -m compression teacher`")
        return "folder", str(folder)
    if _looks_local(text):
        return "folder", str(resolve_inside(text, list(settings.allowed_dirs)))
    if settings.is_offline():
        raise ModelLoadError(
            f"{text!r} is a hub id, but the dashboard runs offline (--offline): pick an architecture "
            "preset or type a local model folder"
        )
    return "hub", text


def _resolve_tokenizer(settings: AppSettings, tokenizer: str | None) -> str:
    from compression.runs import resolve_inside

    text = (tokenizer or "").strip() or default_tokenizer(settings)
    if text == "byt5":
        return text
    if _looks_local(text):
        return str(resolve_inside(text, list(settings.allowed_dirs)))
    return text


def _ensure_preset(settings: AppSettings, preset: str, tokenizer: str) -> Path:
    """Save the untrained preset once under ``<runs>/.bases/`` and return that folder."""
    from compression.export import save_model
    from compression.load import build_preset
    from compression.runs import slugify

    tok_name = "byt5" if tokenizer == "byt5" else Path(tokenizer).name or "tokenizer"
    folder = settings.bases_dir / f"preset-{slugify(preset)}-{slugify(tok_name)}"
    if not (folder / "config.json").is_file():
        model, tok = build_preset(preset, tokenizer)
        save_model(model, tok, folder, card={"method": "preset", "model_name": f"Untrained T5-efficient {preset} preset",
                                             "base_model": f"preset {preset} (random init)"})
    return folder


def architecture_markdown(label: str, facts: dict, untrained: bool) -> str:
    """The architecture summary shown after loading."""
    lines = [f"**{label}**"]
    if untrained:
        lines.append("⚠ **Untrained preset** (random weights): fine-tune it as a teacher first; "
                     "its ROUGE will be near zero, so judge students by validation loss.")
    lines.append(
        f"{facts['family'].upper()} family (`{facts['model_type']}`) · encoder **{facts['encoder_layers']}** layers · "
        f"decoder **{facts['decoder_layers']}** layers · d_model {facts['d_model']} · vocabulary "
        f"{facts['vocab_size']:,} · **{facts['params'] / 1e6:.2f} M** parameters · **{facts['size_mib']:.1f} MiB** "
        "in fp32")
    return "\n\n".join(lines)


def _length_profile(config) -> dict | None:
    """The cost profile panel 2's speed line reads (:func:`compression.length_plan.cost_profile`), or
    ``None`` for an architecture it cannot model (the line is then left out)."""
    from compression.errors import CompressionError
    from compression.length_plan import cost_profile

    try:
        return cost_profile(config)
    except CompressionError:
        return None


@user_errors
def load_base(settings: AppSettings, session: Session, choice: str | None, custom: str | None,
              tokenizer: str | None):
    """Load the chosen base model and record it in the session.

    Returns ``(architecture markdown, encoder slider, decoder slider)``: the sliders' maximum is the
    loaded depth; the encoder keeps every layer and the decoder half (SFT's usual first student,
    Shleifer & Rush 2020 §3: the decoder dominates generation time).

    Raises (as ``gr.Error``): ModelLoadError, NotSeq2SeqError, RemoteCodeError, PathNotAllowedError.
    """
    from compression.load import describe_model, load_model

    kind, value = resolve_source(settings, choice, custom)
    untrained = kind == "preset"
    if untrained:
        tok = _resolve_tokenizer(settings, tokenizer)
        folder = _ensure_preset(settings, value, tok)
        source, label = str(folder), f"preset: {value} (untrained, tokenizer {Path(tok).name or tok})"
    else:
        source, label = value, value
    model, _ = load_model(source)
    facts = describe_model(model)
    footprint = layer_footprint(model)
    profile = _length_profile(model.config)
    del model
    session.model_source, session.model_label = source, label
    session.facts, session.footprint, session.importance = facts, footprint, None
    session.length_profile = profile
    n_enc, n_dec = facts["encoder_layers"], facts["decoder_layers"]
    return (
        architecture_markdown(label, facts, untrained),
        gr.Slider(minimum=1, maximum=n_enc, value=n_enc, step=1, interactive=True),
        gr.Slider(minimum=1, maximum=n_dec, value=max(1, n_dec // 2), step=1, interactive=True),
    )


def build_model_panel(settings: AppSettings, session: gr.State) -> SimpleNamespace:
    """Lay out panel 1; the Load click is wired in :mod:`app` (its outputs live in panel 2)."""
    choices = model_choices(settings)
    with gr.Column(elem_classes=["panel"]):
        gr.Markdown("### 1 · Base model")
        choice = gr.Dropdown(choices=choices, value=choices[0][1], label="Base model",
                             info="Hub checkpoints need network access; presets are random-init T5-efficient shapes",
                             elem_id="model-choice")
        custom = gr.Textbox(label="…or any hub id or local model folder", elem_id="model-custom",
                            placeholder="e.g. runs/20250101-120000-demo/student or google/flan-t5-small",
                            info="Overrides the list when filled in. Local folders must lie inside the "
                                 "folders the operator allowed")
        tokenizer = gr.Textbox(value=default_tokenizer(settings), label="Tokenizer for presets",
                               info="A tokenizer folder (SentencePiece spiece.model works) or 'byt5'",
                               elem_id="model-tokenizer")
        with gr.Row():
            load = gr.Button("Load", variant="primary", elem_id="load-button")
            train_teacher = gr.Button("Train this preset as the teacher", elem_id="train-teacher-button",
                                      size="sm")
        if settings.is_offline():
            gr.Markdown("_Offline mode: hub checkpoints are hidden; use a preset or a local folder._")
        info = gr.Markdown("No model loaded yet.", elem_id="model-info")
    return SimpleNamespace(choice=choice, custom=custom, tokenizer=tokenizer, load=load, info=info,
                           train_teacher=train_teacher)
