"""`nas train CONFIG`: one network from scratch through the supernet's training machinery, with
and without a teacher, resumed, loaded back; and its bad inputs. Real Fashion-MNIST, tiny@32."""
import json

import pytest
import torch

from conftest import nas_main, run_nas
from search_spaces import PRESETS, InvalidInputError, get_space, save_config
from supernet.evaluate import evaluate
from supernet.retrain import load_network
from supernet.checkpoint import CHECKPOINT, load_checkpoint
from test_train import read_steps, small_recipe

SPACE = get_space("efficientformerv2-tiny@32")


def _config(tmp_path, seed=1):
    config = SPACE.sample(seed)
    return config, save_config(config, tmp_path / "config.yaml")


def test_train_resume_and_load_a_network(tmp_path):
    config, path = _config(tmp_path)
    run = tmp_path / "net"
    recipe = small_recipe(tmp_path, epochs=1)
    result = run_nas("train", path, "--recipe", recipe, "--out", run, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "val_top1" in result.stdout and config.key in result.stdout
    checkpoint = load_checkpoint(run / CHECKPOINT, "network")
    assert checkpoint["kind"] == "network" and checkpoint["global_step"] == 10 and checkpoint["teacher"] is None
    # resumed to a second epoch: steps 11..20 follow 1..10, the cosine schedule spans 2 epochs now
    result = run_nas("train", path, "--recipe", recipe, "--out", run, "--resume", "--epochs", "2", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert [s["global_step"] for s in read_steps(run)] == list(range(1, 21))
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [0, 1] and metrics[1]["loss"] < metrics[0]["loss"]
    # the weights come back as the config's timm network, with the logged accuracy
    model, loaded = load_network(run, config)
    assert loaded.key == config.key and not model.training
    state = load_checkpoint(run / CHECKPOINT, "network")["model"]
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    from supernet.data import Splits
    from supernet.recipe import load_recipe

    splits = Splits(load_recipe(recipe), 32)
    assert abs(evaluate(model, splits.eval_loader("val")).top1 - metrics[1]["val_top1"]) < 1e-3  # logged rounded
    # and exported from its checkpoint file: the ONNX network computes the trained network's logits
    exported = nas_main("export", path, "--weights", run / CHECKPOINT, "--format", "onnx", "--out", tmp_path / "n.onnx")
    assert exported.returncode == 0 and "outputs equal PyTorch's" in exported.stdout, exported.stderr
    import onnxruntime as ort

    images = next(iter(splits.eval_loader("test", batch_size=4)))[0]
    logits = ort.InferenceSession(str(tmp_path / "n.onnx")).run(["y"], {"x": images.numpy()})[0]
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(logits), model(images), atol=1e-4)


def test_distil_from_the_supernet(tmp_path, tiny_supernet_run):
    config, path = _config(tmp_path, seed=2)
    run = tmp_path / "student"
    recipe = small_recipe(tmp_path, epochs=1, distillation="soft", distill_tau=2.0)
    result = run_nas("train", path, "--recipe", recipe, "--out", run, "--teacher", tiny_supernet_run,
                     "--no-progress")
    assert result.returncode == 0, result.stderr
    steps = read_steps(run)
    assert len(steps) == 10 and all({"loss", "classify", "distill"} <= set(s) for s in steps)
    assert all(abs(s["loss"] - 0.5 * (s["classify"] + s["distill"])) < 1e-4 for s in steps)
    assert load_checkpoint(run / CHECKPOINT, "network")["teacher"] == str(tiny_supernet_run.resolve())
    # a resume must keep the teacher
    result = nas_main("train", path, "--recipe", recipe, "--out", run, "--resume", "--epochs", "2")
    assert result.returncode == 2 and "--teacher" in result.stderr
    # the teacher is the supernet's largest config with recalibrated BatchNorm
    teacher, teacher_config = load_network(tiny_supernet_run)
    assert teacher_config == SPACE.largest() and not teacher.training


def test_bad_inputs(tmp_path, tiny_supernet_run):
    config, path = _config(tmp_path)
    recipe = small_recipe(tmp_path, epochs=1)
    # a config of another space than the recipe's
    result = nas_main("train", "s0", "--recipe", recipe, "--out", tmp_path / "a")
    assert result.returncode == 2 and "efficientformerv2" in result.stderr and "recipe" in result.stderr
    assert not (tmp_path / "a").exists()
    # a supernet run folder is not a network run to resume, nor an --out to overwrite
    result = nas_main("train", path, "--recipe", recipe, "--out", tiny_supernet_run, "--resume")
    assert result.returncode == 2 and "network" in result.stderr
    result = nas_main("train", path, "--recipe", recipe, "--out", tiny_supernet_run)
    assert result.returncode == 2 and "already holds a run" in result.stderr
    # weights and config of different spaces; a missing teacher
    with pytest.raises(InvalidInputError, match="efficientformerv2-tiny@32"):
        load_network(tiny_supernet_run, PRESETS["S0"])
    result = nas_main("train", path, "--recipe", recipe, "--out", tmp_path / "b", "--teacher", tmp_path / "nope")
    assert result.returncode == 2 and "nope" in result.stderr and not (tmp_path / "b").exists()
    result = nas_main("train", path, "--recipe", recipe, "--out", tmp_path / "c", "--epochs", "0")
    assert result.returncode == 2 and "--epochs 0" in result.stderr
