"""Comparisons of methods run with several seeds (fake evaluated runs): means and spreads over
seeds, tests over (seed, volume) pairs and over seeds against scipy, figures with one dot per
seed, the folders --mode=compare accepts, warnings about unlike runs, and the qualitative slices."""
import json

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from scipy import stats

from sifa_synthmix.evaluation import figures, result_files
from sifa_synthmix.evaluation.compare import (_curve_table, compare_methods, compare_runs, method_folders,
                                              slices_showing_every_class, write_experiment_file)
from sifa_synthmix.evaluation.significance import paired_tests
from test_evaluation import CARDIAC_HEADER, FAKE_DICE, write_fake_run

SEEDS = (1234, 1235, 1236)
# Per seed, a shift of every Dice of the run: seeds move the runs more than volumes do.
SHIFTS = {"sifa": (0.0, 0.05, -0.04), "synthmix": (0.02, -0.06, 0.1)}
DATA = {"data_dir": "data/phantom64", "source_modality": "mr", "target_modality": "ct"}


def dice(protocol, seed_index):
    """[volume, class] Dice (MYO, LAC, LVC, AA) of a fake run."""
    return np.clip(np.array(FAKE_DICE[protocol]) + SHIFTS[protocol][seed_index], 0.0, 1.0)


def write_seeded_experiment(root, max_steps=500, steps=None):
    """ROOT/<variant>/seed<N> fake runs of SIFA and SIFA+SynthMix, evaluated at `steps`
    (variant -> evaluated step per seed; default max_steps), and ROOT/experiment.json."""
    data_dir = root / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    for variant, protocol in (("sifa", "none"), ("synthmix", "synthmix")):
        for index, seed in enumerate(SEEDS):
            step = (steps or {}).get(variant, [max_steps] * len(SEEDS))[index]
            write_fake_run(root / variant / f"seed{seed}", protocol, dice(variant, index).tolist(), data_dir,
                           checkpoint=f"{root}/{variant}/seed{seed}/checkpoints/ckpt-{step}",
                           seed=seed, max_steps=max_steps, data=DATA)
    write_experiment_file(root, ["sifa", "synthmix"], SEEDS)
    return root


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    root = write_seeded_experiment(tmp_path_factory.mktemp("seeded"))
    markdown = compare_runs([root], root / "comparison")
    return {"root": root, "markdown": markdown, "json": result_files.read_json(root / "comparison" / "comparison.json")}


def per_seed_average(variant):
    return np.array([dice(variant, i).mean() for i in range(len(SEEDS))])  # per-volume class means, then volumes


def test_rows_are_mean_and_sample_std_over_seeds(seeded):
    lines = seeded["markdown"].splitlines()
    assert lines[0] == CARDIAC_HEADER
    for line, variant, name in ((lines[3], "sifa", "SIFA"), (lines[4], "synthmix", "SIFA+SynthMix")):
        aa = np.array([dice(variant, i)[:, 3].mean() for i in range(len(SEEDS))])
        average = per_seed_average(variant)
        assert line.startswith(f"| {name} | {100 * aa.mean():.1f}({100 * aa.std(ddof=1):.1f}) |")
        assert line.endswith(f"| {100 * average.mean():.1f}({100 * average.std(ddof=1):.1f}) |")
    assert "mean(std) over seeds of each seed's mean over volumes, sample std (SIFA: 3 seeds" in seeded["markdown"]
    assert "SIFA: 3 seeds x 3 volumes" in seeded["markdown"]
    per_seed = " | ".join(f"{100 * v:.1f}" for v in per_seed_average("synthmix"))
    assert "| **Avg Dice (%) ↑ per seed** | | | |" in lines and f"| SIFA+SynthMix | {per_seed} |" in lines
    summary = seeded["json"]["summaries"]["SIFA+SynthMix"]["Avg"]
    assert summary["dice_mean"] == pytest.approx(per_seed_average("synthmix").mean())
    assert seeded["json"]["per_seed_dice"]["SIFA"]["Avg"] == pytest.approx(per_seed_average("sifa").tolist())


