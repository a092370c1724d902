"""Issue #22 ("Trust, round 3") through real `bmr-compress` processes: no code named by an output
directory runs, --overwrite never deletes a user's files, identical runs never share a live
checkpoint, push trusts only a report this user's bmr-compress signed, and a run whose stderr
is a file shows every stage's start and end with its time. (The one-line refusals are in the
bad-input table: _cases_trust.py.)"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.reliability._cli import REPO, one_error_line, run_cli_process
from tests.reliability._sources import Sources, copy_snapshot
from tests.reliability.test_bad_inputs import snapshot

FAST = ["--max-samples", "240"]


def _copy_output(compressed: Path, dst: Path) -> Path:
    shutil.copytree(compressed, dst, symlinks=True)
    return dst


def test_builder_module_in_the_directory_never_imported(compressed: Path, sources: Sources,
                                                        tmp_path: Path) -> None:
    """A builder module shipped inside the directory, with the directory as cwd and on
    PYTHONPATH: validate / inspect / export refuse the reference and never import it."""
    d = _copy_output(compressed, tmp_path / "downloaded")
    marker = tmp_path / "PWNED"
    (d / "evilmod.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
                                  "def build(config):\n    raise SystemExit(0)\n")
    m = json.loads((d / "bmr_manifest.json").read_text())
    m["architecture"] = {"kind": "builder", "builder": "evilmod:build"}
    (d / "bmr_manifest.json").write_text(json.dumps(m))
    env = {"PYTHONPATH": f"{d}{os.pathsep}{REPO}"}
    for argv in (["validate", str(d)], ["inspect", str(d)], ["export", str(d)]):
        r = run_cli_process(argv, sources.cache, env=env, cwd=d)
        assert r.returncode == 2, (argv, r.stderr)
        assert "evilmod:build" in one_error_line(r) and "not one of" in one_error_line(r)
        assert not marker.exists(), f"{argv[0]} imported a module named by the directory"


def test_overwrite_never_deletes_a_users_files(compressed: Path, sources: Sources, tmp_path: Path) -> None:
    """--overwrite over an output holding a user's file, over the current directory and its
    parent, over $HOME: each refused before any work, every file still there."""
    out = _copy_output(compressed, tmp_path / "out")
    (out / "notes.txt").write_text("mine\n")
    work = tmp_path / "work"
    (work / "inner").mkdir(parents=True)
    (work / "inner" / "precious.txt").write_text("mine too\n")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("# mine\n")
    watched = [out, work, home]
    before = [snapshot(p) for p in watched]
    runs = [(["--out", str(out)], REPO, "notes.txt"),
            (["--out", "."], work / "inner", "current directory"),
            (["--out", ".."], work / "inner", "current directory"),
            (["--out", "~"], REPO, "home directory")]
    for where, cwd, why in runs:
        r = run_cli_process(["compress", "zoo:mlp-digits", *where, "--overwrite", "--steps", "1", *FAST],
                            sources.cache, env={"HOME": str(home)}, cwd=cwd)
        assert r.returncode == 2, (where, r.stderr)
        assert why in one_error_line(r), (where, r.stderr)
    assert [snapshot(p) for p in watched] == before


@pytest.mark.slow
def test_overwrite_replaces_a_previous_output_and_says_how_it_ran(compressed: Path, sources: Sources,
                                                                  tmp_path: Path) -> None:
    """A previous output (its marker lists its files) is replaced; --steps says it picked the
    variational path and where its checkpoints go."""
    out = _copy_output(compressed, tmp_path / "out")
    r = run_cli_process(["compress", "zoo:mlp-digits", "--out", str(out), "--overwrite", "--steps", "5", *FAST],
                        sources.cache)
    assert r.returncode == 0, r.stderr
    assert "--steps given: using the variational path" in r.stderr
    ckpt = re.search(r"fine-tune checkpoints: (\S+)", r.stderr)
    assert ckpt and ".out.bmr-ckpt-" in ckpt.group(1) and not Path(ckpt.group(1)).exists()
    listed = json.loads((out / ".bmr-output.json").read_text())["files"]
    assert "model.onnx" in listed and "report.json" in listed


def test_identical_run_never_takes_a_live_runs_checkpoint(sources: Sources, tmp_path: Path) -> None:
    """Issue 22 #4: while a run holds the checkpoint (its lock), an identical run is refused
    instead of resuming from the live state (once the holder is gone, a run takes the
    checkpoint over: test_kill.py's resume tests)."""
    from bmr_compress.pipeline import checkpoint_dir
    from bmr_compress.pipeline.config import build_config

    out = tmp_path / "o"
    argv = ["compress", "zoo:mlp-digits", "--out", str(out), "--steps", "20", *FAST]
    ckpt = checkpoint_dir(build_config({"source": "zoo:mlp-digits", "steps": 20, "max_samples": 240}), out)
    lock = ckpt.with_name(ckpt.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a live run fitting for the same --out and settings
        r = run_cli_process(argv, sources.cache)
    finally:
        os.close(fd)  # the holder ends (as a kill would: the kernel drops the lock)
    assert r.returncode == 2, r.stderr
    assert "another bmr-compress run" in one_error_line(r) and str(ckpt) in one_error_line(r)
    assert not out.exists() and not ckpt.exists()


def test_push_trusts_only_a_report_this_user_signed(compressed: Path, sources: Sources,
                                                    tmp_path: Path) -> None:
    """Issue 22 #6: a hand-edited report.json, or one signed under another key, is refused by
    push."""
    d = _copy_output(compressed, tmp_path / "d")
    push = ["push", str(d), "me/mlp-bmr", "--dry-run"]
    assert run_cli_process(push, sources.cache).returncode == 0
    r = run_cli_process(push, sources.cache, env={"BMR_COMPRESS_HOME": str(tmp_path / "someone-else")})
    assert r.returncode == 1 and "not signed" in one_error_line(r)

    report = json.loads((d / "report.json").read_text())
    report["validation"]["checks"][0]["detail"] = "edited by hand"
    (d / "report.json").write_text(json.dumps(report))
    r = run_cli_process(push, sources.cache)
    assert r.returncode == 1 and "not signed" in one_error_line(r) and str(d) in one_error_line(r)


@pytest.mark.slow
def test_validate_signs_again_and_names_changed_files(compressed: Path, sources: Sources,
                                                      tmp_path: Path) -> None:
    """A weight changed within parity tolerance: push refuses it until a real `validate`
    (which says which file changed since the previous validation) signs it again."""
    d = _copy_output(compressed, tmp_path / "d")
    push = ["push", str(d), "me/mlp-bmr", "--dry-run"]
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(d / "model.onnx"))
    init = next(t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    w = numpy_helper.to_array(init).copy()
    w.view("uint32").flat[0] ^= 1  # the lowest mantissa bit of one weight: within parity tolerance
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(model, str(d / "model.onnx"))
    r = run_cli_process(push, sources.cache)
    assert r.returncode == 1 and "model.onnx changed after validation" in one_error_line(r)
    r = run_cli_process(["validate", str(d)], sources.cache)
    assert r.returncode == 0, r.stderr
    assert "model.onnx changed since the previous validation" in r.stderr
    assert run_cli_process(push, sources.cache).returncode == 0


@pytest.mark.slow
def test_stderr_to_a_file_shows_every_stage_with_its_time(sources: Sources, tmp_path: Path) -> None:
    """Issue 22 #8: stderr redirected to a file (no terminal) still shows each stage's start
    and end with its time, on the default path; no third-party card warning twice."""
    out = tmp_path / "o"
    r = run_cli_process(["compress", "zoo:mlp-digits", "--out", str(out), "--max-samples", "160",
                         "--rounds", "1", "--recovery-steps", "2"], sources.cache,
                        stderr_file=tmp_path / "stderr.log")
    assert r.returncode == 0, r.stderr
    started = re.findall(r"^\[bmr-compress\] (.+): start$", r.stderr, re.M)
    done = re.findall(r"^\[bmr-compress\] (.+): done in (\d+\.\d) s$", r.stderr, re.M)
    assert {"load", "data", "calibrate", "export", "validate"} <= set(started)
    assert sorted(started) == sorted(name for name, _ in done)
    assert "Repo card metadata block was not found" not in r.stderr


def test_a_refused_run_logged_to_a_file_shows_its_stages(sources: Sources, tmp_path: Path) -> None:
    """The fast half of the above: a run stopped in its data stage still logs, to a file, the
    stages it ran with their times, and the stage it stopped in."""
    p = tmp_path / "latin1.txt"
    p.write_bytes("déjà vu\n".encode("latin-1") * 3)
    r = run_cli_process(["compress", str(sources.bert), "--out", str(tmp_path / "o"), "--data", str(p)],
                        sources.cache, stderr_file=tmp_path / "stderr.log")
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert lines[:2] == ["[bmr-compress] load: start", lines[1]] and re.fullmatch(
        r"\[bmr-compress\] load: done in \d+\.\d s", lines[1])
    assert "[bmr-compress] data: start" in lines and any(
        re.fullmatch(r"\[bmr-compress\] data: stopped in \d+\.\d s", ln) for ln in lines)
    assert lines[-1].startswith("error: ")


def test_remote_code_dropped_when_transformers_own_class_loads(sources: Sources, tmp_path: Path) -> None:
    """With --trust-remote-code, an auto_map that the loaded model does not use (transformers'
    own BertModel) leaves the config, so the output names no code it lacks."""
    from bmr_compress.io.transformers_source import load_transformers

    snap = copy_snapshot(sources.bert, tmp_path / "snap")
    cfg = json.loads((snap / "config.json").read_text())
    cfg["auto_map"] = {"AutoTokenizer": ["tokenization_custom.Tok", None]}
    (snap / "config.json").write_text(json.dumps(cfg))
    model, config, _ = load_transformers(snap, None, True)
    assert type(model).__module__.startswith("transformers.")
    assert "auto_map" not in config.to_dict() and "auto_map" not in model.config.to_dict()


def test_a_bad_utf8_line_is_skipped_by_number(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from bmr_compress.io.userdata import load_texts

    p = tmp_path / "d.txt"
    p.write_bytes(b"line one\nline two\n\xff\xfe broken\nline four\n")
    with caplog.at_level("WARNING", logger="bmr_compress"):
        texts, _ = load_texts(p)
    assert texts == ["line one", "line two", "line four"]
    assert f"{p}: skipped 1 line(s) that are not UTF-8 text: line 3" in caplog.text

