"""The fake image pool: filling, swapping about half the time, checkpointing, graph mode."""
import numpy as np
import tensorflow as tf

from sifa_synthmix.models.fake_pool import FakeImagePool

BATCH_SHAPE = (2, 4, 4, 1)


def _batch(value):
    return tf.fill(BATCH_SHAPE, float(value))


def _stored_ids(pool):
    return pool.images[:, 0, 0, 0, 0].numpy()


def test_fill_phase_returns_and_stores_the_new_batch():
    pool = FakeImagePool(3, BATCH_SHAPE, seed=0)
    for batch_id in (1, 2, 3):
        np.testing.assert_array_equal(pool(_batch(batch_id)), _batch(batch_id))
        assert int(pool.count) == batch_id
    np.testing.assert_array_equal(_stored_ids(pool), [1, 2, 3])


def _run_full_pool(pool, first_id, steps, call):
    """Feeds batches first_id, first_id+1, ... and checks each answer; returns the swap count."""
    swaps = 0
    for batch_id in range(first_id, first_id + steps):
        before = _stored_ids(pool)
        returned = call(_batch(batch_id)).numpy()
        after = _stored_ids(pool)
        assert np.all(returned == returned.flat[0]), "a returned batch must be one whole batch"
        returned_id = returned.flat[0]
        if returned_id == batch_id:
            np.testing.assert_array_equal(after, before)
        else:
            swaps += 1
            slot = int(np.flatnonzero(before == returned_id)[0])
            expected = before.copy()
            expected[slot] = batch_id
            np.testing.assert_array_equal(after, expected)
    return swaps


def test_full_pool_swaps_about_half_of_the_time():
    pool = FakeImagePool(4, BATCH_SHAPE, seed=1)
    for batch_id in range(1, 5):
        pool(_batch(batch_id))
    steps = 400
    swaps = _run_full_pool(pool, 5, steps, pool)
    assert 0.4 < swaps / steps < 0.6
    assert int(pool.count) == 4


def test_pool_runs_compiled_in_a_tf_function():
    pool = FakeImagePool(3, BATCH_SHAPE, seed=2)
    call = tf.function(pool.__call__, jit_compile=True)
    for batch_id in range(1, 4):
        np.testing.assert_array_equal(call(_batch(batch_id)), _batch(batch_id))
    swaps = _run_full_pool(pool, 4, 60, call)
    assert 10 < swaps < 50
    assert call.experimental_get_tracing_count() == 1


def test_state_and_randomness_survive_a_checkpoint(tmp_path):
    pool = FakeImagePool(3, BATCH_SHAPE, seed=3)
    for batch_id in range(1, 6):
        pool(_batch(batch_id))
    path = tf.train.Checkpoint(pool=pool).save(str(tmp_path / "pool"))
    expected_answers = [pool(_batch(batch_id)).numpy() for batch_id in range(6, 16)]
    expected_images = pool.images.numpy()

    restored = FakeImagePool(3, BATCH_SHAPE, seed=99)
    tf.train.Checkpoint(pool=restored).restore(path).assert_consumed()
    answers = [restored(_batch(batch_id)).numpy() for batch_id in range(6, 16)]
    np.testing.assert_array_equal(answers, expected_answers)
    np.testing.assert_array_equal(restored.images.numpy(), expected_images)
    assert int(restored.count) == 3


def test_pool_casts_to_its_dtype():
    pool = FakeImagePool(2, BATCH_SHAPE, seed=4)
    assert pool(tf.cast(_batch(1), tf.float16)).dtype == tf.float32
