"""Scoring: ΔlnZ of removing each weight or unit, from a posterior; what each unit costs.

Sign convention (docs/INTERNALS.md): ΔlnZ = ln p̃(D) − ln p(D) ≥ 0 means the reduced model
(the unit removed) has at least as much evidence, so the unit goes. Pure functions over
posterior data: nothing here changes a model.
"""

from bmr_compress.scoring.costs import unit_macs
from bmr_compress.scoring.mean_field import (
    gate_site, gate_sites, score_groups, score_weights, structured_from_weights,
)

from bmr_compress.scoring.precision import (
    calibrate_precisions, matrix_posteriors, round_weights_,
)
from bmr_compress.scoring.unit_posterior import (
    consumer_sites, input_moments, output_scale, row_scales,
)

__all__ = ["calibrate_precisions", "consumer_sites", "gate_site", "gate_sites",
           "input_moments", "matrix_posteriors", "output_scale", "round_weights_",
           "row_scales", "score_groups", "score_weights", "structured_from_weights", "unit_macs"]
