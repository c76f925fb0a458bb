"""Evaluation on 3D volumes (Dice/ASSD against medpy, every slice predicted, the empty-case rule,
NIfTI output) and the comparison of runs (table, differences, t-test, figures)."""
import json

import nibabel as nib
import numpy as np
import pytest
from medpy.metric import binary
from scipy import stats

from conftest import main_exit_code
from sifa_synthmix import visualize
from sifa_synthmix.data.layout import CARDIAC_CLASSES
from sifa_synthmix.evaluation import metrics, result_files
from sifa_synthmix.evaluation.compare import compare_runs
from sifa_synthmix.evaluation.methods import method_names
from sifa_synthmix.evaluation.report import evaluate_volumes, read_metrics, spacing_by_volume
from sifa_synthmix.evaluation.significance import paired_dice_tests
from sifa_synthmix.evaluation.table import display_classes
from sifa_synthmix.prediction import label_files
from sifa_synthmix.prediction.inference import predict_volume

SIZE, DEPTH, BATCH, VOLUMES = 12, 7, 3, 6  # depth 7 is not a multiple of the batch size
NUM_CLASSES = len(CARDIAC_CLASSES)
CARDIAC_HEADER = "| Method | AA | LAC | LVC | MYO | Avg |"


def random_boxes(rng, shape=(SIZE, SIZE, DEPTH), num_classes=NUM_CLASSES):
    """A label volume with one random box per foreground class (later classes drawn on top)."""
    labels = np.zeros(shape, np.int16)
    for c in range(1, num_classes):
        low = rng.integers(0, np.array(shape) - 3)
        high = low + rng.integers(2, 6, size=3)
        labels[low[0]:high[0], low[1]:high[1], low[2]:high[2]] = c
    return labels


class VoxelCodedModel:
    """A fake network: images encode each voxel's (volume, z, y, x) as its intensity, and the
    'logits' are one-hot of `answers[volume][y, x, z]`, so any misplaced, skipped or wrongly
    flipped slice shows up in the prediction. Records the batches it was given."""

    def __init__(self, answers):
        self.answers = answers
        self.batches = []

    @property
    def intensity_range(self):
        return 0.0, float(len(self.answers) * DEPTH * SIZE * SIZE)

    def image(self, volume):
        z, y, x = np.meshgrid(np.arange(DEPTH), np.arange(SIZE), np.arange(SIZE), indexing="ij")
        code = ((volume * DEPTH + z) * SIZE + y) * SIZE + x
        return np.moveaxis(code, 0, 2).astype(np.float32)  # H x W x D

    def __call__(self, batch):
        self.batches.append(batch)
        low, high = self.intensity_range
        code = np.rint((batch[..., 0] + 1.0) / 2.0 * (high - low) + low).astype(np.int64)
        code, x = np.divmod(code, SIZE)
        code, y = np.divmod(code, SIZE)
        volume, z = np.divmod(code, DEPTH)
        labels = np.stack([self.answers[v][yy, xx, zz] for v, yy, xx, zz in zip(volume.ravel(), y.ravel(),
                                                                                 x.ravel(), z.ravel())])
        return np.eye(NUM_CLASSES, dtype=np.float32)[labels.reshape(batch.shape[:3])]


def medpy_expected(prediction, truth, c, spacing=None):
    return binary.dc(prediction == c, truth == c), binary.assd(prediction == c, truth == c, voxelspacing=spacing)


# --- inference ---------------------------------------------------------------------------------

@pytest.mark.parametrize("flip", [False, True])
def test_predict_volume_predicts_every_slice_in_place(flip):
    answer = random_boxes(np.random.default_rng(1))
    model = VoxelCodedModel([answer])
    prediction = predict_volume(model, model.image(0), model.intensity_range, BATCH, flip=flip)
    np.testing.assert_array_equal(prediction, answer)
    assert [b.shape for b in model.batches] == [(BATCH, SIZE, SIZE, 1)] * 3  # 7 slices, padded last batch
    first_pixel = model.image(0)[-1, -1, 0] if flip else model.image(0)[0, 0, 0]
    low, high = model.intensity_range
    assert model.batches[0][0, 0, 0, 0] == pytest.approx(2 * (first_pixel - low) / (high - low) - 1)


def test_predict_volume_rejects_a_2d_image():
    with pytest.raises(ValueError, match="H x W x D"):
        predict_volume(lambda b: b, np.zeros((4, 4)), (0, 1), 2)


