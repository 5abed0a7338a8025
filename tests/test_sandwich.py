"""The sandwich's training options: AlphaNet's adaptive alpha-divergence, drop path on the largest
subnet only, and middle subnets drawn by size strata."""
import contextlib
import math
import random

import pytest
import torch

from search_spaces import count_params, get_space
from supernet.recipe import SANDWICH_ONLY, Recipe, load_recipe
from supernet.supernet import Supernet
from supernet.train import ALPHA_CLIP, alpha_divergence, sandwich_configs, sandwich_step, soft_cross_entropy


def _divergence(logits, teacher, alpha):
    """D_alpha(p || q) written out directly, differentiable in the student's logits (no clipping)."""
    q = logits.softmax(dim=-1)
    if alpha == 1.0:
        return torch.sum(teacher * (teacher.log() - q.log()), dim=-1)
    return torch.sum(q * ((teacher / q) ** alpha - 1.0), dim=-1) / (alpha * (alpha - 1.0))


def test_alpha_divergence_has_the_larger_divergences_gradient():
    """Where no importance weight reaches the clip, the surrogate's gradient is the gradient of the
    larger of D_-1 and D_1 per image, and its value is that divergence; a student equal to its teacher
    has nothing to learn."""
    generator = torch.Generator().manual_seed(0)
    teacher = (torch.randn(16, 10, generator=generator) * 0.5).softmax(dim=-1)
    logits = (torch.randn(16, 10, generator=generator) * 0.5).requires_grad_()
    value, surrogate = alpha_divergence(logits, teacher)
    (grad,) = torch.autograd.grad(surrogate, logits)
    exact = torch.stack([_divergence(logits, teacher, a) for a in (-1.0, 1.0)])
    assert ((teacher / logits.softmax(-1)) ** -1).max() < ALPHA_CLIP  # the comparison is unclipped
    larger = exact.max(dim=0).values
    (expected,) = torch.autograd.grad(larger.mean(), logits)
    assert torch.allclose(grad, expected, atol=1e-6)
    assert value.item() == pytest.approx(larger.mean().item(), rel=1e-5)
    assert (exact[0] > exact[1]).any() and (exact[0] < exact[1]).any()  # both alphas are chosen somewhere
    same = teacher.log().clone().requires_grad_()
    value, surrogate = alpha_divergence(same, teacher)
    (grad,) = torch.autograd.grad(surrogate, same)
    assert abs(value.item()) < 1e-6 and grad.abs().max() < 1e-6


def test_alpha_divergence_stays_finite_far_from_the_teacher():
    teacher = torch.tensor([[0.5, 0.5]])
    logits = torch.tensor([[0.0, 110.0]], requires_grad=True)  # q of the first class: e^-110
    value, surrogate = alpha_divergence(logits, teacher)
    (grad,) = torch.autograd.grad(surrogate, logits)
    assert torch.isfinite(value) and torch.isfinite(surrogate) and torch.isfinite(grad).all()
    assert value.item() == pytest.approx(0.5 * 110 - math.log(2), rel=1e-4)  # KL(p || q), the larger here


def test_alpha_one_alone_is_plain_distillation():
    generator = torch.Generator().manual_seed(1)
    teacher = torch.randn(8, 10, generator=generator).softmax(dim=-1)
    logits = torch.randn(8, 10, generator=generator).requires_grad_()
    _, surrogate = alpha_divergence(logits, teacher, alphas=(1.0, 1.0))
    (grad,) = torch.autograd.grad(surrogate, logits)
    (expected,) = torch.autograd.grad(soft_cross_entropy(logits, teacher), logits)
    assert torch.allclose(grad, expected, atol=1e-6)


def test_drop_path_on_the_largest_only():
    """With drop_path_scope=largest the other subnets run without drop path (their forward passes are
    deterministic in training mode), and the rates are back afterwards."""
    space = get_space("efficientformerv2-tiny@32")
    supernet = Supernet(space, drop_path_rate=0.5).train()
    images, targets = torch.randn(4, 3, 32, 32), torch.full((4, 10), 0.1)
    smallest = space.smallest()

    def passes(scope):
        seen = []
        hook = supernet.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
        for seed in (0, 1):
            torch.manual_seed(seed)
            sandwich_step(supernet, [space.largest(), smallest], images, targets, True, contextlib.nullcontext,
                          drop_path_scope=scope)
        hook.remove()
        return seen  # largest, smallest, largest, smallest

    seen = passes("largest")
    assert torch.equal(seen[1], seen[3]) and not torch.equal(seen[0], seen[2])
    seen = passes("all")
    assert not torch.equal(seen[1], seen[3])
    rates = [block.drop_path_rate for stage in supernet.stages for block in stage.blocks]
    assert max(rates) == pytest.approx(0.5) and rates == [block.built_drop_path_rate for stage in supernet.stages
                                                          for block in stage.blocks]


def test_size_strata_spread_the_middle_subnets():
    """Uniform choices bunch the random subnets in the middle sizes; size strata put one in each band of
    log parameters."""
    space = get_space("efficientformerv2-tiny")
    low, high = (math.log(count_params(c)) for c in (space.smallest(), space.largest()))
    rng = random.Random(0)
    bands = [[], []]
    for _ in range(50):
        configs = sandwich_configs(space, rng, 2, "size-strata")
        assert configs[:2] == [space.largest(), space.smallest()] and len(configs) == 4
        for band, config in enumerate(configs[2:]):
            bands[band].append((math.log(count_params(config)) - low) / (high - low))
    assert all(0 <= f <= 0.5 for f in bands[0]) and all(0.5 <= f <= 1 for f in bands[1])
    uniform = [(math.log(count_params(c)) - low) / (high - low)
               for _ in range(50) for c in sandwich_configs(space, random.Random(1), 2)[2:]]
    assert min(bands[0]) < min(uniform) or max(bands[1]) > max(uniform)


def test_sandwich_settings_are_checked_and_leave_from_scratch_results_alone():
    recipe = load_recipe("fashion-mnist-tiny")
    for name in SANDWICH_ONLY:
        with pytest.raises(Exception, match=name):
            recipe.replace(**{name: "nonsense"})
    changed = recipe.replace(inplace_loss="alpha-divergence", drop_path_scope="largest", middle_sampling="size-strata")
    assert changed.scratch_yaml() == recipe.scratch_yaml() and changed.to_yaml() != recipe.to_yaml()
    flipped = recipe.replace(channels_last=not recipe.channels_last)  # a layout: from-scratch results stand
    assert flipped.scratch_yaml() == recipe.scratch_yaml() and flipped.to_yaml() != recipe.to_yaml()
    assert Recipe.from_dict(changed.to_dict()) == changed