def test_tests_over_seed_volume_pairs_and_over_seeds_match_scipy(seeded):
    tests = seeded["json"]["dice_tests"]["SIFA+SynthMix"]
    sifa = np.concatenate([dice("sifa", i).mean(axis=1) for i in range(len(SEEDS))])  # (seed, volume) pairs
    synthmix = np.concatenate([dice("synthmix", i).mean(axis=1) for i in range(len(SEEDS))])
    ttest, wilcoxon = stats.ttest_rel(synthmix, sifa), stats.wilcoxon(synthmix, sifa)
    avg = tests["volume_pairs"]["Avg"]
    assert avg["n"] == 9 and (avg["t"], avg["p"]) == (pytest.approx(ttest.statistic), pytest.approx(ttest.pvalue))
    assert (avg["w"], avg["w_p"]) == (pytest.approx(wilcoxon.statistic), pytest.approx(wilcoxon.pvalue))
    myo = stats.ttest_rel(np.concatenate([dice("synthmix", i)[:, 0] for i in range(3)]),
                          np.concatenate([dice("sifa", i)[:, 0] for i in range(3)]))
    assert tests["volume_pairs"]["MYO"]["t"] == pytest.approx(myo.statistic)
    over_seeds = stats.ttest_rel(per_seed_average("synthmix"), per_seed_average("sifa"))
    assert tests["seeds"]["n"] == 3
    assert (tests["seeds"]["t"], tests["seeds"]["p"]) == (pytest.approx(over_seeds.statistic),
                                                          pytest.approx(over_seeds.pvalue))
    markdown = seeded["markdown"]
    assert "(seed, volume) pairs" in markdown and "Wilcoxon signed-rank" in markdown
    assert f"t={over_seeds.statistic:.2f}, p={over_seeds.pvalue:.3g}, n=3" in markdown
    assert "not independent" in markdown
    assert "**Warning" not in markdown  # same steps, data and seeds


def test_figures_show_one_dot_per_seed_and_say_what_error_bars_are(seeded):
    summaries = seeded["json"]["summaries"]
    columns = seeded["json"]["columns"]
    figure = figures.dice_bars([(n, summaries[n]) for n in ("SIFA", "SIFA+SynthMix")], columns, "bars: what",
                               dots=seeded["json"]["per_seed_dice"])
    axis = figure.axes[0]
    dots = np.concatenate([c.get_offsets()[:, 1] for c in axis.collections if isinstance(c, PathCollection)])
    assert dots.size == 2 * len(columns) * len(SEEDS)
    np.testing.assert_allclose(sorted(dots), sorted(100 * np.ravel([seeded["json"]["per_seed_dice"][n][c]
                                                                    for n in ("SIFA", "SIFA+SynthMix")
                                                                    for c in columns])))
    assert [t.get_text() for t in figure.texts] == ["bars: what"]
    assert (seeded["root"] / "comparison" / "dice_bars.png").stat().st_size > 0


def test_compare_accepts_experiment_variant_and_run_folders(seeded):
    root = seeded["root"]
    assert method_folders(root) == [[root / v / f"seed{s}" for s in SEEDS] for v in ("sifa", "synthmix")]
    assert method_folders(root / "sifa") == [[root / "sifa" / f"seed{s}" for s in SEEDS]]
    assert method_folders(root / "sifa" / "seed1235") == [[root / "sifa" / "seed1235"]]
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        method_folders(root / "comparison")
    by_variant = compare_runs([root / "sifa", root / "synthmix"], root / "by_variant")
    assert by_variant == seeded["markdown"]


def test_warnings_name_unfinished_runs_and_other_steps_data_and_seeds(tmp_path, seeded):
    root = write_seeded_experiment(tmp_path / "exp", steps={"synthmix": [500, 250, 500]})
    markdown = compare_runs([root], root / "comparison")
    assert markdown.startswith("**Warning:** SIFA+SynthMix (seed 1235)")
    assert "was evaluated at step 250 of its 500: an unfinished run." in markdown
    assert "different numbers of steps (SIFA 500; SIFA+SynthMix 500, 250)" in markdown

    other = tmp_path / "other"
    write_fake_run(other, "synthmix", FAKE_DICE["synthmix"], tmp_path, checkpoint="x/ckpt-1000", seed=7,
                   max_steps=1000, data=dict(DATA, data_dir="data/elsewhere"))
    markdown = compare_methods([[seeded["root"] / "sifa" / "seed1234"], [other]], tmp_path / "out")
    warnings = [line for line in markdown.splitlines() if line.startswith("**Warning:**")]
    assert len(warnings) == 3
    assert "different numbers of steps (SIFA 500; SIFA+SynthMix 1000)" in warnings[0]
    assert "different data (data_dir: SIFA data/phantom64; SIFA+SynthMix data/elsewhere)" in warnings[1]
    assert "seeds differ (SIFA 1234; SIFA+SynthMix 7)" in warnings[2]
    saved = json.loads((tmp_path / "out" / "comparison.json").read_text(encoding="utf-8"))
    assert saved["warnings"] == [w.removeprefix("**Warning:** ") for w in warnings]


def test_paired_tests_of_degenerate_pairs_say_why_they_are_undefined():
    one = paired_tests([0.5], [0.4])
    assert one["n"] == 1 and one["note"] == "fewer than 2 pairs" and np.isnan(one["t"]) and np.isnan(one["w_p"])
    constant = paired_tests([0.5, 0.6, 0.7], [0.4, 0.5, 0.6])
    assert constant["note"].startswith("the differences do not vary") and np.isnan(constant["t"])
    assert constant["w_p"] == pytest.approx(stats.wilcoxon([0.1, 0.1, 0.1]).pvalue)
    assert paired_tests([], [])["n"] == 0


