"""main.py's command line: flags typed there win over a flagfile's, --help lists the project's
flags by group, and a command starts without TensorFlow's start-up noise and with its oneDNN
kernels on."""
import json
import os
import platform
import subprocess
import sys

import pytest

import main
from conftest import REPO
from sifa_synthmix import flags as flags_lib


def parsed(*argv):
    main.FLAGS.unparse_flags()
    main.parse_flags(["main.py", *argv])
    return main.FLAGS


@pytest.mark.parametrize("argv", [
    ("--mode=evaluate", "--flagfile=configs/demo.flags", "--max_steps", "7"),
    ("--flagfile=configs/demo.flags", "--mode=evaluate", "--max_steps=7"),
    ("--mode=evaluate", "--flagfile", "configs/demo.flags", "--max_steps=7"),
], ids=["typed first", "typed last", "two-token flagfile"])
def test_typed_flags_win_over_a_flagfiles_whatever_the_order(monkeypatch, argv):
    monkeypatch.chdir(REPO)
    values = parsed(*argv)
    assert (values.mode, values.max_steps) == ("evaluate", 7)  # demo.flags: experiment, 500
    assert values.output_dir == "runs/demo" and values.image_size == 64  # the rest still from demo.flags


def test_a_later_flagfile_wins_over_an_earlier_one_and_arguments_after_double_dash_stay(tmp_path):
    first, second = tmp_path / "first.flags", tmp_path / "second.flags"
    first.write_text("--max_steps=5\n--ngf=8\n")
    second.write_text("--max_steps=9\n")
    assert main.flagfiles_first(["main.py", "--ngf=4", f"--flagfile={first}", f"--flagfile={second}", "--",
                                 "--ngf=2"]) == ["main.py", f"--flagfile={first}", f"--flagfile={second}",
                                                 "--ngf=4", "--", "--ngf=2"]
    values = parsed(f"--flagfile={first}", "--ngf=4", f"--flagfile={second}")
    assert (values.max_steps, values.ngf) == (9, 4)


def test_help_lists_the_projects_flags_by_group(capsys):
    with pytest.raises(SystemExit) as stop:
        main.parse_flags(["main.py", "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    headings = [line[:-1] for line in out.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert headings == list(flags_lib.GROUPS)
    starts = [out.index(f"\n{heading}:\n") for heading in headings] + [len(out)]
    sections = {heading: out[start:end] for heading, start, end in zip(headings, starts, starts[1:])}
    for group, flag in (("command", "--mode:"), ("data", "--data_dir:"), ("model", "--ngf:"),
                        ("training", "--max_steps:"), ("SynthMix", "--synthmix_k:"),
                        ("evaluation", "--[no]write_images:"), ("distribution", "--[no]sync_batch_norm:")):
        assert flag in sections[group], group
    assert "--helpfull" in out


def test_a_command_shows_no_tensorflow_start_up_noise():
    """Without TF_CPP_MIN_LOG_LEVEL, stderr holds nothing: no oneDNN notice, no CUDA probe."""
    result = subprocess.run([sys.executable, "main.py", "--mode=summary", "--flagfile=configs/tiny_cpu.flags"],
                            cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert (result.returncode, result.stderr) == (0, "")
    assert json.loads(result.stdout)["total"] == 555423


@pytest.mark.skipif(platform.machine() != "x86_64", reason="oneDNN is switched on for x86-64 CPUs only")
@pytest.mark.parametrize("setting, onednn_on", [(None, True), ("0", False)])
def test_importing_the_package_switches_onednn_on_unless_the_user_set_it(setting, onednn_on):
    """TensorFlow leaves oneDNN off on CPUs without AVX-512 VNNI/bfloat16/AMX; the package turns it
    on before TensorFlow loads. TensorFlow's own start-up line says whether it is on."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
    if setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = setting
    result = subprocess.run([sys.executable, "-c", "import sifa_synthmix, tensorflow"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300, check=True)
    assert ("oneDNN custom operations are on" in result.stderr) == onednn_on


@pytest.mark.parametrize("has_gpu, bfloat16, image_size, expected", [
    (True, ["avx512_bf16"], 256, "mixed_float16"),  # a GPU: float16, whatever the CPU
    (False, ["avx512_bf16"], 256, "mixed_bfloat16"),
    (False, ["amx_bf16"], flags_lib.BFLOAT16_MIN_IMAGE_SIZE, "mixed_bfloat16"),
    (False, ["avx512_bf16"], 32, "float32"),  # below the measured sizes
    (False, [], 256, "float32"),  # no bfloat16 instructions
])
def test_auto_precision_resolves_per_device_kind(has_gpu, bfloat16, image_size, expected):
    assert flags_lib.resolve_precision("auto", image_size, has_gpu, bfloat16) == expected
    assert flags_lib.resolve_precision("float32", image_size, has_gpu, bfloat16) == "float32"


@pytest.mark.parametrize("has_gpu, image_size, expected", [
    (True, 32, "on"),  # a GPU: on at every size
    (False, flags_lib.GRAPH_OPTIMIZER_MIN_IMAGE_SIZE, "on"),
    (False, flags_lib.GRAPH_OPTIMIZER_MIN_IMAGE_SIZE // 2, "off"),
])
def test_auto_graph_optimizer_resolves_per_device_kind_and_size(has_gpu, image_size, expected):
    assert flags_lib.resolve_graph_optimizer("auto", image_size, has_gpu) == expected
    assert flags_lib.resolve_graph_optimizer("off", image_size, has_gpu) == "off"


def test_the_start_names_the_cpus_bfloat16_instructions(monkeypatch):
    from sifa_synthmix import cpu_features  # pylint: disable=import-outside-toplevel
    from sifa_synthmix.training import reporting  # pylint: disable=import-outside-toplevel

    strategy = type("OneDevice", (), {"num_replicas_in_sync": 1})()
    monkeypatch.setattr(cpu_features, "cpu_flags", lambda path="": {"avx512f", "avx512_bf16", "amx_bf16"})
    assert "bfloat16 instructions: amx_bf16 avx512_bf16" in reporting.describe_devices(strategy)
    monkeypatch.setattr(cpu_features, "cpu_flags", lambda path="": {"avx2"})
    assert "no bfloat16 instructions" in reporting.describe_devices(strategy)
