"""What the tool sees in a loaded source: family, prunable unit groups, posterior coverage,
and the share of parameters and MACs each kind of unit owns (`bmr-compress inspect`).
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import torch
from torch import nn

from bmr_compress.io.checks import count_params
from bmr_compress.io.sources import LoadedSource
from bmr_compress.io.st_pipeline import read_st_pipeline
from bmr_compress.coupling import discover_groups
from bmr_compress.scoring.costs import CostLedger, mac_weights, module_positions
from bmr_compress.variational import wrap_


def example_inputs(source: LoadedSource) -> dict[str, Any]:
    """A small batch (B=2) the model accepts, for tracing its coupling graph."""
    cfg = source.config
    get = cfg.get if isinstance(cfg, dict) else lambda k, d=None: getattr(cfg, k, d)
    tok = source.tokenizer_or_processor
    if get("image_size") is not None:
        c = int(get("in_channels", get("num_channels", 3)))
        s = int(get("image_size"))
        return {"pixel_values": torch.rand(2, c, s, s, generator=torch.Generator().manual_seed(0))}
    if tok is not None and callable(tok) and hasattr(tok, "pad_token"):
        enc = tok(["Bayesian model reduction prunes weights.", "A short one."], padding=True, return_tensors="pt")
        return dict(enc)
    vocab = int(get("vocab_size", 100))
    ids = torch.randint(0, vocab, (2, 8), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def inspect_source(source: LoadedSource) -> dict[str, Any]:
    """Family, task, unit groups, posterior coverage, output pipeline and cost shares of a
    loaded source (the `inspect` command's result)."""
    model = source.model
    params = count_params(model)
    example = example_inputs(source)
    groups = discover_groups(model, example)
    units = [{"name": g.name, "kind": g.kind, "units": int(g.num_units)} for g in groups]
    report = wrap_(copy.deepcopy(model), None)
    status = Counter(v.split(":")[0] for v in report.coverage.values())
    skipped = {k: v for k, v in report.coverage.items() if v.startswith("skipped")}
    return {
        "source": source.source_id, "revision": source.revision, "family": source.family,
        "task": source.task, "model_class": type(model).__name__, "parameters": params,
        "unit_groups": units, "prunable_units": sum(u["units"] for u in units),
        "unit_kinds": dict(Counter(u["kind"] for u in units)),
        "coverage": dict(status), "skipped": skipped,
        "preprocessor": type(source.tokenizer_or_processor).__name__ if source.tokenizer_or_processor else None,
        "output": output_pipeline(source), **cost_shares(model, groups, example, str(source.task)),
    }


def output_pipeline(source: LoadedSource) -> dict[str, Any]:
    """What turns the model's output into the user's result: the sentence-transformers
    modules of the snapshot (pooling, normalisation), else the tool's own default."""
    st = read_st_pipeline(source.snapshot_dir)
    if st is not None:
        return {"kind": "sentence-transformers", "pooling": st.pooling, "normalize": st.normalize,
                "max_seq_length": st.max_seq_length, "other_modules": list(st.others),
                "describe": st.describe()}
    if str(source.task) == "embedding":
        return {"kind": "transformers", "pooling": "mean", "normalize": False,
                "describe": "no sentence-transformers modules: the tool scores mean-pooled "
                            "last_hidden_state, not normalised"}
    return {"kind": "model output", "describe": "logits / the model's own output"}


def cost_shares(model: Any, groups: list[Any], example: dict[str, Any], task: str) -> dict[str, Any]:
    """Share of parameters and of multiply-accumulates (at the example shape) per unit kind,
    and the embeddings, which no structured removal touches (vocabulary/position rows; for
    embedding models the hidden width, the embedding size users consume, is kept too)."""
    params = count_params(model)
    pos = module_positions(model, example)
    total_macs = sum(m.weight.numel() * pos[n] for n, m in model.named_modules() if n in pos)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    per_mac = mac_weights(model, example)
    kinds: dict[str, dict[str, float]] = {}
    for kind in dict.fromkeys(g.kind for g in groups):  # each element once per kind
        of_kind = [g for g in groups if g.kind == kind]
        others = [g for g in groups if g.kind != kind]
        own = CostLedger(of_kind, shapes).total()
        kinds[kind] = {"params": own, "macs": CostLedger(of_kind, shapes, per_mac).total(),
                       "overlap": own + CostLedger(others, shapes).total() > CostLedger(groups, shapes).total()}
    shares = {kind: {"params": int(v["params"]), "param_share": v["params"] / params if params else 0.0,
                     "mac_share": v["macs"] / total_macs if total_macs else 0.0,
                     "overlaps_other_kinds": bool(v["overlap"])}  # e.g. a hidden dim cuts every layer
              for kind, v in kinds.items()}
    seen: set[int] = set()
    emb = 0
    for m in model.modules():
        if isinstance(m, nn.Embedding) and id(m.weight) not in seen:
            seen.add(id(m.weight))
            emb += m.weight.numel()
    return {"unit_kind_shares": shares, "macs_per_example": total_macs,
            "untouchable": {"embeddings": emb, "embedding_share": emb / params if params else 0.0,
                            "hidden_kept": task == "embedding",
                            "why": "embedding rows are vocabulary/positions, not removable units"
                                   + ("; the hidden width is the embedding size and is kept"
                                      if task == "embedding" else "")}}
