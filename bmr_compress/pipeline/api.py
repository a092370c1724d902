"""`compress_`: the default reduction on a model object, in memory (no files read or written).

    import bmr_compress as bc
    record = bc.compress_(model, batches, bc.CompressConfig(), task="classification")
    record.model is model            # True: reduced in place
    record.surgery.groups            # kept indices per unit group (the manifest's content)

The default path: Laplace unit posteriors → ν calibrated to the tolerance → sequential
BMR reduction and cut → recovery, in rounds (algorithms/laplace_reduce.py). `pipeline.compress` runs
exactly this between loading (`load_stage`) and export/validation (`finish_stage`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from bmr_compress.pipeline.config import CompressConfig
from bmr_compress.pipeline.shared import StageTimer
from bmr_compress.tasks import strip_labels

if TYPE_CHECKING:
    from torch import Tensor, nn

    from bmr_compress.algorithms.laplace_reduce import LaplaceOutcome
    from bmr_compress.pipeline.stages import Cut, Fitted

    from bmr_compress.cutting.apply import SurgeryRecord
    from bmr_compress.planning.plan import Plan

log = logging.getLogger(__name__)


@dataclass
class CompressRecord:
    """What `compress_` did.

    model: the caller's model object, now reduced (the same object that was passed in).
    original: a module of the same class holding what `model` held before (the very same
        tensors, not a copy): the teacher the run distilled towards.
    surgery: cutting.SurgeryRecord from the original to the reduced model (kept indices of
        the original units per group, final shapes, config updates, coverage).
    plan: planning.Plan with the kept units per group and a per-group summary.
    """

    model: nn.Module
    original: nn.Module
    surgery: SurgeryRecord
    plan: Plan
    config: CompressConfig  # the settings used, the tolerance resolved for the task
    tolerance: float
    final_distortion: float  # on the calibration check batches
    rounds: list[dict[str, Any]]
    delta_lnz: dict[str, Tensor]  # the last scored round's ΔlnZ per unit and group
    snapshots: list[tuple[str, nn.Module]] = field(default_factory=list)  # kept rounds' models
    stage_seconds: dict[str, float] = field(default_factory=dict)
    reduction: LaplaceOutcome | None = None  # re-plans the record at an earlier round
    processes: int = 1  # torchrun processes that shared the reduction (variational.ddp)

    def to_json(self) -> dict[str, Any]:
        """What report.json's `iterative` entry says about the rounds."""
        out = {"method": "laplace rounds (tolerance-calibrated BMR, sequential, recovery)",
               "tolerance": self.tolerance, "final_check_distortion": self.final_distortion,
               "rounds": self.rounds}
        return out if self.processes == 1 else {**out, "processes": self.processes}


def compress_(model: nn.Module, batches: Sequence[Mapping[str, Any]],
              config: CompressConfig | None = None, *, task: str,
              example: Mapping[str, Any] | None = None,
              timer: StageTimer | None = None) -> CompressRecord:
    """Reduce `model` in place by the default path and return what was done.

    batches: calibration batches (dicts of model inputs; `labels` optional: a classifier's
        recovery then adds their cross-entropy). The first few only judge distortion, the
        next give the posterior statistics, the rest train the recovery; none is held out.
    config: `config.laplace` (tolerance, rounds, recovery) and `config.plan` (round_to,
        compensate) are read; None: the defaults. Only posterior = "laplace" is supported
        in memory (the variational path checkpoints to disk: use `pipeline.compress`).
    task: classification | regression | embedding | causal_lm (how outputs are compared).
    example: inputs used only to trace the unit groups (default: the first batch).

    In place like torchao's `quantize_`: `model` becomes the reduced model (its submodules
    are replaced; references to old submodules go stale) and `record.original` holds the
    original. Both are left in eval mode (distortion is measured and the recovery
    trains in eval mode: no dropout). Seeds nothing: seed torch first for a reproducible recovery.

    Under torchrun with an initialised process group (variational.ddp.process_group) every
    process must call this with the same model and batches: each takes a slice of every
    batch for the statistics, the distortion checks and the recovery, the sums are added
    over the processes, and every process ends with the same reduced model.
    """
    from bmr_compress.errors import InputError
    from bmr_compress.algorithms.laplace_reduce import laplace_reduce
    from bmr_compress.planning import Ranking
    from bmr_compress.variational.ddp import current_shard, process_shard, sharded

    config = config if config is not None else CompressConfig()
    if config.posterior != "laplace":
        raise InputError("compress_ runs the default Laplace path; posterior='variational' "
                         "needs pipeline.compress (its fine-tune checkpoints to disk)")
    if not batches:
        raise InputError("compress_ needs at least one calibration batch")
    timer = timer if timer is not None else StageTimer()
    model.eval()
    tolerance = config.laplace.tolerance_for(task)
    config = config.replace(laplace=dataclasses.replace(config.laplace, tolerance=tolerance))
    example = strip_labels(example if example is not None else batches[0])
    lap = config.laplace
    with sharded(current_shard() or process_shard()) as shard:  # None: one process
        outcome = laplace_reduce(
            model, SimpleNamespace(train_batches=list(batches), heldout_batches=[example]),
            task, tolerance=tolerance, rounds=lap.rounds, recovery_steps=lap.recovery_steps,
            lr=lap.recovery_lr, round_to=config.plan.round_to, timer=timer,
            progress=config.progress, ranking=Ranking(compensate=config.plan.compensate),
            unit_prior=config.plan.unit_prior, schedule=lap.recovery_schedule,
            hidden_weight=lap.recovery_hidden_weight, branches=lap.branches)
    record = _finish(model, outcome, example, config, timer)
    record.processes = 1 if shard is None else shard.world
    return record


