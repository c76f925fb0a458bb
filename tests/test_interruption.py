"""A training process killed hard (SIGKILL) or asked to stop (SIGTERM, SIGINT) resumes where it left
off; a stop exits with 128 + the signal (143, 130) and releases the run folder's lock."""
import signal
import subprocess
import sys
import time

import tensorflow as tf

from conftest import REPO
from sifa_synthmix.runs.run_folder import LOCK_FILE

TIMEOUT = 400


def start(data_dir, out, *extra):
    argv = [sys.executable, "-u", "main.py", "--flagfile=configs/tiny_cpu.flags", f"--data_dir={data_dir}",
            f"--output_dir={out}", "--save_every=2", "--log_every=1", "--image_every=1000", "--max_steps=100000",
            *extra]
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def checkpoint_step(out):
    path = tf.train.latest_checkpoint(str(out / "checkpoints"))
    return int(path.rsplit("-", 1)[1]) if path else 0


def wait_until(process, ready):
    deadline = time.monotonic() + TIMEOUT
    while not ready():
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "not ready in time"
        time.sleep(0.05)


def wait_for_checkpoint_after(process, out, step):
    wait_until(process, lambda: checkpoint_step(out) > step)
    return checkpoint_step(out)


def stop(process, signum, expected_code):
    process.send_signal(signum)
    output, _ = process.communicate(timeout=TIMEOUT)
    assert process.returncode == expected_code, output
    assert "Traceback" not in output, output
    return output


def test_sigkill_then_sigterm_then_sigint(tiny_phantom, tmp_path):
    out = tmp_path / "run"
    process = start(tiny_phantom, out)
    killed_at = wait_for_checkpoint_after(process, out, 0)
    process.kill()
    process.wait(TIMEOUT)
    assert (out / LOCK_FILE).exists()  # a hard kill leaves its lock behind

    process = start(tiny_phantom, out)
    wait_for_checkpoint_after(process, out, killed_at)
    output = stop(process, signal.SIGTERM, 143)
    assert f"removed the stale lock {out / LOCK_FILE} of process" in output
    assert f"at step {killed_at}" in output.split("resumed", 1)[1].splitlines()[0]
    stopped_at = int(output.split("SIGTERM: stopped at step ")[1].split(",")[0])
    assert checkpoint_step(out) == stopped_at  # a checkpoint at the very step it stopped
    assert not (out / LOCK_FILE).exists()

    process = start(tiny_phantom, out)
    wait_for_checkpoint_after(process, out, stopped_at)
    output = stop(process, signal.SIGINT, 130)
    assert f"at step {stopped_at}" in output.split("resumed", 1)[1].splitlines()[0]
    interrupted_at = int(output.split("SIGINT: stopped at step ")[1].split(",")[0])
    assert checkpoint_step(out) == interrupted_at > stopped_at
    assert not (out / LOCK_FILE).exists()

    # Ctrl-C during start-up (the lock is taken, the train step not yet traced): one line, 130.
    process = start(tiny_phantom, out)
    wait_until(process, (out / LOCK_FILE).exists)
    output = stop(process, signal.SIGINT, 130)
    assert [line for line in output.splitlines() if line.startswith("error: ")] == ["error: stopped by SIGINT"]
    assert checkpoint_step(out) == interrupted_at
    assert not (out / LOCK_FILE).exists()

    log = (out / "train.log").read_text(encoding="utf-8")  # every session's lines, how each one ended
    assert f"removed the stale lock {out / LOCK_FILE}" in log
    assert f"SIGTERM: stopped at step {stopped_at}, " in log and f"SIGINT: stopped at step {interrupted_at}, " in log
    assert log.count("building the training step") >= 3
