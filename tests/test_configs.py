"""Every shipped flagfile (configs/*.flags) parses, names only flags that exist, and trains and
evaluates: each loaded with only the sizes (tiny widths, 32 px, batch 2) and the data folder (the
tiny phantom) overridden, as a GPU user's paper-scale command would run (issue 13).

Flagfiles that give the same training configuration once sizes and data are overridden (e.g.
MR->CT and CT->MR of one method) are built and checked each, and trained and evaluated once for
the group: the same step, traced again, would cost ~10 s and test nothing new. The demo runs as
the README's main command does (--mode=experiment over its variants), and one group trains with
--jit_compile=true, as GPU users will.
"""
import dataclasses
import json
import pathlib

import pytest

import main
from conftest import REPO, config_from_argv, main_exit_code
from sifa_synthmix.experiment import variant_config
from sifa_synthmix.training.task_factory import build_task

FLAGFILES = sorted((REPO / "configs").glob("*.flags"))
TINY_SIZES = ("--ngf=4", "--ndf=4", "--encoder_base=2", "--inspector_ndf=4", "--batch_size=2",
              "--pool_size=3", "--max_steps=2", "--save_every=2", "--log_every=1", "--image_every=2")
# k = 32 needs 64 px (each of the k x k cells at least 2 x 2 pixels).
SIZE_FOR_K = {32: 64}
DEMO = REPO / "configs" / "demo.flags"
JIT_GROUP = "tiny_cpu"


def flagfile_argv(flagfile, phantoms, output_dir):
    """A flagfile with tiny sizes and a phantom of the image size (64 px where k needs it)."""
    k = config_from_argv(f"--flagfile={flagfile}").synthmix.k
    size = SIZE_FOR_K.get(k, 32)
    return [f"--flagfile={flagfile}", *TINY_SIZES, f"--image_size={size}", f"--data_dir={phantoms[size]}",
            f"--output_dir={output_dir}"]


def training_key(cfg):
    """What a run trains, without where its data and outputs are."""
    values = dataclasses.asdict(cfg)
    for field in ("data", "output_dir"):
        values.pop(field)
    return json.dumps(values, sort_keys=True)


def demo_variants():
    config_from_argv(f"--flagfile={DEMO}")
    return list(main.FLAGS.experiment_variants)


def representatives():
    """The stems of one flagfile per training configuration (JIT_GROUP for its own), leaving out
    the configurations the demo's experiment trains. Paths do not enter the comparison, so
    placeholders stand for the phantoms here."""
    phantoms = {size: f"phantom{size}" for size in (32, 64)}
    demo = config_from_argv(*flagfile_argv(DEMO, phantoms, "demo"))
    covered = {training_key(variant_config(demo, v)) for v in demo_variants()}
    chosen = {}  # training key -> stem
    for flagfile in FLAGFILES:
        key = training_key(config_from_argv(*flagfile_argv(flagfile, phantoms, flagfile.stem)))
        if flagfile != DEMO and key not in covered and (key not in chosen or flagfile.stem == JIT_GROUP):
            chosen[key] = flagfile.stem
    return sorted(chosen.values())


GROUPS = representatives()


@pytest.fixture(scope="module")
def phantoms(tiny_phantom, tmp_path_factory):
    """{image size: phantom folder}: the session's 32 px phantom and a small 64 px one."""
    from data_prep import phantom  # pylint: disable=import-outside-toplevel

    root = tmp_path_factory.mktemp("data") / "phantom64"
    counts = {"mr_train": 2, "ct_train": 2, "mr_val": 1, "ct_val": 1, "mr_test": 1, "ct_test": 2}
    phantom.generate_phantom(root, image_size=64, seed=0, counts=counts)
    return {32: tiny_phantom, 64: root}


@pytest.mark.parametrize("flagfile", FLAGFILES, ids=lambda p: p.stem)
def test_flagfile_parses_and_builds_its_task(flagfile, phantoms, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = config_from_argv(*flagfile_argv(flagfile, phantoms, tmp_path / "run"))
    assert cfg.model.ngf == 4 and cfg.batch_size == 2
    assert pathlib.Path(cfg.data.data_dir).resolve() == phantoms[cfg.model.image_size].resolve()
    task = build_task(cfg)
    assert task.parameter_counts()["total"] > 0


def test_the_demo_runs_its_experiment(phantoms, tmp_path, monkeypatch, capsys):
    """The demo as a user runs it: the scanner-like phantom's raw scans (here few and coarse) are
    prepared through data_prep.folder by --prepare_phantom, then the four variants train."""
    from data_prep import demo_data, scanner_phantom  # pylint: disable=import-outside-toplevel

    monkeypatch.chdir(REPO)
    data, out = tmp_path / "scan32", tmp_path / "demo"
    counts = {"mr_train": 2, "ct_train": 2, "mr_val": 1, "ct_val": 1, "mr_test": 1, "ct_test": 1}
    scanner_phantom.write_raw(demo_data.raw_dir(data), seed=0, counts=counts, voxel_scale=3.0, target_labels=True)
    argv = [arg if not arg.startswith("--data_dir=") else f"--data_dir={data}"
            for arg in flagfile_argv(DEMO, phantoms, out)]
    assert main_exit_code(*argv) == 0
    assert json.loads((data / "dataset.json").read_text(encoding="utf-8"))["preprocessing"]["crop"] == "body"
    printed = capsys.readouterr().out
    for variant in demo_variants():
        assert (out / variant / "eval" / "metrics.json").is_file(), variant
    assert (out / "comparison" / "comparison.md").is_file() and "| Method |" in printed


def test_the_jit_group_is_trained():
    assert JIT_GROUP in GROUPS


@pytest.mark.parametrize("stem", GROUPS)
def test_each_training_configuration_trains_two_steps_and_evaluates(stem, phantoms, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    out = tmp_path / stem
    argv = flagfile_argv(REPO / "configs" / f"{stem}.flags", phantoms, out)
    assert main_exit_code(*argv, "--mode=train", *(["--jit_compile=true"] if stem == JIT_GROUP else [])) == 0
    assert "step 2/2" in capsys.readouterr().out
    assert main_exit_code(*argv, "--mode=evaluate") == 0
    record = json.loads((out / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert record["volumes"] and record["step"] == 2
