"""The suite's own set-up (conftest.py): its workers and the processes they start run on jemalloc
when it is installed, so the speed-up cannot vanish unnoticed."""
import os
import pathlib
import subprocess
import sys

import pytest

from conftest import JEMALLOC


def test_workers_and_the_processes_they_start_run_on_jemalloc_when_it_is_installed():
    if not JEMALLOC:
        pytest.skip("jemalloc is not installed (Debian/Ubuntu: apt-get install libjemalloc2)")
    if os.environ.get("LD_PRELOAD") != JEMALLOC:
        pytest.skip(f"LD_PRELOAD was set before pytest started: {os.environ.get('LD_PRELOAD')!r}")
    child_maps = subprocess.run([sys.executable, "-c", "print(open('/proc/self/maps').read())"],
                                capture_output=True, text=True, check=True).stdout
    assert "libjemalloc" in child_maps
    if "PYTEST_XDIST_WORKER" in os.environ:
        assert "libjemalloc" in pathlib.Path("/proc/self/maps").read_text()
