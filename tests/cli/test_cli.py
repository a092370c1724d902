"""CLI: lazy --help without torch, zoo commands, exit codes and one-line errors, inspect."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bmr_compress.cli.main import COMMANDS, cli

HELP_CHECK = """
import sys
from bmr_compress.cli.main import cli
argvs = [["--help"]] + [[c, "--help"] for c in {commands!r}] + [["zoo", s, "--help"] for s in ("list", "show", "train")]
for argv in argvs:
    try:
        cli.main(args=argv, prog_name="bmr-compress", standalone_mode=False)
    except SystemExit as e:
        assert e.code in (0, None), (argv, e.code)
    bad = sorted(m for m in ("torch", "transformers", "onnxruntime", "sklearn") if m in sys.modules)
    assert not bad, (argv, bad)
print("OK", len(argvs))
"""


def test_every_help_works_without_importing_torch() -> None:
    code = HELP_CHECK.format(commands=sorted(COMMANDS))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout
    assert "Examples" in out.stdout and "Usage: bmr-compress compress" in out.stdout
    for name in COMMANDS:
        assert f"Usage: bmr-compress {name}" in out.stdout


def test_console_script_help(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("bmr-compress")
    if not exe.exists():
        pytest.skip("console script not installed in this environment")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "compress" in out.stdout


def test_zoo_list_and_show_json() -> None:
    r = CliRunner().invoke(cli, ["zoo", "list", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert {"mlp-digits", "all-minilm-l6-v2", "gpt2"} <= {x["name"] for x in rows}
    r = CliRunner().invoke(cli, ["zoo", "show", "vit-digits", "--json"])
    assert r.exit_code == 0
    shown = json.loads(r.stdout)
    assert shown["source"]["zoo"] == "vit" and shown["source"]["arch"]["num_heads"] == [4, 4]


def test_zoo_train_writes_hub_layout(tmp_path: Path) -> None:
    out = tmp_path / "mlp"
    r = CliRunner().invoke(cli, ["zoo", "train", "mlp-digits", "--out", str(out), "--epochs", "1", "--json"])
    assert r.exit_code == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["steps"] == 23 and res["heldout_accuracy"] > 0.5  # 1437 / 64 -> 23 steps
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "README.md",
                                               ".bmr-output.json"}  # the tool's own marker
    again = CliRunner().invoke(cli, ["zoo", "train", "mlp-digits", "--out", str(out), "--epochs", "1"])
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    r = CliRunner().invoke(cli, ["zoo", "train", "gpt2", "--out", str(tmp_path / "g")])
    assert r.exit_code == 2 and "not a zoo model" in r.stderr


def test_bad_input_is_one_line_exit_2_and_debug_shows_traceback() -> None:
    r = CliRunner().invoke(cli, ["zoo", "show", "no-such-recipe"])
    assert r.exit_code == 2
    assert r.stderr.strip().startswith("error: unknown recipe 'no-such-recipe'")
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    from bmr_compress.errors import InputError

    r = CliRunner().invoke(cli, ["zoo", "show", "no-such-recipe", "--debug"])
    assert isinstance(r.exception, InputError)  # re-raised: python prints the traceback


def test_usage_error_exit_2() -> None:
    r = CliRunner().invoke(cli, ["compress", "zoo:mlp-digits"])  # --out missing
    assert r.exit_code == 2 and "--out" in r.stderr
    r = CliRunner().invoke(cli, ["no-such-command"])
    assert r.exit_code == 2


def test_compress_bad_source_exit_2(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["compress", "not a repo id!", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert "not a valid hub repo id" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


def test_push_refuses_missing_directory(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["push", str(tmp_path / "none"), "me/x", "--dry-run"])
    assert r.exit_code == 2 and r.stderr.startswith("error:")
    r = CliRunner().invoke(cli, ["push", str(tmp_path), "bad repo id", "--dry-run"])
    assert r.exit_code == 2 and "not a valid hub repo id" in r.stderr


def test_inspect_snapshot_json(tmp_path: Path) -> None:
    from tests.tiny_models import tiny_bert

    tiny_bert().save_pretrained(tmp_path / "bert")
    r = CliRunner().invoke(cli, ["inspect", str(tmp_path / "bert"), "--json"])
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["family"] == "bert" and info["task"] == "embedding"
    assert info["parameters"] == sum(p.numel() for p in tiny_bert().parameters())
    kinds = info["unit_kinds"]
    assert kinds.get("head", 0) >= 2 and kinds.get("neuron", 0) >= 2  # 2 layers: heads + FFN
    assert info["coverage"].get("wrapped", 0) > 0


def test_inspect_shows_pooling_cost_shares_and_embeddings(tmp_path: Path) -> None:
    from tests.snapshots import st_snapshot

    src = st_snapshot(tmp_path / "st")
    r = CliRunner().invoke(cli, ["inspect", str(src), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["output"]["pooling"] == "mean" and info["output"]["normalize"] is True
    shares = info["unit_kind_shares"]
    assert {"neuron", "head"} <= set(shares)
    assert all(0 < shares[k]["param_share"] < 1 and 0 < shares[k]["mac_share"] < 1 for k in ("neuron", "head"))
    assert shares["neuron"]["mac_share"] + shares["head"]["mac_share"] <= 1 + 1e-9
    assert all(v["param_share"] <= 1 and v["mac_share"] <= 1 + 1e-9 for v in shares.values())
    emb = info["untouchable"]
    assert emb["embeddings"] > 0 and 0 < emb["embedding_share"] < 1 and emb["hidden_kept"]
    human = CliRunner().invoke(cli, ["inspect", str(src)]).output
    assert "mean pooling → L2 normalisation" in human and "untouchable" in human
