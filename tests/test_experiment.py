"""--mode=experiment: seeds, reuse of finished runs, and a signal that stops the whole experiment.

Most tests stub the Trainer and the evaluation (they write what the real ones write: config.json,
a checkpoint, eval/metrics.json); one tiny real experiment is stopped by SIGINT after its first
step and resumed by the same call.
"""
import json
import pathlib
import signal

import numpy as np
import pytest

from sifa_synthmix import experiment
from sifa_synthmix.config import ScheduleConfig, TrainConfig
from sifa_synthmix.errors import TrainingStopped
from sifa_synthmix.evaluation.compare import ComparisonError
from sifa_synthmix.evaluation.report import read_metrics
from sifa_synthmix.experiment import run_experiment
from sifa_synthmix.runs.run_folder import load_run_config, write_run_config
from test_evaluation import FAKE_DICE, write_fake_evaluation

MAX_STEPS = 4


class FakeTrainer:
    """Stands in for trainer.Trainer: writes the run's config.json and a checkpoint at max_steps,
    or, for a run folder in `interrupt` (folder -> signal), at half of them and raises
    TrainingStopped as the Trainer does."""

    root = None  # the experiment's OUTPUT_DIR; `trained` holds run folders relative to it
    trained = []
    interrupt = {}

    def __init__(self, cfg, overwrite=False, log=print):
        del overwrite, log
        self.cfg = cfg

    def run(self):
        out = pathlib.Path(self.cfg.output_dir)
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        write_run_config(self.cfg, out)
        stop_signal = self.interrupt.pop(str(out), None)
        step = self.cfg.schedule.max_steps // 2 if stop_signal else self.cfg.schedule.max_steps
        (out / "checkpoints" / f"ckpt-{step}.index").touch()
        self.trained.append(str(out.relative_to(self.root)))
        if stop_signal:
            raise TrainingStopped(stop_signal, f"{stop_signal.name}: stopped at step {step}")
        return {}


