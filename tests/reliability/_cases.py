"""The bad-input table: each case builds its bad input in a tmp dir and names what the one-line
error must say (the problem and the path). Used by test_bad_inputs.py."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.reliability._sources import Sources, copy_snapshot


@dataclass(frozen=True)
class Spec:
    argv: list[str]
    expect: tuple[str, ...]  # substrings of the error line (case-insensitive): problem + path
    out: Path | None = None  # output directory that must be left unchanged
    env: dict[str, str] = field(default_factory=dict)
    subprocess: bool = False  # run through a real `python -m bmr_compress.cli.main` process
    touch: tuple[Path, ...] = ()  # other paths that must be left unchanged (inputs, siblings)
    absent: tuple[str, ...] = ()  # substrings the error line must not carry (e.g. bad advice)


@dataclass(frozen=True)
class Case:
    id: str
    what: str  # the bad-input category
    make: Callable[[Sources, Path], Spec]
    known_bug: str | None = None  # strict xfail until fixed in a file this suite does not own


def _compress(src: str | Path, out: Path, *extra: str) -> list[str]:
    return ["compress", str(src), "--out", str(out), "--steps", "1", *extra]


def _rewrite_tensor(snap: Path, name: str, fn: Callable) -> None:
    from safetensors.torch import load_file, save_file

    st = load_file(str(snap / "model.safetensors"))
    st[name] = fn(st[name].clone())
    save_file(st, str(snap / "model.safetensors"), metadata={"format": "pt"})


def _bert_with(fx: Sources, tmp: Path, mutate: Callable[[Path], None]) -> Path:
    snap = copy_snapshot(fx.bert, tmp / "snap")
    mutate(snap)
    return snap


def _truncate(p: Path, keep: float = 0.5) -> None:
    b = p.read_bytes()
    p.write_bytes(b[: int(len(b) * keep)])


FFN = "encoder.layer.0.intermediate.dense.weight"

# ------------------------------------------------------------------ paths


def missing_source(fx: Sources, tmp: Path) -> Spec:
    p = tmp / "nope.safetensors"
    return Spec(_compress(p, tmp / "out"), ("not found", str(p)), tmp / "out", subprocess=True)


def missing_snapshot_dir(fx: Sources, tmp: Path) -> Spec:
    p = f"{tmp}/no-such-dir/"
    return Spec(_compress(p, tmp / "out"), ("not found", p), tmp / "out")


def dir_without_config(fx: Sources, tmp: Path) -> Spec:
    (tmp / "empty").mkdir()
    return Spec(_compress(tmp / "empty", tmp / "out"), ("no config.json", str(tmp / "empty")), tmp / "out")


def missing_recipe_file(fx: Sources, tmp: Path) -> Spec:
    p = tmp / "nope.toml"
    return Spec(_compress(fx.mlp_dir / "model.safetensors", tmp / "out", "--recipe", str(p)),
                ("not found", str(p)), tmp / "out")


def missing_data_file(fx: Sources, tmp: Path) -> Spec:
    p = tmp / "nope.npz"
    return Spec(_compress("zoo:mlp-digits", tmp / "out", "--data", str(p)), ("not found", str(p)), tmp / "out")


# ------------------------------------------------------------------ corrupted files


def truncated_safetensors(fx: Sources, tmp: Path) -> Spec:
    snap = _bert_with(fx, tmp, lambda d: _truncate(d / "model.safetensors"))
    return Spec(_compress(snap, tmp / "out"), ("truncated", str(snap / "model.safetensors")), tmp / "out",
                subprocess=True)


def garbage_safetensors(fx: Sources, tmp: Path) -> Spec:
    snap = _bert_with(fx, tmp, lambda d: (d / "model.safetensors").write_bytes(os.urandom(4096)))
    return Spec(_compress(snap, tmp / "out"), ("safetensors", str(snap / "model.safetensors")), tmp / "out")


def truncated_weight_file_with_recipe(fx: Sources, tmp: Path) -> Spec:
    w = tmp / "w.safetensors"
    w.write_bytes((fx.mlp_dir / "model.safetensors").read_bytes()[:-100])
    return Spec(_compress(w, tmp / "out", "--recipe", "mlp-digits"), ("truncated", str(w)), tmp / "out")


def corrupted_zoo_cache(fx: Sources, tmp: Path) -> Spec:
    cache = tmp / "cache"
    copy_snapshot(fx.cache, cache)
    w = cache / "zoo" / "mlp-digits" / "model.safetensors"
    _truncate(w, 0.9)
    return Spec(_compress("zoo:mlp-digits", tmp / "out"), ("truncated", str(w)), tmp / "out",
                env={"BMR_COMPRESS_CACHE": str(cache)})


def truncated_config(fx: Sources, tmp: Path) -> Spec:
    snap = _bert_with(fx, tmp, lambda d: _truncate(d / "config.json"))
    return Spec(_compress(snap, tmp / "out"), ("config.json", "not valid json", str(snap)), tmp / "out")


def config_not_an_object(fx: Sources, tmp: Path) -> Spec:
    snap = _bert_with(fx, tmp, lambda d: (d / "config.json").write_text("[1, 2, 3]"))
    return Spec(_compress(snap, tmp / "out"), ("config.json", str(snap)), tmp / "out")


def config_unknown_family(fx: Sources, tmp: Path) -> Spec:
    snap = _bert_with(fx, tmp, lambda d: (d / "config.json").write_text(json.dumps({"model_type": "nope-net"})))
    return Spec(_compress(snap, tmp / "out"), ("config.json", "nope-net", str(snap)), tmp / "out")


def garbage_tokenizer(fx: Sources, tmp: Path) -> Spec:
    """Issue 16 #9: UnicodeDecodeError from a binary tokenizer.json was exit 3."""
    snap = _bert_with(fx, tmp, lambda d: (d / "tokenizer.json").write_bytes(bytes(range(256)) * 8))
    return Spec(_compress(snap, tmp / "out"), ("tokenizer", str(snap)), tmp / "out", subprocess=True)


