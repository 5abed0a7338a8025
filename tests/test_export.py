"""`nas export`: a searched config with supernet weights as ONNX (checked by a real ONNX Runtime
session), TorchScript and Core ML (converted here; running it needs macOS); bad input."""
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from conftest import nas_main
from nas import export
from search_spaces import get_space, save_config
from supernet.data import Splits
from supernet.retrain import load_network
from supernet.checkpoint import load_supernet

SPACE = get_space("efficientformerv2-tiny@32")


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_supernet_run):
    """A config file, its network with the supernet's weights, and real test images."""
    folder = tmp_path_factory.mktemp("export")
    config = SPACE.sample(3)
    model, _ = load_network(tiny_supernet_run, config)
    _, recipe = load_supernet(tiny_supernet_run)
    images = next(iter(Splits(recipe, 32).eval_loader("test", batch_size=3)))[0]
    return save_config(config, folder / "config.yaml"), model, images


def _export(config, weights, fmt, out):
    result = nas_main("export", config, "--weights", weights, "--format", fmt, "--out", out)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_onnx_equals_pytorch_on_real_images(searched, tiny_supernet_run, tmp_path):
    config, model, images = searched
    out = tmp_path / "net.onnx"
    stdout = _export(config, tiny_supernet_run, "onnx", out)
    assert "outputs equal PyTorch's" in stdout
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"  # any batch size, here 3
    onnx_logits = session.run(["y"], {"x": images.numpy()})[0]
    with torch.no_grad():
        torch_logits = model(images).numpy()
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4, rtol=1e-4)
    assert (onnx_logits.argmax(1) == torch_logits.argmax(1)).all()


def test_torchscript_and_coreml(searched, tiny_supernet_run, tmp_path):
    config, model, images = searched
    _export(config, tiny_supernet_run, "torchscript", tmp_path / "net.pt")
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(str(tmp_path / "net.pt"))(images), model(images), atol=1e-5)
    _export(config, tiny_supernet_run, "coreml", tmp_path / "net.mlpackage")
    from latency_lut.coreml import import_coremltools

    ct = import_coremltools()
    spec = ct.utils.load_spec(str(tmp_path / "net.mlpackage"))
    assert spec.WhichOneof("Type") == "mlProgram"  # an ML program (iOS 16+), not a neural network
    assert spec.description.input[0].name == "x"
    assert list(spec.description.input[0].type.multiArrayType.shape) == [1, 3, 32, 32]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left


def test_bad_export_inputs_leave_no_file(searched, tiny_supernet_run, tmp_path, monkeypatch):
    config, _, _ = searched

    def error(*args):
        result = nas_main("export", *args)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        return result.stderr

    assert "space 'efficientformerv2'" in error("S0", "--weights", tiny_supernet_run, "--format", "onnx",
                                                "--out", tmp_path / "s0.onnx")
    assert "invalid choice: 'tflite'" in error(config, "--weights", tiny_supernet_run, "--format", "tflite",
                                               "--out", tmp_path / "x.tflite")
    assert "expected a name ending in .onnx" in error(config, "--weights", tiny_supernet_run, "--format", "onnx",
                                                      "--out", tmp_path / "x.pt")
    assert "do not exist" in error(config, "--weights", tmp_path / "nope", "--format", "onnx",
                                   "--out", tmp_path / "x.onnx")
    # the ONNX check refuses a mismatch (here: a tolerance of zero) and writes nothing
    monkeypatch.setattr(export, "TOLERANCE", 0.0)
    assert "differ from PyTorch's" in error(config, "--weights", tiny_supernet_run, "--format", "onnx",
                                            "--out", tmp_path / "x.onnx")
    # a machine without coremltools
    monkeypatch.setitem(sys.modules, "coremltools", None)
    assert "pip install coremltools" in error(config, "--weights", tiny_supernet_run, "--format", "coreml",
                                              "--out", tmp_path / "x.mlpackage")
    assert list(tmp_path.iterdir()) == []
