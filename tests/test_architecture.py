"""The house plan (docs/INTERNALS.md): imports only go down, no circles, no private imports.

Every file of the package is parsed with `ast` (no import, no torch); every `import` and
`from ... import` counts, including the lazy ones inside functions. Imports under
`if TYPE_CHECKING:` are exempt (they never run). A failure names the offending import as
`file:line`.

Layers, top to bottom. A module may import its own subpackage and any subpackage of a
*lower* layer; nothing sideways, nothing up:

    cli
    pipeline
    zoo            (registers its source kinds in io and its adapters in coupling)
    algorithms     (Laplace reduction, recovery, variational refit rounds, operating points)
    cutting        (compensate, cut for real, the transformers layout, save and reload)
    planning       (which units go: one-shot plan, sequential reduction, the ranking object,
                    iterative rounds)
    scoring        (ΔlnZ per weight and unit, the Laplace row posteriors, tolerance, unit costs)
    coupling       (which slices each unit owns: family adapters, traced graph)
    export
    variational
    io             (the leaf of the middle set: sources registry, files, checks)
    bmr, layers    (pure math; layer types)
    tasks
    errors, bmr_compress/__init__.py (the version)

bench/ (the benchmarks, a client of the package) is checked too: no `sys.path` edits, no
circle between its files, no private names across them, and bmr_compress only through its
public faces (see FACES below).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "bmr_compress"
PKG = "bmr_compress"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli",),
    ("pipeline",),
    ("zoo",),
    ("algorithms",),
    ("cutting",),
    ("planning",),
    ("scoring",),
    ("coupling",),
    ("export",),
    ("variational",),
    ("io",),
    ("bmr", "layers"),
    ("tasks",),
    ("errors", "__init__"),
)
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}

# Edges allowed to break the rules (none left: issue #14 removed the last). An entry that no
# longer occurs fails `test_known_exceptions_still_occur`, so the lists only shrink.
KNOWN_WRONG_WAY: dict[tuple[str, str], str] = {}
KNOWN_PRIVATE: dict[tuple[str, str, str], str] = {}
KNOWN_CYCLES: dict[frozenset[str], str] = {}


@dataclass(frozen=True)
class Edge:
    src: str  # importing module
    dst: str  # imported module (a submodule when `from pkg import submodule`)
    name: str | None  # the imported name (`from dst import name`), None for `import dst`
    where: str  # file:line
    written: str  # the module as the import statement names it

    def __str__(self) -> str:
        what = f"from {self.written} import {self.name}" if self.name else f"import {self.dst}"
        return f"{self.where}: {what}"


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(ROOT.rglob("*.py")):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of nodes inside `if TYPE_CHECKING:` blocks."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            t = node.test
            name = t.id if isinstance(t, ast.Name) else t.attr if isinstance(t, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                for child in node.body:
                    skip.update(id(n) for n in ast.walk(child))
    return skip


def _edges_of(module: str, path: Path) -> Iterator[Edge]:
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_nodes(tree)
    is_pkg = path.name == "__init__.py"
    rel = path.relative_to(ROOT.parent)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        where = f"{rel}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == PKG:
                    yield Edge(module, a.name, None, where, a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PKG:
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                yield Edge(module, sub if sub in MODULES else target, a.name, where, target)


EDGES = [e for m, p in MODULES.items() for e in _edges_of(m, p)]


def subpackage(module: str) -> str:
    """bmr_compress.io.sources -> io; bmr_compress.tasks -> tasks; bmr_compress -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_subpackage_has_a_layer() -> None:
    missing = sorted({subpackage(m) for m in MODULES} - set(RANK))
    assert not missing, f"add {missing} to LAYERS in tests/test_architecture.py and docs/INTERNALS.md"


def wrong_way_edges() -> list[Edge]:
    bad = []
    for e in EDGES:
        a, b = subpackage(e.src), subpackage(e.dst)
        if a != b and RANK[b] <= RANK[a] and (e.src, e.dst) not in KNOWN_WRONG_WAY:
            bad.append(e)
    return bad


