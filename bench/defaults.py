"""Default settings on the digits zoo models: `bmr-compress compress zoo:NAME` with no option.

    python -m bench.defaults            # MLP and LeNet-5 (about 1-2 min each on 2 cores)

Target (issue 12): at least 1.5x fewer parameters at no more than 1 point of held-out
accuracy lost. Writes the `defaults` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


from bench.report import write_section

ROOT = Path(__file__).resolve().parent.parent


def run(recipe: str, out: Path) -> tuple[dict, float]:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bmr_compress.cli.main", "compress", f"zoo:{recipe}",
                    "--out", str(out), "--overwrite"], cwd=ROOT, check=False,
                   capture_output=True)
    wall = time.perf_counter() - t0
    path = out / "report.json"
    if not path.is_file():
        path = out.with_name(out.name + ".rejected") / "report.json"
    return json.loads(path.read_text()), wall


def main() -> None:
    from bmr_compress.pipeline import DEFAULT_TOLERANCE

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", default="mlp-digits,lenet5-digits")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    ap.add_argument("--quick", action="store_true", help="same runs (they are quick already)")
    args = ap.parse_args()
    lines = ["## defaults: digits zoo models with no option", "",
             "`bmr-compress compress zoo:NAME --out DIR` (default Laplace path: per-unit ARD "
             f"score, tolerance {DEFAULT_TOLERANCE['classification']} on centred logits, 3 rounds "
             "of 100 recovery steps). Held-out: the seeded 360-image digits split (one image = "
             "0.28 points). Target: ≥ 1.5x fewer parameters at ≤ 1 point of accuracy lost.", "",
             "| model | parameters | ratio | accuracy before → after | lost (points) | top-1 "
             "agreement | rounds (units removed) | wall s | target met |",
             "|---|---:|---:|---|---:|---:|---|---:|---|"]
    for recipe in args.recipes.split(","):
        r, wall = run(recipe, args.out / recipe)
        p = r["parameters"]
        m = r["metric"]
        acc0, acc1 = m["original"].get("accuracy"), m["compressed"].get("accuracy")
        ratio = p["original"] / p["compressed"]
        lost = 100 * (acc0 - acc1)
        rounds = ", ".join(str(x["removed_units"]) + (" undone" if x.get("undone") else "")
                           for x in (r.get("iterative") or {}).get("rounds", []))
        met = "yes" if ratio >= 1.5 and lost <= 1.0 else "**no**"
        lines.append(f"| {recipe} | {p['original']:,} → {p['compressed']:,} | {ratio:.2f}x | "
                     f"{acc0:.4f} → {acc1:.4f} | {lost:.2f} | "
                     f"{m['compressed'].get('top1_agreement', float('nan')):.4f} | {rounds} | "
                     f"{wall:.0f} | {met} |")
    body = "\n".join(lines)
    print(body)
    write_section("defaults", body)


if __name__ == "__main__":
    main()
