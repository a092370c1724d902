"""Where each operating point lies in the output: the shipped model's files, candidates/ for
the original's ONNX and the other qualifying artefacts, no second copy of the original."""

from __future__ import annotations

from pathlib import Path

from bmr_compress.algorithms.curve import OperatingPoints, Point
from bmr_compress.pipeline.finish import ship_candidates_


def _ops(tmp: Path, recommended: str) -> OperatingPoints:
    def point(label: str, base: str, precision: str, scheme: str | None, ok: bool) -> Point:
        path = tmp / f"{label.replace(' ', '_')}.onnx"
        path.write_bytes(label.encode())
        return Point(label, base, precision, scheme, None if precision == "fp32" else base,
                     path, None, path.stat().st_size, qualifies=ok)

    pts = [point("original", "original", "fp32", None, True),
           point("original + int8 (dynamic)", "original", "int8", "dynamic", True),
           point("round 1", "round 1", "fp32", None, True),
           point("round 1 + int8 (dynamic)", "round 1", "int8", "dynamic", False)]
    return OperatingPoints(pts, "retrieval MRR@10", 0.01, {}, 1, {}, {}, recommended, {})


def test_a_shipped_round_keeps_the_original_under_candidates(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    ops = _ops(tmp_path, "round 1")
    ship_candidates_(ops, tmp_path / "out", ops.point("original").path, None, True)
    files = {p.label: p.file for p in ops.points}
    assert files == {"original": "candidates/original.onnx",
                     "original + int8 (dynamic)": "candidates/original.int8-dynamic.onnx",
                     "round 1": "model.onnx", "round 1 + int8 (dynamic)": None}
    assert (tmp_path / "out/candidates/original.onnx").read_bytes() == b"original"
    assert ops.to_json()["reference_file"] == "candidates/original.onnx"


def test_a_shipped_original_is_not_copied_twice(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    ops = _ops(tmp_path, "original + int8 (dynamic)")
    ship_candidates_(ops, tmp_path / "out", ops.point("original").path, "dynamic", True)
    files = {p.label: p.file for p in ops.points}
    assert files["original"] == "model.onnx" and files["original + int8 (dynamic)"] == "model.int8.onnx"
    assert not (tmp_path / "out/candidates/original.onnx").exists()
    assert ops.to_json()["reference_file"] == "model.onnx"  # what `bench` times against
