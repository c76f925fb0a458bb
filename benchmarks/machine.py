"""What the numbers were measured on: cores, CPU model, memory, TensorFlow version, and whether
TensorFlow's oneDNN kernels were on."""
import os

import tensorflow as tf

from sifa_synthmix import cpu_features


def native_bfloat16():
    return bool(cpu_features.native_bfloat16())


def describe_machine():
    return {**cpu_features.describe_cpu(), "tensorflow": tf.__version__,
            "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset")}
