"""Block keys of a space and the standalone blocks: they cover every network exactly."""
import random

import pytest
import torch

from latency_lut import build_part_module, part_input_shape, space_parts
from search_spaces import get_space, network_costs, network_parts, part_costs
from search_spaces.model import build_model, model_param_count

SPACES = ["efficientformerv2-tiny@32", "efficientformerv2", "efficientformerv2@64", "efficientformerv2-tiny-nobias"]


@pytest.mark.parametrize("space_name", SPACES)
def test_space_parts_cover_every_sampled_config(space_name):
    space = get_space(space_name)
    parts = space_parts(space)
    keys = [part.key for part in parts]
    assert len(set(keys)) == len(keys) == len(set(parts))  # one key per distinct part
    rng = random.Random(3)
    for config in [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(40)]:
        config_parts = network_parts(config)
        assert set(config_parts) <= set(parts), config.key
        # the parts' analytic costs add up to the network's
        assert sum(part_costs(p).macs for p in config_parts) == network_costs(config).macs
        assert sum(part_costs(p).params for p in config_parts) == network_costs(config).params


def test_space_parts_count_of_the_full_space():
    space = get_space("efficientformerv2")
    w = [len(stage.widths) for stage in space.stages]
    e = [len(stage.expansions) for stage in space.stages]
    expected = (w[0]  # stem
                + sum(wi * ei for wi, ei in zip(w, e))  # ffn
                + w[2] + w[3]  # mhsa in stages 3 and 4
                + w[0] * w[1] + w[1] * w[2] + w[2] * w[3]  # downsamples
                + w[3])  # head
    assert len(space_parts(space)) == expected


@pytest.mark.parametrize("space_name", ["efficientformerv2-tiny@32", "efficientformerv2@64",
                                        "efficientformerv2-tiny-nobias@32"])
def test_part_modules_have_the_analytic_parameters(space_name):
    for part in space_parts(space_name)[::3]:
        module = build_part_module(part)
        assert model_param_count(module, "all") == part_costs(part).params, part.key
        assert model_param_count(module, "deploy") == part_costs(part).params_deploy, part.key
        with torch.no_grad():
            module(torch.randn(*part_input_shape(part)))


def _network_piece(model, part, position):
    """The submodule(s) of the built timm network that ``part`` stands for, as a state dict."""
    stage_index, block_index = position
    if part.kind == "stem":
        return model.stem.state_dict()
    if part.kind in ("downsample", "attn_downsample"):
        return model.stages[stage_index].downsample.state_dict()
    if part.kind == "head":
        return {k: v for k, v in model.state_dict().items() if k.split(".")[0] in ("norm", "head", "head_dist")}
    block = model.stages[stage_index].blocks[block_index]
    names = ("token_mixer", "ls1") if part.kind == "mhsa" else ("mlp", "ls2")
    return {k: v for k, v in block.state_dict().items() if k.split(".")[0] in names}


def _positions(config):
    """(stage, block position) of each part of ``network_parts(config)``, in the same order."""
    positions = [(0, None)]
    for index, stage in enumerate(config.stages):
        if index > 0:
            positions.append((index, None))
        for position, (_, block) in enumerate(stage.kept):
            positions += [(index, position)] * (2 if block.mhsa else 1)
    return positions + [(None, None)]


@pytest.mark.parametrize("space_name, seed", [("efficientformerv2-tiny@32", 1), ("efficientformerv2@64", 2),
                                              ("efficientformerv2@64", 5), ("efficientformerv2-tiny-nobias", 4)])
def test_chained_part_modules_compute_the_network(space_name, seed):
    """Blocks built alone, with the network's weights, chained in order: the network's output."""
    config = get_space(space_name).sample(seed)
    model = build_model(config).eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(torch.rand_like(tensor) + 0.5)
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor) * 0.2)
    parts = network_parts(config)
    positions = _positions(config)
    assert len(positions) == len(parts)
    images = torch.randn(1, 3, config.resolution, config.resolution)
    x = images
    with torch.no_grad():
        for part, position in zip(parts, positions):
            module = build_part_module(part)
            module.load_state_dict(_network_piece(model, part, position))
            assert tuple(x.shape) == part_input_shape(part), part.key
            x = module(x)
        expected = model(images)
    torch.testing.assert_close(x, expected, rtol=1e-4, atol=1e-5)
