"""Hub-style snapshot folders built in the test session (no downloads).

* `bert_snapshot`: a bare tiny BERT (config + safetensors + WordPiece tokenizer), like a
  plain transformers checkpoint;
* `st_snapshot`: the same BERT laid out as a sentence-transformers folder (modules.json,
  sentence_bert_config.json, 1_Pooling/, 2_Normalize, config_sentence_transformers.json,
  README.md with a licence), like sentence-transformers/all-MiniLM-L6-v2;
* `vit_snapshot`: a bare tiny ViT image classifier with an image processor.

The tokenizer splits words into letters (``a`` + ``##b`` ...), so English text becomes
real, varied token sequences.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

HIDDEN, HEADS, INTER, LAYERS, MAX_POS = 36, 3, 37, 2, 64
ST_MAX_SEQ = 48
CARD = """---
license: apache-2.0
language: en
tags:
- sentence-transformers
pipeline_tag: sentence-similarity
---

# tiny test encoder
"""


def _vocab() -> list[str]:
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += list(string.ascii_lowercase) + [f"##{c}" for c in string.ascii_lowercase]
    words += list(string.digits) + list(".,;:!?()'\"-_/*=<>[]{}")
    return words


def _save_text_snapshot(d: Path, model, dead_units: bool) -> Path:
    """Save `model` and a WordPiece tokenizer over the tiny vocabulary into ``d``;
    `dead_units` first makes every second FFN neuron and head near-silent."""
    import torch
    from transformers import BertTokenizerFast

    vocab = _vocab()
    if dead_units:
        from tests.export._surgery import with_dead_units_

        ids = torch.randint(5, len(vocab), (2, 9), generator=torch.Generator().manual_seed(0))
        with_dead_units_(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    model.save_pretrained(str(d))
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(d / "vocab.txt"), do_lower_case=True,
                      model_max_length=MAX_POS).save_pretrained(str(d))
    return d


def bert_snapshot(d: Path, *, dead_units: bool = False) -> Path:
    """A bare tiny BERT snapshot in ``d``; `dead_units` makes every second FFN neuron and
    head near-silent (as in a trained model with redundant units) so BMR finds them."""
    import torch
    from transformers import BertConfig, BertModel

    d.mkdir(parents=True, exist_ok=True)
    vocab = _vocab()
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                     num_attention_heads=HEADS, intermediate_size=INTER,
                     max_position_embeddings=MAX_POS, type_vocab_size=2,
                     architectures=["BertModel"])
    torch.manual_seed(0)
    model = BertModel(cfg, add_pooling_layer=False).eval()
    return _save_text_snapshot(d, model, dead_units)


def st_snapshot(d: Path, *, dead_units: bool = False, normalize: bool = True) -> Path:
    """`bert_snapshot` as a sentence-transformers folder (mean pooling [+ Normalize])."""
    bert_snapshot(d, dead_units=dead_units)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
    (d / "modules.json").write_text(json.dumps(modules, indent=2))
    (d / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": ST_MAX_SEQ,
                                                             "do_lower_case": False}))
    (d / "config_sentence_transformers.json").write_text(json.dumps(
        {"__version__": {"sentence_transformers": "2.0.0", "transformers": "4.6.1",
                         "pytorch": "1.8.1"}}))
    (d / "1_Pooling").mkdir(exist_ok=True)
    (d / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": HIDDEN, "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False}))
    (d / "README.md").write_text(CARD)
    return d


def vit_snapshot(d: Path) -> Path:
    """A bare tiny ViT classifier (16x16 RGB, 5 classes) with its image processor."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    d.mkdir(parents=True, exist_ok=True)
    cfg = ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=HIDDEN,
                    num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=INTER,
                    num_labels=5)
    torch.manual_seed(0)
    ViTForImageClassification(cfg).eval().save_pretrained(str(d))
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(str(d))
    return d


SENTENCES = [
    "Return the number of items in a container.",
    "Open the file and return a stream; raise OSError on failure.",
    "The quick brown fox jumps over the lazy dog.",
    "A short one.",
    "Compute the greatest common divisor of two integers, using Euclid's algorithm with "
    "repeated remainders until the remainder is zero.",
]


def causal_lm_snapshot(d: Path, kind: str = "llama") -> Path:
    """A bare tiny causal-LM snapshot ("llama": grouped-query attention, 6 query / 2 KV heads;
    "gpt2": fused Conv1D q/k/v) with every second FFN neuron and head near-silent, and a
    WordPiece tokenizer over the tiny vocabulary."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    d.mkdir(parents=True, exist_ok=True)
    vocab = _vocab()
    torch.manual_seed(0)
    if kind == "gpt2":
        cfg = GPT2Config(vocab_size=len(vocab), n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS,
                         n_inner=INTER, n_positions=MAX_POS, bos_token_id=2, eos_token_id=3,
                         architectures=["GPT2LMHeadModel"])
        model = GPT2LMHeadModel(cfg).eval()
    else:
        cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=48, num_hidden_layers=LAYERS,
                          num_attention_heads=6, num_key_value_heads=2, intermediate_size=INTER,
                          max_position_embeddings=MAX_POS, bos_token_id=2, eos_token_id=3,
                          architectures=["LlamaForCausalLM"])
        model = LlamaForCausalLM(cfg).eval()
    return _save_text_snapshot(d, model, dead_units=True)


def family_snapshot(d: Path, model) -> Path:
    """Any tiny transformers model (tests.tiny_models.FAMILY_MODELS) as a bare hub snapshot,
    every second FFN neuron and head near-silent: the WordPiece tokenizer for text models,
    an image processor for ViT."""
    d.mkdir(parents=True, exist_ok=True)
    model.config.architectures = [type(model).__name__]
    if getattr(model.config, "model_type", "") == "vit":
        import torch
        from transformers import ViTImageProcessor

        from tests.export._surgery import with_dead_units_

        x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        with_dead_units_(model, {"pixel_values": x})
        model.save_pretrained(str(d))
        ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(str(d))
        return d
    return _save_text_snapshot(d, model, dead_units=True)
