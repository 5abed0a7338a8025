"""benchmarks/device_check.py (the GPU path's check) at test size on the CPU: every stage runs."""
import re
import subprocess
import sys

from conftest import ROOT


def test_device_check_runs_every_stage_on_the_cpu(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--device", "cpu", "--space",
         "efficientformerv2-tiny@32", "--steps", "2", "--batch", "8", "--classes", "4", "--repeats", "2",
         "--lut-space", "efficientformerv2-tiny@32", "--lut-runs", "3", "--validate", "2", "--evaluations", "2",
         "--work", str(tmp_path)], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for stage in ("1/4 training", "2/4 overhead", "3/4 latency table", "4/4 search evaluations"):
        assert f"== {stage}" in out
    assert re.search(r"2 steps in [\d.]+ s \([\d.]+ steps/s, AMP off\)", out)
    assert re.search(r"train step +supernet +[\d.]+ ms +static timm +[\d.]+ ms +ratio [\d.]+", out)
    assert re.search(r"held-out 2 networks: MAPE [\d.]+%", out)
    assert re.search(r"[\d.]+ evaluations per second", out)
    assert (tmp_path / "images" / "train").is_dir() and (tmp_path / "supernet" / "checkpoint.pt").is_file()