def _finish(model: nn.Module, outcome: LaplaceOutcome, example: Mapping[str, Any], config: CompressConfig,
            timer: StageTimer) -> CompressRecord:
    """The record, then `model` and the reduced copy swap contents (no tensor is copied)."""
    from bmr_compress.algorithms.laplace_reduce import final_record
    from bmr_compress.planning.plan import Plan, PlanSettings

    record = final_record(model, outcome, example)
    summary = {name: {"kind": g["kind"], "num_units": g["num_units"], "kept": len(g["kept"]),
                      "rule": "ΔlnZ ≥ 0 at the tolerance-calibrated ν"}
               for name, g in record.groups.items()}
    plan = Plan({k: list(v["kept"]) for k, v in record.groups.items()}, {},
                PlanSettings(unstructured=False, round_to=config.plan.round_to), summary)
    reduced = outcome.model
    if reduced is not model:
        _swap_(model, reduced)  # `model` is now the reduced one, `reduced` the original
    return CompressRecord(model=model, original=reduced, surgery=record, plan=plan, config=config,
                          tolerance=outcome.tolerance, final_distortion=outcome.final_distortion,
                          rounds=outcome.rounds, delta_lnz=outcome.delta_lnz,
                          snapshots=outcome.snapshots, stage_seconds=timer.total(),
                          reduction=outcome)


def _swap_(a: nn.Module, b: nn.Module) -> None:
    """Exchange the state of two modules of the same class (parameters, submodules, hooks,
    config: everything an nn.Module keeps in its __dict__)."""
    if type(a) is not type(b):  # pragma: no cover - laplace_reduce deep-copies its input
        raise TypeError(f"cannot swap a {type(a).__name__} with a {type(b).__name__}")
    state = a.__dict__
    object.__setattr__(a, "__dict__", b.__dict__)
    object.__setattr__(b, "__dict__", state)


def laplace_stage(config: CompressConfig, timer: StageTimer, work: Path) -> tuple[Fitted, Cut]:
    """load → compress_ → (Fitted, Cut) for finish_stage (pipeline/finish.py)."""
    from bmr_compress.pipeline.stages import Cut, Fitted, load_stage

    source, data = load_stage(config, timer)
    rec = compress_(source.model, data.train_batches, config, task=str(source.task),
                    example=data.heldout_batches[0], timer=timer)
    fitted = Fitted(source, data, rec.config, rec.original, rec.model, [],
                    work / "posterior.safetensors")
    fitted.iteration = LaplaceRounds(rec)
    return fitted, Cut(rec.plan, rec.surgery, rec.delta_lnz, None)


@dataclass
class LaplaceRounds:
    """report.json's `iterative` entry; `outcome.snapshots` feed the operating points."""

    outcome: CompressRecord

    def to_json(self) -> dict[str, Any]:
        return self.outcome.to_json()
