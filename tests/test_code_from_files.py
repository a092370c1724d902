"""No string from a directory being loaded selects code to import or call (issue #22, item 1).

Every place the package resolves a module or callable by name is found by parsing each file
with `ast`: `import_module` / `__import__` / `find_spec`, the builtins `eval` / `exec` /
`compile`, and `getattr(<module>, <non-literal>)`. Each site must be listed in `SITES` with
where its name comes from; a new site fails `test_every_dynamic_lookup_is_accounted_for`
until someone states (and tests) its origin. The sites that read a name out of a file are
then exercised with hostile names: nothing is imported, nothing is called.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "bmr_compress"
DYNAMIC = {"import_module", "__import__", "find_spec"}
BUILTIN_CODE = {"eval", "exec", "compile"}

# (file, function) -> where the name comes from
SITES: dict[tuple[str, str], str] = {
    ("bmr_compress/__init__.py", "__getattr__"): "literal table _LAZY (the package's own modules)",
    ("bmr_compress/cli/main.py", "get_command"): "literal table of commands (the CLI's own modules)",
    ("bmr_compress/algorithms/__init__.py", "__getattr__"): "literal table _EXPORTS (own submodules)",
    ("bmr_compress/export/__init__.py", "__getattr__"): "literal table _EXPORTS (own submodules)",
    ("bmr_compress/io/__init__.py", "__getattr__"): "literal table _EXPORTS (own submodules)",
    ("bmr_compress/zoo/__init__.py", "__getattr__"): "literal table _EXPORTS (own submodules)",
    ("bmr_compress/variational/__init__.py", "__getattr__"): "literal table _LAZY (its ddp module)",
    ("bmr_compress/export/validation_checks.py", "check_st_embeddings"): "literal package names",
    ("bmr_compress/io/userdata.py", "load_hf_dataset"): "literal package name",
    ("bmr_compress/cutting/saved.py", "builder_from_ref"):
        "registry: reached only through trusted_builder (PROJECT_BUILDERS or register_architecture) "
        "or the caller's own code (save_compressed's architecture argument)",
    ("bmr_compress/cutting/saved.py", "_load_compressed"):
        "manifest class name, accepted only as a transformers.PreTrainedModel subclass",
    ("bmr_compress/pipeline/commands.py", "_example_from_spec"):
        "manifest dtype name, accepted only as a torch.dtype (never called)",
    ("bmr_compress/variational/ddp.py", "_load_builder"): "command line: torchrun ... --builder",
    ("bmr_compress/coupling/family_table.py", "resolve"):
        "the adapter / layer-type registries' keys (dotted paths the project's own decorators "
        "register; any other name is refused before an import)",
    ("bmr_compress/io/package_corpus.py", "_package_dir"):
        "module table PACKAGES of the tool's own dependencies (find_spec locates, never imports)",
}


def _sites() -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        modules = {(a.asname or a.name).split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                   for a in n.names}
        rel = str(path.relative_to(ROOT.parent))

        def visit(node: ast.AST, scope: str) -> None:
            for child in ast.iter_child_nodes(node):
                inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else scope
                if isinstance(child, ast.Call):
                    f = child.func
                    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
                    hit = (name in DYNAMIC or (name in BUILTIN_CODE and isinstance(f, ast.Name))
                           or (name == "getattr" and isinstance(f, ast.Name) and len(child.args) >= 2
                               and isinstance(child.args[0], ast.Name) and child.args[0].id in modules
                               and not isinstance(child.args[1], ast.Constant)))
                    if hit:
                        found.setdefault((rel, scope), []).append(f"{rel}:{child.lineno}: {ast.unparse(child)[:70]}")
                visit(child, inner)

        visit(tree, "<module>")
    return found


def test_every_dynamic_lookup_is_accounted_for() -> None:
    found = _sites()
    new = {k: v for k, v in found.items() if k not in SITES}
    gone = sorted(k for k in SITES if k not in found)
    assert not new, "resolves code by name; say where the name comes from in SITES:\n  " + "\n  ".join(
        line for lines in new.values() for line in lines)
    assert not gone, f"stale SITES entries: {gone}"


def test_literal_sites_take_only_literals() -> None:
    """The sites said to use literals name a string constant or index a module-level table."""
    for (rel, scope), why in SITES.items():
        if not why.startswith("literal"):
            continue
        for line in _sites()[(rel, scope)]:
            call = line.split(": ", 1)[1]
            assert "'" in call or "_LAZY[" in call or "_EXPORTS[" in call or "self.lazy[" in call, line


def _evil_output(tmp_path: Path, architecture: dict, export_sample: dict | None = None) -> Path:
    import torch
    from safetensors.torch import save_file

    from bmr_compress.io.manifest import FORMAT_VERSION

    d = tmp_path / "downloaded"
    d.mkdir()
    save_file({"w": torch.zeros(2)}, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps({"/bin/sh": 0, "-c": 0, f"touch {tmp_path / 'PWNED'}": 0}))
    (d / "bmr_manifest.json").write_text(json.dumps({
        "format_version": FORMAT_VERSION, "architecture": architecture, "shapes": {"w": [2]},
        "groups": {}, "build_config": {}, "export_sample": export_sample or {}}))
    return d


@pytest.mark.parametrize("ref", ["subprocess:run", "os:system", "builtins:exec", "evil_module_xyz:build",
                                 "bmr_compress.zoo.adapters:register_with_surgery"])
def test_manifest_builder_outside_the_registry_is_refused_unimported(tmp_path: Path, ref: str) -> None:
    from bmr_compress.errors import InputError
    from bmr_compress.cutting.saved import load_compressed

    d = _evil_output(tmp_path, {"kind": "builder", "builder": ref})
    before = set(sys.modules)
    with pytest.raises(InputError, match="not one of bmr-compress's own"):
        load_compressed(d)
    assert not (set(sys.modules) - before) & {ref.split(":")[0]}
    assert not (tmp_path / "PWNED").exists()


def test_a_registered_builder_and_the_project_builder_still_load(tmp_path: Path) -> None:
    from bmr_compress.cutting.saved import ARCHITECTURES, PROJECT_BUILDERS, trusted_builder

    assert PROJECT_BUILDERS == {"bmr_compress.zoo.adapters:rebuild"}
    assert trusted_builder("bmr_compress.zoo.adapters:rebuild", tmp_path).__name__ == "rebuild"

    def mine(config: dict) -> None:
        return None

    ARCHITECTURES["tests.mine:build"] = mine  # the caller's own code registers it
    try:
        assert trusted_builder("tests.mine:build", tmp_path) is mine
    finally:
        del ARCHITECTURES["tests.mine:build"]


@pytest.mark.parametrize("cls", ["pipeline", "AutoConfig", "set_seed", "logging"])
def test_manifest_transformers_class_must_be_a_model_class(tmp_path: Path, cls: str) -> None:
    from bmr_compress.errors import UnsupportedModelError
    from bmr_compress.cutting.saved import load_compressed

    d = _evil_output(tmp_path, {"kind": "transformers", "class": cls})
    with pytest.raises(UnsupportedModelError, match="unknown transformers class"):
        load_compressed(d)


def test_manifest_dtype_name_must_be_a_dtype(tmp_path: Path) -> None:
    from bmr_compress.errors import InputError
    from bmr_compress.pipeline.commands import _example_from_spec

    for name in ("load", "save", "ops", "compile"):
        with pytest.raises(InputError, match="not a torch dtype"):
            _example_from_spec({"x": {"dtype": name, "shape": [1], "max": 1}})


def test_no_cli_process_imports_a_module_named_in_an_output(tmp_path: Path) -> None:
    """The whole CLI, in a fresh process, with the directory first on sys.path: inspect
    refuses the builder and never imports the module the directory ships."""
    d = _evil_output(tmp_path, {"kind": "builder", "builder": "shipped_mod:build"})
    (d / "shipped_mod.py").write_text(f"open({str(tmp_path / 'PWNED')!r}, 'w').close()\n"
                                      "def build(config):\n    return None\n")
    repo = ROOT.parent
    r = subprocess.run([sys.executable, "-m", "bmr_compress.cli.main", "inspect", str(d)], cwd=str(d),
                       env={"PYTHONPATH": f"{d}:{repo}", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "shipped_mod:build" in r.stderr and "not one of" in r.stderr
    assert not (tmp_path / "PWNED").exists()
