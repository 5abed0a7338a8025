"""A config's network as a list of parts, and each part's analytic costs.

The parts cover the whole network exactly once: the stem, each stage's
downsample (plain, or with the local-global attention downsample into stage 4),
each kept block's MHSA (if any) and FFN, and the head. :class:`Part` is a frozen,
hashable description of one part at its input shape; it is also the latency
table's block key.

Costs are counted without building a model and equal the built timm model's own
counts (tested):

* ``params``: every ``nn.Parameter`` of the timm model;
* ``params_deploy`` (**the project's parameter convention**): the parameters of
  the deployed network, with every BatchNorm and every LayerScale folded into the
  adjacent convolution or linear layer (all of which carry a bias already). This
  reproduces the paper's 3.5 / 6.1 / 12.6 / 26.1 M for S0-L (3.549 / 6.111 /
  12.582 / 26.115 M);
* ``macs``: multiply-accumulates of convolutions (talking heads included), linear
  layers, the attention matmuls and the bilinear upsample of stride attention (4 per
  output element: each is a weighted sum of 4 inputs); BatchNorm (folded),
  activations, softmax and pooling are not counted. S0-L: 0.397 / 0.654 / 1.250 /
  2.557 G against the paper's 0.40 / 0.65 / 1.25 / 2.56 (without the upsample,
  0.396 / 0.652 / 1.247 / 2.553).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from search_spaces.config import SubnetConfig
from search_spaces.errors import InvalidInputError
from search_spaces.space import AttentionSettings, SearchSpace, get_space

#: a bilinear output element is a weighted sum of 4 inputs
BILINEAR_MACS_PER_OUTPUT = 4

PART_KINDS = ("stem", "downsample", "attn_downsample", "mhsa", "ffn", "head")


@dataclass(frozen=True)
class Part:
    """One part of a network at its input shape (batch 1, square feature maps)."""

    kind: str  # one of PART_KINDS
    in_channels: int
    out_channels: int
    resolution: int  # side of the input feature map (of the image, for the stem)
    expansion: int = 0  # ffn: hidden width = in_channels * expansion
    attention: Optional[AttentionSettings] = None  # mhsa, attn_downsample
    stride: int = 1  # mhsa: stride attention (1: attend at full resolution)
    num_classes: int = 0  # head
    distillation: bool = False  # head: a second (distillation) classifier

    @property
    def key(self) -> str:
        """Canonical text form, e.g. ``ffn_c96_r14_e4`` or ``mhsa_c96_r14_s2_k32h8a4``
        (``...a4nb`` without attention biases)."""
        text = f"{self.kind}_c{self.in_channels}"
        if self.out_channels != self.in_channels:
            text += f"-{self.out_channels}"
        text += f"_r{self.resolution}"
        if self.kind == "ffn":
            text += f"_e{self.expansion}"
        if self.kind == "mhsa":
            text += f"_s{self.stride}"
        if self.attention is not None:
            a = self.attention
            text += f"_k{a.key_dim}h{a.num_heads}a{a.attn_ratio}" + ("" if a.bias else "nb")
        if self.kind == "head":
            text += f"_n{self.num_classes}" + ("_dist" if self.distillation else "")
        return text


@dataclass(frozen=True)
class Costs:
    """Parameter and MAC counts; ``folded`` = BatchNorm affine + LayerScale parameters."""

    params: int = 0
    folded: int = 0
    macs: int = 0

    def __add__(self, other: "Costs") -> "Costs":
        return Costs(self.params + other.params, self.folded + other.folded, self.macs + other.macs)

    @property
    def params_deploy(self) -> int:
        """Parameters under the project's convention (BatchNorm and LayerScale folded)."""
        return self.params - self.folded

    @property
    def params_m(self) -> float:
        """Deploy-convention parameters in millions."""
        return self.params_deploy / 1e6

    @property
    def macs_g(self) -> float:
        return self.macs / 1e9


def network_parts(config: SubnetConfig, num_classes: Optional[int] = None,
                  distillation: bool = True, space: Optional[SearchSpace] = None) -> list[Part]:
    """The parts of ``config``'s network in forward order."""
    space = space or get_space(config.space)
    num_classes = space.num_classes if num_classes is None else num_classes
    parts = [Part("stem", 3, config.stem_width, config.resolution)]
    in_channels = config.stem_width
    for index, stage in enumerate(config.stages):
        if index > 0:
            in_resolution = space.stage_resolution(index - 1)
            if index == len(config.stages) - 1:
                parts.append(Part("attn_downsample", in_channels, stage.width, in_resolution,
                                  attention=space.downsample_attention))
            else:
                parts.append(Part("downsample", in_channels, stage.width, in_resolution))
        resolution = space.stage_resolution(index)
        for _, block in stage.kept:
            if block.mhsa:
                parts.append(Part("mhsa", stage.width, stage.width, resolution, attention=space.attention,
                                  stride=space.block_attention_stride(index) or 1))
            parts.append(Part("ffn", stage.width, stage.width, resolution, expansion=block.expansion))
        in_channels = stage.width
    parts.append(Part("head", in_channels, in_channels, space.stage_resolution(len(config.stages) - 1),
                      num_classes=num_classes, distillation=distillation))
    return parts


