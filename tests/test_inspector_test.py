"""The Inspector test (benchmarks/inspector_test.py, issue 37): its probe learns to tell two
modalities apart and finds an untranslated image but not a perfect translation; its floor is the
masks' mean binary entropy; and on a tiny SIFA+SynthMix run it prints and writes every column."""
import csv
import json
import math
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from benchmarks import inspector_test
from conftest import config_from_argv
from sifa_synthmix.training.task_factory import build_task
from sifa_synthmix.training.trainer import Trainer

ACCURACIES = ("unaligned", "S_mix", "T_mix", "A", "B")


def numpy_floor(masks_k):
    shares = masks_k.reshape(len(masks_k), -1).mean(axis=1)
    entropy = [-(s * math.log(s) + (1 - s) * math.log(1 - s)) if 0 < s < 1 else 0.0 for s in shares]
    return float(np.mean(entropy))


def separable_pair(rng, batch=2, size=16):
    """(source, target) images a probe tells apart at a glance: faint noise, and a checkerboard."""
    source = 0.1 * rng.standard_normal((batch, size, size, 1))
    target = 0.5 * inspector_test.checkerboard_pattern(size).numpy() + 0.1 * rng.standard_normal((batch, size, size, 1))
    return tf.constant(source, tf.float32), tf.constant(target, tf.float32)


def test_the_floor_is_the_mean_binary_entropy_of_the_masks_share():
    assert inspector_test.mean_binary_entropy([0.0, 0.5, 1.0]) == pytest.approx(math.log(2) / 3)
    cfg = config_from_argv("--synthmix_k=8").synthmix
    masks_k, _ = inspector_test.eval_masks(cfg, 8, 64, seed=3)(500)
    assert inspector_test.adversarial_floor(cfg, masks_k.numpy()) == pytest.approx(numpy_floor(masks_k.numpy()))
    assert inspector_test.adversarial_floor(cfg, masks_k.numpy()) == pytest.approx(0.492, abs=0.02)
    assert inspector_test.adversarial_floor(config_from_argv("--noaux_in_adversarial").synthmix, masks_k.numpy()) == 0


def test_the_probe_learns_the_modalities_and_finds_an_untranslated_image_not_a_perfect_translation(tiny_config):
    # Ten times the product's learning rate: 30 steps are enough on images this easy.
    cfg = tiny_config("--mix_protocol=synthmix", "--image_size=16", "--synthmix_k=4", "--base_lr=2e-3")
    keras.utils.set_random_seed(0)
    task = build_task(cfg)
    rng = np.random.default_rng(0)
    losses = inspector_test.train_probe(task, iter(lambda: separable_pair(rng), None), 30)
    assert losses.shape == (30,) and losses[-5:].mean() < losses[:5].mean() - 0.3, losses
    held_out = [separable_pair(rng) for _ in range(4)]

    def measured(translate):
        masks = inspector_test.eval_masks(cfg.synthmix, 4, 16, seed=1)
        return inspector_test.evaluate(task, task.inspector, masks, [(a, b, *translate(a, b)) for a, b in held_out])

    perfect = measured(lambda a, b: (b, a))  # fake_B a real target image, fake_A a real source one
    untranslated = measured(lambda a, b: (a, b))  # fake_B = A, fake_A = B
    for values in (perfect, untranslated):
        assert values["A"] >= 0.9 and values["B"] >= 0.9 and values["unaligned"] >= 0.8, values
    assert perfect["S_mix"] == perfect["T_mix"] == perfect["unaligned"] and perfect["trace_S"] == 0, perfect
    assert untranslated["trace_S"] > 0.2 and untranslated["trace_T"] > 0.2, untranslated
    assert untranslated["adv_S_mix"] > perfect["adv_S_mix"] >= perfect["floor"], (untranslated, perfect)
    # Four batches of two masks, drawn again from the same seed: the floor of exactly those.
    masks = inspector_test.eval_masks(cfg.synthmix, 4, 16, seed=1)
    masks_k = np.concatenate([masks(2)[0].numpy() for _ in range(4)])
    assert perfect["floor"] == untranslated["floor"] == pytest.approx(numpy_floor(masks_k))


