"""Where the test suite's CPU time goes: a pytest plugin that logs each test's CPU seconds (its
worker's, setup and teardown included, plus those of the processes it started and waited for),
and a summary of such a log.

    python -m pytest -p benchmarks.suite_cpu --cpu-log=/tmp/suite_cpu.jsonl
    python -m benchmarks.suite_cpu /tmp/suite_cpu.jsonl

The suite is CPU-bound on two cores (three workers share them), so its wall time follows the
total printed here, not the per-test wall times of `--durations`, which include waiting for the
other workers (issue 15, docs/benchmarks.md).
"""
import argparse
import collections
import json
import os
import resource
import time

_STARTED = {}
_LOG = []  # the --cpu-log file, in a process that runs tests


def pytest_addoption(parser):
    parser.addoption("--cpu-log", default=None, help="append each test's CPU seconds to this JSON-lines file")


def _cpu_seconds():
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time(), children.ru_utime + children.ru_stime, time.monotonic()


def pytest_configure(config):
    """Logs in the processes that run tests: the xdist workers, or pytest without workers."""
    path = config.getoption("cpu_log")
    if path and ("PYTEST_XDIST_WORKER" in os.environ or not getattr(config.option, "numprocesses", None)):
        _LOG[:] = [path]


def pytest_runtest_logstart(nodeid, location):  # pylint: disable=unused-argument
    _STARTED[nodeid] = _cpu_seconds()


def pytest_runtest_logfinish(nodeid, location):  # pylint: disable=unused-argument
    started = _STARTED.pop(nodeid, None)
    if started is None or not _LOG:
        return
    ended = _cpu_seconds()
    record = {"test": nodeid, "cpu": ended[0] - started[0], "children": ended[1] - started[1],
              "wall": ended[2] - started[2], "worker": os.environ.get("PYTEST_XDIST_WORKER", "main")}
    with open(_LOG[0], "a", encoding="utf-8") as log:
        log.write(json.dumps(record) + "\n")


def summary(records, top=15):
    """Lines: the total, the CPU seconds per test module, and the `top` costliest tests."""
    cost = {r["test"]: r["cpu"] + r["children"] for r in records}
    modules = collections.Counter()
    for test, seconds in cost.items():
        modules[test.split("::")[0]] += seconds
    lines = [f"{len(cost)} tests, {sum(cost.values()):.0f} CPU seconds", "", "per module:"]
    lines += [f"  {seconds:7.1f}  {module}" for module, seconds in modules.most_common()]
    lines += ["", f"the {top} costliest tests:"]
    lines += [f"  {seconds:7.1f}  {test}" for test, seconds in sorted(cost.items(), key=lambda kv: -kv[1])[:top]]
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("log", help="a file written with --cpu-log")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    with open(args.log, encoding="utf-8") as log:
        records = [json.loads(line) for line in log if line.strip()]
    print("\n".join(summary(records, args.top)))


if __name__ == "__main__":
    main()