def test_qualitative_slices_show_every_class_present(tmp_path):
    """Classes 1 and 2 share slice 3 of volume a, class 3 is only in slice 1 of volume b, class 4 is
    absent: two slices cover every present class, then the rows fill with other volumes."""
    shape = (6, 6, 5)
    labels = {name: np.zeros(shape, np.int16) for name in ("a", "b", "c")}
    labels["a"][1:3, 1:3, 3] = 1
    labels["a"][3:5, 3:5, 3] = 2
    labels["a"][0:5, 0:5, 0] = 1  # the largest foreground, but one class only
    labels["b"][2:4, 2:4, 1] = 3
    labels["c"][0:2, 0:2, 4] = 2
    paths = []
    for name, label in labels.items():
        paths.append(tmp_path / f"{name}.npz")
        np.savez(paths[-1], arr_0=np.zeros(shape, np.float32), arr_1=label)
    assert slices_showing_every_class(paths, num_classes=5, min_rows=1) == [(0, 3), (1, 1)]
    assert slices_showing_every_class(paths, num_classes=5, min_rows=3) == [(0, 3), (1, 1), (2, 4)]


def test_learning_curves_are_drawn_per_method_with_a_band_over_seeds(tmp_path, monkeypatch):
    """Seed folders with eval_curve.csv: dice_curves.png has one line per method through the mean
    over seeds at each step, and a band of +-1 sample std; a method without curves is left out."""
    from sifa_synthmix.evaluation.learning_curve import write_curve  # pylint: disable=import-outside-toplevel

    root = write_seeded_experiment(tmp_path)
    curve_dice = {seed: [0.2 + 0.1 * i, 0.5 + 0.1 * i] for i, seed in enumerate(SEEDS)}
    for seed in SEEDS:
        write_curve(root / "synthmix" / f"seed{seed}",
                    [{"step": step, "volumes": "val", "class": name, "dice": value, "assd": 3.0}
                     for step, value in zip((250, 500), curve_dice[seed]) for name in ("MYO", "Avg")])
    drawn = {}
    original = figures.dice_curves
    monkeypatch.setattr(figures, "dice_curves", lambda curves, ylabel: drawn.update(curves=curves, ylabel=ylabel)
                        or original(curves, ylabel))
    markdown = compare_runs([root], root / "comparison")
    assert (root / "comparison" / "dice_curves.png").is_file() and "dice_curves.png" in markdown
    assert list(drawn["curves"]) == ["SIFA+SynthMix"] and "val" in drawn["ylabel"]
    figure = original(drawn["curves"], drawn["ylabel"])
    line = figure.axes[0].lines[0]
    assert list(line.get_xdata()) == [250, 500]
    assert line.get_ydata() == pytest.approx([100 * np.mean([0.2, 0.3, 0.4]), 100 * np.mean([0.5, 0.6, 0.7])])
    band = figure.axes[0].collections[0].get_paths()[0].vertices[:, 1]
    assert max(band) == pytest.approx(60 + 10, abs=1e-6)  # mean + sample std (10 points) at step 500
    curve_table = "| step | SIFA+SynthMix |\n|---|---|\n| 250 | 30.0(10.0) |\n| 500 | 60.0(10.0) |"
    assert curve_table in markdown
    assert curve_table in (root / "comparison" / "comparison.md").read_text(encoding="utf-8")
    written = (root / "comparison" / "dice_curves.csv").read_text(encoding="utf-8").splitlines()
    assert written[0] == "method,step,dice_mean,dice_std,runs"
    assert [float(v) for v in written[2].split(",")[1:]] == pytest.approx([500, 60.0, 10.0, 3])


def test_a_curve_of_one_run_shows_its_mean_alone_and_a_step_a_method_skipped_as_a_dash():
    statistics = {"SIFA": figures.curve_statistics([{250: 0.5, 500: 0.625}]),
                  "Oracle": figures.curve_statistics([{500: 0.7}, {500: 0.8}])}
    assert _curve_table(statistics).splitlines()[2:] == ["| 250 | 50.0 | - |", "| 500 | 62.5 | 75.0(7.1) |"]


def test_difference_over_seeds_per_class_has_scipys_confidence_interval(seeded):
    tests = seeded["json"]["dice_tests"]["SIFA+SynthMix"]["seeds_by_class"]
    for column, index in (("MYO", 0), ("Avg", None)):
        def per_seed(method):
            return np.array([dice(method, i).mean(axis=1).mean() if index is None else dice(method, i)[:, index].mean()
                             for i in range(len(SEEDS))])
        differences = per_seed("synthmix") - per_seed("sifa")
        half = stats.t.ppf(0.975, len(SEEDS) - 1) * differences.std(ddof=1) / np.sqrt(len(SEEDS))
        assert tests[column]["difference"] == pytest.approx(differences.mean())
        assert tests[column]["ci95"] == pytest.approx([differences.mean() - half, differences.mean() + half])
    avg = tests["Avg"]
    cell = f"{100 * avg['difference']:+.1f} [{100 * avg['ci95'][0]:+.1f}, {100 * avg['ci95'][1]:+.1f}]"
    assert cell in seeded["markdown"] and "95% confidence interval" in seeded["markdown"]
