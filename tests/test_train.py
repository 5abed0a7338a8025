"""Training end to end on real Fashion-MNIST images at small size: CLI, resume after SIGKILL,
torchrun with gloo, evaluation, and every bad input."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, nas_main, run_nas
from search_spaces import InvalidInputError, get_space, save_config
from supernet.data import ResumableSampler, Splits
from supernet.recipe import Recipe, load_recipe
from supernet.checkpoint import CHECKPOINT, CHECKPOINT_FORMAT, load_checkpoint, load_supernet

SMALL = {
    "space": "efficientformerv2-tiny@32", "max_train_images": 320, "val_split": 128, "epochs": 2,
    "batch_size": 32, "checkpoint_every_steps": 4, "eval_images": 128, "warmup_epochs": 0.1,
    "threads": 1, "channels_last": False,  # at 32 px, batch 32, 1 thread the contiguous layout is faster
}


def small_recipe(tmp_path: Path, **changes) -> Path:
    data = load_recipe("fashion-mnist-tiny").to_dict()
    data.update(SMALL, **changes)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def read_steps(run: Path) -> list[dict]:
    """Complete lines only: a line may be half written while a run is alive (or torn by a kill)."""
    rows = []
    for line in (run / "steps.jsonl").read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


def expected_first_indices(recipe: Recipe) -> list[int]:
    """The first image of every batch of an uninterrupted run, from the sampler alone."""
    train, _ = Splits(recipe, 32).held_out()
    sampler = ResumableSampler(len(train), recipe.seed, recipe.batch_size)
    firsts = []
    for epoch in range(recipe.epochs):
        sampler.set_epoch(epoch)
        order = list(sampler)
        firsts += [train[order[b * recipe.batch_size]] for b in range(sampler.batches_per_epoch)]
    return firsts


def test_train_and_evaluate_through_the_cli(tmp_path):
    run = tmp_path / "run"
    result = run_nas("train-supernet", "--recipe", small_recipe(tmp_path), "--out", run, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "val_top1_largest" in result.stdout
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [0, 1]
    assert {"loss_largest", "loss_smallest", "loss_random", "lr", "val_top1_largest", "val_top1_smallest"} <= set(
        metrics[0])
    assert metrics[1]["loss_largest"] < metrics[0]["loss_largest"]  # it learns
    steps = read_steps(run)
    assert [s["global_step"] for s in steps] == list(range(1, 21))
    assert yaml.safe_load((run / "recipe.yaml").read_text())["space"] == "efficientformerv2-tiny@32"
    assert json.loads((run / "environment.json").read_text())["torch"] == torch.__version__
    checkpoint = load_checkpoint(run / CHECKPOINT)
    assert checkpoint["finished"] and checkpoint["global_step"] == 20
    # evaluation after recalibration, on the held-out split and on the test set
    evaluated = run_nas("eval-subnet", "--supernet", run, small_recipe(tmp_path).parent / "cfg.yaml")
    assert evaluated.returncode == 2  # no such config file yet
    supernet, _ = load_supernet(run)
    config = supernet.space.sample(3)
    (tmp_path / "cfg.yaml").write_text(config.to_yaml())
    for split in ("val", "test"):
        evaluated = run_nas("eval-subnet", "--supernet", run, tmp_path / "cfg.yaml", "--split", split,
                            "--images", "64")
        assert evaluated.returncode == 0, evaluated.stderr
        assert f"split {split}  top-1" in evaluated.stdout and "(64 images" in evaluated.stdout
    wrong_space = run_nas("eval-subnet", "--supernet", run, "S0")
    assert wrong_space.returncode == 2 and "belongs to space 'efficientformerv2'" in wrong_space.stderr


def test_channels_last_trains_the_same_steps_in_channels_last_layout(tmp_path):
    from supernet.evaluate import evaluate_config
    from supernet.protocol import EvalProtocol
    from supernet.train import train_supernet

    recipe = Recipe.from_dict({**load_recipe("fashion-mnist-tiny").to_dict(), **SMALL, "epochs": 1,
                               "max_train_images": 96})
    runs = {layout: tmp_path / str(layout) for layout in (False, True)}
    for layout, run in runs.items():
        train_supernet(recipe.replace(channels_last=layout), run, progress=False)
    stem = "stem.conv1.conv.weight"  # a 3x3 convolution: its two layouts differ in strides
    weights = {layout: load_checkpoint(run / CHECKPOINT)["model"][stem] for layout, run in runs.items()}
    assert weights[True].is_contiguous(memory_format=torch.channels_last) and not weights[True].is_contiguous()
    assert weights[False].is_contiguous()
    # the same three sandwich steps up to float rounding, and the checkpoints evaluate alike
    plain, last = read_steps(runs[False]), read_steps(runs[True])
    assert len(plain) == len(last) == 3
    for a, b in zip(plain, last):
        assert a["first_index"] == b["first_index"]
        for role in ("largest", "smallest", "random"):
            assert b[role] == pytest.approx(a[role], rel=1e-3)
    protocol = EvalProtocol(split="val", images=64)
    config = get_space(recipe.space).largest()
    top1 = [evaluate_config(run, config, protocol).top1 for run in runs.values()]
    assert top1[1] == pytest.approx(top1[0], abs=1.6)  # at most one of 64 images flips


def test_sigkill_mid_epoch_then_resume_loses_and_repeats_no_step(tmp_path):
    recipe_path = small_recipe(tmp_path, checkpoint_every_steps=3)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "nas.cli", "train-supernet", "--recipe", str(recipe_path), "--out", str(run),
               "--no-progress"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline:
        if (run / "steps.jsonl").exists() and len(read_steps(run)) >= 5:
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    checkpoint = load_checkpoint(run / CHECKPOINT)
    saved_step = checkpoint["global_step"]
    assert 3 <= saved_step < 10 and checkpoint["batch"] > 0  # mid-epoch
    assert len(read_steps(run)) >= saved_step
    resumed = run_nas("train-supernet", "--recipe", recipe_path, "--out", run, "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    steps = read_steps(run)
    assert [s["global_step"] for s in steps] == list(range(1, 21))
    recipe = load_recipe(recipe_path)
    assert [s["first_index"] for s in steps] == expected_first_indices(recipe)
    assert load_checkpoint(run / CHECKPOINT)["finished"]


@pytest.mark.parametrize("command", ["train-supernet", "train"])
def test_torchrun_two_processes_gloo(tmp_path, command):
    """The supernet, and a network from scratch (`nas train`, the same loop), under torchrun."""
    recipe_path = small_recipe(tmp_path, epochs=1, max_train_images=256, val_split=64)
    run = tmp_path / "run"
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    what = [] if command == "train-supernet" else [str(save_config(get_space(SMALL["space"]).sample(0),
                                                                   tmp_path / "config.yaml"))]
    result = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "nas.cli", command, *what,
                             "--recipe", str(recipe_path), "--out", str(run), "--no-progress"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    steps = read_steps(run)
    # 256 images, global batch 2 x 32: 4 steps, logged once (rank 0)
    assert [s["global_step"] for s in steps] == [1, 2, 3, 4]
    environment = json.loads((run / "environment.json").read_text())
    assert environment["world_size"] == 2
    checkpoint = load_checkpoint(run / CHECKPOINT, "supernet" if command == "train-supernet" else "network")
    assert len(checkpoint["rng"]) == 2 and checkpoint["finished"]
    # lr scaled by the global batch
    assert checkpoint["optimizer"]["param_groups"][0]["initial_lr"] == pytest.approx(
        load_recipe(recipe_path).lr(world_size=2))


def _error(result):
    assert result.returncode == 2, (result.stdout[-500:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    return result.stderr


def test_bad_inputs_leave_nothing_half_written(tmp_path):
    run_nas = nas_main  # in-process: the same parser and handlers, no interpreter start-up per case
    base = load_recipe("fashion-mnist-tiny").to_dict()
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(dict(base, learning_rate=0.1)))
    assert "unknown key(s) 'learning_rate'" in _error(run_nas("train-supernet", "--recipe", bad, "--out",
                                                              tmp_path / "r1"))
    bad.write_text(yaml.safe_dump(dict(base, epochs="ten")))
    assert "epochs = 'ten'; expected an integer" in _error(run_nas("train-supernet", "--recipe", bad, "--out",
                                                                   tmp_path / "r1"))
    bad.write_text(yaml.safe_dump(dict(base, space="efficientformerv3")))
    assert "unknown search space" in _error(run_nas("train-supernet", "--recipe", bad, "--out", tmp_path / "r1"))
    assert "does not exist" in _error(run_nas("train-supernet", "--recipe", tmp_path / "none.yaml", "--out",
                                              tmp_path / "r1"))
    missing = _error(run_nas("train-supernet", "--recipe", small_recipe(tmp_path), "--out", tmp_path / "r1",
                             "--data-dir", tmp_path / "empty"))
    assert "Fashion-MNIST not found" in missing and "--download" in missing
    assert not (tmp_path / "r1").exists()
    assert "no checkpoint to resume" in _error(run_nas("train-supernet", "--recipe", small_recipe(tmp_path),
                                                       "--out", tmp_path / "r1", "--resume"))
    # a corrupted checkpoint, and a checkpoint of another space
    run = tmp_path / "r2"
    run.mkdir()
    (run / CHECKPOINT).write_bytes(b"not a checkpoint")
    assert "corrupted" in _error(run_nas("train-supernet", "--recipe", small_recipe(tmp_path), "--out", run,
                                         "--resume"))
    assert "corrupted" in _error(run_nas("eval-subnet", "--supernet", run, "S0"))
    assert "already holds a run" in _error(run_nas("train-supernet", "--recipe", small_recipe(tmp_path),
                                                   "--out", run))
    torch.save({"format": CHECKPOINT_FORMAT, "kind": "supernet", "space": "efficientformerv2", "recipe": {},
                "num_classes": 10, "model": {}}, run / CHECKPOINT)
    other = _error(run_nas("train-supernet", "--recipe", small_recipe(tmp_path), "--out", run, "--resume"))
    assert "supernet of space 'efficientformerv2'" in other and "efficientformerv2-tiny@32" in other


class _Payload:
    """Unpickling this runs a shell command: what a crafted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path):
    import numpy as np

    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "payload-ran"
    torch.save({"format": CHECKPOINT_FORMAT, "kind": "supernet", "space": "efficientformerv2-tiny",
                "model": {}, "x": _Payload(marker)}, run / CHECKPOINT)
    for command in (("eval-subnet", "--supernet", run, "S0"),
                    ("train-supernet", "--recipe", small_recipe(tmp_path), "--out", run, "--resume")):
        message = _error(run_nas(*command))
        assert "was not loaded" in message and str(run / CHECKPOINT) in message
    assert not marker.exists()
    # a checkpoint of an earlier version (numpy RNG state pickled as an array) is refused with the reason
    torch.save({"format": 1, "kind": "supernet", "rng": [{"numpy": np.random.get_state()}]}, run / CHECKPOINT)
    assert "format 1" in _error(run_nas("eval-subnet", "--supernet", run, "S0"))


