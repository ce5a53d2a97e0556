"""The client in this process against a real tp-coordinator: DeepSpeed's conflict texts raised as ValueError,
every c10d Store method and its waits, credentials (tokens, mutual TLS), the member session's pushed end,
and a coordinator list whose first entry is dead."""
import datetime
import os
import subprocess
import threading

import grpc
import pytest
import torch

from conftest import SOURCE_DIR, free_port

import tpcoord

CONFLICT = "Conflicting tp_model_init arguments detected across multiple calls."


@pytest.fixture
def coordinator(procs):
    return procs.coordinator()


def test_tp_model_init_records_and_returns_the_model_unmodified(coordinator):
    tp = tpcoord.connect(coordinator.address, "record")
    model = torch.nn.Linear(2, 2)
    assert tpcoord.tp_model_init(model, tp_size=2, dtype=torch.bfloat16, client=tp) is model
    assert tpcoord.tp_model_init(model, 2, torch.bfloat16) is model  # the latest connect()'s client; identical
    job = tp.get_job()
    assert job.tp_init_recorded and job.tp_init.tp_size == 2


@pytest.mark.parametrize("tp_size, dtype, tp_group", [
    (4, torch.bfloat16, None),          # another tp_size
    (2, torch.float16, None),           # another dtype
    (2, torch.bfloat16, [0, 1]),        # a tp_group where the record has none
])
def test_conflicting_records_raise_deepspeeds_text(coordinator, tp_size, dtype, tp_group):
    tp = tpcoord.connect(coordinator.address, "conflict")
    tpcoord.tp_model_init(None, 2, torch.bfloat16, client=tp)
    with pytest.raises(ValueError) as e:
        tpcoord.tp_model_init(None, tp_size, dtype, tp_group, client=tp)
    assert str(e.value) == CONFLICT
    assert isinstance(e.value, tpcoord.DeepSpeedError) and e.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "conflict" in e.value.context  # where: the job, on a line of its own
    assert tp.get_job().tp_init.tp_size == 2  # the failed call changed nothing


def test_a_record_from_another_process_conflicts_too(procs, coordinator):
    tp = tpcoord.connect(coordinator.address, "cross")
    tpcoord.tp_model_init(None, 2, torch.float32, client=tp)
    worker = procs.example("tp4", coordinator.address, "cross", 4, "--tp-size", 4)
    assert worker.wait(60) == 3, worker.output()  # a configuration error: never restarted
    assert CONFLICT in worker.output()


@pytest.mark.parametrize("config, mpu, text", [
    ({"tensor_parallel": {"autotp_size": 4}}, None,
     "Conflicting tensor_parallel.autotp_size in config (4) and tp_model_init (2)."),
    ({"bf16": {"enabled": True}}, None,
     "Conflicting dtype: config uses torch.bfloat16 but tp_model_init requested torch.float16."),
    ({"tensor_parallel": {"tp": {"tp_size": 1}}}, None,
     "Conflicting tensor_parallel.tp.tp_size in config (1) and tp_model_init (2)."),
    ({"tensor_parallel": {"tp": []}}, None, None),  # falsy non-dict: becomes a new dict (spec §1.4 step 6)
    ({"tensor_parallel": {"tp": [1]}}, None, "tensor_parallel.tp must be a dict when provided."),
    ({}, object(), "tp_model_init provided tp_group; deepspeed.initialize must not receive mpu."),
])
def test_merge_config_raises_deepspeeds_texts(coordinator, config, mpu, text):
    tp = tpcoord.connect(coordinator.address, "merge")
    tpcoord.tp_model_init(None, 2, torch.float16, [0, 1], client=tp)
    if text is None:
        merged = tp.merge_config(config, mpu)
        assert merged["tensor_parallel"]["tp"]["tp_size"] == 2 and config == {"tensor_parallel": {"tp": []}}
        return
    with pytest.raises(ValueError) as e:
        tp.merge_config(config, mpu)
    assert str(e.value) == text


