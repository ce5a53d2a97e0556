#!/usr/bin/env python3
"""What an operator sees of a real coordinator while real workers train: the Prometheus endpoint read by
Prometheus' own text parser (Debian's python3-prometheus-client), the status page loaded in a real headless
Chromium, tpctl watch / events, JSON logs, and the admin token in front of all of it.

Every process it starts is bounded by a timeout and killed when the test ends. Run by CTest:
  observability_test.py --bin-dir BUILD --source-dir REPO --artifacts DIR
The status page's screenshot is left in DIR/status-page.png (README.md shows a copy of it).
"""
import argparse
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from processes import Process, free_port  # noqa: E402

ARGS = None
TOKEN = "observability-test-job-token"
ADMIN = "observability-test-admin-token"
STEPS = 120


def config(steps):
    return json.dumps({
        "train_batch_size": 8, "train_micro_batch_size_per_gpu": 2, "steps_per_print": 1,
        "optimizer": {"type": "AdamW", "params": {"lr": 0.003}},
        "tpcoord": {"steps": steps, "seq_len": 32, "seed": 7}})


def start(test, name, argv, env=None, timeout=300):
    """A child process (tests/support/processes.py), killed when the test ends."""
    p = Process(test.work, name, argv, env, timeout)
    test.addCleanup(p.kill)
    return p


def bin_path(rel):
    return os.path.join(ARGS.bin_dir, rel)


def http_get(url, headers=None, method="GET"):
    """(status, headers, body) of one request; never raises for an HTTP error status."""
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def scrape(url, headers=None):
    """Every sample of /metrics, parsed by prometheus_client: {(name, ((label, value), ...)): value}."""
    status, response_headers, body = http_get(url + "/metrics", headers)
    assert status == 200, (status, body)
    assert response_headers["Content-Type"].startswith("text/plain; version=0.0.4"), response_headers
    samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


