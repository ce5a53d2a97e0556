"""What the Python client's tests share: a real tp-coordinator (the build's), real Python processes running
the example, each bounded by a timeout and killed when its test ends. Run by CTest (python_client_test) with
PYTHONPATH (the built package), TPCOORD_BIN_DIR (the build) and TPCOORD_SOURCE_DIR set."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

BIN_DIR = os.environ.get("TPCOORD_BIN_DIR", "build")
SOURCE_DIR = os.environ.get("TPCOORD_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
EXAMPLE = os.path.join(SOURCE_DIR, "python", "examples", "train.py")
# Every job is bound to the token of the call that created it; this one is every test's (and every example
# process's, through the environment) unless a test says otherwise.
os.environ["TPCOORD_TOKEN"] = "python-client-test-token"


class Process:
    """A child process (in its own process group) with its output in files, killed when the test ends."""

    def __init__(self, work, name, argv, timeout=300, env=None):
        self.name = name
        self.out_path = os.path.join(work, name + ".out")
        self.err_path = os.path.join(work, name + ".err")
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(["timeout", "-s", "KILL", str(timeout)] + argv, stdout=out, stderr=err,
                                         env=dict(os.environ, **(env or {})), start_new_session=True)

    def kill(self, sig=signal.SIGKILL):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def wait(self, seconds):
        try:
            return self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s still runs after %d s:\n%s" % (self.name, seconds, self.output()))

    def stdout(self):
        with open(self.out_path) as f:
            return f.read()

    def output(self):
        with open(self.err_path) as f:
            return "--- %s stdout\n%s--- %s stderr\n%s" % (self.name, self.stdout(), self.name, f.read())

    def records(self):
        """The JSON lines it printed."""
        return [json.loads(line) for line in self.stdout().splitlines() if line.startswith("{")]

    def wait_for(self, predicate, seconds=60):
        deadline = time.time() + seconds
        while time.time() < deadline:
            for r in self.records():
                if predicate(r):
                    return r
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("%s never printed the record awaited:\n%s" % (self.name, self.output()))


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
        deadline = time.time() + 30
        while time.time() < deadline:
            m = re.search(r"tp-coordinator listening on (\S+)", c.stdout())
            if m:
                c.address = m.group(1)
                return c
            if c.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("the coordinator did not start:\n" + c.output())

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
        proc.proc.wait()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
