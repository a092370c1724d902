"""The one JSON-safe conversion of results (report.json, `--json` output, manifests).

Dataclasses become dicts, mappings get string keys, tuples/sets become lists, paths become
strings, numpy/torch values become Python values (``tolist``), anything else its ``str``.
Non-finite floats: kept as they are (``nonfinite="keep"``: Python's json writes NaN/Infinity,
which strict readers refuse), or marked (``nonfinite="mark"``: NaN -> null, ±inf -> "inf" /
"-inf", as report.json stores them so that it stays strict JSON).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal


def to_jsonable(x: Any, *, nonfinite: Literal["keep", "mark"] = "keep") -> Any:
    """A JSON-safe copy of `x` (see the module docstring)."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: to_jsonable(getattr(x, f.name), nonfinite=nonfinite)
                for f in dataclasses.fields(x)}
    if isinstance(x, Mapping):
        return {str(k): to_jsonable(v, nonfinite=nonfinite) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)):
        return [to_jsonable(v, nonfinite=nonfinite) for v in x]
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        return to_jsonable(x.tolist(), nonfinite=nonfinite)
    if isinstance(x, float) and not math.isfinite(x) and nonfinite == "mark":
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    return str(x)
