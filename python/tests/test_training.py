"""The example (python/examples/train.py) as real processes through a real tp-coordinator: a 4-process
TP=2 x DP=2 rendezvous with all-reduces checked on every group, data-parallel training with identical
gradients across each DP group and a falling loss, TP parity (TP=2 trains what TP=1 trains), and the
failures: a worker killed mid-run, a worker frozen mid-run, a coordinator killed and restarted mid-run, and
the leader of two HA coordinators on etcd killed mid-run."""
import json
import os
import shutil
import sys
import signal
import time

import pytest

import conftest
from conftest import free_port

import tpcoord


def run_job(procs, coordinator, job, world_size, tp_size, steps, *extra):
    workers = [procs.example("%s-rank%d" % (job, r), coordinator, job, world_size, "--tp-size", tp_size,
                             "--rank", r, "--steps", steps, *extra) for r in range(world_size)]
    for w in workers:
        assert w.wait(240) == 0, w.output()
    return workers


def steps_of(worker):
    return {r["step"]: r for r in worker.records() if "step" in r}


def test_four_processes_form_tp_and_dp_groups_and_train(procs):
    c = procs.coordinator()
    workers = run_job(procs, c.address, "dp-tp", 4, 2, 40)
    # Every rank all-reduced over its TP, DP and world group, with DeepSpeed's (DP x TP) layout.
    layout = {w.wait_for(lambda r: "groups" in r)["rank"]: w.wait_for(lambda r: "groups" in r)["groups"]
              for w in workers}
    assert layout == {0: {"tp": [0, 1], "dp": [0, 2]}, 1: {"tp": [0, 1], "dp": [1, 3]},
                      2: {"tp": [2, 3], "dp": [0, 2]}, 3: {"tp": [2, 3], "dp": [1, 3]}}
    # The merge filled in DeepSpeed's tensor_parallel section from the record.
    tp_section = workers[0].wait_for(lambda r: "tensor_parallel" in r)["tensor_parallel"]
    assert tp_section["autotp_size"] == 2 and tp_section["tp"]["tp_size"] == 2
    steps = [steps_of(w) for w in workers]
    for s in range(1, 41):
        # After the DP all-reduce the members of a DP group hold the same gradient shard ...
        assert steps[0][s]["grads"] == steps[2][s]["grads"], s
        assert steps[1][s]["grads"] == steps[3][s]["grads"], s
        # ... the two TP ranks hold different shards of it, and every rank reports the same DP-mean loss.
        assert steps[0][s]["grads"] != steps[1][s]["grads"], s
        assert len({steps[r][s]["loss"] for r in range(4)}) == 1, s
    assert steps[0][40]["loss"] < 0.5 * steps[0][1]["loss"], (steps[0][1], steps[0][40])
    job = tpcoord.connect(c.address, "dp-tp").get_job()
    assert job.phase == tpcoord.client.pb.PHASE_COMPLETED, job
    assert job.progress.step == 40


def test_tensor_parallel_trains_what_one_rank_trains(procs):
    c = procs.coordinator()
    tp2 = run_job(procs, c.address, "tp2", 4, 2, 20)
    tp1 = run_job(procs, c.address, "tp1", 2, 1, 20)
    losses2, losses1 = steps_of(tp2[0]), steps_of(tp1[0])
    for s in range(1, 21):
        assert losses2[s]["loss"] == pytest.approx(losses1[s]["loss"], rel=1e-5), s


def start_long_job(procs, c, job, *extra):
    workers = [procs.example("%s-rank%d" % (job, r), c.address, job, 4, "--tp-size", 2, "--rank", r,
                             "--steps", 1000000, *extra) for r in range(4)]
    for w in workers:
        w.wait_for(lambda r: r.get("step", 0) >= 3)
    return workers


def test_a_killed_worker_ends_the_generation_naming_its_rank(procs):
    c = procs.coordinator()
    workers = start_long_job(procs, c, "killed")
    workers[2].kill()
    for r in (0, 1, 3):
        assert workers[r].wait(60) == 75, workers[r].output()  # retryable: restart the process
        ended = workers[r].wait_for(lambda rec: "generation_ended" in rec)
        assert ended["failed_rank"] == 2, ended
        assert "generation 1 ended: rank 2 (host " in ended["generation_ended"], ended


def test_a_worker_killed_while_it_waits_to_join_is_replaced(procs):
    c = procs.coordinator()
    early = procs.example("early-rank1", c.address, "joining", 2, "--tp-size", 2, "--rank", 1, "--steps", 5)
    tp = tpcoord.connect(c.address, "joining")

    def waiting():
        try:
            return [m.host for m in tp.get_job().members]
        except tpcoord.CoordinatorError:  # NOT_FOUND until its Join created the job
            return []

    deadline = time.time() + 30
    while len(waiting()) != 1 and time.time() < deadline:
        time.sleep(0.05)
    assert len(waiting()) == 1, tp.get_job()
    early.kill()  # parked in Join: its seat is given up with its call
    while waiting() and time.time() < deadline + 30:
        time.sleep(0.05)
    assert waiting() == [], tp.get_job()
    workers = [procs.example("joining-rank%d" % r, c.address, "joining", 2, "--tp-size", 2, "--rank", r,
                             "--steps", 5) for r in range(2)]
    for w in workers:
        assert w.wait(120) == 0, w.output()
    assert tp.get_job().phase == tpcoord.client.pb.PHASE_COMPLETED


