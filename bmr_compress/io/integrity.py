"""Tie report.json to the files it validated, and check a manifest against its weights.

`file_hashes` is recorded in report.json (``integrity.sha256``) by `compress`, `reduce` and
`validate` once they have validated a directory; `check_integrity` (run by `push`) refuses a
directory whose files differ from that record: a changed, missing or added file.

`seal_report_file` then signs the record: an HMAC-SHA256 (``integrity.hmac``) over the file
hashes and the ``validation`` block, with a key the tool keeps per user (`key_file`: created
0600 on first use). `check_signature` (run by `push`) refuses a report.json that this user's
bmr-compress did not write as it stands: one edited by hand (its ``passed`` flag, its checks,
its hashes), or validated under another account; `bmr-compress validate DIR` re-validates
for real and signs again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bmr_compress.errors import InputError, ValidationFailed

INTEGRITY_KEY = "integrity"
# written after (or about) the validation, so not covered by it: the report itself, its
# plots, and the model card `push` writes
UNSEALED = frozenset({"report.json", "report.md", "README.md"})
UNSEALED_DIRS = frozenset({"plots"})
# written later, beside a validated result, by commands that only read it (`bench` keeps its
# per-CPU timings in bench/<cpu signature>.json): never sealed and never uploaded, so adding
# them leaves the result valid and pushable
LOCAL_DIRS = frozenset({"bench"})
# written into every directory io.atomic puts in place: the files the tool wrote there
MARKER = ".bmr-output.json"


def _sealed_files(directory: Path) -> list[Path]:
    out = []
    for p in sorted(directory.rglob("*")):
        rel = p.relative_to(directory)
        if (any(part.startswith(".") for part in rel.parts) or rel.parts[0] in UNSEALED_DIRS
                or rel.parts[0] in LOCAL_DIRS):
            continue
        if str(rel) in UNSEALED or p.is_dir():
            continue
        out.append(p)
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_hashes(directory: str | Path) -> dict[str, Any]:
    """{"algorithm": "sha256", "sha256": {relative path: hex digest}} of every file the
    validation covers (all but report.*, README.md, plots/, bench/ and hidden entries)."""
    d = Path(directory)
    return {"algorithm": "sha256",
            "sha256": {str(p.relative_to(d)): sha256_file(p) for p in _sealed_files(d)}}


def check_integrity(directory: str | Path, report: Mapping[str, Any]) -> None:
    """ValidationFailed unless the files in `directory` are exactly those the report sealed."""
    d = Path(directory)
    rec = report.get(INTEGRITY_KEY)
    sealed = rec.get("sha256") if isinstance(rec, Mapping) else None
    if not isinstance(sealed, Mapping) or not sealed:
        raise ValidationFailed(f"refusing {d}: report.json records no file hashes (an older or edited "
                               f"report): run `bmr-compress validate {d}` first")
    now = {str(p.relative_to(d)): p for p in _sealed_files(d)}
    for name in sorted(set(sealed) | set(now)):
        if name not in now:
            raise ValidationFailed(f"refusing {d}: {name} was validated but is missing; "
                                   f"run `bmr-compress validate {d}` again")
        if name not in sealed:
            raise ValidationFailed(f"refusing {d}: {d / name} was not part of the validation "
                                   f"(added afterwards?); remove it or run `bmr-compress validate {d}`")
        if sha256_file(now[name]) != sealed[name]:
            raise ValidationFailed(f"refusing {d}: {d / name} changed after validation; "
                                   f"run `bmr-compress validate {d}` again")


KEY_NAME = "seal.key"


def key_file() -> Path:
    """Where the per-user signing key lives: $BMR_COMPRESS_HOME, else
    $XDG_CONFIG_HOME/bmr-compress, else ~/.config/bmr-compress (file seal.key)."""
    home = os.environ.get("BMR_COMPRESS_HOME")
    if home:
        return Path(home).expanduser() / KEY_NAME
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(xdg).expanduser() / "bmr-compress" / KEY_NAME


def _key(create: bool) -> bytes | None:
    path = key_file()
    if not path.is_file():
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another run made it meanwhile
            return path.read_bytes()
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    return path.read_bytes()


def _signed_part(report: Mapping[str, Any]) -> bytes:
    rec = report.get(INTEGRITY_KEY)
    sealed = rec.get("sha256") if isinstance(rec, Mapping) else None
    return json.dumps({"sha256": sealed, "validation": report.get("validation")},
                      sort_keys=True, separators=(",", ":")).encode()


def seal_report_file(directory: str | Path) -> None:
    """Sign report.json in place (``integrity.hmac``) with this user's key (created if missing);
    call only right after a real validation wrote the report."""
    path = Path(directory) / "report.json"
    report = json.loads(path.read_text())
    key = _key(create=True)
    assert key is not None
    report.setdefault(INTEGRITY_KEY, {})["hmac"] = hmac.new(key, _signed_part(report), "sha256").hexdigest()
    tmp = path.with_name(".report.json.tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def check_signature(directory: str | Path, report: Mapping[str, Any]) -> None:
    """ValidationFailed unless report.json carries this user's signature over its file hashes
    and validation block (an edited report, or one validated under another account)."""
    rec = report.get(INTEGRITY_KEY)
    mac = rec.get("hmac") if isinstance(rec, Mapping) else None
    key = _key(create=False)
    want = hmac.new(key, _signed_part(report), "sha256").hexdigest() if key else None
    if not isinstance(mac, str) or want is None or not hmac.compare_digest(mac, want):
        raise ValidationFailed(f"refusing {directory}: report.json is not signed by your bmr-compress "
                               f"(edited by hand, or validated elsewhere; key {key_file()}): run "
                               f"`bmr-compress validate {directory}` to re-validate it")


def check_report_consistent(directory: str | Path, report: Mapping[str, Any]) -> None:
    """ValidationFailed when `validation.passed` disagrees with the checks it summarises."""
    val = report.get("validation")
    checks = val.get("checks") if isinstance(val, Mapping) else None
    if not isinstance(checks, list) or not checks:
        raise ValidationFailed(f"refusing {directory}: report.json lists no validation checks")
    bad = [c.get("name", "?") if isinstance(c, Mapping) else "?" for c in checks
           if not (isinstance(c, Mapping) and c.get("passed") is True)]
    if bad:
        raise ValidationFailed(f"refusing {directory}: report.json says passed but check(s) "
                               f"{', '.join(map(str, bad))} failed")


def check_manifest_consistent(directory: str | Path) -> None:
    """The manifest's groups and shapes agree with each other and with model.safetensors
    (ValidationFailed naming the group or tensor; nothing to check without a manifest)."""
    from bmr_compress.io.manifest import read_manifest
    from bmr_compress.io.weight_layout import weight_shapes

    d = Path(directory)
    where = d / "bmr_manifest.json"
    if not where.exists():  # a plain export; a removed manifest fails check_integrity
        return
    m = read_manifest(d)
    shapes, groups = m.get("shapes"), m.get("groups")
    if not isinstance(shapes, dict) or not isinstance(groups, dict):
        raise InputError(f"{where}: no shapes/groups tables")
    stored = {k: list(v) for k, v in weight_shapes(d / "model.safetensors").items()}
    if (m.get("transformers_layout") or {}).get("layout") == "padded":
        # the stored twin is zero-padded for plain transformers: every cut tensor is its
        # leading slice, so each manifest shape must fit inside the stored one
        stored = {k: (shapes[k] if k in shapes and len(v) == len(shapes[k]) and all(
            a >= b for a, b in zip(v, shapes[k])) else v) for k, v in stored.items()}
        # per-layer head ids of slotted heads (MPNet) live in the manifest, not in the twin
        buffers = (m.get("transformers_layout") or {}).get("buffers") or {}
        stored.update({k: [len(v)] for k, v in buffers.items() if isinstance(v, list)})
    if stored != {k: list(v) if isinstance(v, list) else v for k, v in shapes.items()}:
        diff = sorted(set(stored) ^ set(shapes)) or sorted(
            k for k in shapes if list(stored.get(k, ())) != shapes[k])
        raise ValidationFailed(f"{where}: shapes disagree with model.safetensors (first: {diff[:3]})")
    widths = m.get("widths") if isinstance(m.get("widths"), dict) else {}
    for name, g in groups.items():
        ok = isinstance(g, dict)
        kept, n = (g.get("kept"), g.get("num_units")) if ok else (None, None)
        ok = (ok and isinstance(kept, list) and isinstance(n, int)
              and all(isinstance(k, int) and not isinstance(k, bool) for k in kept)
              and kept == sorted(set(kept)) and all(0 <= k < n for k in kept)
              and g.get("final_units") == len(kept)
              and g.get("final_width") == len(kept) * g.get("unit_width", 0)
              and widths.get(name, g.get("final_width")) == g.get("final_width"))
        if not ok:
            raise ValidationFailed(f"{where}: group {name!r} is inconsistent (kept indices vs "
                                   "final_units / widths / num_units)")


def tool_written(directory: str | Path) -> str | None:
    """None when `directory` holds exactly a result bmr-compress wrote (its report's sealed
    files, unchanged, plus the report and its plots); else the first reason it does not."""
    import json

    d = Path(directory)
    try:
        report = json.loads((d / "report.json").read_text())
        check_integrity(d, report)
    except FileNotFoundError:
        return "no report.json"
    except (OSError, ValueError) as e:
        return f"unreadable report.json: {type(e).__name__}"
    except ValidationFailed as e:
        return str(e).split(": ", 1)[-1]
    for p in sorted(d.rglob("*")):  # what check_integrity does not look at
        rel = p.relative_to(d)
        if str(rel) == MARKER:
            continue
        if (p.is_symlink() or any(part.startswith(".") for part in rel.parts) or str(rel) == "README.md"
                or (rel.parts[0] in UNSEALED_DIRS and p.is_file() and p.suffix != ".png")
                or (rel.parts[0] in LOCAL_DIRS and p.is_file() and p.suffix != ".json")):
            return f"{rel} is not part of a result"
    return None
