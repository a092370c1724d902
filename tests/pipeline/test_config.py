"""pipeline.config: nested typed settings, strict recipe tables, one option mapping."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bmr_compress.errors import InputError
from bmr_compress.io.recipes import load_recipe
from bmr_compress.pipeline.config import (
    OPTIONS, TABLES, CompressConfig, LaplaceSettings, PlanConfig, build_config, flat_record,
    from_recipe, with_options,
)

WHERE = "x.toml"


def test_every_option_maps_onto_a_field_and_back() -> None:
    config = CompressConfig()
    for key, (table, name) in OPTIONS.items():
        owner = type(config) if not table else TABLES[table]
        assert name in {f.name for f in dataclasses.fields(owner)}, key
    rec = flat_record(config)
    assert with_options(CompressConfig(), rec) == config
    # the defaults live in the dataclasses: the record shows them
    assert rec["posterior"] == "laplace" and rec["rounds"] == 3 and rec["round_to"] == 8
    assert rec["unstructured"] is False and rec["steps"] == 200


def test_options_set_nested_fields_and_unknown_options_fail() -> None:
    c = with_options(CompressConfig(), {"tolerance": 0.05, "round_to": 4, "noise_std": 0.2,
                                        "int8": True, "source": "zoo:mlp-digits", "lr": None})
    assert c.laplace.tolerance == 0.05 and c.plan.round_to == 4 and c.export.int8
    assert c.finetune.hidden_noise_std == 0.2 and c.source.spec == "zoo:mlp-digits"
    assert c.finetune.lr == CompressConfig().finetune.lr  # None: not given
    with pytest.raises(InputError, match="--bogus-key is not supported by reduce"):
        with_options(CompressConfig(), {"bogus_key": 1}, what="reduce")
    with pytest.raises(InputError, match="expected int"):
        with_options(CompressConfig(), {"rounds": "three"})
    with pytest.raises(InputError, match="posterior must be"):
        with_options(CompressConfig(), {"posterior": "mcmc"})
    assert with_options(CompressConfig(), {"unit_prior": "layer"}).plan.unit_prior == "layer"
    assert CompressConfig().plan.unit_prior == "ard"
    with pytest.raises(InputError, match="unit_prior must be 'ard' or 'layer'"):
        with_options(CompressConfig(), {"unit_prior": "flat"})


NEW = {"seed": 1, "laplace": {"recovery_lr": 1e-3}, "finetune": {"steps": 300},
       "plan": {"structured": True, "gates": "none", "round_to": 1}, "export": {"int8": True},
       "validate": {"min_top1_agreement": 0.95, "latency_grid": [[1, 1], [8, 2]]}}
OLD = {"seed": 1, "recovery_lr": 1e-3, "steps": 300, "structured": True, "gates": "none",
       "round_to": 1, "int8": True, "validate": {"min_top1_agreement": 0.95,
                                                 "latency_grid": [[1, 1], [8, 2]]}}


def test_recipe_tables_and_the_old_flat_layout_give_the_same_config() -> None:
    a, b = from_recipe(NEW, WHERE), from_recipe(OLD, WHERE)
    assert a == b
    assert a.laplace.recovery_lr == 1e-3 and a.finetune.steps == 300 and a.plan.round_to == 1
    assert a.validate.latency_grid == ((1, 1), (8, 2)) and a.seed == 1
    assert a.laplace.rounds == LaplaceSettings().rounds  # untouched fields keep the defaults


@pytest.mark.parametrize("settings, match", [
    ({"bogus": 1}, r"x.toml \[settings\]: unknown key 'bogus' \(allowed: posterior, seed; tables"),
    ({"plan": {"round_too": 1}}, r"x.toml \[settings.plan\]: unknown key 'round_too' \(allowed: .*round_to"),
    ({"finetune": {"seed": 3}}, r"\[settings.finetune\]: unknown key 'seed'"),  # set at the top
    ({"finetune": {"steps": "many"}}, r"\[settings.finetune\]: key 'steps': expected int"),
    ({"steps": "many"}, r"option 'steps': expected int"),
    ({"steps": 3, "finetune": {"steps": 4}}, "given both flat and in"),
    ({"plan": {"gates": "maybe"}}, "gates 'maybe' is not one of"),
    ({"device": "cuda"}, "unknown key 'device'"),  # machine settings are not a recipe's
])
def test_bad_recipe_settings_name_the_table_and_allowed_keys(settings, match) -> None:
    with pytest.raises(InputError, match=match):
        from_recipe(settings, WHERE)


MODEL_ZOO = Path(__file__).resolve().parents[2] / "model_zoo"


@pytest.mark.parametrize("path", sorted(MODEL_ZOO.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_recipes_build_a_config(path: Path) -> None:
    """The recipe files in this tree use the stage tables, and parse strictly into a config."""
    r = load_recipe(path)
    config = from_recipe(r.settings, r.path)
    assert set(r.settings) <= {"posterior", "seed", "laplace", "finetune", "plan", "export"}
    if r.source.zoo:  # seed models trained from scratch: a faster recovery, no rounding
        assert config.laplace.recovery_lr == 1e-3 and config.plan.round_to == 1


def test_cli_over_recipe_over_defaults_and_implied_posterior() -> None:
    c = build_config({"source": "zoo:mlp-digits", "round_to": 4})
    assert c.plan.round_to == 4 and c.finetune.steps == 300 and c.posterior == "laplace"
    assert c.laplace.recovery_lr == 1e-3 and c.laplace.rounds == 3
    v = build_config({"source": "zoo:mlp-digits", "steps": 10})
    assert v.posterior == "variational" and v.finetune.steps == 10
    assert build_config({"source": "x", "steps": 10, "posterior": "laplace"}).posterior == "laplace"


def _help_default(text: str, flag: str) -> str:
    block = text[text.index(flag):]
    return re.search(r"\[default:\s*([^\]]+)\]", re.sub(r"\s+", " ", block)).group(1)


def test_compress_help_documents_every_option_and_the_dataclass_defaults() -> None:
    from click.testing import CliRunner

    from bmr_compress.cli.main import cli

    text = CliRunner().invoke(cli, ["compress", "--help"]).output
    for key in OPTIONS:
        if key not in ("source", "progress", "noise_std"):  # argument; always on; recipe only
            assert "--" + key.replace("_", "-") in text, key
    lap, plan = LaplaceSettings(), PlanConfig()
    assert _help_default(text, "--rounds") == str(lap.rounds)
    assert _help_default(text, "--recovery-steps") == str(lap.recovery_steps)
    assert float(_help_default(text, "--recovery-lr")) == lap.recovery_lr
    assert _help_default(text, "--round-to") == str(plan.round_to)


def test_lazy_api_keeps_the_math_import_light() -> None:
    code = ("import sys, bmr_compress.bmr, bmr_compress\n"
            "assert 'bmr_compress.pipeline' not in sys.modules, 'pipeline imported'\n"
            "assert callable(bmr_compress.compress_) and bmr_compress.CompressConfig\n"
            "assert 'bmr_compress.pipeline.api' in sys.modules\n"
            "print('OK')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr


@pytest.mark.parametrize("command, extra", [
    ("compress", set()), ("finetune", set()),
    ("reduce", {"posterior_dir", "original", "use_recorded_source"}),
])
def test_every_cli_option_is_a_config_option(command: str, extra: set[str]) -> None:
    """The commands' option names are OPTIONS keys: compress_config / reduce map them onto
    the config with nothing dropped."""
    import importlib

    cmd = importlib.import_module(f"bmr_compress.cli.{command}").command
    names = {p.name for p in cmd.params} - {"out", "overwrite", "as_json", "debug", "verbose"}
    assert names - extra <= set(OPTIONS), names - extra - set(OPTIONS)
