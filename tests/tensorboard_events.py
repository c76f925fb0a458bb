"""Reading a run's TensorBoard events back in tests."""
import tensorflow as tf
from tensorboard.plugins.hparams import metadata as hparams_metadata

from sifa_synthmix.evaluation.training_scalars import event_values


def read_events(run_dir):
    """{tag: {step: value or image count}} and the set of plugins, from a run's event files."""
    values, plugins = {}, set()
    for event, value in event_values(run_dir):
        plugins.add(value.metadata.plugin_data.plugin_name)
        tensor = tf.make_ndarray(value.tensor)
        values.setdefault(value.tag, {})[event.step] = tensor if tensor.dtype != object else len(tensor)
    return values, plugins


def hparams_records(run_dir):
    """{tag: parsed plugin data} of the HParams records (experiment, session start and end)."""
    parse = {"_hparams_/experiment": hparams_metadata.parse_experiment_plugin_data,
             "_hparams_/session_start_info": hparams_metadata.parse_session_start_info_plugin_data,
             "_hparams_/session_end_info": hparams_metadata.parse_session_end_info_plugin_data}
    return {value.tag: parse[value.tag](value.metadata.plugin_data.content)
            for _, value in event_values(run_dir) if value.tag in parse}
