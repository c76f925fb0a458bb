"""Reading a run's TensorBoard events back in tests."""
import tensorflow as tf
from tensorboard.plugins.hparams import metadata as hparams_metadata


def read_events(run_dir):
    """{tag: {step: value or image count}} and the set of plugins, from a run's event files."""
    values, plugins = {}, set()
    for event, value in event_values(run_dir):
        plugins.add(value.metadata.plugin_data.plugin_name)
        tensor = tf.make_ndarray(value.tensor)
        values.setdefault(value.tag, {})[event.step] = tensor if tensor.dtype != object else len(tensor)
    return values, plugins


def event_values(run_dir):
    """(event, summary value) of every value in a run's event files."""
    for path in sorted((run_dir / "tb").glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                yield event, value


def hparams_records(run_dir):
    """{tag: parsed plugin data} of the HParams records (experiment, session start and end)."""
    parse = {"_hparams_/experiment": hparams_metadata.parse_experiment_plugin_data,
             "_hparams_/session_start_info": hparams_metadata.parse_session_start_info_plugin_data,
             "_hparams_/session_end_info": hparams_metadata.parse_session_end_info_plugin_data}
    return {value.tag: parse[value.tag](value.metadata.plugin_data.content)
            for _, value in event_values(run_dir) if value.tag in parse}
