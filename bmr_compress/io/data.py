"""Calibration / evaluation data -> batches (dicts of the model's keyword inputs), train + held-out.

``--data`` specs: ``digits``, ``docstrings``, ``docs``, ``hf:NAME[:CONFIG][:SPLIT]``, or a path (``.npz``,
``.pt``, ``.txt``, ``.jsonl``, an image folder). Text is tokenised with the checkpoint's own
tokenizer; images go through its image processor (or are decoded to [0, 1] at the model's
size when it has none). Labels, when known, ride along as ``labels``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bmr_compress.errors import InputError
from bmr_compress.io.recipes import DataSpec

if TYPE_CHECKING:
    import torch

    from bmr_compress.io.sources import LoadedSource

log = logging.getLogger(__name__)

Batch = dict[str, "torch.Tensor"]
HELDOUT_FRACTION = 0.2
MIN_HELDOUT = 3  # the fewest held-out examples every task metric is defined on (nn_agreement: 3)


@dataclass
class DataBundle:
    train_batches: list[Batch]
    heldout_batches: list[Batch]
    task: str
    description: str = ""
    name: str = ""  # the data set itself, e.g. "stdlib docstrings" (no counts)
    choice: str | None = None  # the one-line note when the data was picked by modality
    heldout: str = ""  # which examples the held-out metric is computed on, in words


def default_data_for(source: LoadedSource) -> tuple[DataSpec, str]:
    """The calibration data a checkpoint gets when neither ``--data`` nor a recipe names any,
    chosen by the model's input modality, with a one-line note of the choice.

    token inputs -> the stdlib docstring corpus (tokenised with the checkpoint's tokenizer);
    image inputs -> the sklearn digits images, resized / converted to what the model takes.
    """
    main = _main_input(source)
    if main == "input_ids":
        tok = source.tokenizer_or_processor
        if tok is None or not callable(tok):
            raise InputError(f"{source.source_id} takes text but has no tokenizer files; pass --data "
                             "with pre-tokenised inputs (.npz/.pt holding input_ids)")
        return DataSpec(kind="docstrings"), (
            "text model: calibrating on the stdlib docstring corpus (English text); pass --data to choose")
    if main == "pixel_values":
        return DataSpec(kind="digits"), (
            "image model: calibrating on the sklearn digits images, resized/converted to the model's "
            "input; pass --data IMAGE_FOLDER for images of your domain")
    return DataSpec(), f"input {main!r}: calibrating on sklearn digits; pass --data to choose"


def _modality_hint(source: LoadedSource) -> str:
    """How to fix data that does not fit, by what the model takes."""
    main = _main_input(source)
    if main == "input_ids":
        return "it is a text model: use --data docstrings, a .txt/.jsonl file or hf:NAME"
    if main == "pixel_values":
        return "it is an image model: use --data digits, an image folder or hf:NAME"
    return f"it takes {main!r}: use --data with a .npz/.pt file holding {main!r}"


def parse_data_spec(spec: str | DataSpec | None, default: DataSpec | None = None) -> DataSpec:
    """A DataSpec from a ``--data`` string (or the recipe's default when ``spec`` is None)."""
    if isinstance(spec, DataSpec):
        return spec
    base = default or DataSpec()
    if spec is None:
        return base
    if spec in ("digits", "docstrings", "docs"):
        return dataclasses.replace(base, kind=spec, path=None)
    if spec.startswith("hf:"):
        parts = spec[3:].split(":")
        if not parts[0] or len(parts) > 3:
            raise InputError(f"bad hf data spec {spec!r} (expected hf:NAME[:CONFIG][:SPLIT])")
        name, config, split = (parts + [None, None])[:3]
        return dataclasses.replace(base, kind="hf", name=name, config=config or None, split=split or "train")
    return dataclasses.replace(base, kind="file", path=spec)


def _split_indices(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded permutation: first 20 % (at least 1 when n >= 2) held out."""
    perm = np.random.default_rng(seed).permutation(n)
    k = max(1, int(round(n * HELDOUT_FRACTION))) if n >= 2 else 0
    return np.sort(perm[k:]), np.sort(perm[:k])


def _batches(arrays: dict[str, np.ndarray], batch_size: int, seed: int = 0) -> list[Batch]:
    """Fixed batches. Token sequences are bucketed by length (similar lengths share a batch,
    batch order then shuffled with `seed`) and each batch is cut to its longest sequence, so
    short texts do not pay for the corpus's longest one (4x fewer tokens on docstrings)."""
    import torch

    n = len(next(iter(arrays.values())))
    mask = arrays.get("attention_mask")
    order = np.arange(n)
    if mask is not None and mask.ndim == 2:
        order = np.argsort(mask.sum(axis=1), kind="stable")
    starts = list(range(0, n, batch_size))
    if mask is not None and len(starts) > 1:
        starts = [starts[i] for i in np.random.default_rng(seed).permutation(len(starts))]
    out = []
    for s in starts:
        idx = order[s : s + batch_size]
        width = int(mask[idx].sum(axis=1).max()) if mask is not None and mask.ndim == 2 else None
        batch = {}
        for k, v in arrays.items():
            part = v[idx]
            if width is not None and part.ndim == 2 and part.shape[1] == mask.shape[1] and k != "labels":
                part = part[:, :max(width, 1)]
            batch[k] = torch.from_numpy(np.ascontiguousarray(part))
        out.append(batch)
    return out


def _main_input(source: LoadedSource) -> str:
    import inspect

    params = [p for p in inspect.signature(source.model.forward).parameters if p != "self"]
    for name in ("pixel_values", "input_ids", "inputs", "input_values"):
        if name in params:
            return name
    return params[0] if params else "inputs"


def _tokenise(texts: list[str], source: LoadedSource, seq_len: int) -> dict[str, np.ndarray]:
    tok = source.tokenizer_or_processor
    if tok is None or not callable(tok) or not hasattr(tok, "tokenize"):
        raise InputError(f"{source.source_id} has no tokenizer: text data cannot be used with it; "
                         f"{_modality_hint(source)}")
    enc = tok(list(texts), padding=True, truncation=True, max_length=_max_tokens(source, seq_len),
              return_tensors="np")
    return {k: np.asarray(v).astype(np.int64) for k, v in enc.items()}


def _max_tokens(source: LoadedSource, seq_len: int) -> int:
    """``seq_len`` capped by the model's position table and the tokenizer's own limit."""
    caps = [seq_len, getattr(source.tokenizer_or_processor, "model_max_length", None),
            getattr(source.config, "max_position_embeddings", None)]
    return min(int(c) for c in caps if isinstance(c, int) and c > 0)


def _text_arrays(texts: list[str], source: LoadedSource, spec: DataSpec) -> dict[str, np.ndarray]:
    arrays = _tokenise(texts, source, spec.seq_len)
    keep = set(_forward_params(source))
    return {k: v for k, v in arrays.items() if k in keep or not keep}


def _forward_params(source: LoadedSource) -> list[str]:
    import inspect

    return [p for p in inspect.signature(source.model.forward).parameters if p != "self"]


def _image_arrays(images: list[Any], source: LoadedSource) -> dict[str, np.ndarray]:
    """``images``: PIL images or paths."""
    proc = source.tokenizer_or_processor
    if proc is not None and callable(proc):
        from PIL import Image

        pil = [Image.open(x).convert("RGB") if isinstance(x, Path) else x.convert("RGB") for x in images]
        return {"pixel_values": np.asarray(proc(images=pil, return_tensors="np")["pixel_values"], dtype=np.float32)}
    from bmr_compress.io.userdata import images_to_array

    cfg = source.config
    get = cfg.get if isinstance(cfg, dict) else lambda k, d=None: getattr(cfg, k, d)
    channels = int(get("in_channels", get("num_channels", 3)))
    paths = [x for x in images if isinstance(x, Path)]
    if len(paths) != len(images):
        raise InputError("in-memory images need the model's image processor")
    return {_main_input(source): images_to_array(paths, channels=channels, size=get("image_size"))}


def _image_geometry(source: LoadedSource) -> tuple[int | None, int | None]:
    """(channels, size) the model's config states for its images (None: not stated)."""
    cfg = source.config
    get = cfg.get if isinstance(cfg, dict) else lambda k, d=None: getattr(cfg, k, d)
    ch, size = get("num_channels", get("in_channels")), get("image_size")
    if isinstance(size, (list, tuple)):
        size = size[0]
    return (int(ch) if isinstance(ch, int) else None), (int(size) if isinstance(size, int) else None)


def _fit_images(x: np.ndarray, source: LoadedSource) -> np.ndarray:
    """Digits (N, 1, 8, 8) in [0, 1] as the model's images: through its image processor when it
    has one, else resized (bilinear) and channel-repeated to the config's geometry. Returns
    ``x`` itself when the model takes 8x8 single-channel images."""
    proc = source.tokenizer_or_processor
    channels, size = _image_geometry(source)
    if proc is not None and callable(proc) and not hasattr(proc, "tokenize"):
        from PIL import Image

        pil = [Image.fromarray((img[0] * 255).astype(np.uint8), mode="L").convert("RGB") for img in x]
        return np.asarray(proc(images=pil, return_tensors="np")["pixel_values"], dtype=np.float32)
    if (channels in (None, 1)) and (size in (None, 8)):
        return x
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x))
    if size not in (None, 8):
        t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    if channels not in (None, 1):
        t = t.expand(-1, channels, -1, -1)
    return np.ascontiguousarray(t.numpy(), dtype=np.float32)


def _shrink(tr: np.ndarray, ho: np.ndarray, max_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Both splits cut proportionally to at most ``max_samples`` examples in all."""
    total = len(tr) + len(ho)
    if max_samples >= total:
        return tr, ho
    n_ho = min(len(ho), max(1, round(len(ho) * max_samples / total)))
    return tr[: max(1, max_samples - n_ho)], ho[:n_ho]


def _examples(spec: DataSpec, source: LoadedSource) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, str]:
    """(arrays, train idx, held-out idx, description)."""
    from bmr_compress.io import userdata

    if spec.kind == "digits":
        from bmr_compress.io.digits import digits_split

        x_tr, y_tr, x_ho, y_ho = digits_split()
        tr, ho = _shrink(np.arange(len(x_tr)), np.arange(len(x_ho)), spec.max_samples)
        x, y = np.concatenate([x_tr[tr], x_ho[ho]]), np.concatenate([y_tr[tr], y_ho[ho]])
        main = _main_input(source)
        arrays = {main: x, "labels": y}
        desc = "sklearn digits (seeded split)"
        if main == "pixel_values":
            fitted = _fit_images(x, source)
            if fitted is not x:  # not a digits model: its classes are not the digits
                arrays = {main: fitted}
                desc = f"sklearn digits (seeded split) as {tuple(fitted.shape[1:])} images, unlabelled"
        return arrays, np.arange(len(tr)), np.arange(len(tr), len(tr) + len(ho)), desc
    if spec.kind == "docstrings":
        from bmr_compress.io.corpus import docstring_corpus

        train, held = docstring_corpus(max(spec.max_samples, 64))
        texts = list(train) + list(held)
        arrays = _text_arrays(texts, source, spec)
        return arrays, np.arange(len(train)), np.arange(len(train), len(texts)), "stdlib docstrings"
    if spec.kind == "docs":
        from bmr_compress.io.package_corpus import docs_corpus

        corpus = docs_corpus(max(spec.max_samples, 64))
        texts = list(corpus.train) + list(corpus.heldout)
        arrays = _text_arrays(texts, source, spec)
        desc = "installed documentation (" + ", ".join(name for name, _ in corpus.sources) + ")"
        log.info("docs corpus paragraphs by source: %s", corpus.describe())
        return arrays, np.arange(len(corpus.train)), np.arange(len(corpus.train), len(texts)), desc
    if spec.kind == "hf":
        assert spec.name is not None
        values, labels, kind = userdata.load_hf_dataset(spec.name, spec.config, spec.split, spec.column)
        values = values[: spec.max_samples]
        arrays = _text_arrays(values, source, spec) if kind == "text" else _image_arrays(values, source)
        if labels is not None:
            arrays["labels"] = np.asarray(labels[: len(values)], dtype=np.int64)
        return (arrays, *_split_indices(len(values), spec.seed), f"hf:{spec.name}")
    if spec.path is None:
        raise InputError("this recipe needs data: pass --data PATH (a .npz/.pt/.txt/.jsonl file or an image folder)")
    path = Path(spec.path).expanduser()
    if path.is_dir():
        files, labels, _ = userdata.load_image_folder(path)
        arrays = _image_arrays(list(files), source)
        if labels is not None:
            arrays["labels"] = np.asarray(labels, dtype=np.int64)
    elif not path.is_file():
        raise InputError(f"data path not found: {path}")
    elif path.suffix in (".npz", ".pt"):
        arrays = userdata.load_tensor_file(path)
        for alias in ("x", "inputs", "arr_0"):  # a single unnamed input -> the model's main input
            if alias in arrays and alias not in _forward_params(source):
                arrays[_main_input(source)] = arrays.pop(alias)
        for alias in ("y", "arr_1"):
            if alias in arrays:
                arrays["labels"] = arrays.pop(alias)
    elif path.suffix in (".txt", ".jsonl"):
        texts, labels = userdata.load_texts(path, spec.column)
        arrays = _text_arrays(texts, source, spec)
        if labels is not None:
            arrays["labels"] = np.asarray(labels, dtype=np.int64)
    else:
        raise InputError(f"unsupported data file {path} (expected .npz, .pt, .txt, .jsonl or a folder)")
    n = len(next(iter(arrays.values())))
    if n < 2:
        raise InputError(f"{path}: need at least 2 examples, found {n}")
    return (arrays, *_split_indices(n, spec.seed), str(path))


def make_dataset(spec: str | DataSpec | None, source: LoadedSource, *, default: DataSpec | None = None,
                 max_samples: int | None = None, batch_size: int | None = None) -> DataBundle:
    """Batches for ``source`` from ``spec`` (or ``default``, e.g. the recipe's [data])."""
    note = None
    if spec is None and default is None:
        ds, note = default_data_for(source)
        log.warning("no --data: %s", note)
    else:
        ds = parse_data_spec(spec, default)
    if max_samples is not None:
        ds = dataclasses.replace(ds, max_samples=max_samples)
    if batch_size is not None:
        ds = dataclasses.replace(ds, batch_size=batch_size)
    arrays, tr, ho, desc = _examples(ds, source)
    tr, ho = _shrink(tr, ho, ds.max_samples)
    train = _batches({k: v[tr] for k, v in arrays.items()}, ds.batch_size, ds.seed)
    held = _batches({k: v[ho] for k, v in arrays.items()}, ds.batch_size, ds.seed)
    check_fits(held[0], source, desc)
    if len(ho) < MIN_HELDOUT:  # before anything is fitted or written
        raise InputError(f"{desc}: {len(ho)} held-out example(s) of {len(tr) + len(ho)} cannot judge the compressed "
                         f"model (need at least {MIN_HELDOUT}: give at least "
                         f"{math.ceil(MIN_HELDOUT / HELDOUT_FRACTION)} examples or a larger --max-samples)")
    log.info("data %s: %d train / %d held-out examples", desc, len(tr), len(ho))
    return DataBundle(train, held, source.task, f"{desc}: {len(tr)} train / {len(ho)} held-out",
                      name=desc, choice=note, heldout=heldout_note(ds, desc, len(ho)))


def heldout_note(spec: DataSpec, desc: str, n: int) -> str:
    """Which examples form the held-out set, in words (for the report and the card)."""
    import sys

    if spec.kind == "docstrings":
        return (f"{n} paragraphs of the Python {sys.version_info.major}.{sys.version_info.minor} "
                "standard-library docstrings, held out by a stable SHA-256 hash of their text "
                "(10 % bucket; never seen in the fine-tune)")
    if spec.kind == "docs":
        return (f"{n} paragraphs of the installed documentation ({desc.partition('(')[2].rstrip(')')}), "
                "held out by a stable SHA-256 hash of their text (10 % bucket; never seen in the fine-tune)")
    if spec.kind == "digits":
        return f"{n} images of the stratified 20 % held-out split (seed 0) of sklearn digits"
    return f"{n} examples, a seeded 20 % split (seed {spec.seed}) of {desc}"


def check_fits(batch: Batch, source: LoadedSource, desc: str) -> None:
    """One forward pass on two examples: data of the wrong kind or shape for the model is an
    InputError naming the data, not a shape error deep inside the fine-tune."""
    import inspect

    import torch

    inputs = {k: v[:2] for k, v in batch.items() if k != "labels"}
    sig = inspect.signature(source.model.forward).parameters
    params = {n for n, p in sig.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
    open_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.values())
    unknown = [] if open_kw else sorted(k for k in inputs if k not in params)
    if unknown:
        raise InputError(f"{desc}: input {unknown[0]!r} is not an input of {source.source_id} "
                         f"(it takes {', '.join(sorted(params))}); {_modality_hint(source)}")
    try:
        with torch.no_grad():
            source.model(**inputs)
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        shapes = ", ".join(f"{k} {tuple(v.shape)} {str(v.dtype).replace('torch.', '')}"
                           for k, v in inputs.items())
        raise InputError(f"{desc}: data does not fit {source.source_id} ({shapes}): {first}; "
                         f"{_modality_hint(source)}") from None
