"""Process-wide settings are made by the programs, never by the library (search_spaces.runtime)."""
import json
import os
import subprocess
import sys

from conftest import ROOT

PROBE = ("import torch; flushed = lambda: (torch.tensor([1e-20]) * torch.tensor([1e-20])).item() == 0.0\n")


def _python(code: str, **env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE + code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, **env))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_library_leaves_the_process_alone_and_says_what_it_misses(tmp_path):
    """Importing and using the library changes neither denormal handling nor matplotlib's backend;
    measuring without the settings warns once, naming the call that makes them."""
    result = _python(
        "import warnings, matplotlib, pandas as pd\n"
        "import supernet.train, nas.objectives, latency_lut.validation as v\n"
        "from latency_lut.profiling import Backend\n"
        "from latency_lut.validation import Accuracy, ValidationReport\n"
        "before = matplotlib.get_backend()\n"
        "frame = pd.DataFrame({'key': ['a', 'b'], 'split': ['fit', 'holdout'], 'raw_sum_ms': [1.0, 2.0],\n"
        "                      'calibrated_ms': [1.1, 2.1], 'measured_ms': [1.0, 2.2]})\n"
        "acc = Accuracy(networks=1, pearson_r=1.0, kendall_tau=1.0, mape_pct=5.0, within_5_pct=50.0,\n"
        "               within_10_pct=100.0)\n"
        f"v.write_report(ValidationReport(frame=frame, raw=acc, calibrated=acc, calibration=None), "
        f"r'{tmp_path}/r.csv', r'{tmp_path}/r.png')\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    for _ in range(2):\n"
        "        with Backend('torch-cpu').session():\n"
        "            pass\n"
        "import json; print(json.dumps({'flushed': flushed(), 'backend': [before, matplotlib.get_backend()],\n"
        "    'warnings': [str(w.message) for w in caught]}))",
        MPLBACKEND="svg")
    assert not result["flushed"]
    assert result["backend"] == ["svg", "svg"]
    assert len(result["warnings"]) == 1 and "configure_process()" in result["warnings"][0]
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_the_nas_command_makes_the_settings_for_commands_that_compute():
    result = _python(
        "import contextlib, io, json\n"
        "from nas.cli import main\n"
        "codes = []\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    codes.append(main(['space', 'presets']))\n"
        "after_light = flushed()\n"
        "with contextlib.redirect_stderr(io.StringIO()):\n"
        "    codes.append(main(['eval-subnet', '--supernet', 'no-such-run', 'S0']))\n"
        "print(json.dumps({'codes': codes, 'after_light': after_light, 'after_compute': flushed()}))")
    assert result == {"codes": [0, 2], "after_light": False, "after_compute": True}
