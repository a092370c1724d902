"""Load a `bmr-compress compress` output the way a sentence-transformers user does, and compare
with the tool's own embeddings (its shipped ONNX file on onnxruntime, then the folder's
pooling and normalisation) on held-out paragraphs.

    python -m bench.st_load OUT                # SentenceTransformer(OUT), PyTorch backend
    python -m bench.st_load OUT --texts 64     # more texts

Under an environment with optimum-onnx (transformers < 4.58: `BMR_TRANSFORMERS=4 bash
scripts/env.sh` builds one in .venv-transformers4), `SentenceTransformer(OUT, backend="onnx")`
is compared too. Prints one JSON object: the minimum cosine per backend, the norms, and
whether every backend reached --min-cosine (exit code 1 when not). Writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="a compress output holding modules.json")
    ap.add_argument("--texts", type=int, default=32, help="held-out paragraphs to embed")
    ap.add_argument("--onnx", default="model.onnx", help="the tool's file, inside OUT")
    ap.add_argument("--min-cosine", type=float, default=0.9999)
    args = ap.parse_args()

    import transformers
    from transformers import AutoTokenizer

    from bmr_compress.export import ValidationResult, check_st_embeddings, retrieval_pairs

    texts = list(retrieval_pairs(args.texts)["heldout"].documents)
    tok = AutoTokenizer.from_pretrained(str(args.out))
    res = ValidationResult()
    info = check_st_embeddings(res, args.out, None, tok, texts,  # type: ignore[arg-type]
                               onnx_path=args.out / args.onnx, min_cosine=args.min_cosine)
    checks = [c for c in res.checks if c.name == "sentence_transformers"]
    ok = bool(checks) and all(c.passed for c in checks)
    print(json.dumps({"out": str(args.out), "transformers": transformers.__version__,
                      "texts": len(texts), "tool_file": args.onnx, **info,
                      "checks": [c.detail for c in checks], "passed": ok}, indent=2, default=str))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