def test_nan_loss_stops_with_one_message_and_keeps_the_last_good_checkpoint(tmp_path):
    recipe_path = small_recipe(tmp_path, base_lr=1.0e30, clip_grad=None, epochs=1)
    result = run_nas("train-supernet", "--recipe", recipe_path, "--out", tmp_path / "run", "--no-progress")
    message = _error(result)
    assert "became nan" in message.lower() and "lower base_lr" in message
    checkpoint_path = tmp_path / "run" / CHECKPOINT
    if checkpoint_path.exists():  # only checkpoints written before the NaN step
        assert all(torch.isfinite(v).all() for v in load_checkpoint(checkpoint_path)["model"].values()
                   if v.is_floating_point())


def test_recipe_validation_and_shipped_recipes():
    for name in ("fashion-mnist-tiny", "imagenet"):
        recipe = load_recipe(name)
        assert Recipe.from_dict(recipe.to_dict()) == recipe
    paper = load_recipe("imagenet")
    assert (paper.auto_augment, paper.mixup, paper.cutmix, paper.reprob, paper.smoothing) == (
        "rand-m9-mstd0.5", 0.8, 1.0, 0.25, 0.1)
    assert paper.lr(world_size=8) == pytest.approx(1e-3 * 128 * 8 / 1024)
    with pytest.raises(InvalidInputError, match="crop_scale"):
        Recipe(crop_scale=(0.9, 0.1))
    with pytest.raises(InvalidInputError, match="dataset 'mnist' is unknown"):
        Recipe(dataset="mnist")