class ConstantTranslators:
    """g_A gives 0.5 everywhere, de_B(e_B(.)) -0.5."""
    g_A = staticmethod(lambda images: tf.zeros_like(images) + 0.5)
    e_B = staticmethod(lambda images, training: (images, None))
    de_B = staticmethod(lambda pair: tf.zeros_like(pair[1]) - 0.5)


def test_the_controls_blend_the_original_back_and_add_a_checkerboard():
    rng = np.random.default_rng(0)
    a, b = (tf.constant(rng.uniform(-1, 1, (2, 4, 4, 1)), tf.float32) for _ in range(2))
    fake_b, fake_a = inspector_test.translations(ConstantTranslators, a, b)
    np.testing.assert_array_equal(fake_b, np.full((2, 4, 4, 1), 0.5))
    np.testing.assert_array_equal(fake_a, np.full((2, 4, 4, 1), -0.5))
    fake_b, fake_a = inspector_test.translations(ConstantTranslators, a, b, blend=1.0)
    np.testing.assert_array_equal(fake_b, a)
    np.testing.assert_array_equal(fake_a, b)
    fake_b, fake_a = inspector_test.translations(ConstantTranslators, a, b, blend=0.25, checkerboard=0.1)
    pattern = np.array([[-1, 1, -1, 1], [1, -1, 1, -1]] * 2)[None, :, :, None]
    np.testing.assert_allclose(fake_b, 0.75 * 0.5 + 0.25 * a.numpy() + 0.1 * pattern, rtol=1e-6)
    np.testing.assert_allclose(fake_a, 0.75 * -0.5 + 0.25 * b.numpy() + 0.1 * pattern, rtol=1e-6)


def test_a_tiny_synthmix_run_gets_every_column(tiny_config, tmp_path, capsys):
    run = tmp_path / "synthmix" / "seed1"
    Trainer(tiny_config("--mix_protocol=synthmix", "--max_steps=1", "--save_every=1", "--eval_every=0",
                        "--image_every=1000", output_dir=run), log=lambda _: None).run()
    sifa_run = tmp_path / "sifa" / "seed1"  # the same weights read as a SIFA run's: no Inspector of its own
    shutil.copytree(run, sifa_run)
    config = json.loads((sifa_run / "config.json").read_text(encoding="utf-8"))
    config["synthmix"]["protocol"] = "none"
    (sifa_run / "config.json").write_text(json.dumps(config), encoding="utf-8")
    table = tmp_path / "inspector.csv"
    rows = inspector_test.main([f"--runs={tmp_path / 'synthmix'},{sifa_run}", "--probe_steps=3", "--eval_batches=2",
                                f"--csv={table}"])
    printed = capsys.readouterr().out
    assert [row["run"] for row in rows] == [str(run), str(sifa_run)]
    for row, prefixes in zip(rows, (("", "own_"), ("",))):
        assert tuple(row) == inspector_test.COLUMNS and row["step"] == 1 and row["k"] == 4
        assert row["blend"] == row["checkerboard"] == 0.0
        for prefix in prefixes:
            assert all(0 <= row[prefix + kind] <= 1 for kind in ACCURACIES), row
            assert row[prefix + "trace_S"] == pytest.approx(row[prefix + "unaligned"] - row[prefix + "S_mix"])
            assert min(row[prefix + "adv_S_mix"], row[prefix + "adv_T_mix"]) >= row[prefix + "floor"] > 0, row
    assert all(math.isnan(rows[1][f"own_{m}"]) for m in inspector_test.MEASURES)
    assert rows[0]["floor"] == rows[0]["own_floor"]  # the same k, the same masks
    # Trained on real images alone, the probe is the same for both runs: only the translations differ.
    assert rows[0]["L_cls"] == pytest.approx(rows[1]["L_cls"], rel=1e-3)
    assert all(rows[0][kind] == pytest.approx(rows[1][kind], abs=0.02) for kind in ("unaligned", "A", "B"))
    assert printed.startswith("command: python -m benchmarks.inspector_test --runs=")
    assert "machine: " in printed
    assert f"| {tmp_path / 'synthmix'} | 1 | " in printed and f"| {tmp_path / 'sifa'} | 1 | " in printed
    with table.open(encoding="utf-8") as handle:
        written = list(csv.reader(handle))
    assert tuple(written[0]) == inspector_test.COLUMNS and len(written) == 3
