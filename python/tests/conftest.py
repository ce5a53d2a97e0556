"""What the Python client's tests share: a real tp-coordinator (the build's), real Python processes running
the example, each bounded by a timeout and killed when its test ends (tests/support/processes.py). Run by
CTest (python_client_test) with the venv the package is pip-installed into (build/python-venv),
TPCOORD_BIN_DIR (the build) and TPCOORD_SOURCE_DIR set."""
import os
import sys

import pytest

BIN_DIR = os.environ.get("TPCOORD_BIN_DIR", "build")
SOURCE_DIR = os.environ.get("TPCOORD_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
EXAMPLE = os.path.join(SOURCE_DIR, "python", "examples", "train.py")
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "support"))
from processes import Process, free_port  # noqa: E402  (free_port: for the tests)
# Every job is bound to the token of the call that created it; this one is every test's (and every example
# process's, through the environment) unless a test says otherwise.
os.environ["TPCOORD_TOKEN"] = "python-client-test-token"


class Processes:
    def __init__(self, work):
        self.work = work
        self.all = []

    def start(self, name, argv, **kwargs):
        p = Process(self.work, name, argv, **kwargs)
        self.all.append(p)
        return p

    def coordinator(self, *extra, name="coordinator", listen="127.0.0.1:0", state="state"):
        c = self.start(name, [os.path.join(BIN_DIR, "coordinator", "tp-coordinator"), "--listen", listen,
                              "--state-dir", os.path.join(self.work, state)] + list(extra))
        c.address = c.wait_for_line(r"tp-coordinator listening on (\S+)").group(1)
        return c

    def example(self, name, coordinator, job, world_size, *extra, timeout=240, env=None):
        """python/examples/train.py, as a user runs it."""
        return self.start(name, [sys.executable, EXAMPLE, "--coordinator", coordinator, "--job", job,
                                 "--world-size", str(world_size)] + [str(e) for e in extra],
                          timeout=timeout, env=env)


@pytest.fixture
def procs(tmp_path):
    p = Processes(str(tmp_path))
    yield p
    for proc in p.all:
        proc.kill()
