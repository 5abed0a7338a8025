"""Standalone networks against timm, analytic costs against built models."""
import random

import pytest
import torch

from search_spaces import PRESETS, TIMM_NAMES, get_space, network_costs
from search_spaces.model import build_model, model_mac_count, model_param_count  # first: it repairs torchvision
from search_spaces.space import without_attention_bias

import timm  # noqa: E402
from timm.models.efficientformer_v2 import EfficientFormerV2  # noqa: E402


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_equal_timm_models(name):
    ours = build_model(PRESETS[name]).eval()
    reference = timm.create_model(TIMM_NAMES[name]).eval()
    ours_state, reference_state = ours.state_dict(), reference.state_dict()
    assert list(ours_state) == list(reference_state)
    assert {k: v.shape for k, v in ours_state.items()} == {k: v.shape for k, v in reference_state.items()}
    # same weights (random, BatchNorm statistics included) -> same outputs
    torch.manual_seed(0)
    reference_state = {k: torch.randn_like(v) * 0.1 if v.is_floating_point() else v
                       for k, v in reference_state.items()}
    for k, v in reference_state.items():
        if k.endswith("running_var"):
            reference_state[k] = v.abs() + 0.5
    reference.load_state_dict(reference_state)
    ours.load_state_dict(reference_state)
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(ours(images), reference(images))


PAPER_PARAMS_M = {"S0": 3.5, "S1": 6.1, "S2": 12.6, "L": 26.1}
PAPER_MACS_G = {"S0": 0.40, "S1": 0.65, "S2": 1.25, "L": 2.56}


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_reproduce_the_papers_column(name):
    costs = network_costs(PRESETS[name])
    assert abs(costs.params_m - PAPER_PARAMS_M[name]) <= 0.05
    assert abs(costs.macs_g - PAPER_MACS_G[name]) <= 0.01 * PAPER_MACS_G[name]
    model = build_model(PRESETS[name])
    assert costs.params == model_param_count(model, "all") == sum(p.numel() for p in model.parameters())
    assert costs.params_deploy == model_param_count(model, "deploy")
    assert costs.macs == model_mac_count(model, 224)


@pytest.mark.parametrize("space_name, count", [
    ("efficientformerv2", 20), ("efficientformerv2-tiny", 25), ("efficientformerv2-tiny@32", 25),
    ("efficientformerv2-tiny-nobias", 10)])
def test_analytic_costs_equal_built_models(space_name, count):
    space = get_space(space_name)
    rng = random.Random(7)
    configs = [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(count)]
    for config in configs:
        model = build_model(config)
        costs = network_costs(config)
        assert costs.params == model_param_count(model, "all"), config.key
        assert costs.params_deploy == model_param_count(model, "deploy"), config.key
        assert costs.macs == model_mac_count(model, config.resolution), config.key


def test_num_classes_and_distillation_flow_into_costs():
    config = get_space("efficientformerv2-tiny").sample(3)
    for num_classes, distillation in [(10, True), (100, False), (0, True)]:
        model = build_model(config, num_classes=num_classes, distillation=distillation)
        costs = network_costs(config, num_classes=num_classes, distillation=distillation)
        assert costs.params == model_param_count(model, "all")
        assert costs.macs == model_mac_count(model, config.resolution)


def test_random_configs_run_and_train():
    space = get_space("efficientformerv2-tiny@32")
    config = space.sample(11)
    model = build_model(config, drop_path_rate=0.1)
    assert isinstance(model, EfficientFormerV2)
    assert model.num_classes == 10
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)
    images = torch.randn(4, 3, 32, 32)
    loss = model(images).logsumexp(1).mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    # per-block structure follows the config
    for index, stage in enumerate(config.stages):
        blocks = model.stages[index].blocks
        assert len(blocks) == stage.depth
        for block, (_, entry) in zip(blocks, stage.kept):
            assert (block.token_mixer is not None) == entry.mhsa
            assert block.mlp.fc1.conv.out_channels == stage.width * entry.expansion


def test_tiny_attention_settings_are_used():
    space = get_space("efficientformerv2-tiny")
    model = build_model(space.largest())
    attention = model.stages[2].blocks[0].token_mixer
    assert (attention.key_dim, attention.num_heads, attention.attn_ratio) == (16, 4, 2)
    assert attention.stride_conv is None and attention.N == 16  # 4x4 tokens
    assert model.stages[3].blocks[0].token_mixer.N == 4  # 2x2 tokens
    assert model.stages[3].downsample.attn.num_heads == 4


def test_nobias_space_drops_every_attention_bias_and_nothing_else():
    without = get_space("efficientformerv2-tiny-nobias")
    assert not without.attention.bias and not without.downsample_attention.bias
    assert get_space("efficientformerv2-tiny-nobias@32").attention == without.attention
    assert without_attention_bias("efficientformerv2-tiny@32") == "efficientformerv2-tiny-nobias@32"
    assert without_attention_bias("efficientformerv2-nobias") == "efficientformerv2-nobias"
    plain = build_model(get_space("efficientformerv2-tiny").largest()).state_dict()
    free = build_model(without.largest()).state_dict()
    dropped = set(plain) - set(free)
    assert set(free) <= set(plain) and all(key.endswith("attention_biases") for key in dropped)
    mhsa_blocks = sum(block.mhsa for stage in without.largest().stages for _, block in stage.kept)
    assert len(dropped) == mhsa_blocks + 1  # and the attention downsample's
    model = build_model(without.sample(3))  # still runs and learns
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert not any("attention_biases" in name for name, _ in model.named_parameters())


def test_build_rejects_invalid_configs():
    from search_spaces import InvalidInputError
    config = PRESETS["S0"]
    from dataclasses import replace
    with pytest.raises(InvalidInputError):
        build_model(replace(config, resolution=160))
