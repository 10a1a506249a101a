"""Modular Transformers: train layer modules once, assemble students of many sizes without retraining.

Zhou, Le Bras & Choi 2023, "Modular Transformers: Compressing Transformers into Modularized Layers
for Flexible Efficient Inference" (Findings of ACL 2023). The design choices (spans, curriculum,
loss, assembly priorities, checkpoint layout) and why: ``docs/modular.md``.

- :mod:`.spans`: ``Span``, module names, ``ModularArgs``, the curriculum weights.
- :mod:`.supervision`: modules run beside their teacher spans; distillation terms recorded.
- :mod:`.model`: ``ModularModel`` (frozen teacher + modules) and training plans.
- :mod:`.trainer`: ``train_modules`` on the Trainer.
- :mod:`.checkpoint`: ``save_modular`` (atomic) / ``load_modular``.
- :mod:`.assembly`: ``plan_for_ratio``, ``assemble`` and the reachable ratios.
- :mod:`.workflow`: ``train_modular`` from a ``ModularConfig``, ``EvaluationSet``, ``score_assembly``.
"""

from .assembly import assemble, available_ratios, max_ratio, plan_for_ratio
from .checkpoint import load_modular, save_modular
from .model import ModularModel
from .spans import (
    CONFIG_FILE,
    DEFAULT_GRANULARITIES,
    FORMAT_VERSION,
    MODULES_FILE,
    PRIORITIES,
    STACKS,
    TEACHER_DIR,
    ModularArgs,
    Span,
    granularity_weights,
    module_name,
    parse_granularities,
    spans_of,
)
from .supervision import Recorder
from .trainer import train_modules
from .workflow import (
    METHOD_OF_PRIORITY,
    RECIPE_FILE,
    EvaluationSet,
    ModularConfig,
    resume_recipe,
    score_assembly,
    score_teacher,
    train_modular,
    write_recipe,
)

_Recorder = Recorder  # the name tests and older code used

__all__ = [
    "CONFIG_FILE", "DEFAULT_GRANULARITIES", "FORMAT_VERSION", "MODULES_FILE", "PRIORITIES", "STACKS", "TEACHER_DIR",
    "ModularArgs", "ModularModel", "Recorder", "Span", "assemble", "available_ratios", "granularity_weights",
    "load_modular", "max_ratio", "module_name", "parse_granularities", "plan_for_ratio", "save_modular",
    "spans_of", "train_modules", "METHOD_OF_PRIORITY", "EvaluationSet", "ModularConfig", "score_assembly",
    "score_teacher", "train_modular", "RECIPE_FILE", "resume_recipe", "write_recipe",
]
