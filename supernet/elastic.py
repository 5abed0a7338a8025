"""Elastic layers: the elastic twins of timm's EfficientFormerV2 modules.

Each layer owns the weights of its largest size, under the same attribute names as
the timm module it mirrors (so a supernet's state dict has exactly the keys and
shapes of ``build_model(space.largest())``). Its forward runs at any smaller size by
slicing the leading channels of every weight: the input width is read off the
input tensor, the output width is an argument. Nothing is stored between calls:
the active sub-network is chosen by the arguments of each forward.

Slicing the *leading* channels everywhere is what makes extraction a plain slice of
the state dict (see :mod:`supernet.extract`).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.space import AttentionSettings

import search_spaces.model  # noqa: E402,F401  (the project's first timm import: it repairs torchvision)
from timm.layers import drop_path, ndgrid  # noqa: E402


class ElasticConvNorm(nn.Module):
    """timm ``ConvNorm`` / ``ConvNormAct`` (conv with bias + BatchNorm [+ GELU]) at its largest size.

    Depthwise convolutions take their width from the input; dense ones slice
    ``weight[:out, :in]``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 depthwise: bool = False, act: bool = False) -> None:
        super().__init__()
        groups = in_channels if depthwise else 1
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2,
                              groups=groups, bias=True)
        self.bn = nn.BatchNorm2d(out_channels)
        self.depthwise = depthwise
        self.act = act

    def forward(self, x: torch.Tensor, out_channels: Optional[int] = None) -> torch.Tensor:
        in_channels = x.shape[1]
        conv = self.conv
        if self.depthwise:
            out_channels = in_channels
            weight, groups = conv.weight[:in_channels], in_channels
        else:
            out_channels = out_channels or conv.out_channels
            weight, groups = conv.weight[:out_channels, :in_channels], 1
        x = F.conv2d(x, weight, conv.bias[:out_channels], conv.stride, conv.padding, groups=groups)
        x = batch_norm(self.bn, x)
        return F.gelu(x) if self.act else x


def batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm over the leading ``x.shape[1]`` channels of ``bn``.

    In training mode the running statistics of those channels are updated in place
    (they are views of ``bn``'s buffers); evaluation of a sub-network recalibrates
    them anyway (:func:`supernet.evaluate.recalibrate_bn`).
    """
    c = x.shape[1]
    use_batch_stats = bn.training or bn.running_mean is None
    return F.batch_norm(x, bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c],
                        use_batch_stats, bn.momentum if bn.momentum is not None else 0.0, bn.eps)


class ElasticLayerScale(nn.Module):
    """timm ``LayerScale2d``: a learned per-channel scale, sliced to the input width."""

    def __init__(self, channels: int, init_value: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_value * torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma[:x.shape[1]].view(1, -1, 1, 1)


class ElasticMlp(nn.Module):
    """timm ``ConvMlpWithNorm`` with ``mid_conv``: 1x1 up, depthwise 3x3, 1x1 down."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = ElasticConvNorm(channels, hidden, act=True)
        self.mid = ElasticConvNorm(hidden, hidden, 3, depthwise=True, act=True)
        self.fc2 = ElasticConvNorm(hidden, channels)

    def forward(self, x: torch.Tensor, hidden: int) -> torch.Tensor:
        return self.fc2(self.mid(self.fc1(x, hidden)), x.shape[1])


def _relative_bias_index(query_side: int, key_side: int, query_step: int) -> torch.Tensor:
    """Index of the attention bias of every (query, key) pair, as timm computes it."""
    k_pos = torch.stack(ndgrid(torch.arange(key_side), torch.arange(key_side))).flatten(1)
    q_pos = torch.stack(ndgrid(torch.arange(0, key_side, step=query_step),
                               torch.arange(0, key_side, step=query_step))).flatten(1)
    relative = (q_pos[..., :, None] - k_pos[..., None, :]).abs()
    return relative[0] * key_side + relative[1]


def _with_biases(attention: nn.Module, scores: torch.Tensor) -> torch.Tensor:
    """Attention scores plus the module's attention biases, if its space has them."""
    if not hasattr(attention, "attention_biases"):
        return scores
    return scores + attention.attention_biases[:, attention.attention_bias_idxs]


class ElasticAttention2d(nn.Module):
    """timm ``Attention2d`` (talking heads, local value conv, attention biases unless the space
    drops them, optional stride).

    Heads, key dim and value dim are fixed whatever the width; only the input
    projections' input channels and the output projection's output channels follow
    the active width.
    """

    def __init__(self, channels: int, resolution: int, settings: AttentionSettings,
                 stride: Optional[int] = None) -> None:
        super().__init__()
        self.num_heads = settings.num_heads
        self.key_dim = settings.key_dim
        self.scale = settings.key_dim ** -0.5
        self.stride = stride
        if stride is not None:
            self.stride_conv = ElasticConvNorm(channels, channels, 3, stride=stride, depthwise=True)
            resolution = math.ceil(resolution / stride)
        self.resolution = resolution
        self.N = resolution * resolution
        self.dh = settings.value_dim
        self.q = ElasticConvNorm(channels, settings.qk_dim)
        self.k = ElasticConvNorm(channels, settings.qk_dim)
        self.v = ElasticConvNorm(channels, self.dh)
        self.v_local = ElasticConvNorm(self.dh, self.dh, 3, depthwise=True)
        self.talking_head1 = nn.Conv2d(self.num_heads, self.num_heads, kernel_size=1)
        self.talking_head2 = nn.Conv2d(self.num_heads, self.num_heads, kernel_size=1)
        self.proj = ElasticConvNorm(self.dh, channels)
        if settings.bias:
            self.attention_biases = nn.Parameter(torch.zeros(self.num_heads, self.N))
            self.register_buffer("attention_bias_idxs", _relative_bias_index(resolution, resolution, 1),
                                 persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels = x.shape[:2]
        if self.stride is not None:
            x = self.stride_conv(x)
        heads, n = self.num_heads, self.N
        q = self.q(x).reshape(batch, heads, -1, n).permute(0, 1, 3, 2)
        k = self.k(x).reshape(batch, heads, -1, n)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.reshape(batch, heads, -1, n).permute(0, 1, 3, 2)
        attn = _with_biases(self, (q @ k) * self.scale)
        attn = self.talking_head2(self.talking_head1(attn).softmax(dim=-1))
        x = (attn @ v).transpose(2, 3).reshape(batch, self.dh, self.resolution, self.resolution) + v_local
        if self.stride is not None:
            x = F.interpolate(x, scale_factor=self.stride, mode="bilinear")
        return self.proj(F.gelu(x), channels)


class ElasticLocalGlobalQuery(nn.Module):
    """timm ``LocalGlobalQuery``: depthwise stride-2 conv plus stride-2 sampling, projected."""

    def __init__(self, channels: int, out_channels: int) -> None:
        super().__init__()
        self.local = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1, groups=channels)
        self.proj = ElasticConvNorm(channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        local = F.conv2d(x, self.local.weight[:c], self.local.bias[:c], 2, 1, groups=c)
        return self.proj(local + x[:, :, ::2, ::2])  # AvgPool2d(1, 2) is this sampling


class ElasticAttention2dDownsample(nn.Module):
    """timm ``Attention2dDownsample``: local-global attention from stage 3 into stage 4."""

    def __init__(self, channels: int, out_channels: int, resolution: int, settings: AttentionSettings) -> None:
        super().__init__()
        self.num_heads = settings.num_heads
        self.scale = settings.key_dim ** -0.5
        self.resolution = resolution
        self.resolution2 = math.ceil(resolution / 2)
        self.N, self.N2 = resolution * resolution, self.resolution2 ** 2
        self.dh = settings.value_dim
        self.q = ElasticLocalGlobalQuery(channels, settings.qk_dim)
        self.k = ElasticConvNorm(channels, settings.qk_dim)
        self.v = ElasticConvNorm(channels, self.dh)
        self.v_local = ElasticConvNorm(self.dh, self.dh, 3, stride=2, depthwise=True)
        self.proj = ElasticConvNorm(self.dh, out_channels)
        if settings.bias:
            self.attention_biases = nn.Parameter(torch.zeros(self.num_heads, self.N))
            self.register_buffer("attention_bias_idxs", _relative_bias_index(self.resolution2, resolution, 2),
                                 persistent=False)

    def forward(self, x: torch.Tensor, out_channels: int) -> torch.Tensor:
        batch, heads = x.shape[0], self.num_heads
        q = self.q(x).reshape(batch, heads, -1, self.N2).permute(0, 1, 3, 2)
        k = self.k(x).reshape(batch, heads, -1, self.N)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.reshape(batch, heads, -1, self.N).permute(0, 1, 3, 2)
        attn = _with_biases(self, (q @ k) * self.scale).softmax(dim=-1)
        x = (attn @ v).transpose(2, 3).reshape(batch, self.dh, self.resolution2, self.resolution2) + v_local
        return self.proj(F.gelu(x), out_channels)


class ElasticDownsample(nn.Module):
    """timm ``Downsample``: conv 3x3 stride 2 + BN, plus the attention downsample into stage 4."""

    def __init__(self, in_channels: int, out_channels: int, resolution: int,
                 attention: Optional[AttentionSettings]) -> None:
        super().__init__()
        self.conv = ElasticConvNorm(in_channels, out_channels, 3, stride=2)
        self.attn = (ElasticAttention2dDownsample(in_channels, out_channels, resolution, attention)
                     if attention is not None else None)

    def forward(self, x: torch.Tensor, out_channels: int) -> torch.Tensor:
        out = self.conv(x, out_channels)
        return out if self.attn is None else self.attn(x, out_channels) + out


class ElasticBlock(nn.Module):
    """timm ``EfficientFormerV2Block``: optional MHSA residual, then the FFN residual."""

    def __init__(self, channels: int, hidden: int, resolution: int, attention: Optional[AttentionSettings],
                 stride: Optional[int], drop_path_rate: float = 0.0) -> None:
        super().__init__()
        if attention is not None:
            self.token_mixer = ElasticAttention2d(channels, resolution, attention, stride)
            self.ls1 = ElasticLayerScale(channels)
        else:
            self.token_mixer = None
        self.mlp = ElasticMlp(channels, hidden)
        self.ls2 = ElasticLayerScale(channels)
        self.drop_path_rate = self.built_drop_path_rate = drop_path_rate

    def forward(self, x: torch.Tensor, expansion: int, mhsa: bool) -> torch.Tensor:
        if mhsa:
            x = x + self._drop_path(self.ls1(self.token_mixer(x)))
        return x + self._drop_path(self.ls2(self.mlp(x, x.shape[1] * expansion)))

    def _drop_path(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_path_rate, self.training)


class ElasticStem(nn.Module):
    """timm ``Stem4``: two conv 3x3 stride 2 + BN + GELU, to half the width then the width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ElasticConvNorm(3, channels // 2, 3, stride=2, act=True)
        self.conv2 = ElasticConvNorm(channels // 2, channels, 3, stride=2, act=True)

    def forward(self, x: torch.Tensor, channels: int) -> torch.Tensor:
        return self.conv2(self.conv1(x, channels // 2), channels)