def test_merge_config_fills_in_the_tensor_parallel_section(coordinator, tmp_path):
    tp = tpcoord.connect(coordinator.address, "fill")
    tpcoord.tp_model_init(None, 2, torch.bfloat16, client=tp)
    config = {"train_batch_size": 8, "bf16": {"enabled": True}}
    merged = tp.merge_config(config)
    assert merged["tensor_parallel"]["autotp_size"] == 2 and merged["tensor_parallel"]["tp"]["tp_size"] == 2
    assert config == {"train_batch_size": 8, "bf16": {"enabled": True}}  # a new dict; the caller's unchanged
    path = tmp_path / "ds_config.json"
    path.write_text('{"train_batch_size": 8, "bf16": {"enabled": true}}')
    assert tp.merge_config(str(path)) == merged  # a file, as deepspeed.initialize takes it
    with pytest.raises(ValueError, match="Expected a string path to an existing deepspeed config"):
        tp.merge_config(str(tmp_path / "missing.json"))


def test_every_store_method_scoped_to_the_generation(coordinator):
    tp = tpcoord.connect(coordinator.address, "store")
    member = tp.join(world_size=1)
    store = member.store(timeout=datetime.timedelta(seconds=5))
    assert isinstance(store, torch.distributed.Store)
    store.set("a", b"\x00\xffbytes")
    store.set("s", "text")
    assert store.get("a") == b"\x00\xffbytes" and store.get("s") == b"text"
    assert store.add("n", 5) == 5 and store.add("n", -2) == 3 and store.add("n", 0) == 3
    assert store.compare_set("c", b"", b"first") == b"first"        # missing + empty expected: set
    assert store.compare_set("c", b"wrong", b"second") == b"first"  # mismatch: unchanged
    assert store.compare_set("c", b"first", b"second") == b"second"
    assert store.check(["a", "s"]) and not store.check(["a", "absent"])
    assert store.num_keys() == 4
    assert store.delete_key("a") and not store.delete_key("a")
    store.wait(["s", "n"])
    with pytest.raises(tpcoord.WaitTimeout) as e:
        store.wait(["s", "never-set"], datetime.timedelta(milliseconds=300))
    assert "never-set" in str(e.value) and isinstance(e.value, TimeoutError)
    with pytest.raises(tpcoord.WaitTimeout) as e:
        store.get("missing-key")  # the store's own timeout (5 s)
    assert "missing-key" in str(e.value)
    member.leave(finished=True)
    assert tp.get_job().phase == tpcoord.client.pb.PHASE_COMPLETED
    # The next generation starts with an empty store.
    again = tp.join(world_size=1)
    assert again.generation == member.generation + 1 and again.store().num_keys() == 0
    again.leave()


def test_join_times_out_naming_who_never_came(coordinator):
    tp = tpcoord.connect(coordinator.address, "lonely")
    with pytest.raises(tpcoord.WaitTimeout) as e:
        tp.join(world_size=3, rank=0, host="alone", timeout=1.0)
    assert "job lonely" in str(e.value) and "1 of 3" in str(e.value), str(e.value)


def test_a_leaving_member_ends_the_generation_for_the_others_on_their_session(coordinator):
    a, b = tpcoord.connect(coordinator.address, "pushed"), tpcoord.connect(coordinator.address, "pushed")
    members = {}
    t = threading.Thread(target=lambda: members.setdefault("b", b.join(world_size=2, rank=1, host="host-b")))
    t.start()
    members["a"] = a.join(world_size=2, rank=0, host="host-a")
    t.join(30)
    members["a"].leave(finished=False, reason="out of memory")
    ended = members["b"].wait_ended(10)  # pushed down the session, no call of b's needed
    assert isinstance(ended, tpcoord.GenerationEnded) and ended.rank == 0 and ended.host == "host-a"
    assert "out of memory" in str(ended) and ended.restartable
    with pytest.raises(tpcoord.GenerationEnded):
        members["b"].check()
    with pytest.raises(tpcoord.GenerationEnded):
        members["b"].store().set("k", b"v")