# --- metrics -----------------------------------------------------------------------------------

def test_volume_metrics_match_medpy_in_voxels_and_mm():
    rng = np.random.default_rng(2)
    truth, prediction = random_boxes(rng), random_boxes(rng)
    for spacing in (None, (0.7, 0.7, 2.5)):
        result = metrics.volume_metrics(prediction, truth, NUM_CLASSES, spacing)
        assert sorted(result) == [1, 2, 3, 4]
        for c, values in result.items():
            dice, assd = medpy_expected(prediction, truth, c, spacing)
            assert values == {"dice": pytest.approx(dice), "assd": pytest.approx(assd), "status": metrics.OK}


def test_empty_cases_follow_one_rule():
    truth = np.zeros((6, 6, 4), np.int16)
    truth[1:3, 1:3, 1:3] = 1
    prediction = np.zeros_like(truth)
    prediction[3:5, 3:5, 1:3] = 2
    result = metrics.volume_metrics(prediction, truth, 4)
    assert result[1]["status"] == metrics.EMPTY_PREDICTION and result[1]["dice"] == 0.0
    assert result[2]["status"] == metrics.EMPTY_TRUTH and result[2]["dice"] == 0.0
    assert result[3]["status"] == metrics.BOTH_EMPTY and result[3]["dice"] == 1.0
    assert all(np.isnan(r["assd"]) for r in result.values())
    assert metrics.volume_average(result)["dice"] == pytest.approx(1 / 3)
    assert np.isnan(metrics.volume_average(result)["assd"])