def test_a_frozen_worker_ends_the_generation_when_its_lease_runs_out(procs):
    c = procs.coordinator("--lease", "2s")
    # Gloo waits --timeout for the frozen peer; the coordinator's verdict names it.
    workers = start_long_job(procs, c, "frozen", "--timeout", 15)
    workers[1].signal(signal.SIGSTOP)
    for r in (0, 2, 3):
        assert workers[r].wait(90) == 75, workers[r].output()
        ended = workers[r].wait_for(lambda rec: "generation_ended" in rec)
        assert ended["failed_rank"] == 1, ended
        assert "lease" in ended["generation_ended"], ended


def latest_step(worker):
    return max(steps_of(worker) or [0])


def test_training_rides_out_a_coordinator_killed_and_restarted(procs):
    port = free_port()
    address = "127.0.0.1:%d" % port
    c = procs.coordinator(listen=address)
    workers = [procs.example("restart-rank%d" % r, address, "restart", 2, "--tp-size", 2, "--rank", r,
                             "--steps", 10000) for r in range(2)]
    for w in workers:
        w.wait_for(lambda r: r.get("step", 0) >= 3)
    c.kill()
    # Training goes on without the coordinator (Gloo needs it only to start) ...
    down = latest_step(workers[0])
    workers[0].wait_for(lambda r: r.get("step", 0) >= down + 200)
    procs.coordinator(name="coordinator-again", listen=address)  # the same state directory
    back = latest_step(workers[0])
    for w in workers:
        assert w.wait(240) == 0, w.output()
        assert w.wait_for(lambda r: r.get("done"))
    # ... and the sessions came back to the restarted one: it saw the generation through, and progress on it.
    job = tpcoord.connect(address, "restart").get_job()
    assert job.phase == tpcoord.client.pb.PHASE_COMPLETED and job.generation == 1, job
    assert job.progress.step > back, (job.progress, back)


@pytest.mark.skipif(shutil.which("etcd") is None, reason="no etcd (Debian's etcd-server)")
def test_training_rides_out_a_failover_to_the_standby(procs):
    client_port, peer_port = free_port(), free_port()
    procs.start("etcd", ["etcd", "--name", "m0", "--data-dir", os.path.join(procs.work, "etcd"),
                         "--listen-client-urls", "http://127.0.0.1:%d" % client_port,
                         "--advertise-client-urls", "http://127.0.0.1:%d" % client_port,
                         "--listen-peer-urls", "http://127.0.0.1:%d" % peer_port,
                         "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % peer_port,
                         "--initial-cluster", "m0=http://127.0.0.1:%d" % peer_port])
    store = ["--state-store", "etcd://127.0.0.1:%d/python-ha" % client_port, "--leader-lease", "2s"]
    leader = procs.coordinator(*store, name="leader", state="leader")
    # The leader serves once this call is answered (UNAVAILABLE is retried until then).
    tpcoord.tp_model_init(None, 2, "torch.float32", client=tpcoord.connect(leader.address, "ha"))
    standby = procs.coordinator(*store, name="standby", state="standby")
    # The standby first: its answers name the leader, and the workers go there.
    addresses = standby.address + "," + leader.address
    workers = [procs.example("ha-rank%d" % r, addresses, "ha", 2, "--tp-size", 2, "--rank", r, "--steps", 10000)
               for r in range(2)]
    for w in workers:
        w.wait_for(lambda r: r.get("step", 0) >= 3)
    leader.kill()
    killed = latest_step(workers[0])
    for w in workers:
        assert w.wait(240) == 0, w.output()
    # The standby took over the generation: it completed there, with the progress reported to it.
    job = tpcoord.connect(addresses, "ha").get_job()
    assert job.phase == tpcoord.client.pb.PHASE_COMPLETED and job.generation == 1, job
    assert job.progress.step > killed, (job.progress, killed)


def json_records(text):
    """The JSON objects in `text`. An agent's workers share its stdout, and a record may reach it before the
    newline of another's: a line may hold several."""
    decoder, out = json.JSONDecoder(), []
    for line in text.splitlines():
        line, i = line.strip(), 0
        while i < len(line) and line[i] == "{":
            record, i = decoder.raw_decode(line, i)
            out.append(record)
    return out


def test_the_example_runs_unchanged_under_two_agents(procs):
    """Two tp-agents of two workers each run the example as it is (no --coordinator, --job or --world-size: the
    agent's environment gives them, and no token: the agent holds it), and train what standalone workers train."""
    c = procs.coordinator()
    plain = steps_of(run_job(procs, c.address, "plain", 4, 2, 20)[0])
    agents = [procs.start("agent-" + host, [os.path.join(conftest.BIN_DIR, "agent", "tp-agent"), "--coordinator",
                                            c.address, "--job", "under-agents", "--nnodes", "2", "--nproc-per-node",
                                            "2", "--host", host, "--", sys.executable, conftest.EXAMPLE,
                                            "--tp-size", "2", "--steps", "20"], timeout=240)
              for host in ("host-a", "host-b")]
    for a in agents:
        assert a.wait(240) == 0, a.output()
    by_rank = {}
    for a in agents:
        for r in json_records(a.stdout()):
            if "step" in r:
                by_rank.setdefault(r["rank"], {})[r["step"]] = r
    assert sorted(by_rank) == [0, 1, 2, 3], by_rank.keys()
    for s in range(1, 21):
        assert by_rank[0][s]["loss"] == pytest.approx(plain[s]["loss"], rel=1e-6), s
    job = tpcoord.connect(c.address, "under-agents").get_job()
    assert job.phase == tpcoord.client.pb.PHASE_COMPLETED, job
    assert sorted({m.host for m in job.members}) == ["host-a", "host-b"], job
