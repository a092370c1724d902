"""Loading from hub repos, local hub snapshots and weight files: the built-in half of
io.sources (transformers models, their tokenizers/processors, safetensors and pickled state
dicts). Every failure is an InputError naming the directory or file.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from bmr_compress.errors import InputError
from bmr_compress.io.checks import check_dtypes, check_weight_files, read_safetensors_header

log = logging.getLogger(__name__)

STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin")
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*", "*.tiktoken"]
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
_CLS_SUFFIXES = ("ForSequenceClassification", "ForImageClassification")


def hub_snapshot(repo_id: str, revision: str | None, *, trust_remote_code: bool = False,
                 config_only: bool = False) -> Path:
    """snapshot_download into the standard cache (offline when HF_HUB_OFFLINE is set)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    patterns = ["config.json"] if config_only else list(_HUB_PATTERNS)
    if trust_remote_code and not config_only:
        patterns.append("*.py")
    try:
        path = snapshot_download(
            repo_id, revision=revision, allow_patterns=patterns, local_files_only=offline,
            cache_dir=os.environ.get("HF_HUB_CACHE") or None,
        )
    except LocalEntryNotFoundError:
        where = "offline cache (HF_HUB_OFFLINE is set)" if offline else "hub or the local cache"
        raise InputError(f"{repo_id}@{revision or 'main'} is not available from the {where}") from None
    except (HfHubHTTPError, OSError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"cannot download {repo_id}@{revision or 'main'}: {first}") from None
    return Path(path)



# ----------------------------------------------------------------------------- transformers


def task_from_config(config: Any) -> str:
    for arch in getattr(config, "architectures", None) or []:
        if arch.endswith(_CAUSAL_SUFFIXES):
            return "causal_lm"
        if arch.endswith(_CLS_SUFFIXES):
            return "classification"
    return "embedding"


def _is_vision(config: Any) -> bool:
    return hasattr(config, "image_size") and hasattr(config, "num_channels")


def _auto_class(task: str, config: Any) -> Any:
    import transformers as tf

    if task == "causal_lm":
        return tf.AutoModelForCausalLM
    if task in ("classification", "regression"):
        return tf.AutoModelForImageClassification if _is_vision(config) else tf.AutoModelForSequenceClassification
    return tf.AutoModel


def preprocessor(directory: Path, trust_remote_code: bool) -> Any:
    """The snapshot's tokenizer / image processor; an unreadable one is an InputError."""
    try:
        return _load_preprocessor(directory, trust_remote_code)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - tokenizers/transformers raise anything on garbage
        names = [n for n in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json",
                             "tokenizer.model", "preprocessor_config.json") if (directory / n).is_file()]
        raise InputError(f"{directory}: cannot read its tokenizer/preprocessor files ({', '.join(names)}): "
                         f"{type(e).__name__}: {first_line(e)[:200]}") from None


def _load_preprocessor(directory: Path, trust_remote_code: bool) -> Any:
    import transformers as tf

    if (directory / "preprocessor_config.json").is_file():
        return tf.AutoImageProcessor.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
    if any((directory / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                                                 "tokenizer.model", "vocab.json")):
        tok = tf.AutoTokenizer.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
        if tok.pad_token is None and tok.eos_token is not None:
            tok.pad_token = tok.eos_token  # GPT-2 / LLaMA style: pad with EOS for batching
        return tok
    return None


def first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def pickle_refusal(path: Path | str, e: BaseException) -> InputError:
    """The one line for a pickle that torch.load(weights_only=True) refused: what it holds,
    never torch's advice to retry with weights_only=False."""
    import re

    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
    what = f" (it references {found.group(1)})" if found else ""
    return InputError(f"refusing to unpickle {path}: it holds more than tensors{what}, and only "
                      "plain tensors are read (torch.load weights_only=True); convert a trusted copy "
                      "with python -m bmr_compress.converters.pt_to_safetensors")