def tokenizer_wrong_structure(fx: Sources, tmp: Path) -> Spec:
    """Issue 16 #9: KeyError from a tokenizer.json of the wrong structure was exit 3."""
    snap = _bert_with(fx, tmp, lambda d: (d / "tokenizer.json").write_text('{"model": {"type": "Nope"}}'))
    return Spec(_compress(snap, tmp / "out"), ("tokenizer", str(snap)), tmp / "out")


def corrupted_onnx(fx: Sources, tmp: Path) -> Spec:
    d = _compressed_like(tmp)
    (d / "model.onnx").write_bytes(os.urandom(2048))
    return Spec(["validate", str(d)], ("onnx", "corrupted", str(d / "model.onnx")), d)


def truncated_onnx(fx: Sources, tmp: Path) -> Spec:
    import onnx
    from onnx import TensorProto, helper

    d = _compressed_like(tmp)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(g), str(d / "model.onnx"))
    _truncate(d / "model.onnx", 0.6)
    return Spec(["validate", str(d)], ("onnx", str(d / "model.onnx")), d)


def corrupted_manifest(fx: Sources, tmp: Path) -> Spec:
    d = _compressed_like(tmp)
    _truncate(d / "bmr_manifest.json")
    return Spec(["export", str(d)], ("not valid json", str(d / "bmr_manifest.json")), d)


def corrupted_output_as_source(fx: Sources, tmp: Path) -> Spec:
    d = _compressed_like(tmp)
    _truncate(d / "model.safetensors", 0.7)
    return Spec(_compress(d, tmp / "out"), ("truncated", str(d / "model.safetensors")), tmp / "out", touch=(d,))


def _compressed_like(tmp: Path) -> Path:
    """A directory laid out like a `compress` output (sound files) for the loaders to reject."""
    import torch
    from safetensors.torch import save_file

    d = tmp / "compressed"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"bmr_zoo_architecture": "mlp", "widths": [4]}))
    (d / "bmr_manifest.json").write_text(json.dumps({"format_version": 1, "shapes": {}}))
    (d / "report.json").write_text(json.dumps({"validation": {"passed": True}}))
    save_file({"w": torch.ones(2, 2)}, str(d / "model.safetensors"))
    save_file({"w::mu": torch.ones(2, 2)}, str(d / "posterior.safetensors"))
    (d / "model.onnx").write_bytes(b"")
    return d


# ------------------------------------------------------------------ tensors vs config


def shape_mismatch(fx: Sources, tmp: Path) -> Spec:
    import torch

    snap = _bert_with(fx, tmp, lambda d: _rewrite_tensor(d, FFN, lambda t: torch.zeros(40, t.shape[1])))
    return Spec(_compress(snap, tmp / "out"), ("shape", FFN, str(snap)), tmp / "out")


