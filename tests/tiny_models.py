"""Tiny models built in-process with odd sizes, shared by all tests.

Transformers models: hidden 36, 3 heads (head_dim 12), intermediate 37, 2 layers, so that
a bug that confuses hidden, head and FFN axes cannot pass by accident. The LLaMA-style
model uses grouped-query attention (6 query heads, 2 KV heads, head_dim 8).
Every builder seeds torch so the weights are reproducible.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

HIDDEN, HEADS, INTER, LAYERS, VOCAB = 36, 3, 37, 2, 97


def _seeded(fn: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    model = fn()
    model.eval()
    return model


def tiny_bert() -> nn.Module:
    from transformers import BertConfig, BertModel

    cfg = BertConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, intermediate_size=INTER, max_position_embeddings=64,
        type_vocab_size=2,
    )
    return _seeded(lambda: BertModel(cfg, add_pooling_layer=False))


def tiny_roberta() -> nn.Module:
    from transformers import RobertaConfig, RobertaModel

    cfg = RobertaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, intermediate_size=INTER, max_position_embeddings=66,
        pad_token_id=1,
    )
    return _seeded(lambda: RobertaModel(cfg, add_pooling_layer=False))


def tiny_xlm_roberta() -> nn.Module:
    from transformers import XLMRobertaConfig, XLMRobertaModel

    cfg = XLMRobertaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, intermediate_size=INTER, max_position_embeddings=66,
        pad_token_id=1,
    )
    return _seeded(lambda: XLMRobertaModel(cfg, add_pooling_layer=False))


def tiny_distilbert() -> nn.Module:
    from transformers import DistilBertConfig, DistilBertModel

    cfg = DistilBertConfig(
        vocab_size=VOCAB, dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS, hidden_dim=INTER,
        max_position_embeddings=64,
    )
    return _seeded(lambda: DistilBertModel(cfg))


def tiny_mpnet() -> nn.Module:
    from transformers import MPNetConfig, MPNetModel

    cfg = MPNetConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, intermediate_size=INTER, max_position_embeddings=66,
        relative_attention_num_buckets=32,
    )
    model = _seeded(lambda: MPNetModel(cfg, add_pooling_layer=False))
    with torch.no_grad():  # a bias table that tells the heads apart (it starts near zero)
        model.encoder.relative_attention_bias.weight.normal_(0.0, 1.0)
    return model


def tiny_modernbert() -> nn.Module:
    from transformers import ModernBertConfig, ModernBertModel

    cfg = ModernBertConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=3, num_attention_heads=HEADS,
        intermediate_size=INTER, max_position_embeddings=64, pad_token_id=0, bos_token_id=2,
        eos_token_id=3, cls_token_id=2, sep_token_id=3, local_attention=8,
        attn_implementation="eager",
    )
    return _seeded(lambda: ModernBertModel(cfg))


def tiny_vit() -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(
        image_size=16, patch_size=4, num_channels=3, hidden_size=HIDDEN,
        num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=INTER,
        num_labels=5,
    )
    return _seeded(lambda: ViTForImageClassification(cfg))


def tiny_gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_inner=INTER,
        n_positions=64, bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1,
    )
    return _seeded(lambda: GPT2LMHeadModel(cfg))


def tiny_llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=VOCAB, hidden_size=48, num_hidden_layers=LAYERS, num_attention_heads=6,
        num_key_value_heads=2, head_dim=8, intermediate_size=37, max_position_embeddings=64,
    )
    return _seeded(lambda: LlamaForCausalLM(cfg))


def _tiny_llama_like(kind: str) -> nn.Module:
    import transformers

    cfg_cls, model_cls = {"qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
                          "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
                          }[kind]
    cfg = cfg_cls(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=LAYERS,
                  num_attention_heads=6, num_key_value_heads=3, intermediate_size=37,
                  max_position_embeddings=64)
    return _seeded(lambda: model_cls(cfg))


def tiny_qwen2() -> nn.Module:
    return _tiny_llama_like("qwen2")


def tiny_mistral() -> nn.Module:
    return _tiny_llama_like("mistral")


TRANSFORMER_BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "bert": tiny_bert,
    "roberta": tiny_roberta,
    "distilbert": tiny_distilbert,
    "mpnet": tiny_mpnet,
    "vit": tiny_vit,
    "gpt2": tiny_gpt2,
    "llama": tiny_llama,
}

# one tiny model per transformers model_type the family registry claims
# (tests/pipeline/test_family_table.py runs each through inspect -> compress -> reload)
FAMILY_MODELS: dict[str, Callable[[], nn.Module]] = {
    **TRANSFORMER_BUILDERS, "xlm-roberta": tiny_xlm_roberta, "qwen2": tiny_qwen2,
    "mistral": tiny_mistral, "modernbert": tiny_modernbert,
}


def text_inputs(batch: int = 2, seq: int = 7, vocab: int = VOCAB, seed: int = 1) -> dict[str, torch.Tensor]:
    """input_ids + attention_mask (last sequence padded by two positions)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    if seq > 2:
        mask[-1, -2:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def image_inputs(batch: int = 2, size: int = 16, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"pixel_values": torch.randn(batch, 3, size, size, generator=g)}


def inputs_for(name: str, batch: int = 2, seq: int = 7, seed: int = 1) -> dict[str, torch.Tensor]:
    if name == "vit":
        return image_inputs(batch, seed=seed)
    return text_inputs(batch, seq, seed=seed)


class TinyMLP(nn.Module):
    """8x8 digits MLP: 64 -> 37 -> 29 -> 10."""

    def __init__(self, d_in: int = 64, widths: tuple[int, ...] = (37, 29), n_out: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        for w in widths:
            layers += [nn.Linear(d_in, w), nn.ReLU()]
            d_in = w
        layers.append(nn.Linear(d_in, n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # (B, 64) or (B, 1, 8, 8)
        return self.net(pixel_values.flatten(1))


class ResConcatNet(nn.Module):
    """Conv net with a residual add, a channel concat, BatchNorm and a flatten->linear head.

    (B, 3, H, W) -> (B, n_out). Odd channel counts (7, 5) on purpose.
    """

    def __init__(self, n_out: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(3, 7, 3, padding=1)
        self.bn = nn.BatchNorm2d(7)
        self.res = nn.Conv2d(7, 7, 3, padding=1)
        self.branch_a = nn.Conv2d(7, 5, 1)
        self.branch_b = nn.Conv2d(7, 5, 3, padding=1)
        self.fuse = nn.Conv2d(10, 9, 1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(9 * 4, n_out)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.stem(pixel_values)))  # (B, 7, H, W)
        h = h + torch.relu(self.res(h))  # residual add couples stem and res outputs
        h = torch.cat([self.branch_a(h), self.branch_b(h)], dim=1)  # (B, 10, H, W)
        h = torch.relu(self.fuse(h))  # (B, 9, H, W)
        return self.head(self.pool(h).flatten(1))  # flatten couples fuse channels to head cols