def test_data_splits_are_seeded_disjoint_and_grey_is_three_channels():
    recipe = load_recipe("fashion-mnist-tiny")
    splits = Splits(recipe, 64)
    train, val = splits.held_out()
    assert len(val) == 5000 and len(train) == 55000 and not set(train) & set(val)
    assert Splits(recipe, 64).held_out() == (train, val)
    assert Splits(recipe.replace(split_seed=1), 64).held_out()[1] != val
    image, label, index = splits.dataset("test")[0]
    assert image.shape == (3, 64, 64) and 0 <= label < 10 and index == 0
    assert torch.equal(image[0], image[1])  # grey fed as 3 identical channels
    assert len(splits.dataset("test")) == 10000


def test_sampler_resumes_mid_epoch_and_shards():
    sampler = ResumableSampler(100, seed=3, batch_size=8)
    sampler.set_epoch(2)
    full = list(sampler)
    assert len(full) == 96 and len(set(full)) == 96
    sampler.set_epoch(2, start_batch=5)
    assert list(sampler) == full[40:]
    shards = [ResumableSampler(100, seed=3, batch_size=8, rank=r, world_size=2) for r in range(2)]
    for shard in shards:
        shard.set_epoch(2)
    a, b = list(shards[0]), list(shards[1])
    assert len(a) == len(b) == 48 and not set(a) & set(b)
    with pytest.raises(InvalidInputError, match="fewer than one global batch"):
        ResumableSampler(10, seed=0, batch_size=8, world_size=2)


