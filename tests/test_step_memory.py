"""The memory estimate of a SIFA step, and the refusal of a step that cannot fit."""
import pytest

import main
from conftest import main_exit_code
from sifa_synthmix.config import ModelConfig, RuntimeConfig, TrainConfig
from sifa_synthmix.training import step_memory

DEMO = dict(ngf=8, ndf=8, encoder_base=4)
OFFICIAL = dict(ngf=32, ndf=64, encoder_base=16)
DEMO_PARAMETERS, OFFICIAL_PARAMETERS = 2_204_285, 43_347_441  # SIFA's trainable parameters at these widths


def sifa(image_size, batch_size, widths, precision="float32"):
    return TrainConfig(model=ModelConfig(image_size=image_size, **widths), batch_size=batch_size,
                       runtime=RuntimeConfig(precision=precision), output_dir="/nonexistent")


@pytest.mark.parametrize("cfg, parameters, measured_mb", [
    (sifa(64, 4, DEMO), DEMO_PARAMETERS, 1210),
    (sifa(64, 32, DEMO), DEMO_PARAMETERS, 1546),
    (sifa(128, 8, DEMO), DEMO_PARAMETERS, 1534),  # not used in the fit
    (sifa(256, 1, OFFICIAL), OFFICIAL_PARAMETERS, 2500),
    (sifa(256, 2, OFFICIAL), OFFICIAL_PARAMETERS, 3078),
    (sifa(256, 1, OFFICIAL, "mixed_bfloat16"), OFFICIAL_PARAMETERS, 2407),
    (sifa(256, 2, OFFICIAL, "mixed_bfloat16"), OFFICIAL_PARAMETERS, 2733),
])
def test_the_estimate_matches_the_measured_peaks(cfg, parameters, measured_mb):
    """benchmarks.worker's peak resident memory of each configuration (docs/benchmarks.md)."""
    assert step_memory.step_megabytes(cfg, parameters) == pytest.approx(measured_mb, rel=0.02)


def test_reachable_memory_is_the_smaller_of_the_kernel_and_the_cgroup(tmp_path, monkeypatch):
    monkeypatch.setattr(step_memory, "resident_megabytes", lambda: 500.0)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:    4096000 kB\n")
    assert step_memory.reachable_megabytes(meminfo, tmp_path / "no cgroup") == 4000 + 500
    (tmp_path / "memory.max").write_text(f"{3 * 2 ** 30}\n")
    (tmp_path / "memory.current").write_text(f"{2 ** 30}\n")
    assert step_memory.reachable_megabytes(meminfo, tmp_path) == 2048 + 500
    (tmp_path / "memory.max").write_text("max\n")  # no limit
    assert step_memory.reachable_megabytes(meminfo, tmp_path) == 4000 + 500
    assert step_memory.reachable_megabytes(tmp_path / "absent", tmp_path / "absent") is None


def test_a_step_that_cannot_fit_names_the_batch_that_would():
    cfg = sifa(256, 16, OFFICIAL)
    fixed, per_slice = step_memory.step_parts(cfg, OFFICIAL_PARAMETERS)
    step_memory.check_step_fits(cfg, OFFICIAL_PARAMETERS, fixed + 16 * per_slice)
    with pytest.raises(step_memory.StepMemoryError, match=r"--batch_size=16 at 256 x 256.*--batch_size=9 would fit"):
        step_memory.check_step_fits(cfg, OFFICIAL_PARAMETERS, fixed + 9.5 * per_slice)
    with pytest.raises(step_memory.StepMemoryError, match="even one slice does not fit"):
        step_memory.check_step_fits(cfg, OFFICIAL_PARAMETERS, fixed)


def test_training_refuses_a_step_larger_than_memory_before_writing(capsys, tmp_path, tiny_phantom, monkeypatch):
    monkeypatch.chdir(main.pathlib.Path(main.__file__).parent)
    monkeypatch.setattr(step_memory, "reachable_megabytes", lambda: 900.0)
    out = tmp_path / "run"
    args = ("--flagfile=configs/tiny_cpu.flags", f"--data_dir={tiny_phantom}", f"--output_dir={out}", "--max_steps=1")
    code = main_exit_code(*args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(lines) == 1 and "needs about" in lines[0] and "0.9 GiB available" in lines[0], err
    assert not out.exists()