# --- evaluate_volumes --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """Six test volumes evaluated with a fake network whose predictions are known; AA (class 4)
    is empty in the truth of volume 0, in both of volume 1 and in the prediction of volume 2."""
    root = tmp_path_factory.mktemp("evaluate")
    rng = np.random.default_rng(3)
    truths = [random_boxes(rng) for _ in range(VOLUMES)]
    answers = [random_boxes(rng) for _ in range(VOLUMES)]
    truths[0][truths[0] == 4] = 0
    truths[1][truths[1] == 4] = 0
    answers[1][answers[1] == 4] = 0
    answers[2][answers[2] == 4] = 0
    model = VoxelCodedModel(answers)
    paths = []
    for v, truth in enumerate(truths):
        paths.append(root / "ct" / "test" / f"case{v}.npz")
        paths[-1].parent.mkdir(parents=True, exist_ok=True)
        np.savez(paths[-1], arr_0=model.image(v), arr_1=truth)
    spacing = {f"case{v}": (0.5 + 0.1 * v, 0.8, 2.0) for v in range(VOLUMES)}
    out_dir = root / "eval"
    record = evaluate_volumes(model, paths, model.intensity_range, CARDIAC_CLASSES, out_dir,
                              batch_size=BATCH, spacing=spacing, spacing_unit="mm", method="SIFA")
    return {"record": record, "out_dir": out_dir, "truths": truths, "answers": answers, "spacing": spacing}


def test_per_volume_metrics_match_medpy(evaluated):
    record = read_metrics(evaluated["out_dir"])
    assert [v["name"] for v in record["volumes"]] == [f"case{v}" for v in range(VOLUMES)]
    for v, volume in enumerate(record["volumes"]):
        for c, name in enumerate(CARDIAC_CLASSES[1:], start=1):
            values = volume["classes"][name]
            if values["status"] != metrics.OK:
                continue
            dice, assd = medpy_expected(evaluated["answers"][v], evaluated["truths"][v], c,
                                        evaluated["spacing"][f"case{v}"])
            assert (values["dice"], values["assd"]) == (pytest.approx(dice), pytest.approx(assd))


def test_summary_groups_each_class_over_all_six_volumes(evaluated):
    summary = read_metrics(evaluated["out_dir"])["summary"]
    for c, name in enumerate(CARDIAC_CLASSES[1:4], start=1):
        expected = [medpy_expected(a, t, c, evaluated["spacing"][f"case{v}"])
                    for v, (a, t) in enumerate(zip(evaluated["answers"], evaluated["truths"]))]
        dice, assd = np.array(expected).T
        assert summary[name]["dice_mean"] == pytest.approx(dice.mean())
        assert summary[name]["dice_std"] == pytest.approx(dice.std())
        assert summary[name]["assd_mean"] == pytest.approx(assd.mean())
        assert summary[name]["volumes"] == VOLUMES


def test_empty_aa_is_recorded_and_left_out_of_assd_means(evaluated):
    record = read_metrics(evaluated["out_dir"])
    statuses = [v["classes"]["AA"]["status"] for v in record["volumes"]]
    assert statuses[:3] == [metrics.EMPTY_TRUTH, metrics.BOTH_EMPTY, metrics.EMPTY_PREDICTION]
    aa = record["summary"]["AA"]
    assert aa["assd_excluded"] == 3 and aa["assd_volumes"] == 3
    assert aa["status_counts"] == {"ok": 3, "empty_prediction": 1, "empty_truth": 1, "both_empty": 1}
    dice = [v["classes"]["AA"]["dice"] for v in record["volumes"]]
    assert dice[:3] == [0.0, 1.0, 0.0] and aa["dice_mean"] == pytest.approx(np.mean(dice))
    assert aa["assd_mean"] == pytest.approx(np.mean([v["classes"]["AA"]["assd"] for v in record["volumes"][3:]]))
    assert record["empty_case_rule"] == metrics.EMPTY_CASE_RULE
    assert "empty_truth" in (evaluated["out_dir"] / "table.md").read_text(encoding="utf-8")


def test_metrics_json_is_strict_json_and_csv_has_a_row_per_volume_and_class(evaluated):
    json.loads((evaluated["out_dir"] / "metrics.json").read_text(encoding="utf-8"), parse_constant=pytest.fail)
    lines = (evaluated["out_dir"] / "metrics.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "volume,class_index,class,dice,assd,assd_unit,status"
    assert len(lines) == 1 + VOLUMES * (NUM_CLASSES - 1)
    assert "case0,4,AA,0.0,,mm,empty_truth" in lines


def test_table_has_the_papers_column_order(evaluated):
    lines = (evaluated["out_dir"] / "table.md").read_text(encoding="utf-8").splitlines()
    assert lines[0] == CARDIAC_HEADER
    summary = evaluated["record"]["summary"]
    assert lines[3].startswith(f"| SIFA | {100 * summary['AA']['dice_mean']:.1f}({100 * summary['AA']['dice_std']:.1f})"
                               f" | {100 * summary['LAC']['dice_mean']:.1f}(")
    assert lines[4].startswith("| **ASSD (mm) ↓** |")


def test_predictions_round_trip_as_nifti(evaluated):
    for v in range(VOLUMES):
        image = nib.load(str(evaluated["out_dir"] / "predictions" / f"case{v}.nii.gz"))
        assert image.get_data_dtype() == np.int16
        np.testing.assert_array_equal(np.asarray(image.dataobj), evaluated["answers"][v])
        np.testing.assert_allclose(np.diag(image.affine), [*evaluated["spacing"][f"case{v}"], 1.0])
    assert not list(evaluated["out_dir"].rglob("*.tmp"))


def test_colour_tables_for_itk_snap_and_slicer_use_the_overlay_colours(evaluated):
    colours = np.round(255 * visualize.class_colours(NUM_CLASSES)).astype(int)
    itk_snap = [line.split() for line in (evaluated["out_dir"] / label_files.ITK_SNAP_TABLE).read_text(
        encoding="utf-8").splitlines() if not line.startswith("#")]
    assert [int(row[0]) for row in itk_snap] == list(range(NUM_CLASSES))
    assert [[int(v) for v in row[1:4]] for row in itk_snap] == colours.tolist()
    assert [row[7] for row in itk_snap] == [f'"{name}"' for name in CARDIAC_CLASSES]
    assert itk_snap[0][4:7] == ["0", "0", "0"] and itk_snap[1][4:7] == ["1", "1", "1"]  # background clear
    slicer = [line for line in (evaluated["out_dir"] / label_files.SLICER_TABLE).read_text(
        encoding="utf-8").splitlines() if not line.startswith("#")]
    assert slicer[1] == f"1 MYO {' '.join(map(str, colours[1]))} 255" and slicer[0].endswith(" 0")


def test_label_volume_without_spacing_has_an_identity_affine(tmp_path):
    labels = random_boxes(np.random.default_rng(4))
    label_files.write_label_volume(tmp_path / "x.nii.gz", labels)
    np.testing.assert_array_equal(label_files.read_label_volume(tmp_path / "x.nii.gz"), labels)
    np.testing.assert_array_equal(nib.load(str(tmp_path / "x.nii.gz")).affine, np.eye(4))


def test_assd_in_mm_needs_every_spacing(tmp_path):
    with pytest.raises(ValueError, match="case1"):
        evaluate_volumes(None, [tmp_path / "case1.npz"], (0, 1), CARDIAC_CLASSES, tmp_path, spacing_unit="mm")


def test_spacing_of_one_modality_from_dataset_info():
    info = {"test_spacing": {"ct/a": [1, 1, 2], "mr/b": [1, 1, 3]}}
    assert spacing_by_volume(info, "ct") == {"a": [1, 1, 2]}


def test_display_order():
    assert display_classes(CARDIAC_CLASSES) == ["AA", "LAC", "LVC", "MYO"]
    assert display_classes(["bg", "Spleen", "Liver", "L Kidney", "R Kidney"]) == ["Liver", "R Kidney", "L Kidney",
                                                                                   "Spleen"]
    assert display_classes(["bg", "b", "a"]) == ["b", "a"]


# --- compare -----------------------------------------------------------------------------------

def test_method_names():
    def sifa(protocol="none", k=8, discriminators=True):
        return {"kind": "sifa", "synthmix": {"protocol": protocol, "k": k, "image_discriminators": discriminators}}

    configs = [{"kind": "segmenter", "train_domain": "source"}, {"kind": "segmenter", "train_domain": "target"},
               sifa(), sifa("synthmix"), sifa("synthmix", k=4, discriminators=False), sifa("mixup"), sifa("cutmix"),
               sifa("cutmix"), None, {"kind": "cyclegan", "synthmix": {"protocol": "none"}}]
    assert method_names(configs, [f"run{i}" for i in range(len(configs))]) == [
        "Source only", "Oracle", "SIFA", "SIFA+SynthMix (k=8)", "SIFA+SynthMix (k=4, Model 0)", "SIFA+Mixup",
        "SIFA+CutMix [run6]", "SIFA+CutMix [run7]", "run8", "CycleGAN"]
    assert method_names([sifa("synthmix")], ["a"]) == ["SIFA+SynthMix"]
    merged = dict(sifa(), update_schedule="merged")
    assert method_names([sifa(), merged, dict(sifa(), update_schedule="official")], ["a", "b", "c"]) == [
        "SIFA [a]", "SIFA (merged)", "SIFA [c]"]


# Hand-written per-volume Dice (MYO, LAC, LVC, AA) of two runs on three volumes; ASSD = 10 * (1 - Dice).
FAKE_DICE = {
    "sifa": [[0.5, 0.6, 0.7, 0.8], [0.6, 0.7, 0.8, 0.6], [0.7, 0.5, 0.9, 0.7]],
    "synthmix": [[0.6, 0.7, 0.7, 0.9], [0.8, 0.9, 0.9, 0.8], [0.7, 0.8, 0.8, 0.9]],
}


def write_fake_run(folder, protocol, dice_rows, data_dir, checkpoint=None, **config):
    """A run folder with config.json (plus `config` fields), eval/metrics.json and eval/predictions,
    as written by training and evaluate_volumes; `checkpoint` is the evaluated checkpoint's path."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"kind": "sifa", "synthmix": {"protocol": protocol, "k": 8},
                                                    **config}))
    write_fake_evaluation(folder, dice_rows, data_dir, checkpoint, seed=len(protocol))


