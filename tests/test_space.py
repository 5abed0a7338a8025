import random

import pytest

from search_spaces import (
    PRESETS,
    BlockConfig,
    InvalidInputError,
    Move,
    StageConfig,
    count_params,
    get_preset,
    get_space,
    list_spaces,
    network_costs,
    parse_config_text,
    validate,
)
from search_spaces.presets import TABLE_8

SPACES = ["efficientformerv2", "efficientformerv2-tiny", "efficientformerv2-tiny@32"]


def test_registered_spaces():
    assert list_spaces() == ["efficientformerv2", "efficientformerv2-nobias", "efficientformerv2-tiny",
                             "efficientformerv2-tiny-nobias"]
    assert get_space("efficientformerv2-tiny@32").resolution == 32
    assert get_space("efficientformerv2-tiny@32").name == "efficientformerv2-tiny@32"
    assert get_space("efficientformerv2@224") is get_space("efficientformerv2")


@pytest.mark.parametrize("name, message", [
    ("mobilenet", "unknown search space 'mobilenet'; expected one of efficientformerv2, efficientformerv2-nobias, "
                  "efficientformerv2-tiny"),
    ("efficientformerv2@100", "expected a multiple of 32"),
    ("efficientformerv2@abc", "expected a multiple of 32"),
])
def test_unknown_space(name, message):
    with pytest.raises(InvalidInputError, match=message):
        get_space(name)


def test_full_space_covers_every_preset_and_l():
    space = get_space("efficientformerv2")
    assert space.resolution == 224
    largest = space.largest()
    for name, (stem, widths, expansions, _) in TABLE_8.items():
        for index, stage in enumerate(space.stages):
            assert widths[index] in stage.widths
            assert len(expansions[index]) <= stage.max_depth
            assert set(expansions[index]) <= set(stage.expansions)
        assert validate(get_preset(name)) is get_preset(name)
    assert {1, 2, 3, 4} <= set(space.stages[2].expansions)
    l_config = PRESETS["L"]
    for big, small in zip(largest.stages, l_config.stages):
        assert big.width >= small.width and big.depth >= small.depth and big.num_mhsa >= small.num_mhsa
    assert count_params(largest) > count_params(l_config)


def test_presets_are_table_8():
    s0 = PRESETS["S0"]
    assert s0.widths == (32, 48, 96, 176) and s0.depths == (2, 2, 6, 4) and s0.stem_width == 32
    assert [s.num_mhsa for s in s0.stages] == [0, 0, 2, 2]
    assert [b.expansion for _, b in s0.stages[2].kept] == [4, 3, 3, 3, 4, 4]
    assert [b.mhsa for _, b in s0.stages[3].kept] == [False, False, True, True]
    big = PRESETS["L"]
    assert big.widths == (40, 80, 192, 384) and big.depths == (5, 5, 15, 10) and big.stem_width == 40
    assert [s.num_mhsa for s in big.stages] == [0, 0, 6, 6]
    assert get_preset("s2") is PRESETS["S2"]
    with pytest.raises(InvalidInputError, match="unknown preset 'S9'; expected one of S0, S1, S2, L"):
        get_preset("S9")


def test_tiny_space_geometry():
    space = get_space("efficientformerv2-tiny")
    assert space.resolution == 64 and space.num_classes == 10
    assert space.stage_resolution(2) == 4 and space.stage_resolution(3) == 2
    assert space.attention_stride is None  # stage 3 attends over all 4x4 tokens
    assert [s.mhsa for s in space.stages] == [False, False, True, True]


@pytest.mark.parametrize("name", SPACES)
def test_largest_smallest_sample_are_valid(name):
    space = get_space(name)
    largest, smallest = space.largest(), space.smallest()
    assert space.validate(largest) and space.validate(smallest)
    rng = random.Random(0)
    samples = [space.sample(rng) for _ in range(200)]
    for config in samples:
        space.validate(config)
        assert count_params(smallest) <= count_params(config) <= count_params(largest)
    assert len({c.key for c in samples}) > 190
    assert space.sample(random.Random(5)) == space.sample(5)  # seeded
    # the sampler reaches every choice
    for index, stage in enumerate(space.stages):
        assert {c.stages[index].width for c in samples} == set(stage.widths)
        assert {c.stages[index].depth for c in samples} == set(range(stage.min_depth, stage.max_depth + 1))
        assert any(c.stages[index].num_mhsa for c in samples) == stage.mhsa


def _with(config, stage, width=None, blocks=None):
    current = config.stages[stage]
    return config.replace_stage(stage, StageConfig(width or current.width, blocks or current.blocks))


