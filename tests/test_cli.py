"""The ``nas`` command line as users type it (subprocesses of the real entry point)."""
import yaml

from conftest import nas_main

from search_spaces import PRESETS, get_space, parse_config_text


def test_space_presets(nas_cli):
    result = nas_cli("space", "presets")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["preset", "params_m", "paper_params_m"]
    s0 = lines[1].split()
    assert s0[0] == "S0" and s0[1] == "3.549" and s0[4] == "0.397"
    assert "102.869" in lines[1]  # MES of the paper's 3.5M / 0.9 ms


def test_space_show(nas_cli):
    result = nas_cli("space", "show", "--space", "efficientformerv2-tiny@32")
    assert result.returncode == 0, result.stderr
    description = yaml.safe_load(result.stdout)
    assert description["resolution"] == 32 and len(description["stages"]) == 4
    assert nas_cli("space", "show").returncode == 0


def test_space_sample_is_seeded_yaml(nas_cli, tmp_path):
    result = nas_cli("space", "sample", "--space", "efficientformerv2-tiny", "-n", "5", "--seed", "0")
    assert result.returncode == 0, result.stderr
    configs = parse_config_text(result.stdout)
    assert len(configs) == 5
    space = get_space("efficientformerv2-tiny")
    for config in configs:
        space.validate(config)
    again = nas_cli("space", "sample", "--space", "efficientformerv2-tiny", "-n", "5", "--seed", "0")
    assert again.stdout == result.stdout
    other = nas_cli("space", "sample", "--space", "efficientformerv2-tiny", "-n", "5", "--seed", "1")
    assert other.stdout != result.stdout
    # the output validates as a file
    path = tmp_path / "sampled.yaml"
    path.write_text(result.stdout)
    checked = nas_cli("space", "validate", path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.count("ok  efficientformerv2-tiny") == 5


def test_model_summary_of_preset_and_file(nas_cli, tmp_path):
    result = nas_cli("model", "summary", "S0")
    assert result.returncode == 0, result.stderr
    assert "params      3.549 M" in result.stdout and "MACs        0.397 G" in result.stdout
    assert result.stdout.count("\nmhsa ") == 4 and result.stdout.count("\nffn ") == 14
    path = tmp_path / "s1.yaml"
    path.write_text(PRESETS["S1"].to_yaml())
    from_file = nas_cli("model", "summary", path)
    assert from_file.returncode == 0 and "params      6.111 M" in from_file.stdout


def _assert_clean_error(result, *fragments):
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("nas: error:") or "error:" in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_bad_input_exits_2_without_traceback(nas_cli, tmp_path):
    # one through the real console entry point, the rest in-process (same parser and handlers)
    _assert_clean_error(nas_cli("space", "show", "--space", "resnet"), "unknown search space 'resnet'")
    nas_cli = nas_main
    _assert_clean_error(nas_cli("model", "summary", "S9"), "'S9' is neither a preset")
    malformed = tmp_path / "bad.yaml"
    malformed.write_text("space: [efficientformerv2\n")
    _assert_clean_error(nas_cli("space", "validate", malformed), "malformed YAML")
    text = PRESETS["S0"].to_yaml()
    cases = {
        "width.yaml": (text.replace("- width: 96", "- width: 100"), "width 100 is not in space"),
        "expansion.yaml": (text.replace("[F4, F3, F3, F3, A4, A4", "[F4, F7, F3, F3, A4, A4"), "expansion 7"),
        "mhsa.yaml": (text.replace("blocks: [F4, F4, '-', '-', '-']\n- width: 48",
                                   "blocks: [A4, F4, '-', '-', '-']\n- width: 48"), "stage 1 block 1 carries MHSA"),
        "empty.yaml": (text.replace("blocks: [F4, F4, '-', '-', '-']\n- width: 96",
                                    "blocks: ['-', '-', '-', '-', '-']\n- width: 96"), "stage 2 keeps no block"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_text(content)
        _assert_clean_error(nas_cli("space", "validate", path), message)
        _assert_clean_error(nas_cli("model", "summary", path), message)
    _assert_clean_error(nas_cli("space", "sample", "-n", "0"), "-n 0")
    _assert_clean_error(nas_cli("space", "validate", tmp_path / "missing.yaml"), "does not exist")
    # argparse's own errors exit 2 too
    assert nas_cli("space", "frobnicate").returncode == 2


def test_console_script_is_installed():
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "nas"
    assert script.exists() or shutil.which("nas")
    result = subprocess.run([str(script) if script.exists() else "nas", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "space" in result.stdout


def test_building_the_command_line_loads_no_torch():
    """`nas --help` and argparse's errors answer at once: torch loads in the commands that use it."""
    import subprocess
    import sys

    code = ("import sys; from nas.cli import build_parser; build_parser(); "
            "heavy = [m for m in ('torch', 'timm', 'numpy', 'pandas', 'optuna') if m in sys.modules]; "
            "assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-1000:]