def write_fake_evaluation(folder, dice_rows, data_dir, checkpoint=None, seed=0):
    """RUN/eval as evaluate_volumes writes it, with the given per-volume Dice (and ASSD 10 (1 - Dice));
    the test volumes are written to data_dir unless present."""
    (folder / "eval" / "predictions").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    volumes = []
    for v, row in enumerate(dice_rows):
        path = data_dir / f"case{v}.npz"
        if not path.exists():
            np.savez(path, arr_0=rng.normal(size=(SIZE, SIZE, DEPTH)).astype(np.float32), arr_1=random_boxes(rng))
        label_files.write_label_volume(folder / "eval" / "predictions" / f"case{v}.nii.gz", random_boxes(rng))
        classes = {name: {"dice": d, "assd": 10 * (1 - d), "status": "ok"} for name, d in zip(CARDIAC_CLASSES[1:], row)}
        volumes.append({"name": f"case{v}", "path": str(path), "prediction": f"predictions/case{v}.nii.gz",
                        "classes": classes, "avg": metrics.volume_average(classes)})
    result_files.write_json(folder / "eval" / "metrics.json", {
        "class_names": list(CARDIAC_CLASSES), "assd_unit": "voxel", "empty_case_rule": metrics.EMPTY_CASE_RULE,
        "intensity_range": [-3.0, 3.0], "flip": True, "volumes": volumes, "checkpoint": checkpoint,
        "summary": metrics.summarise([v["classes"] for v in volumes])})


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    data_dir = root / "data"
    data_dir.mkdir()
    for protocol, rows in FAKE_DICE.items():
        write_fake_run(root / protocol, "none" if protocol == "sifa" else protocol, rows, data_dir)
    out_dir = root / "comparison"
    markdown = compare_runs([root / "sifa", root / "synthmix"], out_dir)
    return {"markdown": markdown, "out_dir": out_dir}