def test_imports_only_go_down() -> None:
    bad = wrong_way_edges()
    assert not bad, ("imports that go up or sideways (layers: "
                     + " > ".join("/".join(x) for x in LAYERS) + "):\n  "
                     + "\n  ".join(f"{e}  [{subpackage(e.src)} -> {subpackage(e.dst)}]" for e in bad))


def _cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components (> 1 module) of the module graph (Tarjan, iterative)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for e in edges:
        if e.src != e.dst:
            graph[e.src].add(e.dst)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for start in list(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_import_cycle_between_files() -> None:
    found = [c for c in _cycles(EDGES) if frozenset(c) not in KNOWN_CYCLES]
    lines = []
    for comp in found:
        inside = set(comp)
        lines.append("cycle: " + ", ".join(comp))
        lines += [f"    {e}" for e in EDGES if e.src in inside and e.dst in inside and e.src != e.dst]
    assert not found, "import cycles between files:\n" + "\n".join(lines)


def test_no_private_names_imported_across_modules() -> None:
    bad = [e for e in EDGES
           if e.name and e.name.startswith("_") and not e.name.startswith("__") and e.dst != e.src
           and f"{e.dst}.{e.name}" not in MODULES  # a private submodule of one's own package
           and (e.src, e.dst, e.name) not in KNOWN_PRIVATE]
    assert not bad, ("private names imported from another module (make them public or move "
                     "them):\n  " + "\n  ".join(map(str, bad)))


def test_private_modules_stay_in_their_subpackage() -> None:
    bad = [e for e in EDGES
           if any(p.startswith("_") and not p.startswith("__") for p in e.dst.split(".")[1:])
           and subpackage(e.src) != subpackage(e.dst)]
    assert not bad, "private modules imported from another subpackage:\n  " + "\n  ".join(map(str, bad))


def test_known_exceptions_still_occur() -> None:
    """An exception that the owning branch removed must leave these lists too."""
    edges = {(e.src, e.dst) for e in EDGES}
    names = {(e.src, e.dst, e.name) for e in EDGES}
    cycles = {frozenset(c) for c in _cycles(EDGES)}
    stale = ([k for k in KNOWN_WRONG_WAY if k not in edges] + [k for k in KNOWN_PRIVATE if k not in names]
             + [sorted(k) for k in KNOWN_CYCLES if k not in cycles])
    assert not stale, f"stale entries in tests/test_architecture.py: {stale}"


def test_io_is_the_leaf_of_the_middle_set() -> None:
    """io imports nothing from export, cutting, planning, scoring, coupling, zoo, variational
    or pipeline (no exceptions other than the ones listed with their owning branch)."""
    up = {"cli", "pipeline", "zoo", "cutting", "planning", "scoring", "coupling", "export",
          "variational"}
    bad = [e for e in EDGES if subpackage(e.src) == "io" and subpackage(e.dst) in up
           and (e.src, e.dst) not in KNOWN_WRONG_WAY]
    assert not bad, "io imports from above:\n  " + "\n  ".join(map(str, bad))


MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 80


def test_files_and_functions_stay_small() -> None:
    """No source file over 400 lines, no function over 80 (issue #14's house rule)."""
    long_files, long_functions = [], []
    for mod, path in MODULES.items():
        text = path.read_text(encoding="utf-8")
        if (n := len(text.splitlines())) > MAX_FILE_LINES:
            long_files.append(f"{path.relative_to(ROOT.parent)}: {n} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} "
                                          f"{node.name}: {n} lines")
    assert not long_files and not long_functions, "\n".join(long_files + long_functions)


# ----------------------------------------------------------------------------- bench/
#
# The benchmarks are a client of the package: they run as `python -m bench.NAME` from the
# repository root and see bmr_compress only through its public faces, i.e.
#   `bmr_compress` itself: the names its __init__ binds or resolves lazily (`_LAZY`), and
#   `bmr_compress.X` for a direct subpackage X: the names X/__init__.py binds or resolves
#       lazily (`_EXPORTS`); for a top-level module X (tasks, errors, layers): its public names;
# never a deeper module (`bmr_compress.algorithms.recovery`) and never a name starting with `_`.

BENCH = ROOT.parent / "bench"


def _exported(init: Path) -> frozenset[str]:
    """Names a package's __init__.py binds at top level, plus the string keys of its lazy
    tables (a dict literal assigned to a top-level name, resolved by __getattr__)."""
    names: set[str] = set()
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
            if isinstance(node.value, ast.Dict):
                names.update(k.value for k in node.value.keys
                             if isinstance(k, ast.Constant) and isinstance(k.value, str))
    return frozenset(n for n in names if not n.startswith("_"))


def _public_faces() -> dict[str, frozenset[str] | None]:
    """Importable face -> the names it offers (None: every name not starting with `_`)."""
    children = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    faces: dict[str, frozenset[str] | None] = {PKG: _exported(ROOT / "__init__.py") | children}
    for p in ROOT.iterdir():
        if p.name in children:
            faces[f"{PKG}.{p.name}"] = _exported(p / "__init__.py")
        elif p.suffix == ".py" and not p.name.startswith("_"):
            faces[f"{PKG}.{p.stem}"] = None
    return faces


FACES = _public_faces()


def _bench_files() -> dict[str, Path]:
    return {("bench" if p.stem == "__init__" else f"bench.{p.stem}"): p
            for p in sorted(BENCH.glob("*.py"))}


@dataclass(frozen=True)
class BenchImport:
    src: str  # the importing bench module
    module: str  # the module named by the statement (absolute)
    name: str | None  # `from module import name`; None for `import module`
    where: str

    def __str__(self) -> str:
        return f"{self.where}: " + (f"from {self.module} import {self.name}" if self.name
                                    else f"import {self.module}")


def _bench_imports() -> list[BenchImport]:
    out = []
    for mod, path in _bench_files().items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        skip = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            where = f"{path.relative_to(ROOT.parent)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                out += [BenchImport(mod, a.name, None, where) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:  # relative: within bench
                    module = ".".join(["bench"] + ([module] if module else []))
                out += [BenchImport(mod, module, a.name, where) for a in node.names]
    return out


BENCH_IMPORTS = _bench_imports()


def _bench_target(imp: BenchImport) -> str | None:
    """The bench module an import reaches (`from bench import common` -> bench.common)."""
    files = _bench_files()
    if imp.module.split(".")[0] != "bench":
        return None
    if imp.name and f"{imp.module}.{imp.name}" in files:
        return f"{imp.module}.{imp.name}"
    return imp.module if imp.module in files else None


def test_bench_does_not_edit_sys_path() -> None:
    bad = []
    for path in _bench_files().values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and node.attr == "path"
                    and isinstance(node.value, ast.Name) and node.value.id == "sys"):
                bad.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: sys.path")
    assert not bad, ("bench/ runs as `python -m bench.NAME` from the repository root; no "
                     "sys.path edits:\n  " + "\n  ".join(bad))


