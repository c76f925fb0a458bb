"""Shared test settings: quiet TensorFlow logs, its oneDNN kernels on as the package sets them,
jemalloc when installed, and the official sample slices when present."""
import ctypes.util
import os
import pathlib

import pytest

from sifa_synthmix.tensorflow_start import use_onednn

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
use_onednn()  # before any test module imports TensorFlow, in the workers too (they inherit it)


def preload_jemalloc():
    """Makes the pytest-xdist workers, and every process a test starts, run on jemalloc when it is
    installed (Debian/Ubuntu: libjemalloc2) and LD_PRELOAD is not set already (set it, even empty,
    to opt out). Tracing a step and setting up its graph allocate and free millions of small
    objects, and glibc's malloc spends about a tenth of that CPU time (issue 15, docs/benchmarks.md).
    It changes no result. Called in the process pytest starts: workers start after it."""
    library = ctypes.util.find_library("jemalloc")
    if library and "LD_PRELOAD" not in os.environ and "PYTEST_XDIST_WORKER" not in os.environ:
        os.environ["LD_PRELOAD"] = library
    return library


JEMALLOC = preload_jemalloc()

# Modules whose tests share a costly module fixture (a traced step, a trained run): pytest-xdist
# sends each of them whole to one worker, and shares the other tests out one by one. (xdist's own
# `xdist_group` marks do nothing under pytest 9, whose node ids xdist can no longer suffix.)
MODULES_ON_ONE_WORKER = frozenset(f"tests/{name}.py" for name in (
    "test_cli_errors", "test_cyclegan_task", "test_official_checkpoint", "test_precision", "test_synthmix_step",
    "test_train_step", "test_trainer"))


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """pytest.ini's `--dist loadgroup`, with MODULES_ON_ONE_WORKER as the groups."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling  # pylint: disable=import-outside-toplevel

    class ModuleGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            module = nodeid.split("::", 1)[0]
            return module if module in MODULES_ON_ONE_WORKER else nodeid

    return ModuleGroups(config, log)


@pytest.fixture(autouse=True)
def op_determinism_off_after_each_test():
    """A --deterministic run turns TensorFlow's op determinism on for its whole process; a later
    test in the same worker (XLA, say) must not inherit it."""
    yield
    from tensorflow.python.framework import config  # pylint: disable=import-outside-toplevel

    if config.is_op_determinism_enabled():
        config.disable_op_determinism()


SIFA_SAMPLES = pathlib.Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "sifa_samples"


@pytest.fixture
def sifa_samples():
    """../shared/fixtures/sifa_samples, or skip when the folder is absent."""
    if not SIFA_SAMPLES.is_dir():
        pytest.skip(f"{SIFA_SAMPLES} is absent")
    return SIFA_SAMPLES


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory):
    """A 32 x 32 phantom with a few subjects per split, shared by the whole session."""
    from data_prep import phantom  # pylint: disable=import-outside-toplevel

    root = tmp_path_factory.mktemp("data") / "phantom32"
    counts = {"mr_train": 3, "ct_train": 3, "mr_val": 1, "ct_val": 1, "mr_test": 2, "ct_test": 2}
    phantom.generate_phantom(root, image_size=32, seed=0, counts=counts)
    return root


REPO = pathlib.Path(__file__).resolve().parents[1]


def config_from_argv(*argv):
    """A TrainConfig parsed by main.py's own flags from command-line arguments."""
    from sifa_synthmix import flags as flags_lib  # pylint: disable=import-outside-toplevel

    flags_lib.define_flags()
    flags_lib.FLAGS.unparse_flags()
    flags_lib.FLAGS(["main.py", *argv])
    return flags_lib.config_from_flags(flags_lib.FLAGS)


@pytest.fixture
def tiny_config(tiny_phantom, tmp_path, monkeypatch):
    """Factory: the TrainConfig of configs/tiny_cpu.flags on the tiny phantom, plus extra flags."""
    monkeypatch.chdir(REPO)

    def make(*extra, output_dir=None):
        out = output_dir or tmp_path / "run"
        return config_from_argv("--flagfile=configs/tiny_cpu.flags", f"--data_dir={tiny_phantom}",
                                f"--output_dir={out}", *extra)

    return make


def main_exit_code(*argv):
    """Runs main.py in-process with `argv`; returns its exit code (0 when it returns)."""
    import main  # pylint: disable=import-outside-toplevel

    main.FLAGS.unparse_flags()
    try:
        main.main(main.parse_flags(["main.py", *argv]))
    except SystemExit as stop:
        return stop.code
    return 0


@pytest.fixture
def networks_run_inline():
    """Runs the networks op by op in tests that call a task's train_step eagerly. Called eagerly
    under a tape, each network's own tf.function (sifa_synthmix/models/traced_model.py) builds its
    forward and backward graphs for every fresh task: about 7 of the 9 s of a tiny SIFA step's
    first call, against 1.5 s op by op, with the same losses. Compiled steps (test_trainer,
    test_configs, the modules' own compiled fixtures) and test_networks keep the traced path."""
    from sifa_synthmix.models.traced_model import inline_calls  # pylint: disable=import-outside-toplevel

    with inline_calls():
        yield
