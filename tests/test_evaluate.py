"""The evaluation protocol and the scorer: one pass for top-1, loss and KL; prefix reuse equal to a
plain evaluation; slices that must fit; on a real (briefly trained) supernet and real images."""
import pytest
import torch

from search_spaces import InvalidInputError
from supernet.evaluate import SubnetScorer, evaluate, recalibrate_bn, shared_stages
from supernet.protocol import EvalProtocol
from supernet.checkpoint import load_supernet

PROTOCOL = EvalProtocol(images=96, bn_batches=2, batch_size=32)


@pytest.fixture(scope="module")
def loaded(tiny_supernet_run):
    return load_supernet(tiny_supernet_run)


def test_one_pass_gives_top1_loss_and_kl_equal_to_the_plain_evaluation(loaded):
    supernet, recipe = loaded
    scorer = SubnetScorer.from_protocol(supernet, recipe, PROTOCOL)
    largest, config = supernet.space.largest(), supernet.space.smallest()
    assert scorer(largest).kl == 0.0
    scores = scorer(config)
    model = recalibrate_bn(supernet, config, [(x,) for x in scorer.calib_batches], PROTOCOL.bn_batches)
    plain = evaluate(model, scorer.eval_batches)
    assert scores.images == plain.images == 96
    assert scores.top1 == pytest.approx(plain.top1) and scores.loss == pytest.approx(plain.loss, rel=1e-5)
    # KL(largest || config) computed by hand from the two networks
    big = recalibrate_bn(supernet, largest, [(x,) for x in scorer.calib_batches], PROTOCOL.bn_batches).eval()
    with torch.no_grad():
        kl = sum(torch.nn.functional.kl_div(model.eval()(x).log_softmax(1), big(x).log_softmax(1), log_target=True,
                                            reduction="sum").item() for x, _ in scorer.eval_batches) / 96
    assert scores.kl == pytest.approx(kl, rel=1e-3) and scores.kl > 1e-4


def test_prefix_reuse_is_output_equal_to_a_plain_evaluation(loaded):
    """Every move of a state (and a move of a move) scored with the state's prefix reused equals the
    score from the images; moves in later stages reuse more of the prefix."""
    supernet, recipe = loaded
    space = supernet.space
    state = space.moves(space.largest())[-1][1]  # not the largest: a real mid-search state
    reused = SubnetScorer.from_protocol(supernet, recipe, PROTOCOL)
    plain = SubnetScorer(supernet, reused.calib_batches, reused.eval_batches)
    reused.prepare(state)
    configs = [config for _, config in space.moves(state)]
    configs.append(space.moves(configs[-1])[0][1])
    depths = {shared_stages(config, state) for config in configs}
    assert {-1, 0, 3} <= depths  # the stem width, stage 1 and the last stage all change somewhere
    for config in configs:
        a, b = reused.per_image(config), plain.per_image(config)
        assert torch.equal(a.correct, b.correct)
        assert torch.allclose(a.loss, b.loss, atol=1e-5) and torch.allclose(a.kl, b.kl, atol=1e-5)


def test_slices_are_disjoint_and_must_fit(loaded):
    supernet, recipe = loaded
    first = SubnetScorer.from_protocol(supernet, recipe, EvalProtocol(images=64, bn_batches=1))
    second = SubnetScorer.from_protocol(supernet, recipe, EvalProtocol(images=64, offset=64, bn_batches=1))
    assert not torch.equal(first.eval_batches[0][0], second.eval_batches[0][0])
    whole = SubnetScorer.from_protocol(supernet, recipe, EvalProtocol(images=128, bn_batches=1))
    assert torch.equal(whole.eval_batches[0][0][64:], second.eval_batches[0][0])
    with pytest.raises(InvalidInputError, match=r"images 200-300 of the val split, which has 256 images"):
        EvalProtocol(images=100, offset=200).data(recipe, supernet.space.resolution)
    assert EvalProtocol(images=500).overlaps(EvalProtocol(offset=499))
    assert not EvalProtocol(images=500).overlaps(EvalProtocol(offset=500))
    assert not EvalProtocol(images=500).overlaps(EvalProtocol(split="test"))
    for bad, message in (({"images": 0}, "expected a positive number"), ({"offset": -1}, "expected 0 or more"),
                         ({"bn_batches": 0}, "expected positive numbers"), ({"split": "train"}, "expected val")):
        with pytest.raises(InvalidInputError, match=message):
            EvalProtocol(**bad)