def _conv_norm(cin: int, cout: int, kernel: int, out_positions: int, groups: int = 1, norm: bool = True) -> Costs:
    """A conv with bias (+ BatchNorm) producing ``out_positions`` output positions."""
    weights = cout * (cin // groups) * kernel * kernel
    return Costs(params=weights + cout + (2 * cout if norm else 0), folded=2 * cout if norm else 0,
                 macs=out_positions * weights)


def part_costs(part: Part) -> Costs:
    """Analytic parameters and MACs of one part."""
    c, r = part.in_channels, part.resolution
    if part.kind == "stem":
        half = part.out_channels // 2
        r1, r2 = math.ceil(r / 2), math.ceil(r / 4)
        return _conv_norm(c, half, 3, r1 * r1) + _conv_norm(half, part.out_channels, 3, r2 * r2)
    if part.kind in ("downsample", "attn_downsample"):
        r2 = math.ceil(r / 2)
        costs = _conv_norm(c, part.out_channels, 3, r2 * r2)
        if part.kind == "attn_downsample":
            costs = costs + _attention_downsample(c, part.out_channels, r, part.attention)
        return costs
    if part.kind == "ffn":
        hidden = c * part.expansion
        n = r * r
        return (_conv_norm(c, hidden, 1, n) + _conv_norm(hidden, hidden, 3, n, groups=hidden)
                + _conv_norm(hidden, c, 1, n) + Costs(params=c, folded=c))  # LayerScale
    if part.kind == "mhsa":
        return _attention(c, r, part.attention, part.stride)
    if part.kind == "head":
        costs = Costs(params=2 * c, folded=2 * c)  # final BatchNorm
        if part.num_classes > 0:
            linear = Costs(params=c * part.num_classes + part.num_classes, macs=c * part.num_classes)
            costs = costs + linear + (linear if part.distillation else Costs())
        return costs
    raise InvalidInputError(f"unknown part kind {part.kind!r}; expected one of {', '.join(PART_KINDS)}")


def _attention(c: int, r: int, a: AttentionSettings, stride: int) -> Costs:
    """timm ``Attention2d`` plus its LayerScale."""
    t = math.ceil(r / stride)
    n = t * t
    costs = _conv_norm(c, c, 3, n, groups=c) if stride > 1 else Costs()
    costs += _conv_norm(c, a.qk_dim, 1, n) + _conv_norm(c, a.qk_dim, 1, n) + _conv_norm(c, a.value_dim, 1, n)
    costs += _conv_norm(a.value_dim, a.value_dim, 3, n, groups=a.value_dim)
    talking_head = _conv_norm(a.num_heads, a.num_heads, 1, n * n, norm=False)
    costs += talking_head + talking_head
    matmuls = a.num_heads * n * n * (a.key_dim + a.attn_ratio * a.key_dim)
    costs += Costs(params=a.num_heads * n * a.bias, macs=matmuls)  # attention biases, q@k and attn@v
    if stride > 1:
        costs += Costs(macs=BILINEAR_MACS_PER_OUTPUT * a.value_dim * r * r)  # upsample back to r x r
    costs += _conv_norm(a.value_dim, c, 1, r * r)  # proj runs after the upsample
    return costs + Costs(params=c, folded=c)  # LayerScale


def _attention_downsample(c: int, cout: int, r: int, a: AttentionSettings) -> Costs:
    """timm ``Attention2dDownsample`` (local-global query)."""
    n, n2 = r * r, math.ceil(r / 2) ** 2
    costs = _conv_norm(c, c, 3, n2, groups=c, norm=False) + _conv_norm(c, a.qk_dim, 1, n2)  # query
    costs += _conv_norm(c, a.qk_dim, 1, n) + _conv_norm(c, a.value_dim, 1, n)
    costs += _conv_norm(a.value_dim, a.value_dim, 3, n2, groups=a.value_dim)
    matmuls = a.num_heads * n2 * n * (a.key_dim + a.attn_ratio * a.key_dim)
    costs += Costs(params=a.num_heads * n * a.bias, macs=matmuls)  # attention biases, q@k and attn@v
    return costs + _conv_norm(a.value_dim, cout, 1, n2)


def network_costs(config: SubnetConfig, num_classes: Optional[int] = None, distillation: bool = True) -> Costs:
    """Total analytic costs of ``config``'s network."""
    total = Costs()
    for part in network_parts(config, num_classes, distillation):
        total += part_costs(part)
    return total


def count_params(config: SubnetConfig, convention: str = "deploy", num_classes: Optional[int] = None,
                 distillation: bool = True) -> int:
    """Parameters of ``config``'s network: ``deploy`` (the paper's convention) or ``all``."""
    costs = network_costs(config, num_classes, distillation)
    if convention == "deploy":
        return costs.params_deploy
    if convention == "all":
        return costs.params
    raise ValueError(f"unknown parameter convention {convention!r}; expected 'deploy' or 'all'")


def count_macs(config: SubnetConfig, num_classes: Optional[int] = None, distillation: bool = True) -> int:
    """Multiply-accumulates of one forward pass at batch 1."""
    return network_costs(config, num_classes, distillation).macs