def dtype_mismatch(fx: Sources, tmp: Path) -> Spec:
    import torch

    snap = _bert_with(fx, tmp, lambda d: _rewrite_tensor(d, FFN, lambda t: t.to(torch.int32)))
    return Spec(_compress(snap, tmp / "out"), ("I32", FFN, str(snap)), tmp / "out")


def zoo_weights_shape_mismatch(fx: Sources, tmp: Path) -> Spec:
    from safetensors.torch import save_file

    from bmr_compress.zoo.architectures import build_model

    w = tmp / "w.safetensors"
    save_file(build_model("mlp", {"widths": [120, 64]}).state_dict(), str(w))
    return Spec(_compress(w, tmp / "out", "--recipe", "mlp-digits"), ("shape mismatch", str(w)), tmp / "out")


def nan_weights(fx: Sources, tmp: Path) -> Spec:
    def nan(t):
        t[0, 0] = float("nan")
        return t

    snap = _bert_with(fx, tmp, lambda d: _rewrite_tensor(d, FFN, nan))
    return Spec(_compress(snap, tmp / "out"), ("nan", FFN, str(snap / "model.safetensors")), tmp / "out")


def inf_weights(fx: Sources, tmp: Path) -> Spec:
    def inf(t):
        t[3] = float("-inf")
        return t

    w = tmp / "w.safetensors"
    from safetensors.torch import load_file, save_file

    st = load_file(str(fx.mlp_dir / "model.safetensors"))
    k = sorted(st)[0]
    st[k] = inf(st[k].clone())
    save_file(st, str(w))
    return Spec(_compress(w, tmp / "out", "--recipe", "mlp-digits"), ("inf", str(w)), tmp / "out")


# ------------------------------------------------------------------ pickle, remote code


def pickle_checkpoint_refused(fx: Sources, tmp: Path) -> Spec:
    import torch
    from safetensors.torch import load_file

    p = tmp / "weights.pt"
    torch.save(load_file(str(fx.mlp_dir / "model.safetensors")), p)
    return Spec(_compress(p, tmp / "out", "--recipe", "mlp-digits"), ("pickle", "--allow-pickle", str(p)),
                tmp / "out")


class _Evil:
    def __reduce__(self):  # would run code under a full unpickler
        return (os.system, ("touch /tmp/bmr-pwned",))


def pickle_opt_in_still_weights_only(fx: Sources, tmp: Path) -> Spec:
    import torch

    p = tmp / "evil.pt"
    torch.save({"w": torch.zeros(2), "x": _Evil()}, p)
    return Spec(["inspect", str(p), "--recipe", "mlp-digits", "--allow-pickle"], ("weights_only", str(p)))


def pickle_data_file(fx: Sources, tmp: Path) -> Spec:
    import torch

    p = tmp / "data.pt"
    torch.save({"x": _Evil()}, p)
    return Spec(_compress("zoo:mlp-digits", tmp / "out", "--data", str(p)), ("weights_only", str(p)), tmp / "out")


def remote_code_not_trusted(fx: Sources, tmp: Path) -> Spec:
    return Spec(_compress(fx.remote, tmp / "out"), ("--trust-remote-code", str(fx.remote)), tmp / "out")


def unsupported_layer(fx: Sources, tmp: Path) -> Spec:
    return Spec(_compress(fx.remote, tmp / "out", "--trust-remote-code", "--data", "digits"),
                ("GroupNorm", "norm", "no handler"), tmp / "out")


# ------------------------------------------------------------------ hub ids, revisions, network


def malformed_repo_id(fx: Sources, tmp: Path) -> Spec:
    return Spec(_compress("bad//repo", tmp / "out"), ("repo id", "bad//repo"), tmp / "out")


def malformed_repo_id_chars(fx: Sources, tmp: Path) -> Spec:
    return Spec(_compress("org/na me", tmp / "out"), ("repo id", "org/na me"), tmp / "out")


def malformed_revision(fx: Sources, tmp: Path) -> Spec:
    return Spec(_compress("org/name@..x", tmp / "out"), ("revision", "..x"), tmp / "out")


def malformed_revision_option(fx: Sources, tmp: Path) -> Spec:
    return Spec(_compress("org/name", tmp / "out", "--revision", "a b"), ("revision", "a b"), tmp / "out")


def conflicting_revisions(fx: Sources, tmp: Path) -> Spec:
    return Spec(_compress("org/name@v1", tmp / "out", "--revision", "v2"), ("conflicting revisions", "v2"),
                tmp / "out")