def test_invalid_configs_are_named():
    space = get_space("efficientformerv2")
    s0 = PRESETS["S0"]
    cases = [
        (_with(s0, 2, width=100), "stage 3: width 100 is not in space 'efficientformerv2'; expected one of 64, 72"),
        (_with(s0, 2, blocks=(BlockConfig(5),) + s0.stages[2].blocks[1:]),
         "stage 3 block 1: expansion 5 is not in space 'efficientformerv2'; expected one of 1, 2, 3, 4"),
        (_with(s0, 0, blocks=(BlockConfig(4, True),) + s0.stages[0].blocks[1:]),
         r"stage 1 block 1 carries MHSA \(A4\), but MHSA may only sit in stage\(s\) 3, 4"),
        (_with(s0, 1, blocks=(None,) * 5), "stage 2 keeps no block; expected at least 1"),
        (_with(s0, 1, blocks=(BlockConfig(4),)), "stage 2: 1 block entries; space 'efficientformerv2' has 5"),
    ]
    for config, message in cases:
        with pytest.raises(InvalidInputError, match=message):
            space.validate(config)
    from dataclasses import replace
    with pytest.raises(InvalidInputError, match="resolution 256 is not the resolution"):
        space.validate(replace(s0, resolution=256))
    with pytest.raises(InvalidInputError, match="stem_width 40 must equal the stage-1 width 32"):
        space.validate(replace(s0, stem_width=40))
    with pytest.raises(InvalidInputError, match="belongs to space 'efficientformerv2', not to"):
        get_space("efficientformerv2-tiny").validate(s0)
    with pytest.raises(InvalidInputError, match="has 3 stages"):
        space.validate(replace(s0, stages=s0.stages[:3]))


def test_mhsa_in_stage_two_from_yaml():
    text = PRESETS["S0"].to_yaml().replace("blocks: [F4, F4, '-', '-', '-']\n- width: 96",
                                           "blocks: [F4, A4, '-', '-', '-']\n- width: 96")
    config = parse_config_text(text)[0]
    with pytest.raises(InvalidInputError, match="stage 2 block 2 carries MHSA"):
        validate(config)


def test_moves():
    space = get_space("efficientformerv2")
    s0 = PRESETS["S0"]
    narrower = space.shrink_width(s0, 2)
    assert narrower.stages[2].width == 88 and narrower.stages[2].blocks == s0.stages[2].blocks
    stem = space.shrink_width(s0, 0)
    assert stem.stages[0].width == 24 and stem.stem_width == 24 and space.validate(stem)
    assert space.shrink_expansion(s0, 2, 1).stages[2].blocks[1] == BlockConfig(2)
    assert space.shrink_expansion(s0, 2, 4).stages[2].blocks[4] == BlockConfig(3, True)
    assert space.shrink_expansion(s0, 2, 9) is None  # dropped block
    assert space.drop_block(s0, 3, 0).stages[3].depth == 3
    assert space.drop_block(s0, 3, 9) is None
    assert space.drop_mhsa(s0, 3, 3).stages[3].blocks[3] == BlockConfig(4, False)
    assert space.drop_mhsa(s0, 3, 0) is None
    smallest = space.smallest()
    assert space.moves(smallest) == []
    for move, after in space.moves(s0):
        assert space.validate(after) != s0
        assert count_params(after) < count_params(s0)
        assert space.apply(s0, move) == after
    kinds = {m.kind for m, _ in space.moves(s0)}
    assert kinds == {"width", "expansion", "drop_block", "drop_mhsa"}
    assert str(Move("drop_block", 2, 4)) == "drop_block s3.b5"
    assert all(m.kind == "width" for m, _ in space.moves(s0, kinds=("width",)))


def test_every_move_shrinks_and_a_walk_reaches_the_smallest():
    space = get_space("efficientformerv2-tiny")
    config = space.largest()
    rng = random.Random(0)
    while True:
        moves = space.moves(config)
        if not moves:
            break
        for move, after in moves:
            before, later = network_costs(config), network_costs(after)
            assert later.params < before.params and later.macs < before.macs, move
        config = rng.choice(moves)[1]
    assert config.widths == space.smallest().widths
    assert config.depths == space.smallest().depths


def test_space_size_and_description():
    space = get_space("efficientformerv2-tiny")
    # stage 1: 3 widths * (C(2,1)*4 + C(2,2)*16) = 3 * 24
    assert space.size() % 72 == 0
    description = space.describe()
    assert description["stages"][2]["feature_map"] == "4x4"