def test_bench_imports_only_public_faces() -> None:
    bad = []
    for imp in BENCH_IMPORTS:
        if imp.module.split(".")[0] != PKG:
            continue
        if imp.module not in FACES:
            bad.append(f"{imp}  [below the package faces]")
            continue
        offered = FACES[imp.module]
        if imp.name is None:
            continue
        if imp.name.startswith("_") or (offered is not None and imp.name not in offered):
            bad.append(f"{imp}  [not a name {imp.module} exports]")
    assert not bad, ("bench/ may import only bmr_compress's public faces (the package and its "
                     "subpackages' exported names; re-export what is missing):\n  "
                     + "\n  ".join(bad))


def test_bench_imports_no_private_names_of_other_bench_files() -> None:
    bad = [str(imp) for imp in BENCH_IMPORTS
           if _bench_target(imp) not in (None, imp.src)
           and (any(p.startswith("_") and p != "__init__" for p in imp.module.split("."))
                or (imp.name or "").startswith("_"))]
    assert not bad, "private bench names imported across files:\n  " + "\n  ".join(bad)


def test_no_import_cycle_between_bench_files() -> None:
    edges = [Edge(imp.src, target, imp.name, imp.where, imp.module) for imp in BENCH_IMPORTS
             if (target := _bench_target(imp)) is not None and target != "bench"]
    found = _cycles(edges)
    lines = [f"cycle: {', '.join(c)}" for c in found]
    assert not found, "import cycles between bench files:\n" + "\n".join(lines)
