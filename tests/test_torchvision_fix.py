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
