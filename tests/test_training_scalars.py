"""TensorBoard scalars of several runs read back as a table over steps (mean and spread over seeds)."""
import csv

import numpy as np
import pytest
import tensorflow as tf

from sifa_synthmix.evaluation import training_scalars


def write_run(run_dir, values_by_step, tag="inspector/accuracy_S_mix"):
    """One events file per dict (a resumed run appends another file)."""
    for values in values_by_step:
        writer = tf.summary.create_file_writer(str(run_dir / "tb"))
        with writer.as_default():
            for step, value in values.items():
                tf.summary.scalar(tag, value, step=step)
                tf.summary.scalar("loss/other", 0.0, step=step)
        writer.close()


def test_rows_average_each_run_over_its_range_then_over_runs(tmp_path):
    write_run(tmp_path / "synthmix" / "seed1", [{0: 0.5, 100: 0.7, 200: 0.9}])
    # The second seed was resumed at 100: its step 100 was written again, and the last value counts.
    write_run(tmp_path / "synthmix" / "seed2", [{0: 0.6, 100: 0.0}, {100: 0.8, 200: 1.0}])
    runs = training_scalars.run_folders(tmp_path / "synthmix")
    assert [r.name for r in runs] == ["seed1", "seed2"]
    rows = training_scalars.scalar_table(runs, ["inspector/accuracy_S_mix"], every=200)
    first = np.array([np.mean([0.5, 0.7]), np.mean([0.6, 0.8])])
    (start, end, cells), (start2, _, cells2) = rows
    assert (start, end, start2) == (0, 200, 200)
    mean, std, n = cells["inspector/accuracy_S_mix"]
    assert (mean, std, n) == (pytest.approx(first.mean()), pytest.approx(first.std(ddof=1)), 2)
    assert cells2["inspector/accuracy_S_mix"][:2] == (pytest.approx(0.95), pytest.approx(np.std([0.9, 1.0], ddof=1)))


def test_a_tag_no_run_has_and_a_folder_without_runs_are_refused(tmp_path):
    write_run(tmp_path / "run", [{0: 0.5, 30: 0.5}])
    rows = training_scalars.scalar_table([tmp_path / "run"], ["loss/other"], every=10)
    assert [cells["loss/other"][2] for _, _, cells in rows] == [1, 0, 0, 1]  # no values in 10-29
    assert "| 10-19 | - |" in training_scalars.markdown(rows, ["loss/other"])
    with pytest.raises(ValueError, match="no run has the scalar 'inspector/acc'; the runs have "
                                         "inspector/accuracy_S_mix, loss/other"):
        training_scalars.scalar_table([tmp_path / "run"], ["inspector/acc"], every=10)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a run folder"):
        training_scalars.run_folders(tmp_path / "empty")


def test_the_command_prints_the_table_and_writes_the_csv(tmp_path, capsys):
    write_run(tmp_path / "a", [{0: 0.25, 5: 0.75}])
    out = tmp_path / "table.csv"
    training_scalars.main([f"--runs={tmp_path / 'a'}", "--tags=inspector/accuracy_S_mix", "--every=10",
                           f"--csv={out}"])
    assert "| 0-9 | 0.500(0.000, n=1) |" in capsys.readouterr().out
    with out.open(encoding="utf-8") as handle:
        assert list(csv.DictReader(handle)) == [{"start": "0", "end": "10", "tag": "inspector/accuracy_S_mix",
                                                 "mean": "0.5", "std": "0.0", "runs": "1"}]
