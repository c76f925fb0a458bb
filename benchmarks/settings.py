"""What the suite measures: network widths, the TrainConfig of one configuration, and the grids
of the quick and full runs."""
import itertools

from sifa_synthmix.config import ModelConfig, RuntimeConfig, SynthMixConfig, TrainConfig
from sifa_synthmix.flags import resolve_graph_optimizer

# demo: configs/demo.flags (the inspector has its real size relative to SIFA); official: the paper.
WIDTHS = {
    "demo": {"ngf": 8, "ndf": 8, "encoder_base": 4, "inspector_ndf": 8},
    "official": {"ngf": 32, "ndf": 64, "encoder_base": 16, "inspector_ndf": 64},
}
PRECISION_NAMES = {"float32": "fp32", "mixed_bfloat16": "bf16"}


def spec(image_size, batch_size, widths="demo", precision="float32", jit_compile=False):
    """One benchmarked configuration, as plain JSON-able values (passed to the worker)."""
    return {"image_size": image_size, "batch_size": batch_size, "widths": widths,
            "precision": precision, "jit_compile": jit_compile}


def spec_name(values):
    xla = "+XLA" if values["jit_compile"] else ""
    return (f"{values['image_size']}px b{values['batch_size']} {values['widths']} "
            f"{PRECISION_NAMES[values['precision']]}{xla}")


def model_config(image_size, widths):
    sizes = WIDTHS[widths]
    return ModelConfig(image_size=image_size, ngf=sizes["ngf"], ndf=sizes["ndf"], encoder_base=sizes["encoder_base"])


def train_config(values, protocol="none"):
    """The TrainConfig of a spec: product defaults (pool 50, SynthMix k=8, --graph_optimizer=auto)
    otherwise."""
    return TrainConfig(
        model=model_config(values["image_size"], values["widths"]),
        synthmix=SynthMixConfig(protocol=protocol, inspector_ndf=WIDTHS[values["widths"]]["inspector_ndf"]),
        batch_size=values["batch_size"], output_dir="/nonexistent",
        runtime=RuntimeConfig(precision=values["precision"], jit_compile=values["jit_compile"],
                              graph_optimizer=resolve_graph_optimizer("auto", values["image_size"])))


# The paper's scale as a CPU can take it: 256 px, official widths, batch 2 (a step takes about 15 s),
# in float32 and, on CPUs with native bfloat16, in mixed_bfloat16.
PAPER_SCALE = spec(256, 2, widths="official")
PAPER_SCALE_BF16 = spec(256, 2, widths="official", precision="mixed_bfloat16")


def overhead_specs(full):
    """Configurations of the SynthMix / SIFA ratio (and first calls): the demo run and the paper scale."""
    del full
    return [spec(64, 4), PAPER_SCALE]


def overhead_rounds(values):
    """(interleaved rounds, steps per round, profiled steps) of an overhead measurement: fewer at
    the paper scale, where one step takes seconds and a profile would take minutes."""
    return (2, 1, 0) if values == PAPER_SCALE else (5, 2, 2)


def throughput_specs(full, native_bfloat16=True):
    """The training grid: SIFA at demo widths, and the paper scale (in bfloat16 too on CPUs with
    native bfloat16). Quick mode takes the demo's 64 px, batch 4 in float32 and bfloat16, and the
    paper scale; the XLA rows (a compile of 1-2 minutes each) are left to the full run."""
    paper = [PAPER_SCALE] + ([PAPER_SCALE_BF16] if native_bfloat16 else [])
    if not full:
        return [spec(64, 4), spec(64, 4, precision="mixed_bfloat16")] + paper
    grid = itertools.product((64, 128, 256), (1, 2, 8), ("float32", "mixed_bfloat16"), (False, True))
    return [spec(size, batch, precision=precision, jit_compile=xla) for size, batch, precision, xla in grid] + paper


def pipeline_specs(full):
    """(image size, batch) of the reader measurements; each needs a float32 grid entry to compare to."""
    return [(64, 1), (64, 8), (256, 1), (256, 8)] if full else [(64, 4)]


def evaluation_specs(full):
    """(image size, depth, widths) of the evaluation measurements."""
    specs = [(64, 32, "demo"), (256, 128, "demo")]
    return specs + ([(256, 128, "official")] if full else [])
