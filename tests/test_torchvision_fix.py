import subprocess
import sys


def test_timm_and_torchvision_import_through_the_project():
    code = ("from search_spaces._torchvision_fix import ensure_torchvision; ensure_torchvision(); "
            "import timm, torchvision; from torchvision import transforms; "
            "from timm.data import create_transform; "
            "t = create_transform(32, is_training=True, auto_augment='rand-m9-mstd0.5'); "
            "ensure_torchvision(); print('ok', torchvision.__version__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_fix_leaves_a_working_import_alone():
    # after a successful import, a second call must not redefine anything
    code = ("import search_spaces._torchvision_fix as f; f.ensure_torchvision(); lib = f._library; "
            "f.ensure_torchvision(); assert f._library is lib; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_every_module_that_uses_timm_imports_alone():
    """Each module imports in a fresh interpreter, with nothing imported before it: the project's
    first timm import (search_spaces.model, which repairs torchvision) comes before its own."""
    uses = {"supernet.elastic": "", "supernet.data": "", "supernet.train": "",
            "latency_lut.blocks": "",
            "latency_lut.profiling": "latency_lut.profiling.reference_model(); "
                                     "latency_lut.profiling.library_versions('torch-cpu')",
            "supernet.recipe": "supernet.recipe.load_recipe('fashion-mnist-tiny')"}
    runs = {module: subprocess.Popen([sys.executable, "-c", f"import {module}; {use}"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
            for module, use in uses.items()}
    for module, run in runs.items():
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, f"{module}: {err[-2000:]}"
