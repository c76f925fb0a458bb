"""Seconds per training step of the peer, SIFA-pytorch (JianghaoWu/SIFA-pytorch on GitHub), on this
CPU: its step as its train.py runs it (`update_GAN` then `update_seg`), 256 x 256 slices, batch 2,
its default widths (they are fixed in its network.py), float32 and bfloat16 under torch.autocast,
timed the way benchmarks.step_time times this project's step (docs/benchmarks.md, "The merged
update schedule and the peer").

Not a dependency of this project, and not run by its tests: it needs PyTorch and a checkout of the
peer, both outside this repository. Set them up once (torch's CPU build is enough; torchvision is
not needed: its one use in the peer, saving sample images, is not part of a step):

    python3 -m venv /tmp/peer && /tmp/peer/bin/pip install torch numpy
    git clone https://github.com/JianghaoWu/SIFA-pytorch /tmp/SIFA-pytorch

then, from this repository's root:

    /tmp/peer/bin/python -m benchmarks.peer_step_time --peer_dir=/tmp/SIFA-pytorch --precisions=float32,bfloat16

It prints the machine (as benchmarks/machine.py describes it, with torch's version instead of
TensorFlow's), then per precision the median seconds per step of interleaved rounds, then one JSON
line. The peer's model.py switches autograd's anomaly detection on when imported, a debugging aid
that slows its backward passes; it is switched off again unless --anomaly_detection is given.
bfloat16 runs only where the CPU has bfloat16 instructions (avx512_bf16 or amx_bf16), unless
--force_bfloat16.
"""
import argparse
import importlib
import json
import os
import statistics
import sys
import time
import types

from sifa_synthmix.command_errors import fail
from sifa_synthmix.cpu_features import describe_cpu, native_bfloat16

# The peer's defaults (config/train.cfg), except the class count: 5, this project's (MM-WHS: four
# structures and background), so that s_B's and d_P's shapes match the step it is compared with.
NUM_CLASSES = 5


def describe_machine(torch):
    return {**describe_cpu(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def import_peer(peer_dir):
    """The peer's SIFA class, from PEER_DIR/model.py (a stand-in torchvision when it is absent)."""
    try:
        import torch  # pylint: disable=import-outside-toplevel
    except ImportError:
        fail(f"torch is not installed for {sys.executable}; set up the peer as this script's docstring says "
             "(python3 -m venv /tmp/peer && /tmp/peer/bin/pip install torch numpy)")
    if not os.path.isfile(os.path.join(peer_dir, "model.py")) or not os.path.isfile(
            os.path.join(peer_dir, "network.py")):
        fail(f"--peer_dir={peer_dir} holds no SIFA-pytorch checkout (model.py, network.py); "
             "git clone https://github.com/JianghaoWu/SIFA-pytorch there")
    try:
        importlib.import_module("torchvision.utils")
    except ImportError:
        stand_in = types.ModuleType("torchvision")
        stand_in.utils = types.ModuleType("torchvision.utils")
        stand_in.utils.save_image = lambda *args, **kwargs: None
        sys.modules.update({"torchvision": stand_in, "torchvision.utils": stand_in.utils})
    sys.path.insert(0, peer_dir)
    model = importlib.import_module("model")
    return torch, model.SIFA


def build_peer(torch, sifa_class, args):
    params = {"train": {"num_classes": NUM_CLASSES, "lr": 1e-4, "lr_seg": 5e-5, "skip": args.skip}}
    torch.manual_seed(0)
    peer = sifa_class(params)
    peer.train()
    peer.initialize()
    return peer


def random_batch(torch, args):
    """Fixed random (A, A's labels as [N, 1, H, W] class indices, B), images in [-1, 1]."""
    generator = torch.Generator().manual_seed(1)
    shape = (args.batch_size, 1, args.image_size, args.image_size)
    images = torch.rand((2, *shape), generator=generator) * 2.0 - 1.0
    labels = torch.randint(0, NUM_CLASSES, shape, generator=generator)
    return images[0], labels, images[1]


def peer_step(torch, peer, batch, precision):
    """One step as the peer's train.py takes it: update_GAN, then update_seg."""
    source, labels, target = batch
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
        peer.update_GAN(source, target)
        peer.update_seg(source, target, labels)
    return peer.loss_seg


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--peer_dir", default="/tmp/SIFA-pytorch", help="A checkout of JianghaoWu/SIFA-pytorch.")
    parser.add_argument("--precisions", default="float32,bfloat16", help="float32 and/or bfloat16 (autocast).")
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--skip", action=argparse.BooleanOptionalAction, default=True,
                        help="tanh(image + conv) at the end of G and the decoder, as this project's default "
                             "(the peer's train.cfg has it off; it costs one addition).")
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds per precision.")
    parser.add_argument("--steps_per_round", type=int, default=2)
    parser.add_argument("--anomaly_detection", action="store_true",
                        help="Keep autograd's anomaly detection on, as the peer's model.py sets it.")
    parser.add_argument("--force_bfloat16", action="store_true", help="Time bfloat16 without bfloat16 instructions.")
    args = parser.parse_args()
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if not precisions or set(precisions) - {"float32", "bfloat16"}:
        fail(f"--precisions takes float32 and/or bfloat16, got {args.precisions!r}")
    torch, sifa_class = import_peer(os.path.abspath(args.peer_dir))
    torch.autograd.set_detect_anomaly(args.anomaly_detection)
    if "bfloat16" in precisions and not (native_bfloat16() or args.force_bfloat16):
        print("note: no bfloat16 instructions on this CPU (avx512_bf16, amx_bf16): bfloat16 left out")
        precisions.remove("bfloat16")
    print(json.dumps(describe_machine(torch)))
    print(f"SIFA-pytorch step (update_GAN + update_seg), {args.image_size} px, batch {args.batch_size}, "
          f"{NUM_CLASSES} classes, skip {args.skip}, anomaly detection {'on' if args.anomaly_detection else 'off'}")
    batch = random_batch(torch, args)
    peers, first_call = {}, {}
    for precision in precisions:
        peers[precision] = build_peer(torch, sifa_class, args)
        start = time.perf_counter()
        peer_step(torch, peers[precision], batch, precision)
        first_call[precision] = time.perf_counter() - start
    timings = {precision: [] for precision in precisions}
    for _ in range(args.rounds):
        for precision, peer in peers.items():
            start = time.perf_counter()
            for _ in range(args.steps_per_round):
                peer_step(torch, peer, batch, precision)
            timings[precision].append((time.perf_counter() - start) / args.steps_per_round)
    medians = {precision: statistics.median(t) for precision, t in timings.items()}
    for precision, median in medians.items():
        print(f"{precision:>9}: {median:.4f} s/step (median of {args.rounds} rounds: "
              f"{', '.join(f'{t:.3f}' for t in timings[precision])}), first step {first_call[precision]:.1f} s")
    print(json.dumps({"image_size": args.image_size, "batch_size": args.batch_size, "seconds_per_step": medians,
                      "rounds": timings, "first_step_seconds": first_call,
                      "anomaly_detection": args.anomaly_detection}))


if __name__ == "__main__":
    main()
