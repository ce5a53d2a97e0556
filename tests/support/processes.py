"""Real processes for the Python tests (tests/integration/observability_test.py, python/tests/): each child
runs under timeout(1) in its own process group with its output in files, so that a test can signal it, read
what it printed, and kill whatever is left of it when the test ends."""
import json
import os
import re
import signal
import socket
import subprocess
import time


class Process:
    def __init__(self, work, name, argv, env=None, timeout=300):
        self.name = name
        self.out_path = os.path.join(work, name + ".out")
        self.err_path = os.path.join(work, name + ".err")
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(["timeout", "-s", "KILL", str(timeout)] + argv, stdout=out, stderr=err,
                                         env=dict(os.environ, **(env or {})), start_new_session=True)

    def signal(self, sig):
        """Sends `sig` to the process (timeout(1) and its only child share the group), if it still runs."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def kill(self):
        """SIGKILL, and waits for it to be gone."""
        self.signal(signal.SIGKILL)
        self.proc.wait()

    def wait(self, seconds):
        """Its exit status; an AssertionError with its output if it still runs after `seconds`."""
        try:
            return self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s still runs after %d s:\n%s" % (self.name, seconds, self.output())) from None

    def stdout(self):
        with open(self.out_path) as f:
            return f.read()

    def stderr(self):
        with open(self.err_path) as f:
            return f.read()

    def output(self):
        return "--- %s stdout\n%s--- %s stderr\n%s" % (self.name, self.stdout(), self.name, self.stderr())

    def records(self):
        """The JSON lines it printed."""
        return [json.loads(line) for line in self.stdout().splitlines() if line.startswith("{")]

    def wait_for_line(self, pattern, seconds=30):
        """The match of the first line of its stdout that matches `pattern`, once it printed one."""
        return self._wait_for(lambda: next(filter(None, map(re.compile(pattern).search,
                                                            self.stdout().splitlines())), None),
                              seconds, "a line matching %r" % pattern)

    def wait_for(self, predicate, seconds=60):
        """The first JSON line it printed that satisfies `predicate`, once it printed one."""
        return self._wait_for(lambda: next(filter(predicate, self.records()), None), seconds, "the record awaited")

    def _wait_for(self, find, seconds, what):
        deadline = time.time() + seconds
        while time.time() < deadline:
            found = find()
            if found is not None:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("%s never printed %s:\n%s" % (self.name, what, self.output()))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
