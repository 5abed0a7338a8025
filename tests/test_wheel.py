"""A built wheel works as well as the editable install: installed outside the source tree, its
`nas` trains on a shipped recipe by name."""
import json
import shutil
import subprocess
import sys
import sysconfig
import time
import venv
from pathlib import Path

from conftest import ROOT


def test_a_wheel_installed_elsewhere_trains_on_its_shipped_recipe(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside the sources
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "runs", "build", "*.egg-info", "__pycache__"))
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                            "--wheel-dir", str(wheels), str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = wheels.glob("efficientformerv2_nas-*.whl")
    # a fresh environment whose dependencies are already present: this one's site-packages, after its own
    env = tmp_path / "env"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                                "--no-index", "--quiet", str(wheel)], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"  # no source tree here or above
    elsewhere.mkdir()
    where = subprocess.run([str(python), "-c", "import supernet; print(supernet.__file__)"], cwd=elsewhere,
                           capture_output=True, text=True, check=True).stdout
    assert str(site) in where and str(ROOT) not in where
    # the shipped recipe by name, a few steps (killed once they are logged; the recipe trains one long epoch)
    run = elsewhere / "run"
    process = subprocess.Popen([str(env / "bin" / "nas"), "train-supernet", "--recipe", "fashion-mnist-tiny", "--out",
                                str(run), "--no-progress"], cwd=elsewhere, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    steps = run / "steps.jsonl"
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        if steps.exists() and len(steps.read_text().splitlines()) >= 2:
            break
        time.sleep(0.5)
    running = process.poll() is None
    process.kill()
    _, stderr = process.communicate()
    assert running, stderr[-2000:]
    assert all(json.loads(line)["global_step"] >= 1 for line in steps.read_text().splitlines()[:2])
    assert "space: efficientformerv2-tiny" in (run / "recipe.yaml").read_text()
    # the user's own recipe file still works by path
    own = elsewhere / "mine.yaml"
    own.write_text((run / "recipe.yaml").read_text().replace("epochs: 1", "epochs: 0"))
    refused = subprocess.run([str(env / "bin" / "nas"), "train-supernet", "--recipe", str(own), "--out",
                              str(elsewhere / "run2")], cwd=elsewhere, capture_output=True, text=True)
    assert refused.returncode == 2 and f"{own}: epochs = 0" in refused.stderr
