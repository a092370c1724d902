"""Typed, nested settings of `compress`: one frozen dataclass per stage, loaded strictly.

    CompressConfig
      posterior "laplace" (default) | "variational";  seed, device, progress
      source    SourceConfig        where the checkpoint comes from (directory path only)
      data      DataConfig          which calibration data (directory path only)
      laplace   LaplaceSettings     tolerance, rounds, recovery (the default path)
      finetune  FinetuneSettings    the variational fine-tune (variational/settings.py)
      plan      PlanConfig          structure, rounding, budgets, gates, compensation
      export    ExportConfig        int8, quality budget, candidates, compact zeros
      validate  ValidationSettings  gate thresholds and latency shape (export/validation.py)

Defaults live in these dataclasses only. Three ways in, one mapping between them:
Python (`CompressConfig(laplace=LaplaceSettings(tolerance=0.05))`), a recipe's
`[settings]` table (`posterior`, `seed`) with one sub-table per stage
(`[settings.laplace]`, ...), and the CLI, whose option names map onto (table, field)
through OPTIONS (`with_options`). Unknown keys are an InputError naming the table and the
keys it allows; nothing is dropped silently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bmr_compress.errors import InputError
from bmr_compress.export.validation import ValidationSettings
from bmr_compress.planning.plan import PlanSettings
from bmr_compress.variational.settings import FinetuneSettings

POSTERIORS = ("laplace", "variational")
GATES = ("none", "bmrs_n", "bmrs_u")

# Default tolerance (relative output distortion, tasks.probe_output) per task. Embeddings:
# 0.1 = 2(1 − cos) at cosine 0.95. Classifier logits (centred): 0.01, the logits moving by 10 %
# of their spread; with the per-unit (ARD) score it is the largest of 0.005 / 0.01 / 0.02 / 0.03
# that kept top-1 agreement ≥ 0.995 on the calibration check batches of both digits models on
# every seed (a choice made on calibration data only; bench/defaults.py reports held-out).
DEFAULT_TOLERANCE = {"embedding": 0.1, "classification": 0.01, "causal_lm": 0.03,
                     "regression": 0.03}


@dataclass(frozen=True)
class SourceConfig:
    """The checkpoint `pipeline.compress` loads (io.sources.resolve_source)."""

    spec: str = ""  # hub id[@rev], local snapshot or weight file, zoo:RECIPE
    recipe: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False  # read .pt/.pth/.bin state dicts (always weights_only=True)
    task: str | None = None  # None: inferred from the checkpoint


@dataclass(frozen=True)
class DataConfig:
    """The calibration data `pipeline.compress` builds (io.data.make_dataset)."""

    spec: str | None = None  # None: the recipe's [data], else the default for the source
    max_samples: int | None = None
    batch_size: int | None = None


@dataclass(frozen=True)
class LaplaceSettings:
    """The default path (algorithms/laplace_reduce.py): BMR on Laplace unit posteriors at the
    likelihood precision where the measured distortion meets `tolerance`, in rounds of
    reduce → recovery."""

    tolerance: float | None = None  # relative output distortion; None: DEFAULT_TOLERANCE[task]
    rounds: int = 3  # prune → recover → re-score rounds at most
    recovery_steps: int = 100  # distillation steps after each round's cut
    recovery_lr: float = 1e-4  # Adam learning rate of those steps
    recovery_schedule: str = "constant"  # "constant" or "cosine" (algorithms/recovery.lr_factor)
    recovery_hidden_weight: float = 0.0  # weight of the layer-wise loss (0: the output only)
    # a whole FFN block may go when its joint evidence says so (docs/theory.md §7c); off:
    # every layer keeps at least one unit of each branch, as before
    branches: bool = False

    def __post_init__(self) -> None:
        if self.tolerance is not None and not 0 < self.tolerance < float("inf"):
            raise InputError(f"tolerance must be a finite number > 0, got {self.tolerance}")
        if self.rounds < 1 or self.recovery_steps < 0 or not self.recovery_lr > 0:
            raise InputError("laplace: rounds must be >= 1, recovery_steps >= 0, recovery_lr > 0")
        if self.recovery_schedule not in ("constant", "cosine") or self.recovery_hidden_weight < 0:
            raise InputError("laplace: recovery_schedule must be 'constant' or 'cosine' and "
                             "recovery_hidden_weight >= 0")

    def tolerance_for(self, task: str) -> float:
        return float(self.tolerance if self.tolerance is not None
                     else DEFAULT_TOLERANCE.get(task, 0.03))


@dataclass(frozen=True)
class PlanConfig:
    """What may be removed and how the plan is turned into planning.PlanSettings
    (pipeline/budgets.py). The pipeline's default differs from PlanSettings' in one place:
    single weights are not zeroed (that only shrinks files)."""

    structured: bool = PlanSettings.structured
    unstructured: bool = False
    threshold: str = PlanSettings.threshold  # zero | beta_bernoulli
    round_to: int = PlanSettings.round_to
    gates: str = "none"  # none | bmrs_n | bmrs_u (variational)
    iterative: bool = False  # Beckers et al. prune → refit rounds (variational)
    # move the survivors to their reduced posterior mean under a row-correlated posterior
    compensate: bool = True
    # a unit's prior scale: "ard" (its own, type-II maximum likelihood) or "layer" (one per layer)
    unit_prior: str = "ard"
    size_budget: float | None = None  # ≤ 1: fraction of the original parameters; > 1: count
    # fraction of the prunable units' multiply-accumulates to keep (a MAC proxy for latency)
    latency_budget: float | None = None

    def __post_init__(self) -> None:
        if self.gates not in GATES:
            raise InputError(f"gates {self.gates!r} is not one of {', '.join(GATES)}")
        if self.threshold not in ("zero", "beta_bernoulli"):
            raise InputError("threshold must be 'zero' or 'beta_bernoulli', "
                             f"got {self.threshold!r}")
        if self.round_to < 0:
            raise InputError("round_to must be >= 0")
        from bmr_compress.bmr.ard import UNIT_PRIORS

        if self.unit_prior not in UNIT_PRIORS:
            raise InputError(f"unit_prior must be 'ard' or 'layer', got {self.unit_prior!r}")
        for name in ("size_budget", "latency_budget"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise InputError(f"{name} must be > 0, got {v}")
        if self.latency_budget is not None and self.latency_budget > 1:
            raise InputError(f"latency_budget is a fraction of the multiply-accumulates to keep: "
                             f"at most 1, got {self.latency_budget}")


@dataclass(frozen=True)
class ExportConfig:
    """What the run ships. int8: None = measure int8 artefacts for models of 1M parameters or
    more (pipeline/choose.py); int8_scheme: "auto" times every scheme on this CPU, a name
    forces that one; max_quality_loss: the recommended artefact keeps >= 1 - this of the
    original's task metric on selection examples; candidates: ship the other qualifying
    artefacts and the original's ONNX under candidates/ for `bmr-compress bench`;
    mixed_precision: also write model.mixed.onnx, each weight matrix on the grid BMR chose for
    it (pipeline/mixed.py, docs/PRECISION.md)."""

    int8: bool | None = None
    int8_scheme: str = "auto"
    max_quality_loss: float = 0.01
    candidates: bool = True
    compact_zeros: bool = False  # store mostly-zero tensors sparsely in model.safetensors
    mixed_precision: bool = False

    def __post_init__(self) -> None:
        from bmr_compress.export.quantize import SCHEMES

        if self.int8_scheme not in ("auto", *SCHEMES):
            raise InputError(f"int8_scheme {self.int8_scheme!r}: choose auto or one of "
                             f"{', '.join(SCHEMES)}")
        if not 0.0 <= self.max_quality_loss < 1.0:
            raise InputError(f"max_quality_loss {self.max_quality_loss!r}: a share in [0, 1) "
                             "(0.01 keeps 99 % of the task metric)")


# FinetuneSettings fields the pipeline sets itself (from the top level or per run)
PIPELINE_OWNED = frozenset({"seed", "device", "progress", "checkpoint_dir", "checkpoint_every",
                            "resume", "output_dir"})


@dataclass(frozen=True)
class CompressConfig:
    """Everything `compress` / `compress_` need, grouped by stage. `seed`, `device` and
    `progress` are set once here; the pipeline copies them into `finetune`."""

    posterior: str = "laplace"
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    source: SourceConfig = field(default_factory=SourceConfig)
    data: DataConfig = field(default_factory=DataConfig)
    laplace: LaplaceSettings = field(default_factory=LaplaceSettings)
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    plan: PlanConfig = field(default_factory=PlanConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    validate: ValidationSettings = field(default_factory=ValidationSettings)

    def __post_init__(self) -> None:
        if self.posterior not in POSTERIORS:
            raise InputError("posterior must be 'laplace' or 'variational', "
                             f"got {self.posterior!r}")

    def replace(self, **tables: Any) -> CompressConfig:
        """A copy with some top-level fields or whole tables replaced."""
        return dataclasses.replace(self, **tables)


TABLES: dict[str, type] = {"source": SourceConfig, "data": DataConfig,
                           "laplace": LaplaceSettings, "finetune": FinetuneSettings,
                           "plan": PlanConfig, "export": ExportConfig,
                           "validate": ValidationSettings}

# The one mapping of option names (CLI flags, recipe [settings] keys of the old flat layout,
# the flat record in report.json / bmr_manifest.json) onto (table, field); "" = top level.
OPTIONS: dict[str, tuple[str, str]] = {
    "source": ("source", "spec"), "recipe": ("source", "recipe"),
    "revision": ("source", "revision"), "trust_remote_code": ("source", "trust_remote_code"),
    "allow_pickle": ("source", "allow_pickle"), "task": ("source", "task"),
    "data": ("data", "spec"), "max_samples": ("data", "max_samples"),
    "batch_size": ("data", "batch_size"),
    "posterior": ("", "posterior"), "seed": ("", "seed"), "device": ("", "device"),
    "progress": ("", "progress"),
    "tolerance": ("laplace", "tolerance"), "rounds": ("laplace", "rounds"),
    "recovery_steps": ("laplace", "recovery_steps"), "recovery_lr": ("laplace", "recovery_lr"),
    "blocks": ("laplace", "branches"),
    "steps": ("finetune", "steps"), "lr": ("finetune", "lr"), "n_data": ("finetune", "n_data"),
    "temperature": ("finetune", "temperature"), "noise_std": ("finetune", "hidden_noise_std"),
    "laplace_batches": ("finetune", "laplace_batches"),
    "structured": ("plan", "structured"), "unstructured": ("plan", "unstructured"),
    "threshold": ("plan", "threshold"), "round_to": ("plan", "round_to"),
    "gates": ("plan", "gates"), "iterative": ("plan", "iterative"),
    "compensate": ("plan", "compensate"), "size_budget": ("plan", "size_budget"),
    "unit_prior": ("plan", "unit_prior"),
    "latency_budget": ("plan", "latency_budget"),
    "int8": ("export", "int8"), "int8_scheme": ("export", "int8_scheme"),
    "max_quality_loss": ("export", "max_quality_loss"), "candidates": ("export", "candidates"),
    "compact_zeros": ("export", "compact_zeros"),
    "mixed_precision": ("export", "mixed_precision"),
}

# options that only the variational path reads: giving one (CLI) selects that path
VARIATIONAL_ONLY = ("steps", "n_data", "temperature", "noise_std", "laplace_batches", "gates",
                    "iterative", "threshold", "unstructured", "size_budget", "latency_budget")

# what a recipe's [settings] may hold: these top-level keys and the stage tables; the old flat
# layout (every option except where the model and data come from and machine settings)
RECIPE_TOP = ("posterior", "seed")
RECIPE_TABLES = ("laplace", "finetune", "plan", "export", "validate")
RECIPE_FLAT = tuple(k for k, (t, _) in OPTIONS.items()
                    if t not in ("source", "data", "") and k != "compact_zeros")


def _hints(cls: type) -> dict[str, Any]:
    import typing

    return typing.get_type_hints(cls)


def with_options(config: CompressConfig, values: Mapping[str, Any], *, what: str = "compress"
                 ) -> CompressConfig:
    """`config` with the given options (names of OPTIONS) set; None means "not given".

    An option that is not in OPTIONS is an InputError unless it is None or False (an unset
    flag); values are type-checked (they may come from a file)."""
    from bmr_compress.io.recipes import check_type

    tables: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        if value is None:
            continue
        if key not in OPTIONS:
            if value is False:
                continue
            flag = "--" + key.replace("_", "-")
            raise InputError(f"{flag} is not supported by {what} in this version")
        table, name = OPTIONS[key]
        cls = type(config) if not table else TABLES[table]
        tables.setdefault(table, {})[name] = check_type(value, _hints(cls)[name],
                                                        f"{what}: option {key!r}")
    top = tables.pop("", {})
    for table, changes in tables.items():
        top[table] = dataclasses.replace(getattr(config, table), **changes)
    return dataclasses.replace(config, **top)


def from_recipe(settings: Mapping[str, Any], where: str,
                base: CompressConfig | None = None) -> CompressConfig:
    """`base` (default: the defaults) with a recipe's [settings] table applied, strictly.

    New layout: `posterior` / `seed` plus [settings.laplace], [settings.finetune],
    [settings.plan], [settings.export], [settings.validate]. The old flat layout (option
    names directly in [settings]) is still read; a key given both ways is an error."""
    from bmr_compress.io.recipes import strict_dataclass

    config = base if base is not None else CompressConfig()
    allowed = (*RECIPE_TOP, *RECIPE_TABLES, *RECIPE_FLAT)
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        tables = ", ".join(f"[settings.{t}]" for t in RECIPE_TABLES)
        raise InputError(
            f"{where} [settings]: unknown key {unknown[0]!r} (allowed: "
            f"{', '.join(RECIPE_TOP)}; tables {tables}; "
            f"or the flat keys {', '.join(sorted(RECIPE_FLAT))})")
    flat = {k: v for k, v in settings.items() if k not in RECIPE_TABLES}
    changes: dict[str, Any] = {}
    for table in RECIPE_TABLES:
        if table not in settings:
            continue
        sub = settings[table]
        both = sorted(k for k in flat if OPTIONS.get(k, ("", ""))[0] == table
                      and isinstance(sub, Mapping) and OPTIONS[k][1] in sub)
        if both:
            raise InputError(f"{where} [settings]: {both[0]!r} is given both flat and in "
                             f"[settings.{table}]")
        skip = PIPELINE_OWNED if table == "finetune" else frozenset()
        changes[table] = strict_dataclass(TABLES[table], sub, f"{where} [settings.{table}]",
                                          skip=skip, base=getattr(config, table))
    config = dataclasses.replace(config, **changes)
    return with_options(config, flat, what=f"{where} [settings]")


def flat_record(config: CompressConfig) -> dict[str, Any]:
    """The settings as report.json / bmr_manifest.json record them: option name -> value
    (None left out). `reduce` reads them back through `with_options`."""
    out = {}
    for key, (table, name) in OPTIONS.items():
        v = getattr(config if not table else getattr(config, table), name)
        if v is not None:
            out[key] = v
    return out


def implied_posterior(values: Mapping[str, Any]) -> str | None:
    """"variational" when an option only that path reads was given (and no --posterior)."""
    if values.get("posterior") is not None:
        return None
    given = [k for k in VARIATIONAL_ONLY if values.get(k) not in (None, False)]
    return "variational" if given else None


def build_config(values: Mapping[str, Any], *, what: str = "compress") -> CompressConfig:
    """The config of a run from option values (None: not given): option > the recipe's
    [settings] (the --recipe, or SOURCE's when it is zoo:NAME) > the dataclass defaults."""
    import logging

    from bmr_compress.pipeline.shared import recipe_for

    recipe = recipe_for(values.get("recipe"), str(values.get("source") or ""))
    config = from_recipe(recipe.settings, recipe.path) if recipe is not None else CompressConfig()
    implied = implied_posterior(values)
    if implied is not None:
        first = next(k for k in VARIATIONAL_ONLY if values.get(k) not in (None, False))
        logging.getLogger("bmr_compress.progress").info(
            "--%s given: using the variational path (--posterior variational); the default "
            "Laplace path takes --tolerance instead", first.replace("_", "-"))
        values = {**values, "posterior": implied}
    return with_options(config, values, what=what)
