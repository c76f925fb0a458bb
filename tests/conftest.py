"""Shared test settings: quiet TensorFlow logs, and the official sample slices when present."""
import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIFA_SAMPLES = pathlib.Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "sifa_samples"


@pytest.fixture
def sifa_samples():
    """../shared/fixtures/sifa_samples, or skip when the folder is absent."""
    if not SIFA_SAMPLES.is_dir():
        pytest.skip(f"{SIFA_SAMPLES} is absent")
    return SIFA_SAMPLES
