"""The supernet: timm-identical weights layout, extraction equality, BatchNorm recalibration."""
import random

import pytest
import torch

from search_spaces import PRESETS, InvalidInputError, get_space
from search_spaces.model import build_model
from supernet.evaluate import recalibrate_bn
from supernet.extract import extract
from supernet.supernet import Supernet


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Weights and BatchNorm statistics far from their init, so equality tests mean something."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in module.state_dict().items():
            if value.is_floating_point():
                value.copy_(torch.randn(value.shape, generator=generator) * 0.2)
                if key.endswith("running_var"):
                    value.abs_().add_(0.5)


@pytest.fixture(scope="module")
def full_supernet():
    supernet = Supernet("efficientformerv2")
    _randomise(supernet)
    return supernet.eval()


@pytest.fixture(scope="module")
def tiny_supernet():
    supernet = Supernet("efficientformerv2-tiny")
    _randomise(supernet, 1)
    return supernet.eval()


@pytest.mark.parametrize("space_name", ["efficientformerv2", "efficientformerv2-tiny"])
def test_state_dict_is_the_largest_timm_network(space_name):
    supernet = Supernet(space_name)
    reference = build_model(get_space(space_name).largest()).state_dict()
    state = supernet.state_dict()
    assert list(state) == list(reference)
    assert all(state[k].shape == reference[k].shape for k in state)


def _max_difference(supernet, config, images):
    model = extract(supernet, config).eval()
    with torch.no_grad():
        return (supernet(images, config) - model(images)).abs().max().item()


def test_extraction_equals_supernet_on_the_full_space(full_supernet):
    space = full_supernet.space
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    rng = random.Random(0)
    configs = [space.largest(), space.smallest(), *PRESETS.values()] + [space.sample(rng) for _ in range(6)]
    for config in configs:
        assert _max_difference(full_supernet, config, images) < 1e-4, config.key


def test_extraction_equals_supernet_on_20_random_tiny_configs(tiny_supernet):
    space = tiny_supernet.space
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    rng = random.Random(1)
    configs = [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(20)]
    for config in configs:
        assert _max_difference(tiny_supernet, config, images) < 1e-4, config.key


def test_extraction_equals_supernet_without_attention_biases():
    supernet = Supernet("efficientformerv2-tiny-nobias")
    _randomise(supernet, 2)
    supernet.eval()
    assert list(supernet.state_dict()) == list(build_model(supernet.space.largest()).state_dict())
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    rng = random.Random(2)
    for config in [supernet.space.largest()] + [supernet.space.sample(rng) for _ in range(5)]:
        assert _max_difference(supernet, config, images) < 1e-4, config.key


def test_extracted_network_is_the_configs_timm_network(tiny_supernet):
    config = tiny_supernet.space.sample(4)
    model = extract(tiny_supernet, config)
    reference = build_model(config, num_classes=tiny_supernet.num_classes).state_dict()
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in reference.items()}
    # weights are copies: training the extracted network leaves the supernet alone
    before = tiny_supernet.state_dict()["stem.conv1.conv.weight"].clone()
    with torch.no_grad():
        model.stem.conv1.conv.weight.add_(1.0)
    assert torch.equal(tiny_supernet.state_dict()["stem.conv1.conv.weight"], before)


def test_config_of_another_space_is_refused(tiny_supernet):
    with pytest.raises(InvalidInputError, match="belongs to space 'efficientformerv2'"):
        tiny_supernet(torch.randn(1, 3, 64, 64), PRESETS["S0"])
    with pytest.raises(InvalidInputError, match="belongs to space 'efficientformerv2'"):
        extract(tiny_supernet, PRESETS["S0"])


def test_every_weight_gets_gradient_from_the_largest_only_where_used():
    supernet = Supernet("efficientformerv2-tiny@32")
    space = supernet.space
    supernet(torch.randn(4, 3, 32, 32), space.largest()).pow(2).sum().backward()
    assert all(p.grad is not None for p in supernet.parameters())
    supernet.zero_grad(set_to_none=True)
    smallest = space.smallest()
    supernet(torch.randn(4, 3, 32, 32), smallest).pow(2).sum().backward()
    assert supernet.stages[2].blocks[0].token_mixer.q.conv.weight.grad is None  # no MHSA in the smallest
    assert supernet.stages[2].blocks[1].mlp.fc1.conv.weight.grad is None  # dropped block
    grad = supernet.stages[2].blocks[0].mlp.fc1.conv.weight.grad  # kept, sliced
    hidden, width = space.stages[2].widths[0] * space.stages[2].expansions[0], space.stages[2].widths[0]
    assert grad[:hidden, :width].abs().sum() > 0 and grad[hidden:].abs().sum() == 0
    assert grad[:, width:].abs().sum() == 0


def _loader(resolution, batches=3, batch_size=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch_size, 3, resolution, resolution, generator=generator) * 2 + 1,
             torch.zeros(batch_size, dtype=torch.long)) for _ in range(batches)]


def test_recalibration_leaves_the_supernet_alone_unless_asked(tiny_supernet):
    supernet = tiny_supernet
    config = supernet.space.sample(9)
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    loader = _loader(64)
    model = recalibrate_bn(supernet, config, loader, num_batches=3)
    assert all(torch.equal(before[k], v) for k, v in supernet.state_dict().items())
    # the statistics are the exact means over the batches
    stem_bn = model.stem.conv1.bn
    with torch.no_grad():
        activations = torch.cat([model.stem.conv1.conv(images) for images, _ in loader])
    assert torch.allclose(stem_bn.running_mean, activations.mean(dim=(0, 2, 3)), atol=1e-4)
    assert not model.training
    # written back, the supernet runs the config with the recalibrated statistics
    recalibrate_bn(supernet, config, loader, num_batches=3, write_back=True)
    images = loader[0][0]
    with torch.no_grad():
        assert (supernet(images, config) - model(images)).abs().max().item() < 1e-4
    supernet.load_state_dict(before)


def test_layer_scale_init_is_a_training_setting():
    supernet = Supernet("efficientformerv2-tiny@32", layer_scale_init=0.1)
    gammas = [m.gamma for m in supernet.modules() if hasattr(m, "gamma")]
    assert gammas and all(torch.all(g == 0.1) for g in gammas)
    assert torch.all(Supernet("efficientformerv2-tiny@32").stages[0].blocks[0].ls2.gamma == 1e-5)