def offline_cache_miss(fx: Sources, tmp: Path) -> Spec:
    return Spec(_compress("bmr-test/not-cached", tmp / "out"), ("offline cache", "bmr-test/not-cached"),
                tmp / "out", env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp / "hub-cache")})


def hub_unreachable(fx: Sources, tmp: Path) -> Spec:
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(tmp / "hub-cache"),
           "HF_HUB_ETAG_TIMEOUT": "3", "HF_HUB_DOWNLOAD_TIMEOUT": "3"}
    return Spec(_compress("bmr-test/unreachable@main", tmp / "out"), ("not available", "bmr-test/unreachable"),
                tmp / "out", env=env, subprocess=True)


# ------------------------------------------------------------------ output directory


def output_not_empty(fx: Sources, tmp: Path) -> Spec:
    out = tmp / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    return Spec(_compress("zoo:mlp-digits", out), ("not empty", "--overwrite", str(out)), out)


def output_is_a_file(fx: Sources, tmp: Path) -> Spec:
    out = tmp / "out"
    out.write_text("a file")
    return Spec(_compress("zoo:mlp-digits", out), ("is a file", str(out)), out)


def output_parent_not_a_directory(fx: Sources, tmp: Path) -> Spec:
    (tmp / "f").write_text("a file")
    out = tmp / "f" / "out"
    return Spec(_compress("zoo:mlp-digits", out), ("not a directory", str(tmp / "f")), out, touch=(tmp / "f",))


def output_not_writable(fx: Sources, tmp: Path) -> Spec:
    import pytest

    if os.geteuid() == 0:
        pytest.skip("running as root: permission bits do not stop writes")
    ro = tmp / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    out = ro / "out"
    return Spec(_compress("zoo:mlp-digits", out), ("not writable", str(ro)), out)


def output_is_the_source(fx: Sources, tmp: Path) -> Spec:
    """Issue 16 #4: `--out SRC --overwrite` deleted the source (exit 0)."""
    snap = copy_snapshot(fx.bert, tmp / "snap")
    return Spec(_compress(snap, snap, "--overwrite"), ("is or contains the source", str(snap)), snap,
                subprocess=True)


def output_contains_the_source(fx: Sources, tmp: Path) -> Spec:
    parent = tmp / "models"
    snap = copy_snapshot(fx.bert, parent / "bert")
    return Spec(_compress(snap, parent, "--overwrite"), ("is or contains the source", str(parent)), parent,
                subprocess=True)


def output_contains_the_data(fx: Sources, tmp: Path) -> Spec:
    out = tmp / "out"
    out.mkdir()
    (out / "texts.txt").write_text("\n".join(f"line {i} of calibration text" for i in range(40)))
    return Spec(_compress("zoo:mlp-digits", out, "--overwrite", "--data", str(out / "texts.txt")),
                ("is or contains the data", str(out)), out)


def output_name_too_long(fx: Sources, tmp: Path) -> Spec:
    """Issue 16 #9: a legal 240-byte name whose derived checkpoint/work names are too long
    (ENAMETOOLONG) was an internal error (exit 3)."""
    out = tmp / ("n" * 240)
    return Spec(_compress("zoo:mlp-digits", out), ("name too long", "at most"), out, subprocess=True)


# ------------------------------------------------------------------ recipes


def recipe_unknown_key(fx: Sources, tmp: Path) -> Spec:
    from importlib import resources

    text = (resources.files("bmr_compress.model_zoo") / "mlp-digits.toml").read_text()
    r = tmp / "mlp-digits.toml"
    r.write_text(text.replace("[settings]", "[settings]\nbogus_key = 1"))
    return Spec(_compress(fx.mlp_dir / "model.safetensors", tmp / "out", "--recipe", str(r)),
                ("unknown key 'bogus_key'", str(r)), tmp / "out")


def recipe_unknown_table(fx: Sources, tmp: Path) -> Spec:
    r = tmp / "my.toml"
    r.write_text('name = "my"\ntask = "classification"\n[source]\nzoo = "mlp"\n[data]\nkind = "digits"\n'
                 '[optimiser]\nlr = 1\n')
    return Spec(_compress(fx.mlp_dir / "model.safetensors", tmp / "out", "--recipe", str(r)),
                ("unknown key 'optimiser'", str(r)), tmp / "out")


def recipe_invalid_toml(fx: Sources, tmp: Path) -> Spec:
    r = tmp / "broken.toml"
    r.write_text('name = "broken"\ntask = \n')
    return Spec(_compress(fx.mlp_dir / "model.safetensors", tmp / "out", "--recipe", str(r)),
                ("invalid toml", str(r)), tmp / "out")


