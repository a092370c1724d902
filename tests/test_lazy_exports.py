"""Every lazily exported name resolves to what its table names, even after the submodule of
the same name was imported first (which sets the package attribute to the module)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import importlib, pkgutil, types
import bmr_compress
for info in pkgutil.iter_modules(bmr_compress.__path__):
    if not info.ispkg:
        continue
    pkg = importlib.import_module(f"bmr_compress.{info.name}")
    table = getattr(pkg, "_EXPORTS", None)
    if not table:
        continue
    for sub in sorted(set(table.values())):  # every submodule first, before any export
        importlib.import_module(f"{pkg.__name__}.{sub}")
    for name, sub in table.items():
        got = getattr(pkg, name)
        want = getattr(importlib.import_module(f"{pkg.__name__}.{sub}"), name)
        assert got is want, (pkg.__name__, name, got)
        assert not isinstance(got, types.ModuleType), (pkg.__name__, name)
from bmr_compress.algorithms import laplace_reduce
from bmr_compress.export import retention
assert callable(laplace_reduce) and callable(retention)
print("ok")
"""


def test_exports_are_never_shadowed_by_their_submodules() -> None:
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
