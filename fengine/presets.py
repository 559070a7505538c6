"""Named model presets shared by tests, examples and ``bench/``.

A preset is a plain ``nn.Module`` builder plus the MMEngine-style ``init_cfg`` that
initializes it. Builders construct on whatever ``torch.device(...)`` context is
active, so the same preset gives a real model on the CPU and a storage-free one
under ``torch.device('meta')``. torchvision is imported inside its builders only:
``import fengine.presets`` never imports it.

Example:
    >>> import torch
    >>> from fengine.presets import get_preset
    >>> preset = get_preset('debug')
    >>> with torch.device('meta'):
    ...     model = preset.build()
    >>> model(preset.example_input(2, device='meta')).shape
    torch.Size([2, 64, 128])
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._errors import choices_text, suggest

__all__ = ['GPTConfig', 'GPT', 'FashionMLP', 'Preset', 'PRESETS', 'get_preset']


# -- a small GPT-style decoder ---------------------------------------------------------
@dataclass(frozen=True)
class GPTConfig:
    """Sizes of a :class:`GPT` (the defaults are GPT-2 small's, vocabulary padded to 64)."""
    vocab_size: int = 50304
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where each position sees itself and the past only."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        if cfg.n_embd % cfg.n_head:
            raise ValueError(f'n_embd ({cfg.n_embd}) must be a multiple of n_head '
                             f'({cfg.n_head})')
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, time, width = x.shape
        # (B, T, 3C) -> three (B, heads, T, C / heads) tensors.
        q, k, v = (t.view(batch, time, self.n_head, width // self.n_head).transpose(1, 2)
                   for t in self.qkv(x).split(width, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(batch, time, width))


class MLP(nn.Module):
    """Two linear layers, 4x wider in between, with GELU."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """A decoder-only transformer in the shape of GPT-2; token ids in, logits out.

    The lm head shares its weight with the token embedding, as GPT-2 does, so the
    parameter counts match GPT-2's (124M small, 355M medium).
    """

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # weight tying (GPT-2)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(batch, time, vocab_size)`` for token ids ``(batch, time)``."""
        time = idx.shape[1]
        if time > self.cfg.block_size:
            raise ValueError(f'sequence length {time} exceeds block_size '
                             f'{self.cfg.block_size}')
        pos = torch.arange(time, device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


# -- the classifier of MMEngine's tutorial 'Model' ---------------------------------------
class FashionMLP(nn.Module):
    """The FashionMNIST ``NeuralNetwork`` of MMEngine's tutorial 'Model' without its loss.

    ``1x28x28`` images are flattened and go through two 512-wide ReLU layers to 10
    logits. The submodule names are the tutorial's, so its state dicts load here.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(28 * 28, 512),
            nn.ReLU(),
            nn.Linear(512, 512),
            nn.ReLU(),
            nn.Linear(512, num_classes),
        )

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(batch, num_classes)`` for images ``(batch, 1, 28, 28)``."""
        return self.linear_relu_stack(self.flatten(img))


# -- the preset table ------------------------------------------------------------------
@dataclass(frozen=True)
class Preset:
    """A named model: how to build it, how to initialize it, and an input it takes.

    Build one through :data:`PRESETS` or :func:`get_preset`; the fields starting
    with ``_`` are private.

    Attributes:
        name: The key in :data:`PRESETS`.
        description: One line saying what the model is.
    """
    name: str
    description: str
    _builder: Callable[[], nn.Module] = field(repr=False)
    _init_cfg: tuple[dict, ...] = field(repr=False)
    _example: Callable[[int, torch.device | str | None], torch.Tensor] = field(repr=False)
    _param_init_cfg: tuple[dict, ...] = field(default=(), repr=False)

    def build(self) -> nn.Module:
        """A new model, constructed on the active ``torch.device(...)`` context."""
        return self._builder()

    @property
    def init_cfg(self) -> list[dict]:
        """The MMEngine-style ``init_cfg`` for the model (a fresh copy, safe to edit)."""
        return copy.deepcopy(list(self._init_cfg))

    @property
    def param_init_cfg(self) -> list[dict]:
        """Entries that set bare parameters (a class token...) by naming them in ``override``.

        fengine only: MMEngine's initializers reach ``weight`` and ``bias`` alone. A model
        built on ``meta`` needs them, since nothing else gives those parameters a value.
        Names assume the model is held as ``net`` by the BaseModule carrying the config.
        """
        return copy.deepcopy(list(self._param_init_cfg))

    def example_input(self, batch_size: int = 2,
                      device: torch.device | str | None = None) -> torch.Tensor:
        """A random input batch the model's ``forward`` takes (token ids or images)."""
        return self._example(batch_size, device)


def _gpt(cfg: GPTConfig) -> Callable[[], nn.Module]:
    return lambda: GPT(cfg)


def _tokens(cfg: GPTConfig):
    return lambda batch, device: torch.randint(cfg.vocab_size, (batch, cfg.block_size),
                                               device=device)


def _images(batch: int, device) -> torch.Tensor:
    return torch.randn(batch, 3, 224, 224, device=device)


def _image_input(*shape: int):
    return lambda batch, device: torch.randn(batch, *shape, device=device)


def _torchvision(arch: str, **kwargs) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision  # lazily: importing fengine must not import torchvision
        return getattr(torchvision.models, arch)(**kwargs)
    return build


# GPT-2's recipe: N(0, 0.02) for every Linear and Embedding, LayerNorm as identity.
_GPT_INIT = (
    dict(type='Normal', layer=['Linear', 'Embedding'], std=0.02, bias=0),
    dict(type='Constant', layer='LayerNorm', val=1, bias=0),
)
# torchvision's ResNet recipe, with MMEngine's usual N(0, 0.01) classifier.
_RESNET_INIT = (
    dict(type='Kaiming', layer='Conv2d', mode='fan_out', nonlinearity='relu'),
    dict(type='Constant', layer='BatchNorm2d', val=1, bias=0),
    dict(type='Normal', layer='Linear', std=0.01, bias=0),
)
# The ViT/DeiT recipe: truncated N(0, 0.02) linears, He fan-in patch embedding.
_VIT_INIT = (
    dict(type='TruncNormal', layer='Linear', std=0.02, bias=0),
    dict(type='Constant', layer='LayerNorm', val=1, bias=0),
    dict(type='Kaiming', layer='Conv2d', mode='fan_in', nonlinearity='relu'),
)
# He fan-in for a ReLU MLP (the tutorial itself keeps PyTorch's default initialization).
_MLP_INIT = (
    dict(type='Kaiming', layer='Linear', mode='fan_in', nonlinearity='relu', bias=0),
)

# torchvision builds these two with torch.zeros and normal_(std=0.02) in __init__.
_VIT_PARAM_INIT = (
    dict(type='TruncNormal', std=0.02,
         override=[dict(name='net.class_token'), dict(name='net.encoder.pos_embedding')]),
)

_DEBUG = GPTConfig(vocab_size=128, block_size=64, n_layer=2, n_head=4, n_embd=32)
_GPT_SMALL = GPTConfig(n_layer=12, n_head=12, n_embd=768)
_GPT_MEDIUM = GPTConfig(n_layer=24, n_head=16, n_embd=1024)
_GPT_XL = GPTConfig(n_layer=24, n_head=16, n_embd=2048)  # GPT-3 XL's shape

PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset('debug', 'tiny GPT (2 layers, d=32, vocab 128, 64 tokens) for tests: ~0.03M params',
           _gpt(_DEBUG), _GPT_INIT, _tokens(_DEBUG)),
    Preset('resnet50', 'torchvision ResNet-50, 1000 classes, 224x224 images: 25.6M params',
           _torchvision('resnet50'), _RESNET_INIT, _images),
    Preset('vit_b_16', 'torchvision ViT-B/16, 1000 classes, 224x224 images: 86.6M params',
           _torchvision('vit_b_16'), _VIT_INIT, _images, _VIT_PARAM_INIT),
    Preset('gpt-125m', 'GPT-2 small shape (12 layers, d=768, 12 heads, 1024 tokens): 124M params',
           _gpt(_GPT_SMALL), _GPT_INIT, _tokens(_GPT_SMALL)),
    Preset('gpt-350m', 'GPT-2 medium shape (24 layers, d=1024, 16 heads, 1024 tokens): 355M '
           'params', _gpt(_GPT_MEDIUM), _GPT_INIT, _tokens(_GPT_MEDIUM)),
    Preset('gpt-1.3b', 'GPT-3 XL shape (24 layers, d=2048, 16 heads, 1024 tokens): 1.31B '
           'params', _gpt(_GPT_XL), _GPT_INIT, _tokens(_GPT_XL)),
    Preset('fashion-mlp', "the FashionMNIST MLP of MMEngine's tutorial 'Model' (784-512-512-10, "
           'ReLU), 1x28x28 images: 0.67M params', FashionMLP, _MLP_INIT, _image_input(1, 28, 28)),
    Preset('resnet18-64', 'torchvision ResNet-18, 10 classes, 3x64x64 images: 11.2M params',
           _torchvision('resnet18', num_classes=10), _RESNET_INIT, _image_input(3, 64, 64)),
)}
"""Every preset by name."""


def get_preset(name: str) -> Preset:
    """The preset called ``name``.

    Raises:
        KeyError: no such preset; the message lists the valid names and a close match.
    """
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise KeyError(f'unknown model preset {name!r}; the presets are '
                       f'{choices_text(PRESETS)}.{suggest(str(name), PRESETS)}') from None