def test_imagenet_style_folder_through_timm_readers(tmp_path):
    """An ImageNet-style folder (real Fashion-MNIST images saved as PNG files in DIR/train/<class>/ and
    DIR/val/<class>/) read by timm's dataset reader, trained on and evaluated through the CLI."""
    fashion = Splits(load_recipe("fashion-mnist-tiny"), 32)
    base = fashion._base(True)
    counts = {"train": 0, "val": 0}
    for index in range(200):
        image, label = base[index]
        if label >= 3:
            continue
        split = "val" if index % 4 == 0 else "train"
        folder = tmp_path / "data" / split / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{index}.png")
        counts[split] += 1
    recipe = small_recipe(tmp_path, dataset="imagenet-folder", epochs=1, max_train_images=None, val_split=8,
                          batch_size=8, eval_images=None)
    splits = Splits(load_recipe(recipe), 32, data_dir=str(tmp_path / "data"))
    assert splits.num_classes == 3
    assert len(splits.dataset("train")) + len(splits.dataset("val")) == counts["train"]
    assert len(splits.dataset("test")) == counts["val"]  # DIR/val is the unseen test split
    images, labels, _ = next(iter(splits.eval_loader("test", batch_size=4)))
    assert images.shape == (4, 3, 32, 32) and set(labels.tolist()) <= {0, 1, 2}
    run = tmp_path / "run"
    result = run_nas("train-supernet", "--recipe", recipe, "--data-dir", tmp_path / "data", "--out", run,
                     "--no-progress")
    assert result.returncode == 0, result.stderr[-2000:]
    assert load_checkpoint(run / CHECKPOINT)["num_classes"] == 3
    missing = nas_main("train-supernet", "--recipe", recipe, "--data-dir", tmp_path / "nope", "--out",
                       tmp_path / "run2")
    assert missing.returncode == 2 and "does not exist" in missing.stderr and not (tmp_path / "run2").exists()
