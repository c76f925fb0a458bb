"""FLOPs of one forward pass of the official SIFA graph (model_setup of the TF1 code) per slice
pair (one source and one target slice), from each sub-network's traced forward pass."""
import tensorflow as tf

from benchmarks.flops import function_flops
from benchmarks.settings import model_config
from sifa_synthmix.models.networks import SIFANetworks, set_precision
from sifa_synthmix.models.traced_model import inline_calls

# How often model_setup runs each sub-network per slice pair: g_A on A and fake_A; e_B, s_B,
# s_B_ll on B and fake_B; de_B twice (fake_A, cycle_A); d_A on A, fake_A, pooled fake_A and
# cycle_A; d_B on B, fake_B and pooled fake_B; d_P and d_P_ll on both predictions.
OFFICIAL_CALLS = {"g_A": 2, "e_B": 2, "de_B": 2, "s_B": 2, "s_B_ll": 2, "d_A": 4, "d_B": 3,
                  "d_P": 2, "d_P_ll": 2}


def _network_inputs(networks):
    """Input specs (batch 1) of each sub-network, from its Keras inputs."""
    return {scope: [tf.TensorSpec([1, *t.shape[1:]], tf.float32) for t in getattr(networks, scope).inputs]
            for scope in OFFICIAL_CALLS}


def network_flops(image_size=256, widths="official"):
    """{scope: forward FLOPs for one slice} of every SIFA sub-network (float32)."""
    set_precision("float32")
    networks = SIFANetworks(model_config(image_size, widths))
    specs = _network_inputs(networks)
    flops = {}
    for scope in OFFICIAL_CALLS:
        model = getattr(networks, scope)
        call = (lambda *x, m=model: m(list(x))) if len(specs[scope]) > 1 else (lambda x, m=model: m(x))
        with inline_calls():
            flops[scope] = sum(function_flops(call, *specs[scope]).values())
    return flops


def official_forward_flops(image_size=256, widths="official"):
    """{"per_network": {scope: FLOPs}, "total": FLOPs of model_setup per slice pair}."""
    per_network = network_flops(image_size, widths)
    total = sum(OFFICIAL_CALLS[scope] * flops for scope, flops in per_network.items())
    return {"image_size": image_size, "widths": widths, "per_network": per_network,
            "calls": OFFICIAL_CALLS, "total": total}