def check_snapshot_weights(directory: Path, allow_pickle: bool) -> bool:
    """Whether the snapshot's weights are safetensors; InputError when they are only a
    pickle (pytorch_model.bin, ...) and ``allow_pickle`` is off: unpickling can run code."""
    if any(directory.glob("*.safetensors")):
        return True
    pickles = sorted(p.name for p in directory.iterdir()
                     if p.suffix in STATE_DICT_SUFFIXES or p.name.endswith(".bin.index.json"))
    if pickles and not allow_pickle:
        raise InputError(
            f"{directory / pickles[0]} is a pickle checkpoint (the snapshot has no .safetensors), "
            "refused by default (unpickling can run code); pass --allow-pickle to read it with "
            "torch.load(weights_only=True), or convert it: python -m bmr_compress.converters.pt_to_safetensors")
    return False


def _load_pretrained(auto: Any, directory: Path, **kw: Any) -> tuple[Any, dict[str, Any]]:
    """auto.from_pretrained with its failures as InputErrors naming the directory."""
    try:
        model, info = auto.from_pretrained(str(directory), output_loading_info=True,
                                           ignore_mismatched_sizes=True, **kw)
    except Exception as e:  # noqa: BLE001 - third-party model code run on the user's config/files
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise pickle_refusal(directory, e) from None
        raise InputError(f"{directory}: cannot load the model: {type(e).__name__}: {first_line(e)}") from None
    mismatched = list(info.get("mismatched_keys", []))
    if mismatched:
        first = mismatched[0]
        detail = (f"{first[0]}: file {tuple(first[1])} vs config {tuple(first[2])}"
                  if isinstance(first, (tuple, list)) and len(first) == 3 else str(first))
        raise InputError(f"{directory}: {len(mismatched)} tensor(s) disagree with config.json in "
                         f"shape, e.g. {detail}")
    return model, info


def _from_pretrained(auto: Any, directory: Path, config: Any, trust_remote_code: bool,
                     allow_pickle: bool = False) -> Any:
    """from_pretrained in float32; a pooler absent from the checkpoint is left out, not random.
    A snapshot whose weights are only a pickle needs ``allow_pickle``; one with safetensors
    never falls back to its pickle."""
    import torch

    safetensors_only = check_snapshot_weights(directory, allow_pickle)
    header = check_weight_files(directory)
    kw = {"config": config, "dtype": torch.float32, "trust_remote_code": trust_remote_code}
    if safetensors_only:
        kw["use_safetensors"] = True
    try:
        model, info = _load_pretrained(auto, directory, **kw)
    except InputError:
        # transformers 4 refuses integer tensors for float parameters while loading: name them
        _check_dtypes_on_meta(auto, config, header, directory, trust_remote_code)
        raise
    missing = list(info.get("missing_keys", []))
    if missing and all(k.split(".")[0] == "pooler" for k in missing) and hasattr(model, "pooler"):
        model, _ = _load_pretrained(auto, directory, add_pooling_layer=False, **kw)
        missing = []
    check_dtypes(model, header, str(directory))
    if missing:
        log.warning("%s: %d tensors missing from the checkpoint were initialised at random: %s",
                    directory, len(missing), ", ".join(missing[:5]))
    return model


def _check_dtypes_on_meta(auto: Any, config: Any, header: dict[str, Any], directory: Path,
                          trust_remote_code: bool) -> None:
    """check_dtypes against the config's model built on the meta device (no weights)."""
    import torch

    try:
        with torch.device("meta"):
            skeleton = auto.from_config(config, trust_remote_code=trust_remote_code)
    except Exception:  # noqa: BLE001 - only a clearer message is at stake; the load error stands
        return
    check_dtypes(skeleton, header, str(directory))


def check_remote_code(directory: Path, trust_remote_code: bool) -> None:
    """InputError when config.json maps to the checkpoint's own Python code (``auto_map``)
    and the user did not pass --trust-remote-code (transformers would otherwise quietly use
    its built-in class for a known model_type, and the output would keep a dangling map)."""
    import json

    try:
        cfg = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # AutoConfig names the problem
    if isinstance(cfg, dict) and cfg.get("auto_map") and not trust_remote_code:
        raise InputError(f"{directory}: this checkpoint needs its own Python code (config.json "
                         "auto_map); pass --trust-remote-code if you trust it")