class ObservabilityTest(unittest.TestCase):
    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="tpcoord-observability-")
        self.addCleanup(shutil.rmtree, self.work, True)
        with open(os.path.join(self.work, "ds_config.json"), "w") as f:
            f.write(config(STEPS))
        with open(os.path.join(self.work, "long.json"), "w") as f:
            f.write(config(100000))

    def coordinator(self, name, *extra, state="state"):
        c = start(self, name, [bin_path("coordinator/tp-coordinator"), "--listen", "127.0.0.1:0", "--state-dir",
                                 os.path.join(self.work, state), "--metrics-listen", "127.0.0.1:0"] + list(extra))
        c.address = c.wait_for_line(r"tp-coordinator listening on (\S+)").group(1)
        c.metrics = c.wait_for_line(r"tp-coordinator metrics on (http://\S+)/metrics").group(1)
        return c

    def worker(self, name, coordinator, job, world, rank, config_file="ds_config.json", extra=()):
        return start(self, name, [
            bin_path("worker/tp-worker"), "--coordinator", coordinator.address, "--job", job, "--world-size",
            str(world), "--rank", str(rank), "--tp-size", "2", "--host", "127.0.0.1", "--config",
            os.path.join(self.work, config_file), "--random-init", "tiny", "--data",
            os.path.join(ARGS.source_dir, "deploy/data/public_domain.txt"), "--timeout", "120s"] + list(extra),
            env={"TPCOORD_TOKEN": TOKEN})

    def tpctl(self, coordinator, *args):
        result = subprocess.run([bin_path("coordinator/tpctl"), "--coordinator", coordinator.address] + list(args),
                                env=dict(os.environ, TPCOORD_TOKEN=TOKEN), capture_output=True, text=True,
                                timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout

    def chromium(self, *args):
        # Headless, no sandbox (root in CI), and nothing but loopback: every other address goes to a dead proxy.
        argv = ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--proxy-server=socks5://127.0.0.1:9", "--user-data-dir=" +
                os.path.join(self.work, "chromium")] + list(args)
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    def test_a_four_worker_job_moves_the_metrics_and_draws_its_curve(self):
        coordinator = self.coordinator("coordinator", "--log-format", "json")
        workers = [self.worker("worker-%d" % r, coordinator, "llama-demo", 4, r,
                               extra=["--log-format", "json"] if r == 0 else []) for r in range(4)]
        # During the run: the job's step moves, and no counter ever goes down between scrapes.
        seen_steps, previous = [], {}
        while all(w.proc.poll() is None for w in workers) and len(seen_steps) < 400:
            samples = scrape(coordinator.metrics)
            for key, v in samples.items():
                if key[0].endswith(("_total", "_count")) and key in previous:
                    self.assertGreaterEqual(v, previous[key], key)
            previous = samples
            step = value(samples, "tpcoord_job_step", job_id="llama-demo")
            if step is not None and step < STEPS:
                seen_steps.append(step)
                self.assertEqual(value(samples, "tpcoord_job_phase", job_id="llama-demo", phase="running"), 1)
                self.assertEqual(value(samples, "tpcoord_job_healthy_members", job_id="llama-demo"), 4)
                self.assertGreater(value(samples, "tpcoord_job_tokens_per_second", job_id="llama-demo"), 0)
            time.sleep(0.1)
        for w in workers:
            self.assertEqual(w.wait(240), 0, w.stderr())
        self.assertGreaterEqual(len(set(seen_steps)), 2, "the step never moved between scrapes: %s" % seen_steps)
        self.assertEqual(seen_steps, sorted(seen_steps))

        # After: the whole job, counted once.
        samples = scrape(coordinator.metrics)
        self.assertEqual(value(samples, "tpcoord_job_step", job_id="llama-demo"), STEPS)
        self.assertEqual(value(samples, "tpcoord_job_total_steps", job_id="llama-demo"), STEPS)
        self.assertIsNotNone(value(samples, "tpcoord_job_eval_loss", job_id="llama-demo"))
        self.assertEqual(value(samples, "tpcoord_job_phase", job_id="llama-demo", phase="completed"), 1)
        self.assertEqual(value(samples, "tpcoord_jobs", phase="completed"), 1)
        self.assertEqual(value(samples, "tpcoord_generations_started_total"), 1)
        self.assertEqual(value(samples, "tpcoord_generations_ended_total", reason="completed"), 1)
        for reason in ("lease_expired", "worker_gone", "worker_left", "worker_rejoined", "start_failed"):
            self.assertEqual(value(samples, "tpcoord_generations_ended_total", reason=reason), 0, reason)
        for method in ("Session", "Session:join", "Session:merge_config", "Session:leave", "RecordTpInitArgs"):
            self.assertEqual(value(samples, "tpcoord_rpcs_total", method=method, code="OK"), 4, method)
            self.assertEqual(value(samples, "tpcoord_rpc_duration_seconds_count", method=method), 4, method)
        self.assertGreater(value(samples, "tpcoord_rpcs_total", method="StoreGet", code="OK"), 0)
        self.assertGreater(value(samples, "tpcoord_state_store_write_duration_seconds_count"), 0)
        self.assertEqual(value(samples, "tpcoord_state_store_write_failures_total"), 0)
        self.assertEqual(value(samples, "tpcoord_leader"), 1)
        self.assertEqual(value(samples, "tpcoord_parked_calls"), 0)
        first_loss = float(re.search(r"step 1/%d loss (\S+)" % STEPS, workers[0].stdout()).group(1))
        self.assertLess(value(samples, "tpcoord_job_loss", job_id="llama-demo"), first_loss)

        # The status page in a real browser: the job, and one point of its curve per step reported.
        page = self.chromium("--dump-dom", coordinator.metrics + "/")
        self.assertEqual(page.returncode, 0, page.stderr)
        self.assertIn('<td class="job">llama-demo</td>', page.stdout)
        self.assertIn("step %d / %d" % (STEPS, STEPS), page.stdout)
        points = re.search(r'<polyline class="loss" points="([^"]*)"', page.stdout)
        self.assertIsNotNone(points, page.stdout)
        self.assertEqual(len(points.group(1).split()), STEPS)
        os.makedirs(ARGS.artifacts, exist_ok=True)
        screenshot = os.path.join(ARGS.artifacts, "status-page.png")
        shot = self.chromium("--window-size=1100,280", "--hide-scrollbars", "--screenshot=" + screenshot,
                             coordinator.metrics + "/")
        self.assertEqual(shot.returncode, 0, shot.stderr)
        with open(screenshot, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

        # Rank 0 logged JSON: every line one object about its job, generation and rank, one "step" per step.
        worker_events = []
        for line in workers[0].stdout().splitlines():
            entry = json.loads(line)
            self.assertEqual((entry["program"], entry["job"], entry["generation"], entry["rank"]),
                             ("tp-worker", "llama-demo", 1, 0), entry)
            worker_events.append(entry["event"])
        self.assertEqual(worker_events.count("step"), STEPS)
        self.assertEqual(worker_events[-2:], ["eval", "done"])

        # tpctl watch: one line, the job's end; JSON logs: every line one object, the job's events in order.
        watch = self.tpctl(coordinator, "watch", "llama-demo", "--count", "1")
        self.assertRegex(watch, r"llama-demo  generation 1: completed  step %d/%d \(100%%\) loss \S+ eval \S+ "
                                r"\d+ tokens/s \d+ ms/step  members 4/4" % (STEPS, STEPS))
        events = []
        for line in coordinator.stderr().splitlines():
            entry = json.loads(line)
            self.assertEqual(set(entry) - {"time", "level", "program", "job", "generation", "rank", "event",
                                           "message"}, set(), entry)
            if entry.get("job") == "llama-demo":
                events.append((entry["generation"], entry["event"]))
        self.assertEqual(events, [(1, "joining"), (1, "running"), (1, "completed")])

    def test_a_killed_worker_counts_as_worker_gone_and_events_survive_a_restart(self):
        coordinator = self.coordinator("coordinator")
        workers = [self.worker("worker-%d" % r, coordinator, "victim", 2, r, "long.json") for r in range(2)]
        workers[0].wait_for_line(r"^step 5/", 120)
        workers[1].signal(signal.SIGKILL)
        deadline = time.time() + 30
        while time.time() < deadline:
            samples = scrape(coordinator.metrics)
            if value(samples, "tpcoord_generations_ended_total", reason="worker_gone") == 1:
                break
            time.sleep(0.1)
        self.assertEqual(value(samples, "tpcoord_generations_ended_total", reason="worker_gone"), 1)
        self.assertEqual(value(samples, "tpcoord_generations_ended_total", reason="completed"), 0)
        self.assertEqual(value(samples, "tpcoord_generations_ended_total", reason="lease_expired"), 0)
        workers[0].kill()

        def generation_one(events):
            rows = [line.split() for line in events.splitlines()[1:]]
            row = [r for r in rows if r[0] == "1"]
            self.assertEqual(len(row), 1, events)
            return row[0]

        before = self.tpctl(coordinator, "events", "victim")
        self.assertTrue(before.startswith("GENERATION STARTED"), before)
        row = generation_one(before)
        self.assertEqual(row[5:9], ["failed", "2", "worker_gone", "1"], before)  # after date, time, duration
        self.assertIn("rank 1 (host 127.0.0.1, worker ", before)
        self.assertIn("is gone: its session closed before it finished", before)

        coordinator.signal(signal.SIGTERM)
        self.assertEqual(coordinator.wait(30), 0, coordinator.stderr())
        restarted = self.coordinator("restarted")
        after = self.tpctl(restarted, "events", "victim")
        self.assertEqual(generation_one(after), row, after)
        self.assertEqual(value(scrape(restarted.metrics), "tpcoord_restored_jobs"), 1)

    def test_a_standby_reports_it_and_its_successor_serves_the_jobs(self):
        if shutil.which("etcd") is None:
            self.skipTest("no etcd (Debian's etcd-server)")
        client_port, peer_port = free_port(), free_port()
        etcd = start(self, "etcd", [
            "etcd", "--name", "m0", "--data-dir", os.path.join(self.work, "etcd"),
            "--listen-client-urls", "http://127.0.0.1:%d" % client_port,
            "--advertise-client-urls", "http://127.0.0.1:%d" % client_port,
            "--listen-peer-urls", "http://127.0.0.1:%d" % peer_port,
            "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % peer_port,
            "--initial-cluster", "m0=http://127.0.0.1:%d" % peer_port])
        store = ["--state-store", "etcd://127.0.0.1:%d/observability" % client_port, "--leader-lease", "2s"]
        leader = self.coordinator("leader", *store)
        deadline = time.time() + 30
        while value(scrape(leader.metrics), "tpcoord_leader") != 1 and time.time() < deadline:
            time.sleep(0.1)
        self.assertEqual(value(scrape(leader.metrics), "tpcoord_leader"), 1, leader.stderr())
        self.tpctl(leader, "record", "--job", "ha-job", "--tp-size", "2", "--dtype", "bf16")
        standby = self.coordinator("standby", *store)
        samples = scrape(standby.metrics)
        self.assertEqual(value(samples, "tpcoord_leader"), 0)
        self.assertIsNone(value(samples, "tpcoord_jobs", phase="idle"))  # a standby holds no jobs
        self.assertIn("0 job(s)", http_get(standby.metrics + "/")[2])

        leader.signal(signal.SIGKILL)
        deadline = time.time() + 30
        while value(scrape(standby.metrics), "tpcoord_leader") != 1 and time.time() < deadline:
            time.sleep(0.1)
        samples = scrape(standby.metrics)
        self.assertEqual(value(samples, "tpcoord_leader"), 1, standby.stderr())
        self.assertEqual(value(samples, "tpcoord_jobs", phase="idle"), 1)
        self.assertEqual(value(samples, "tpcoord_restored_jobs"), 1)
        self.assertIn('<td class="job">ha-job</td>', http_get(standby.metrics + "/")[2])
        etcd.kill()

    def test_the_admin_token_guards_metrics_and_page(self):
        admin_file = os.path.join(self.work, "admin.token")
        with open(admin_file, "w") as f:
            f.write(ADMIN + "\n")
        os.chmod(admin_file, 0o600)
        coordinator = self.coordinator("coordinator", "--admin-token-file", admin_file)
        for path in ("/metrics", "/"):
            for headers in ({}, {"Authorization": "Bearer " + TOKEN}, {"Authorization": "Bearer"},
                            {"Authorization": "Basic " + base64.b64encode(b"admin:wrong").decode()},
                            {"Authorization": "Basic !!!"}):
                status, response_headers, body = http_get(coordinator.metrics + path, headers)
                self.assertEqual(status, 401, (path, headers))
                self.assertIn("needs the coordinator's admin token", body)
                self.assertEqual(response_headers["WWW-Authenticate"], 'Basic realm="tpcoord", charset="UTF-8"')
        bearer = {"Authorization": "Bearer " + ADMIN}
        self.assertEqual(value(scrape(coordinator.metrics, bearer), "tpcoord_leader"), 1)
        basic = {"Authorization": "Basic " + base64.b64encode(("any:" + ADMIN).encode()).decode()}
        status, _, body = http_get(coordinator.metrics + "/", basic)
        self.assertEqual(status, 200)
        self.assertIn("<title>tpcoord status</title>", body)
        self.assertEqual(http_get(coordinator.metrics + "/metrics", bearer, method="POST")[0], 405)
        self.assertEqual(http_get(coordinator.metrics + "/other", bearer)[0], 404)
        # Garbage, a header far too long, and a client that connects and says nothing: each is answered or
        # dropped, and the port goes on serving.
        host, port = coordinator.metrics[len("http://"):].rsplit(":", 1)
        for junk in (b"\x00\xff GARBAGE\r\n\r\n", b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 200000 + b"\r\n\r\n", b""):
            with socket.create_connection((host, int(port)), timeout=15) as connection:
                try:
                    connection.sendall(junk)
                    connection.shutdown(socket.SHUT_WR)
                    reply = connection.recv(100)
                except OSError:  # reset: dropped
                    reply = b""
                self.assertFalse(reply.startswith(b"HTTP/1.1 200"), reply)
        self.assertEqual(value(scrape(coordinator.metrics, bearer), "tpcoord_leader"), 1)

        # Beyond loopback, the token would travel in the clear: refused unless --allow-insecure.
        refused = subprocess.run([bin_path("coordinator/tp-coordinator"), "--listen", "127.0.0.1:0", "--state-dir",
                                  os.path.join(self.work, "refused"), "--admin-token-file", admin_file,
                                  "--metrics-listen", "0.0.0.0:0"], capture_output=True, text=True, timeout=30)
        self.assertEqual(refused.returncode, 1)
        self.assertIn("--metrics-listen 0.0.0.0:0 is plaintext HTTP: scrapers would send the admin token over the "
                      "network in the clear", refused.stderr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--source-dir", required=True)
    parser.add_argument("--artifacts", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest)
