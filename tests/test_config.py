"""TrainConfig split into model, data, SynthMix, schedule and runtime parts (issue 35): every flag of
a field takes the field's default, and a config.json written before the split loads as the same
run and resumes.

tests/data/config_pre_split.json was written by the code before the split (b4ff8fa), through
main.py's flags: `--flagfile=configs/demo.flags --output_dir=/runs/old_demo
--data_dir=/data/phantom --precision=float32 --graph_optimizer=off --eval_every=auto
--mix_protocol=synthmix --synthmix_k=8 --target_range=-1000,2000 --save_every=50 --log_every=5`.
"""
import dataclasses
import json
import pathlib
import shutil

from conftest import config_from_argv
from sifa_synthmix import flags as flags_lib
from sifa_synthmix.config import (EVAL_EVERY_AUTO, FLAG_NAMES, DataConfig, ModelConfig, RuntimeConfig, ScheduleConfig,
                                  SynthMixConfig, TrainConfig, flat_settings)
from sifa_synthmix.runs.run_folder import (CONFIG_FILE, LATER_SETTINGS, check_run_folder, load_run_config,
                                           write_run_config)

PRE_SPLIT_CONFIG = pathlib.Path(__file__).resolve().parent / "data" / "config_pre_split.json"
# The run that config.json describes, as the split config writes it.
PRE_SPLIT_RUN = TrainConfig(
    model=ModelConfig(image_size=64, ngf=8, ndf=8, encoder_base=4),
    data=DataConfig(data_dir="/data/phantom", target_range=(-1000.0, 2000.0)),
    synthmix=SynthMixConfig(protocol="synthmix", k=8, inspector_ndf=8),
    schedule=ScheduleConfig(max_steps=500, save_every=50, log_every=5, image_every=250, eval_every=EVAL_EVERY_AUTO),
    runtime=RuntimeConfig(precision="float32", graph_optimizer="off"),
    output_dir="/runs/old_demo", batch_size=4)
# Flags whose default is "auto", which the field cannot hold: the flag resolves it.
AUTO_FLAGS = ("precision", "graph_optimizer", "eval_every")


def old_run(tmp_path):
    """A run folder holding the pre-split config.json (no checkpoint)."""
    run = tmp_path / "old_demo"
    run.mkdir()
    shutil.copy(PRE_SPLIT_CONFIG, run / CONFIG_FILE)
    return run


def test_a_config_json_written_before_the_split_loads_as_the_same_run(tmp_path):
    saved = json.loads(PRE_SPLIT_CONFIG.read_text(encoding="utf-8"))
    assert "max_steps" in saved and "schedule" not in saved  # the old, flat form
    loaded = load_run_config(old_run(tmp_path))
    assert loaded == PRE_SPLIT_RUN
    as_json = json.loads(json.dumps(loaded.to_dict()))
    # Every setting keeps its name and value; settings added since take LATER_SETTINGS' values.
    assert flat_settings(as_json) == {**LATER_SETTINGS, **flat_settings(saved)}
    write_run_config(loaded, tmp_path)
    rewritten = json.loads((tmp_path / CONFIG_FILE).read_text(encoding="utf-8"))
    assert rewritten["schedule"]["max_steps"] == 500 and "max_steps" not in rewritten
    assert load_run_config(tmp_path) == loaded


def test_a_run_written_before_the_split_resumes_with_its_flags(tmp_path):
    """The resume check compares the same setting names in both forms: the schedule (and the
    distribution) may change on resume, the precision may not."""
    run = old_run(tmp_path)
    same = dataclasses.replace(PRE_SPLIT_RUN, output_dir=str(run))
    assert check_run_folder(same) == "resume"
    longer = dataclasses.replace(same, schedule=dataclasses.replace(same.schedule, max_steps=800, keep_checkpoints=5))
    assert check_run_folder(longer) == "resume"
    bfloat16 = dataclasses.replace(same, runtime=dataclasses.replace(same.runtime, precision="mixed_bfloat16"))
    assert check_run_folder(bfloat16) == "retry"  # other flags; the old run saved no checkpoint


def test_every_flag_of_a_config_field_takes_the_fields_default():
    cfg = config_from_argv()
    parts = [(TrainConfig(), cfg)] + [(getattr(TrainConfig(), f.name), getattr(cfg, f.name))
                                      for f in dataclasses.fields(TrainConfig)
                                      if dataclasses.is_dataclass(f.default)]
    checked = 0
    for default, parsed in parts:
        for field in dataclasses.fields(default):
            flag = FLAG_NAMES.get(field.name, field.name)
            if dataclasses.is_dataclass(field.default) or flag in AUTO_FLAGS:
                continue
            value = getattr(default, field.name)
            assert flags_lib.FLAGS[flag].default == (list(value) if isinstance(value, tuple) else value), flag
            assert getattr(parsed, field.name) == value, flag
            checked += 1
    assert checked == len(flat_settings(TrainConfig().to_dict())) - len(AUTO_FLAGS)
    assert (cfg.schedule.eval_every, {flags_lib.FLAGS[f].default for f in AUTO_FLAGS}) == (EVAL_EVERY_AUTO, {"auto"})