@pytest.fixture
def stubbed(tmp_path, monkeypatch):
    """Trainer and evaluation stubbed; SIFA's fake Dice is FAKE_DICE["sifa"], any other variant's
    FAKE_DICE["synthmix"], each shifted by 0.01 per seed above 1."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    FakeTrainer.root, FakeTrainer.trained, FakeTrainer.interrupt = tmp_path / "exp", [], {}
    evaluated = []

    def evaluate(run_dir, log=print, **options):
        del log, options
        run_dir = pathlib.Path(run_dir)
        cfg = load_run_config(run_dir)
        step = max(int(p.name[len("ckpt-"):-len(".index")]) for p in (run_dir / "checkpoints").glob("*.index"))
        rows = np.array(FAKE_DICE["sifa" if cfg.synthmix.protocol == "none" else "synthmix"]) + 0.01 * (cfg.seed - 1)
        write_fake_evaluation(run_dir, rows.tolist(), data_dir, checkpoint=str(run_dir / "checkpoints" / f"ckpt-{step}"))
        evaluated.append(run_dir)
        return read_metrics(run_dir / "eval")

    monkeypatch.setattr(experiment, "Trainer", FakeTrainer)
    monkeypatch.setattr(experiment, "evaluate_run", evaluate)
    cfg = TrainConfig(output_dir=str(tmp_path / "exp"), schedule=ScheduleConfig(max_steps=MAX_STEPS), seed=1)
    return cfg, evaluated


def test_seeds_train_each_variant_per_seed_and_a_second_call_reuses_them(stubbed):
    cfg, evaluated = stubbed
    logs = []
    text = run_experiment(cfg, ["synthmix", "sifa"], seeds=[1, 2], log=logs.append)
    assert FakeTrainer.trained == ["synthmix/seed1", "synthmix/seed2", "sifa/seed1", "sifa/seed2"]
    root = pathlib.Path(cfg.output_dir)
    assert load_run_config(root / "sifa" / "seed2").seed == 2
    assert text.splitlines()[3].startswith("| SIFA |")  # the reference comes first
    assert "SIFA: 2 seeds x 3 volumes" in text and "test over seeds" in text
    assert (root / "experiment.json").is_file() and (root / "comparison" / "experiment.md").read_text(encoding="utf-8") == text

    FakeTrainer.trained.clear()
    text = run_experiment(cfg, ["synthmix", "sifa"], seeds=[1, 2, 3], log=logs.append)
    assert FakeTrainer.trained == ["synthmix/seed3", "sifa/seed3"]
    assert sum("reused" in line for line in logs) == 4 and len(evaluated) == 6
    assert "SIFA: 3 seeds x 3 volumes" in text


def test_an_experiment_run_in_parts_compares_every_part(stubbed):
    """Seeds added one call at a time, then a variant added for the same seeds: each call's
    comparison and ROOT/experiment.json cover the runs of all parts so far."""
    cfg, _ = stubbed
    root = pathlib.Path(cfg.output_dir)
    for seed in (1, 2):
        text = run_experiment(cfg, ["sifa", "synthmix"], seeds=[seed])
    assert "SIFA: 2 seeds x 3 volumes" in text and "SIFA+SynthMix: 2 seeds x 3 volumes" in text
    assert json.loads((root / "experiment.json").read_text(encoding="utf-8")) == {
        "variants": ["sifa", "synthmix"], "seeds": [1, 2]}
    FakeTrainer.trained.clear()
    text = run_experiment(cfg, ["mixup"], seeds=[2, 1])
    assert FakeTrainer.trained == ["mixup/seed2", "mixup/seed1"]
    assert json.loads((root / "experiment.json").read_text(encoding="utf-8")) == {
        "variants": ["sifa", "synthmix", "mixup"], "seeds": [2, 1]}
    assert "SIFA: 2 seeds x 3 volumes" in text and "| SIFA+Mixup |" in text
    # Another set of variants and seeds at once is a new experiment: it lists its own runs alone.
    run_experiment(cfg, ["sifa"], seeds=[3])
    assert json.loads((root / "experiment.json").read_text(encoding="utf-8")) == {"variants": ["sifa"], "seeds": [3]}
    (root / "experiment.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ComparisonError, match=r"experiment\.json: not an experiment manifest"):
        run_experiment(cfg, ["sifa"], seeds=[3])


def test_a_run_with_other_flags_or_steps_is_not_reused(stubbed):
    cfg, _ = stubbed
    run_experiment(cfg, ["sifa"], seeds=[1])
    FakeTrainer.trained.clear()
    longer = ScheduleConfig(max_steps=MAX_STEPS + 2)
    run_experiment(TrainConfig(output_dir=cfg.output_dir, schedule=longer, seed=1), ["sifa"], seeds=[1])
    run_experiment(TrainConfig(output_dir=cfg.output_dir, schedule=longer, lambda_cycle=5.0), ["sifa"],
                   seeds=[1])
    assert FakeTrainer.trained == ["sifa/seed1", "sifa/seed1"]


def test_without_seeds_each_variant_trains_once_in_its_folder(stubbed):
    cfg, _ = stubbed
    text = run_experiment(cfg, ["sifa", "synthmix"])
    assert FakeTrainer.trained == ["sifa", "synthmix"]
    assert load_run_config(pathlib.Path(cfg.output_dir) / "sifa").seed == 1
    assert "mean(std) over volumes (SIFA: 3 volumes" in text and "over seeds" not in text


def test_a_signal_stops_the_experiment_and_the_same_call_resumes_it(stubbed):
    cfg, evaluated = stubbed
    root = pathlib.Path(cfg.output_dir)
    FakeTrainer.interrupt = {str(root / "sifa" / "seed2"): signal.SIGTERM}
    with pytest.raises(TrainingStopped) as stopped:
        run_experiment(cfg, ["sifa", "synthmix"], seeds=[1, 2])
    assert stopped.value.exit_code == 143
    assert str(stopped.value).startswith(f"SIGTERM: stopped at step {MAX_STEPS // 2}; the experiment stopped in "
                                         f"sifa (seed 2) (of {MAX_STEPS} steps)")
    assert evaluated == [root / "sifa" / "seed1"]  # the stopped run is not evaluated, nothing after it runs
    assert not (root / "comparison").exists()

    FakeTrainer.trained.clear()
    text = run_experiment(cfg, ["sifa", "synthmix"], seeds=[1, 2])
    assert FakeTrainer.trained == ["sifa/seed2", "synthmix/seed1", "synthmix/seed2"]
    assert "**Warning" not in text


def test_a_real_tiny_run_stopped_by_sigint_stops_the_experiment_and_resumes(tiny_config):
    cfg = tiny_config("--max_steps=2", "--save_every=100", "--log_every=1")
    logs = []

    def log_and_interrupt(line):
        logs.append(line)
        if line.startswith("step 1/2"):
            signal.raise_signal(signal.SIGINT)  # as Ctrl-C would, during the first step's logging

    with pytest.raises(TrainingStopped) as stopped:
        run_experiment(cfg, ["source_only"], seeds=[5], log=log_and_interrupt)
    run_dir = pathlib.Path(cfg.output_dir) / "source_only" / "seed5"
    assert stopped.value.exit_code == 130 and "stopped at step 1" in str(stopped.value)
    assert "the experiment stopped in source_only (seed 5) (of 2 steps)" in str(stopped.value)
    assert (run_dir / "checkpoints" / "ckpt-1.index").is_file() and not (run_dir / "eval").exists()

    text = run_experiment(cfg, ["source_only"], seeds=[5], log=logs.append)
    assert any("resumed" in line and "at step 1" in line for line in logs)
    assert read_metrics(run_dir / "eval")["checkpoint"].endswith("ckpt-2")
    assert "Source only" in text and "**Warning" not in text


def test_seeds_that_are_not_integers_are_one_error_line(monkeypatch, capsys):
    import main  # pylint: disable=import-outside-toplevel
    from conftest import REPO, config_from_argv  # pylint: disable=import-outside-toplevel

    monkeypatch.chdir(REPO)
    config_from_argv("--mode=experiment", "--seeds=1234,abc")
    with pytest.raises(SystemExit) as exited:
        main.experiment_seeds()
    assert exited.value.code == 2
    assert capsys.readouterr().err == "error: --seeds takes integers, got 1234,abc\n"
    config_from_argv("--mode=experiment", "--seeds=3,1")
    assert main.experiment_seeds() == [3, 1]
