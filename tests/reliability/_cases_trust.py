"""Issue #22's bad inputs for the table in test_bad_inputs.py: a directory whose manifest names
code to run, --overwrite over a user's directory, a snapshot whose weights are only a pickle,
remote code on a known model type, numeric options that cannot mean anything, a data file
that is not text. Each case fails on the tree before issue #22 (it ran, deleted or loaded)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.reliability._cases import Case, Spec, _bert_with, _compress, _Evil
from tests.reliability._sources import Sources

PAYLOAD = "touch {marker}"


def manifest_naming(fx: Sources, tmp: Path, builder: str) -> tuple[Path, Path]:
    """A directory laid out like a zoo `compress` output whose manifest names `builder` and
    whose config.json, handed to `subprocess.run`, would create `marker`. Returns (dir, marker)."""
    import shutil

    from safetensors import safe_open

    from bmr_compress.io.manifest import FORMAT_VERSION

    d, marker = tmp / "downloaded", tmp / "PWNED"
    d.mkdir()
    shutil.copy2(fx.mlp_dir / "model.safetensors", d / "model.safetensors")
    with safe_open(str(d / "model.safetensors"), "pt") as f:
        shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    (d / "config.json").write_text(json.dumps({"/bin/sh": 0, "-c": 0, PAYLOAD.format(marker=marker): 0}))
    (d / "bmr_manifest.json").write_text(json.dumps({
        "format_version": FORMAT_VERSION, "family": "zoo:mlp",
        "architecture": {"kind": "builder", "builder": builder}, "groups": {}, "shapes": shapes,
        "widths": {}, "config_updates": {}, "build_config": {}, "plain_transformers": False,
        "reload": {"source": "zoo:mlp-digits"},
        "export_sample": {"pixel_values": {"dtype": "float32", "shape": [2, 1, 8, 8], "max": 1}}}))
    return d, marker


def _builder_case(command: str, builder: str = "subprocess:run", subprocess: bool = False):
    def make(fx: Sources, tmp: Path) -> Spec:
        d, marker = manifest_naming(fx, tmp, builder)
        argv = {"validate": ["validate", str(d)], "export": ["export", str(d)],
                "inspect": ["inspect", str(d)],
                "compress": _compress(d, tmp / "out")}[command]
        return Spec(argv, ("builder", builder, "not one of"), d, touch=(marker,), subprocess=subprocess)

    make.__name__ = f"builder_{command}"
    return make


def overwrite_user_dir(fx: Sources, tmp: Path) -> Spec:
    """Issue 22 #2: `--out userdir --overwrite` removed precious.txt and sub/thesis.tex."""
    out = tmp / "userdir"
    (out / "sub").mkdir(parents=True)
    (out / "precious.txt").write_text("years of work\n")
    (out / "sub" / "thesis.tex").write_text("\\documentclass{article}\n")
    return Spec(_compress("zoo:mlp-digits", out, "--overwrite"), ("--overwrite refused", str(out)), out,
                subprocess=True)


def pickle_only_snapshot(fx: Sources, tmp: Path) -> Spec:
    """Issue 22 #3: a snapshot with only pytorch_model.bin loaded with exit 0, no --allow-pickle."""
    import torch
    from safetensors.torch import load_file

    def to_pickle(d: Path) -> None:
        torch.save(load_file(str(d / "model.safetensors")), d / "pytorch_model.bin")
        (d / "model.safetensors").unlink()

    snap = _bert_with(fx, tmp, to_pickle)
    return Spec(_compress(snap, tmp / "out"), ("pickle", "--allow-pickle", "pytorch_model.bin"), tmp / "out",
                touch=(snap,))


def pickle_only_snapshot_opt_in(fx: Sources, tmp: Path) -> Spec:
    """With --allow-pickle a payload is still refused (weights_only=True), in one line that does
    not pass on torch's advice to retry with weights_only=False."""
    import torch

    def evil(d: Path) -> None:
        torch.save({"x": _Evil()}, d / "pytorch_model.bin")
        (d / "model.safetensors").unlink()

    snap = _bert_with(fx, tmp, evil)
    return Spec(_compress(snap, tmp / "out", "--allow-pickle"), ("refusing to unpickle", str(snap)), tmp / "out",
                absent=("weights_only=False",), subprocess=True)


def remote_code_known_type(fx: Sources, tmp: Path) -> Spec:
    """Issue 22 #5: a BERT config with auto_map (and its .py) compressed silently with the
    built-in class, leaving a dangling auto_map in the output."""
    def add_auto_map(d: Path) -> None:
        cfg = json.loads((d / "config.json").read_text())
        cfg["auto_map"] = {"AutoModel": "modeling_custom.CustomBert"}
        (d / "config.json").write_text(json.dumps(cfg))
        (d / "modeling_custom.py").write_text(f"import os\nos.system({PAYLOAD.format(marker=tmp / 'PWNED')!r})\n")

    snap = _bert_with(fx, tmp, add_auto_map)
    return Spec(_compress(snap, tmp / "out"), ("--trust-remote-code", "auto_map", str(snap)), tmp / "out",
                touch=(tmp / "PWNED",))


def _numeric(option: str, value: str, *extra: str):
    def make(fx: Sources, tmp: Path) -> Spec:
        argv = ["compress", "zoo:mlp-digits", "--out", str(tmp / "out"), option, value, *extra]
        return Spec(argv, (option, value), tmp / "out")

    make.__name__ = f"numeric_{option.strip('-')}"
    return make


def data_not_utf8(fx: Sources, tmp: Path) -> Spec:
    """Mostly undecodable lines: refused, naming the first bad line (file:line) and its byte."""
    p = tmp / "latin1.txt"
    p.write_bytes("déjà vu\n".encode("latin-1") * 3 + b"fine line\n")
    return Spec(_compress(fx.bert, tmp / "out", "--data", str(p)), ("not utf-8", f"{p}:1", "byte"), tmp / "out")


TRUST_CASES: list[Case] = [
    Case("builder-named-by-files-validate", "code named by the files", _builder_case("validate", subprocess=True)),
    Case("builder-named-by-files-export", "code named by the files", _builder_case("export")),
    Case("builder-named-by-files-inspect", "code named by the files", _builder_case("inspect")),
    Case("builder-named-by-files-compress", "code named by the files", _builder_case("compress")),
    Case("builder-os-system", "code named by the files", _builder_case("validate", "os:system")),
    Case("overwrite-user-dir", "overwrite", overwrite_user_dir),
    Case("pickle-only-snapshot", "pickle checkpoint", pickle_only_snapshot),
    Case("pickle-only-snapshot-opt-in", "pickle checkpoint", pickle_only_snapshot_opt_in),
    Case("remote-code-known-type", "trust_remote_code", remote_code_known_type),
    Case("tolerance-inf", "numeric option", _numeric("--tolerance", "inf")),
    Case("recovery-lr-nan", "numeric option", _numeric("--recovery-lr", "nan")),
    Case("lr-inf", "numeric option", _numeric("--lr", "inf", "--steps", "1")),
    Case("latency-budget-above-1", "numeric option", _numeric("--latency-budget", "1.5")),
    Case("data-not-utf8", "data file", data_not_utf8),
]