def test_tokens_bind_the_job_and_mutual_tls_guards_the_wire(procs, tmp_path, monkeypatch):
    secrets = str(tmp_path / "secrets")
    subprocess.run([os.path.join(SOURCE_DIR, "deploy", "make-secrets.sh"), secrets, "localhost", "127.0.0.1"],
                   check=True, timeout=60)
    server = os.path.join(secrets, "server")
    c = procs.coordinator("--tls-cert", server + "/tls.crt", "--tls-key", server + "/tls.key", "--tls-client-ca",
                          server + "/ca.crt")
    client = os.path.join(secrets, "client")
    tls = dict(tls_ca=client + "/ca.crt", tls_cert=client + "/tls.crt", tls_key=client + "/tls.key")
    token_file = os.path.join(secrets, "token")
    tp = tpcoord.connect(c.address, "secure", token_file=token_file, **tls)
    tpcoord.tp_model_init(None, 1, torch.float32, client=tp)
    # Another token: the job is not its (PERMISSION_DENIED); none at all: UNAUTHENTICATED.
    with pytest.raises(tpcoord.CoordinatorError) as e:
        tpcoord.connect(c.address, "secure", token="someone-elses-token-0123", **tls).get_job()
    assert e.value.code == grpc.StatusCode.PERMISSION_DENIED
    with monkeypatch.context() as env:
        env.delenv("TPCOORD_TOKEN")
        with pytest.raises(tpcoord.CoordinatorError) as e:
            tpcoord.connect(c.address, "secure", **tls).get_job()
    assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
    # Without a client certificate, or without TLS, the handshake fails: nothing reaches the job.
    for partial in (dict(tls_ca=client + "/ca.crt"), {}):
        with pytest.raises(tpcoord.CoordinatorError) as e:
            tpcoord.connect(c.address, "secure", token_file=token_file, timeout=1.0, call_timeout=1.0,
                            **partial).get_job()
        assert e.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), e.value
    # Two real processes train over mutual TLS with the token.
    args = ["--tp-size", 1, "--steps", 5, "--token-file", token_file, "--tls-ca", tls["tls_ca"], "--tls-cert",
            tls["tls_cert"], "--tls-key", tls["tls_key"]]
    workers = [procs.example("secure-%d" % r, c.address, "secure", 2, "--rank", r, *args) for r in range(2)]
    for w in workers:
        assert w.wait(120) == 0, w.output()
    with pytest.raises(ValueError, match="characters; it must have 16 to 1024"):
        tpcoord.connect(c.address, "secure", token="short")


def test_a_dead_coordinator_in_the_list_is_passed_over(coordinator):
    dead = "127.0.0.1:%d" % free_port()
    tp = tpcoord.connect([dead, coordinator.address], "ha")
    tpcoord.tp_model_init(None, 1, torch.float32, client=tp)
    member = tp.join(world_size=1)
    member.store().set("k", b"v")
    member.leave()
    assert tpcoord.connect(dead + "," + coordinator.address, "ha").get_job().phase == \
        tpcoord.client.pb.PHASE_COMPLETED


def test_bad_arguments_are_refused_before_any_call(coordinator):
    with pytest.raises(ValueError, match="job_id 'no spaces' is not valid"):
        tpcoord.connect(coordinator.address, "no spaces")
    tp = tpcoord.connect(coordinator.address, "args")
    with pytest.raises(ValueError, match="not torch.int8"):
        tpcoord.tp_model_init(None, 2, torch.int8, client=tp)
    with pytest.raises(tpcoord.CoordinatorError) as e:
        tpcoord.tp_model_init(None, 0, torch.float32, client=tp)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "tp_size" in str(e.value)


def test_a_client_pointed_at_the_wrong_address_says_what_is_there(procs, caplog):
    """While it waits it warns about every 10 s (the first after 5 s), then gives up with the same reason."""
    address = "127.0.0.1:%d" % free_port()  # nothing listens there
    tp = tpcoord.connect(address, "wrong", timeout=6.5)
    with caplog.at_level("WARNING", logger="tpcoord"):
        with pytest.raises(tpcoord.CoordinatorError) as e:
            tp.get_job()
    assert e.value.code == grpc.StatusCode.UNAVAILABLE
    assert str(e.value).startswith("cannot reach the coordinator at %s: nothing listens there (connection refused) ["
                                   % address), str(e.value)
    lines = [r.getMessage() for r in caplog.records if r.name == "tpcoord"]
    assert len(lines) == 1, lines
    assert lines[0].startswith("still waiting for the coordinator at %s after 5 s: nothing listens there" % address)