def drop_builtin_auto_map_(model: Any, config: Any) -> None:
    """With --trust-remote-code, a model that transformers built from its own classes does not
    need the checkpoint's code: drop ``auto_map`` so the output names no code it lacks."""
    if getattr(config, "auto_map", None) and type(model).__module__.startswith("transformers."):
        log.info("config.json auto_map dropped: %s is transformers' own class", type(model).__name__)
        for c in {id(config): config, id(model.config): model.config}.values():
            with contextlib.suppress(AttributeError):
                delattr(c, "auto_map")


def load_transformers(directory: Path, task: str | None, trust_remote_code: bool,
                      weights: dict[str, Any] | None = None, *, allow_pickle: bool = False
                      ) -> tuple[Any, Any, str]:
    import torch
    import transformers as tf

    check_remote_code(directory, trust_remote_code)
    try:
        config = tf.AutoConfig.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
    except (ValueError, OSError, KeyError, TypeError, AttributeError) as e:
        # unknown model_type, remote code needed, invalid JSON, wrong JSON structure
        msg = first_line(e)
        if not trust_remote_code and ("custom code" in msg or "trust_remote_code" in msg):
            raise InputError(f"{directory}: this checkpoint needs its own Python code (config.json "
                             "auto_map); pass --trust-remote-code if you trust it") from None
        if "valid JSON" in msg:
            msg = "not valid JSON (truncated or corrupted?)"
        raise InputError(f"{directory}: cannot read config.json: {msg}") from None
    from bmr_compress.io.checks import check_model_size

    check_model_size(config, str(directory / "config.json"))  # before anything is built
    task = task or task_from_config(config)
    auto = _auto_class(task, config)
    if task == "regression" and getattr(config, "num_labels", 2) != 1:
        config.num_labels = 1
    if weights is None:
        model = _from_pretrained(auto, directory, config, trust_remote_code, allow_pickle)
    else:  # stage the file as a snapshot so transformers applies its own key mapping
        import tempfile

        from safetensors.torch import save_file

        with tempfile.TemporaryDirectory(prefix="bmr-weights-") as tmp:
            config.save_pretrained(tmp)
            save_file({k: v.detach().contiguous().clone() for k, v in weights.items()},
                      str(Path(tmp) / "model.safetensors"), metadata={"format": "pt"})
            model = _from_pretrained(auto, Path(tmp), config, trust_remote_code)
    drop_builtin_auto_map_(model, config)
    return model.eval(), config, task


# ----------------------------------------------------------------------------- weight files


def load_weight_file(path: Path, *, allow_pickle: bool = False) -> dict[str, Any]:
    """tensors from .safetensors, or (only with ``allow_pickle``) a pickled state dict read
    with torch.load(weights_only=True)."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        read_safetensors_header(path)  # truncation/corruption as an InputError naming the file
        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own SafetensorError
            raise InputError(f"cannot read safetensors file {path}: {first_line(e)}") from None
    if path.suffix in STATE_DICT_SUFFIXES:
        if not allow_pickle:
            raise InputError(
                f"{path} is a pickle checkpoint, refused by default (unpickling can run code); "
                "pass --allow-pickle to read it with torch.load(weights_only=True), or convert it: "
                "python -m bmr_compress.converters.pt_to_safetensors")
        if not path.is_file():
            raise InputError(f"weight file not found: {path}")
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # pickle.UnpicklingError for anything but plain tensors/containers
            raise pickle_refusal(path, e) from None
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise InputError(f"{path} is not a state dict (a mapping of names to tensors)")
        return dict(obj)
    raise InputError(f"unsupported weight file {path} (expected .safetensors, .pt, .pth or .bin)")


def st_dtype(t: Any) -> str:
    return "F32" if t.is_floating_point() else "I64"  # only the float/non-float kind matters