def test_comparison_table_rows_and_differences(comparison):
    lines = comparison["markdown"].splitlines()
    assert lines[0] == CARDIAC_HEADER
    # AA column: SIFA 0.8, 0.6, 0.7 -> 70.0(8.2); SynthMix 0.9, 0.8, 0.9 -> 86.7(4.7).
    # Avg: mean(std) of the per-volume class means 0.65, 0.675, 0.7 and 0.725, 0.85, 0.8.
    assert lines[3] == "| SIFA | 70.0(8.2) | 60.0(8.2) | 80.0(8.2) | 60.0(8.2) | 67.5(2.0) |"
    assert lines[4] == "| SIFA+SynthMix | 86.7(4.7) | 80.0(8.2) | 80.0(8.2) | 70.0(8.2) | 79.2(5.1) |"
    assert lines[5] == "| **Dice difference to SIFA (% points)** | | | | | |"
    assert lines[6] == "| SIFA+SynthMix | +16.7 | +20.0 | +0.0 | +10.0 | +11.7 |"
    assert lines[7] == "| **ASSD (voxel) ↓** | | | | | |"
    assert lines[8] == "| SIFA | 3.00(0.82) | 4.00(0.82) | 2.00(0.82) | 4.00(0.82) | 3.25(0.20) |"
    assert lines[11] == "| SIFA+SynthMix | -1.67 | -2.00 | +0.00 | -1.00 | -1.17 |"


def test_tests_match_scipy_and_avg_pairs_volumes_not_classes(comparison):
    """Avg is tested on each volume's mean over classes (n = 3 volumes), not on 12 volume x class
    pairs, which are not independent."""
    saved = result_files.read_json(comparison["out_dir"] / "comparison.json")
    tests = saved["dice_tests"]["SIFA+SynthMix"]["volume_pairs"]
    sifa, synthmix = (np.array(FAKE_DICE[k]) for k in ("sifa", "synthmix"))
    per_volume = stats.ttest_rel(synthmix.mean(axis=1), sifa.mean(axis=1))
    assert (tests["Avg"]["t"], tests["Avg"]["p"], tests["Avg"]["n"]) == (pytest.approx(per_volume.statistic),
                                                                         pytest.approx(per_volume.pvalue), 3)
    wilcoxon = stats.wilcoxon(synthmix.mean(axis=1), sifa.mean(axis=1))
    assert (tests["Avg"]["w"], tests["Avg"]["w_p"]) == (pytest.approx(wilcoxon.statistic),
                                                        pytest.approx(wilcoxon.pvalue))
    aa = stats.ttest_rel(synthmix[:, 3], sifa[:, 3])
    assert (tests["AA"]["t"], tests["AA"]["p"], tests["AA"]["n"]) == (pytest.approx(aa.statistic),
                                                                     pytest.approx(aa.pvalue), 3)
    assert (tests["LVC"]["t"], tests["LVC"]["p"]) == (pytest.approx(0.0), pytest.approx(1.0))  # equal means
    assert f"t={per_volume.statistic:.2f}, p={per_volume.pvalue:.3g}, n=3" in comparison["markdown"]
    assert "over seeds" not in comparison["markdown"]  # single runs: no test over seeds


def test_tests_of_identical_runs_are_undefined_not_an_error():
    volumes = [{"name": f"v{i}", "classes": {"a": {"dice": d}}, "avg": {"dice": d}} for i, d in enumerate([0.5, 0.7, 0.9])]
    result = paired_dice_tests([(None, volumes)], [(None, volumes[:2])], ["a"])
    for column in ("a", "Avg"):
        assert result[column]["n"] == 2 and result[column]["note"] == "all differences are zero"
        assert all(np.isnan(result[column][k]) for k in ("t", "p", "w", "w_p"))


