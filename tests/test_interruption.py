"""A training process killed hard (SIGKILL) or asked to stop (SIGTERM) resumes where it left off."""
import signal
import subprocess
import sys
import time

import tensorflow as tf

from conftest import REPO

# The child runs main.py as a script, with grappler off as in the rest of the tests.
CHILD = ("import sys, runpy, tensorflow as tf; "
         "tf.config.optimizer.set_experimental_options({'disable_meta_optimizer': True}); "
         "sys.argv = ['main.py'] + sys.argv[1:]; runpy.run_path('main.py', run_name='__main__')")
TIMEOUT = 400


def start(data_dir, out, *extra):
    argv = [sys.executable, "-u", "-c", CHILD, "--flagfile=configs/tiny_cpu.flags", f"--data_dir={data_dir}",
            f"--output_dir={out}", "--save_every=2", "--log_every=1", "--image_every=1000", *extra]
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def checkpoint_step(out):
    path = tf.train.latest_checkpoint(str(out / "checkpoints"))
    return int(path.rsplit("-", 1)[1]) if path else 0


def wait_for_checkpoint_after(process, out, step):
    deadline = time.monotonic() + TIMEOUT
    while checkpoint_step(out) <= step:
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.5)
    return checkpoint_step(out)


def test_sigkill_then_sigterm_then_finish(tiny_phantom, tmp_path):
    out = tmp_path / "run"
    process = start(tiny_phantom, out, "--max_steps=100000")
    killed_at = wait_for_checkpoint_after(process, out, 0)
    process.kill()
    process.wait(TIMEOUT)

    process = start(tiny_phantom, out, "--max_steps=100000")
    wait_for_checkpoint_after(process, out, killed_at)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, output
    assert f"at step {killed_at}" in output.split("resumed", 1)[1].splitlines()[0]
    stopped_at = int(output.split("SIGTERM: stopping at step ")[1].split()[0])
    assert checkpoint_step(out) == stopped_at  # a checkpoint at the very step it stopped

    process = start(tiny_phantom, out, f"--max_steps={stopped_at + 2}")
    output, _ = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, output
    assert f"at step {stopped_at}" in output
    assert f"step {stopped_at + 2}/{stopped_at + 2}" in output
    assert checkpoint_step(out) == stopped_at + 2
