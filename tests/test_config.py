import json
import random

import pytest

from search_spaces import (
    PRESETS,
    BlockConfig,
    InvalidInputError,
    StageConfig,
    SubnetConfig,
    get_space,
    load_config,
    load_configs,
    parse_config_text,
    save_config,
)

SPACES = ["efficientformerv2", "efficientformerv2-tiny", "efficientformerv2-tiny@32"]


def _configs():
    configs = list(PRESETS.values())
    for name in SPACES:
        space = get_space(name)
        rng = random.Random(1)
        configs += [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(20)]
    return configs


def test_round_trips_are_exact(tmp_path):
    for i, config in enumerate(_configs()):
        assert SubnetConfig.from_dict(config.to_dict()) == config
        assert parse_config_text(config.to_yaml()) == [config]
        assert parse_config_text(config.to_json()) == [config]
        assert SubnetConfig.from_key(config.space, config.key) == config
        # text -> config -> text is exact too
        assert parse_config_text(config.to_yaml())[0].to_yaml() == config.to_yaml()
        assert json.loads(parse_config_text(config.to_json())[0].to_json()) == json.loads(config.to_json())
        for suffix in (".yaml", ".json"):
            path = save_config(config, tmp_path / f"c{i}{suffix}")
            assert load_config(path) == config


def test_key_is_canonical_and_distinct():
    configs = _configs()
    keys = {c.key for c in configs}
    assert len(keys) == len({(c.space, c.key) for c in configs}) == len(set(configs))
    assert PRESETS["S0"].key == ("r224_c32_s32-F4F4xxx_s48-F4F4xxx_s96-F4F3F3F3A4A4xxxxxxxxx_"
                                 "s176-F4F3A3A4xxxxxx")
    for key in keys:
        assert all(ch.isalnum() or ch in "_-" for ch in key)


def test_config_is_frozen_and_hashable():
    config = PRESETS["S1"]
    with pytest.raises(Exception):
        config.resolution = 256
    assert {config: 1}[PRESETS["S1"]] == 1


def test_yaml_form_is_readable():
    text = PRESETS["S0"].to_yaml()
    assert "blocks: [F4, F3, F3, F3, A4, A4, '-'," in text
    assert text.startswith("space: efficientformerv2\nresolution: 224\nstem_width: 32\n")


def test_multi_document_file(tmp_path):
    path = tmp_path / "many.yaml"
    path.write_text("---\n".join(c.to_yaml() for c in PRESETS.values()))
    assert load_configs(path) == list(PRESETS.values())
    with pytest.raises(InvalidInputError, match="expected one config, found 4"):
        load_config(path)


@pytest.mark.parametrize("text, message", [
    ("space: [unclosed", "malformed YAML"),
    ("", "empty"),
    ("- 1\n- 2", "expected a mapping"),
    ("space: efficientformerv2\nresolution: 224\nstem_width: 32", "missing key"),
    ("space: efficientformerv2\nresolution: 224\nstem_width: 32\nstages: []\ncolour: red", "unknown key"),
    ("space: efficientformerv2\nresolution: -3\nstem_width: 32\nstages: [{width: 8, blocks: [F4]}]",
     "resolution: expected a positive integer, got -3"),
    ("space: efficientformerv2\nresolution: 224\nstem_width: 32\nstages: [{width: 8, blocks: [F4, B2]}]",
     "'B2' is not a block"),
    ("space: efficientformerv2\nresolution: 224\nstem_width: 32\nstages: [{width: 8, blocks: [F0]}]",
     "'F0' is not a block"),
])
def test_malformed_input_is_named(text, message):
    with pytest.raises(InvalidInputError, match=message):
        parse_config_text(text, source="in.yaml")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_bad_key():
    with pytest.raises(InvalidInputError, match="not a config key"):
        SubnetConfig.from_key("efficientformerv2", "r224_bogus")


def test_stage_helpers():
    stage = StageConfig(96, (BlockConfig(4), None, BlockConfig(3, True)))
    assert stage.depth == 2 and stage.num_mhsa == 1
    assert stage.kept == [(0, BlockConfig(4)), (2, BlockConfig(3, True))]


def test_saved_files_get_the_usual_mode(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        path = save_config(PRESETS["S0"], tmp_path / "s0.yaml")
        assert path.stat().st_mode & 0o777 == 0o644
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left
    finally:
        os.umask(mask)
