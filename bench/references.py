"""The main job's result next to what a user would do instead, measured side by side.

    python -m bench.references --from bench/out/minilm   # a finished `compress` output
    (run_all.py runs it after main_job.py in full mode)

Rows, all on the same held-out docstrings and timed interleaved in one onnxruntime run
(1 thread, batch 1, sequence 128):
- the original fp32 ONNX;
- the original quantised to int8 (the tool's quantiser, no pruning);
- every other encoder layer dropped (3 of 6; which 3 chosen on calibration batches), then
  the same recovery as BMR got (the same distillation, steps and learning rate in total);
- BMR's output (fp32 and its int8 file).

Writes the `references` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path

import numpy as np


from bench.report import write_section


def embed_onnx(path: Path, batches: list[dict]) -> np.ndarray:
    from bmr_compress.export import cpu_session

    s = cpu_session(path, threads=2)
    names = [i.name for i in s.get_inputs()]
    out = []
    for b in batches:
        feed = {k: b[k].numpy() for k in names}
        h = s.run(None, feed)[0]  # (B, T, H)
        m = b["attention_mask"].numpy()[..., None].astype(h.dtype)
        e = (h * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
        out.append(e / np.linalg.norm(e, axis=1, keepdims=True))
    return np.concatenate(out)


def embedding_quality(e0: np.ndarray, e: np.ndarray) -> tuple[float, float]:
    cos = float((e0 * e).sum(1).mean())

    def nearest(x: np.ndarray) -> np.ndarray:
        s = x @ x.T
        np.fill_diagonal(s, -np.inf)
        return s.argmax(1)

    return cos, float((nearest(e0) == nearest(e)).mean())


def drop_layers(original, keep: list[int]):
    import torch

    m = copy.deepcopy(original)
    m.encoder.layer = torch.nn.ModuleList([m.encoder.layer[i] for i in keep])
    m.config.num_hidden_layers = len(keep)
    return m


def main() -> None:
    import torch

    from bmr_compress.export import export_onnx, quantize_int8
    from bmr_compress.export import measure_latency
    from bmr_compress.io import make_dataset
    from bmr_compress.io import load_recipe
    from bmr_compress.pipeline import resolve_source
    from bmr_compress.algorithms import distortion, recover_
    from bmr_compress.tasks import strip_labels

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="src", type=Path,
                    default=Path(__file__).resolve().parent / "out" / "minilm",
                    help="a finished compress output [default: main_job.py's bench/out/minilm]")
    args = ap.parse_args()
    report = json.loads((args.src / "report.json").read_text())
    rounds = (report.get("iterative") or {}).get("rounds", [])
    steps = sum(int(r.get("recovery_steps", 0)) for r in rounds if not r.get("undone"))
    lr = float(report.get("settings", {}).get("recovery_lr") or 1e-4)
    torch.manual_seed(0)
    recipe = load_recipe("all-minilm-l6-v2")
    src = resolve_source("zoo:all-minilm-l6-v2")
    data = make_dataset(None, src, default=recipe.data)
    original = src.model.eval()
    train = [strip_labels(b) for b in data.train_batches]
    check, fit = train[:4], train[4:]
    held = [strip_labels(b) for b in data.heldout_batches]
    cands = {str(k): drop_layers(original, k) for k in ([0, 2, 4], [1, 3, 5])}
    choice = min(cands, key=lambda k: distortion(cands[k], original, check, "embedding"))
    dropped = cands[choice]
    rec = recover_(dropped, original, fit, "embedding", steps=steps, lr=lr)
    example = {k: v[:1] for k, v in held[0].items()}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        paths = {"original fp32": export_onnx(original, t / "orig.onnx", example, sparse=False).path}
        paths["original int8 (no pruning)"] = quantize_int8(paths["original fp32"], t / "orig8.onnx").path
        paths[f"layers {choice} + recovery"] = export_onnx(dropped, t / "drop.onnx", example).path
        paths["BMR (this tool)"] = args.src / "model.onnx"
        if (args.src / "model.int8.onnx").is_file():
            paths["BMR + int8"] = args.src / "model.int8.onnx"
        e0 = embed_onnx(paths["original fp32"], held)
        quality = {k: embedding_quality(e0, embed_onnx(p, held)) for k, p in paths.items()}
        seq = 128
        ids = np.full((1, seq), 1000, dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                 "token_type_ids": np.zeros_like(ids)}
        lat = measure_latency({k: str(p) for k, p in paths.items()}, feeds, threads=1, runs=40)
        sizes = {k: Path(p).stat().st_size + sum(
            f.stat().st_size for f in Path(p).parent.glob(Path(p).name + ".data")) for k, p in paths.items()}
    base = lat["original fp32"]["median_ms"]
    lines = ["## references: the main job's output beside what a user would do instead", "",
             f"Held-out: {sum(b['input_ids'].shape[0] for b in held)} stdlib docstrings (never "
             "used to decide). ORT CPU, 1 thread, batch 1, sequence 128, all models timed "
             "interleaved in one run (median of 40). Layer dropping: which layers chosen on "
             f"calibration batches; then {steps} recovery steps at lr {lr:g}, the recovery BMR "
             f"got in total (took {rec.seconds:.0f} s).", "",
             "| model | ORT median ms | speed-up | file MB | size ratio | cosine | NN agreement |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for k in paths:
        ms = lat[k]["median_ms"]
        cos, nn = quality[k]
        lines.append(f"| {k} | {ms:.2f} | {base / ms:.2f}x | {sizes[k] / 2**20:.1f} | "
                     f"{sizes['original fp32'] / sizes[k]:.2f}x | {cos:.4f} | {nn:.3f} |")
    body = "\n".join(lines)
    print(body)
    write_section("references", body)


if __name__ == "__main__":
    main()