def recipe_wrong_type(fx: Sources, tmp: Path) -> Spec:
    r = tmp / "typed.toml"
    r.write_text('name = "typed"\ntask = "classification"\n[source]\nzoo = "mlp"\n[data]\nkind = "digits"\n'
                 '[settings]\nsteps = "many"\n')
    return Spec(_compress(fx.mlp_dir / "model.safetensors", tmp / "out", "--recipe", str(r)),
                ("steps", "expected int", str(r)), tmp / "out")


# ------------------------------------------------------------------ data files


def data_wrong_suffix(fx: Sources, tmp: Path) -> Spec:
    p = tmp / "data.csv"
    p.write_text("1,2,3\n")
    return Spec(_compress("zoo:mlp-digits", tmp / "out", "--data", str(p)), ("unsupported data file", str(p)),
                tmp / "out")


def data_empty_text(fx: Sources, tmp: Path) -> Spec:
    p = tmp / "empty.txt"
    p.write_text("\n  \n")
    return Spec(_compress(fx.bert, tmp / "out", "--data", str(p)), ("empty", str(p)), tmp / "out")


def data_empty_jsonl(fx: Sources, tmp: Path) -> Spec:
    p = tmp / "empty.jsonl"
    p.write_text("")
    return Spec(_compress(fx.bert, tmp / "out", "--data", str(p)), ("empty", str(p)), tmp / "out")


def data_empty_npz(fx: Sources, tmp: Path) -> Spec:
    import numpy as np

    p = tmp / "empty.npz"
    np.savez(p)
    return Spec(_compress("zoo:mlp-digits", tmp / "out", "--data", str(p)), ("no arrays", str(p)), tmp / "out")


def data_corrupted_npz(fx: Sources, tmp: Path) -> Spec:
    p = tmp / "bad.npz"
    p.write_bytes(os.urandom(512))
    return Spec(_compress("zoo:mlp-digits", tmp / "out", "--data", str(p)), ("not a .npz", str(p)), tmp / "out")


def data_binary_as_text(fx: Sources, tmp: Path) -> Spec:
    p = tmp / "data.jsonl"
    p.write_bytes(b"\xff\xfe\x00\x01binary")
    return Spec(_compress(fx.bert, tmp / "out", "--data", str(p)), ("not utf-8", str(p)), tmp / "out")


def data_text_for_image_model(fx: Sources, tmp: Path) -> Spec:
    p = tmp / "lines.txt"
    p.write_text("one line\nanother line\nthird line\n")
    return Spec(_compress("zoo:mlp-digits", tmp / "out", "--data", str(p)), ("no tokenizer", "zoo:mlp-digits"),
                tmp / "out")


def data_wrong_shape(fx: Sources, tmp: Path) -> Spec:
    import numpy as np

    p = tmp / "x.npz"
    np.savez(p, x=np.zeros((12, 3), dtype=np.float32))
    return Spec(_compress("zoo:mlp-digits", tmp / "out", "--data", str(p)), ("does not fit", str(p)), tmp / "out")


def data_images_for_text_model(fx: Sources, tmp: Path) -> Spec:
    return Spec(_compress(fx.bert, tmp / "out", "--data", "digits"), ("does not fit", "digits"), tmp / "out")


def data_bad_jsonl_line(fx: Sources, tmp: Path) -> Spec:
    p = tmp / "d.jsonl"
    p.write_text('{"text": "ok"}\n{"text": \n')
    return Spec(_compress(fx.bert, tmp / "out", "--data", str(p)), ("invalid json", f"{p}:2"), tmp / "out")


def data_too_few_to_judge(fx: Sources, tmp: Path) -> Spec:
    """Issue 16 #5: two lines wrote --out, validated on one held-out example, then crashed
    (exit 3; exit 0 with --json). Now refused before anything is written."""
    p = tmp / "two.txt"
    p.write_text("the first calibration sentence\nthe second one\n")
    return Spec(_compress(fx.bert, tmp / "out", "--data", str(p), "--json"), ("held-out", "at least", str(p)),
                tmp / "out", subprocess=True)