def test_comparison_files(comparison):
    out_dir = comparison["out_dir"]
    for name in ("comparison.md", "comparison.csv", "comparison.json", "qualitative.png", "dice_bars.png"):
        assert (out_dir / name).stat().st_size > 0, name
    assert (out_dir / "comparison.md").read_text(encoding="utf-8") == comparison["markdown"]
    rows = (out_dir / "comparison.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == ("method,runs,class,dice_mean,dice_std,dice_difference,assd_mean,assd_std,assd_difference,"
                       "t,p,n,w,w_p,seed_t,seed_p,seed_n,seed_ci95_low,seed_ci95_high")
    assert len(rows) == 1 + 2 * 5  # two methods x (4 classes + Avg)
    saved = json.loads((out_dir / "comparison.json").read_text(encoding="utf-8"))
    assert saved["differences"]["SIFA+SynthMix"]["AA"]["dice"] == pytest.approx(1 / 6)
    assert saved["columns"] == ["AA", "LAC", "LVC", "MYO", "Avg"]


def test_compare_refuses_runs_with_different_classes_in_one_line(comparison, tmp_path, capsys):
    other = tmp_path / "other"
    write_fake_run(other, "none", FAKE_DICE["sifa"], tmp_path)
    record = read_metrics(other / "eval")
    record["class_names"] = ["background", "a", "b", "c", "d"]
    result_files.write_json(other / "eval" / "metrics.json", record)
    runs = f"{comparison['out_dir'].parent / 'sifa'},{other}"
    assert main_exit_code("--mode=compare", f"--compare_runs={runs}", f"--output_dir={tmp_path / 'out'}") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the runs differ in class_names"), lines
    assert not (tmp_path / "out").exists()


def test_cropping_to_the_union_keeps_dice_and_assd_exact():
    """Objects at the volume's edge, in its middle, and far apart: medpy on the whole volume agrees."""
    rng = np.random.default_rng(3)
    for _ in range(5):
        truth = np.zeros((40, 36, 12), bool)
        prediction = np.zeros_like(truth)
        truth[0:9, 5:20, 0:4] = True  # touches the volume's border
        prediction[2:12, 7:22, 1:6] = True
        prediction[30:34, 30:35, 9:12] = rng.random((4, 5, 3)) > 0.3  # a far, ragged blob
        spacing = (0.7, 1.3, 2.5)
        got = metrics.class_metrics(prediction, truth, spacing)
        assert got["dice"] == pytest.approx(binary.dc(prediction, truth), abs=1e-12)
        assert got["assd"] == pytest.approx(binary.assd(prediction, truth, voxelspacing=spacing), abs=1e-9)


def test_a_replaced_folder_is_swapped_in_whole_and_a_swap_killed_midway_is_undone(tmp_path):
    folder = tmp_path / "eval"
    folder.mkdir()
    (folder / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with result_files.replaced_folder(folder) as staging:
            (staging / "new.txt").write_text("new")
            raise RuntimeError("failed midway")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"] and (folder / "old.txt").is_file()
    with result_files.replaced_folder(folder) as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]
    assert sorted(p.name for p in folder.iterdir()) == ["new.txt"]
    folder.rename(tmp_path / "eval.previous")  # killed between moving the old folder out and the new one in
    (tmp_path / "eval.partial").mkdir()
    with result_files.replaced_folder(folder) as staging:
        assert sorted(p.name for p in tmp_path.iterdir()) == ["eval", "eval.partial"]
        assert sorted(p.name for p in folder.iterdir()) == ["new.txt"] and not any(staging.iterdir())


def test_true_voxels_outside_the_crop_count_as_missed_in_the_dice():
    """A test scan's labels beyond its prepared crop are background in every prediction: Dice
    = 2 |P & G| / (|P| + |G| + missed), as numpy gives it on the whole scan."""
    truth = np.zeros((6, 6, 2), np.uint8)
    truth[1:4, 1:4, 0] = 1
    prediction = truth.copy()
    prediction[3, 1:4, 0] = 0
    missed = 5  # true voxels of class 1 outside the grid
    scored = metrics.volume_metrics(prediction, truth, 2, missed={1: missed})[1]
    assert scored["dice"] == pytest.approx(2 * 6 / (6 + 9 + missed))
    assert metrics.volume_metrics(prediction, truth, 2)[1]["dice"] == pytest.approx(2 * 6 / (6 + 9))
    outside_only = metrics.volume_metrics(prediction, np.zeros_like(truth), 2, missed={1: 3})[1]
    assert outside_only["dice"] == 0.0 and outside_only["status"] != metrics.EMPTY_TRUTH
