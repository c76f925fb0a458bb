"""The step computes what it computed before it was made faster (issue 15): every update's loss and
gradients from fixed weights and a fixed batch, against tests/data/step_reference.json, written by
tests/step_reference.py at commit 88afabb (plain Keras calls, Keras Adam and batch norm), with
TensorFlow's graph optimizer off and on (on, it fuses kernels: batch norm with its ReLU)."""
import json

import numpy as np
import pytest

from step_reference import PROTOCOLS, RECORD, update_records

LOSS_RTOL = 1e-5
# Per variable, relative to its gradient's norm; plus a floor relative to the update's whole
# gradient, for gradients that are float rounding (a bias before a norm layer: ~1e-6 of the total).
GRADIENT_RTOL = 2e-3
GRADIENT_FLOOR = 1e-5


@pytest.mark.parametrize("graph_optimizer", ["off", "on"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_update_has_the_recorded_loss_and_gradients(protocol, graph_optimizer):
    recorded = json.loads(RECORD.read_text(encoding="utf-8"))[protocol]
    current = update_records(protocol, graph_optimizer)
    assert list(current) == list(recorded)
    for update, reference in recorded.items():
        now = current[update]
        np.testing.assert_allclose(now["loss"], reference["loss"], rtol=LOSS_RTOL, err_msg=update)
        assert now["gradients"].keys() == reference["gradients"].keys(), update
        total = np.sqrt(sum(norm ** 2 for norm, _ in reference["gradients"].values()))
        for path, (norm, projection) in reference["gradients"].items():
            tolerance = GRADIENT_RTOL * norm + GRADIENT_FLOOR * total
            now_norm, now_projection = now["gradients"][path]
            assert abs(now_norm - norm) <= tolerance, (update, path, now_norm, norm)
            assert abs(now_projection - projection) <= tolerance, (update, path, now_projection, projection)