CASES: list[Case] = [
    Case("missing-source-file", "missing path", missing_source),
    Case("missing-snapshot-dir", "missing path", missing_snapshot_dir),
    Case("dir-without-config", "missing path", dir_without_config),
    Case("missing-recipe-file", "missing path", missing_recipe_file),
    Case("missing-data-file", "missing path", missing_data_file),
    Case("truncated-safetensors", "truncated/corrupted safetensors", truncated_safetensors),
    Case("garbage-safetensors", "truncated/corrupted safetensors", garbage_safetensors),
    Case("truncated-weight-file-recipe", "truncated/corrupted safetensors", truncated_weight_file_with_recipe),
    Case("corrupted-zoo-cache", "truncated/corrupted safetensors", corrupted_zoo_cache),
    Case("corrupted-output-as-source", "truncated/corrupted safetensors", corrupted_output_as_source),
    Case("truncated-config", "truncated/corrupted config", truncated_config),
    Case("config-not-object", "truncated/corrupted config", config_not_an_object),
    Case("config-unknown-family", "truncated/corrupted config", config_unknown_family),
    Case("garbage-tokenizer", "truncated/corrupted config", garbage_tokenizer),
    Case("tokenizer-wrong-structure", "truncated/corrupted config", tokenizer_wrong_structure),
    Case("corrupted-manifest", "truncated/corrupted config", corrupted_manifest),
    Case("corrupted-onnx", "truncated/corrupted ONNX", corrupted_onnx),
    Case("truncated-onnx", "truncated/corrupted ONNX", truncated_onnx),
    Case("shape-mismatch", "shape/dtype vs config", shape_mismatch),
    Case("dtype-mismatch", "shape/dtype vs config", dtype_mismatch),
    Case("zoo-weights-shape-mismatch", "shape/dtype vs config", zoo_weights_shape_mismatch),
    Case("nan-weights", "NaN/Inf in weights", nan_weights),
    Case("inf-weights", "NaN/Inf in weights", inf_weights),
    Case("pickle-refused", "pickle checkpoint", pickle_checkpoint_refused),
    Case("pickle-opt-in-weights-only", "pickle checkpoint", pickle_opt_in_still_weights_only),
    Case("pickle-data-file", "pickle checkpoint", pickle_data_file),
    Case("remote-code-not-trusted", "trust_remote_code", remote_code_not_trusted),
    Case("malformed-repo-id", "malformed repo id/revision", malformed_repo_id),
    Case("malformed-repo-id-chars", "malformed repo id/revision", malformed_repo_id_chars),
    Case("malformed-revision", "malformed repo id/revision", malformed_revision),
    Case("malformed-revision-option", "malformed repo id/revision", malformed_revision_option),
    Case("conflicting-revisions", "malformed repo id/revision", conflicting_revisions),
    Case("offline-cache-miss", "hub unreachable/offline miss", offline_cache_miss),
    Case("hub-unreachable", "hub unreachable/offline miss", hub_unreachable),
    Case("output-not-empty", "output directory", output_not_empty),
    Case("output-is-a-file", "output directory", output_is_a_file),
    Case("output-parent-not-a-dir", "output directory", output_parent_not_a_directory),
    Case("output-not-writable", "output directory", output_not_writable),
    Case("output-is-the-source", "output directory", output_is_the_source),
    Case("output-contains-the-source", "output directory", output_contains_the_source),
    Case("output-contains-the-data", "output directory", output_contains_the_data),
    Case("output-name-too-long", "output directory", output_name_too_long),
    Case("unsupported-layer", "unsupported layer type", unsupported_layer),
    Case("recipe-unknown-key", "recipe", recipe_unknown_key),
    Case("recipe-unknown-table", "recipe", recipe_unknown_table),
    Case("recipe-invalid-toml", "recipe", recipe_invalid_toml),
    Case("recipe-wrong-type", "recipe", recipe_wrong_type),
    Case("data-wrong-suffix", "data file", data_wrong_suffix),
    Case("data-empty-text", "data file", data_empty_text),
    Case("data-empty-jsonl", "data file", data_empty_jsonl),
    Case("data-empty-npz", "data file", data_empty_npz),
    Case("data-corrupted-npz", "data file", data_corrupted_npz),
    Case("data-binary-as-text", "data file", data_binary_as_text),
    Case("data-bad-jsonl-line", "data file", data_bad_jsonl_line),
    Case("data-text-for-image-model", "data file", data_text_for_image_model),
    Case("data-images-for-text-model", "data file", data_images_for_text_model),
    Case("data-wrong-shape", "data file", data_wrong_shape),
    Case("data-too-few-to-judge", "data file", data_too_few_to_judge),
]
