"""A client of the tp-coordinator: one job's calls, as tp-worker makes them (client/).

Every call has a deadline. While the coordinator cannot be reached (starting, restarting after kill -9,
stopping, failing over), a call is retried with exponential backoff and full jitter until its retry budget
(`timeout`) is spent: UNAVAILABLE, CANCELLED and an attempt that got no answer within its own deadline are
retried; every answer the coordinator gives is final. Retries are safe because the coordinator makes them so
(coordinator.proto); StoreAdd, which is not idempotent, is never retried unless it only reads (delta 0).
Calls that wait in the coordinator (Join, StoreGet, StoreWait, Barrier) pass what is left of their wait on
every attempt and set the gRPC deadline `wait_slack` later, so that a timeout arrives as the coordinator's
answer naming what is missing.

High availability: `address` may list several coordinators (a list, or "a:1,b:2"). A standby refuses calls
naming the leader in its trailing metadata ("tpcoord-leader"); the client goes there, else to the next one.

Thread-safe: one client serves a training script's main thread, its member session and its c10d store.
"""
import json
import math
import os
import random
import re
import secrets
import socket
import threading
import time

import logging

import grpc

from ._proto import pb, pb_grpc
from .credentials import Credentials
from .errors import CoordinatorError, WaitTimeout, trailer, from_rpc_error, describe_transport_error

_JOB_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_MAX_WAIT_MS = 3600 * 1000           # common/limits.h kMaxWaitMs
_MAX_MESSAGE_BYTES = 4 << 20         # kMaxRequestBytes
_RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
_DTYPES = {"torch.float32": pb.DTYPE_FP32, "torch.float16": pb.DTYPE_FP16, "torch.bfloat16": pb.DTYPE_BF16}

_default = None  # the client of the latest connect(): tp_model_init's when it is given none
_log = logging.getLogger("tpcoord")


def connect(address=None, job=None, *, token=None, token_file=None, tls_ca=None, tls_cert=None, tls_key=None,
            timeout=60.0, **options):
    """A client of the coordinator(s) at `address` for `job`.

    address: "host:port", a comma-separated list or a list of them (HA replicas); default $TPCOORD_COORDINATOR,
        else 127.0.0.1:50051. job: default $TPCOORD_JOB.
    token / token_file, tls_ca, tls_cert + tls_key: as tp-worker's flags, with the same environment fallbacks
        (TPCOORD_TOKEN, TPCOORD_TOKEN_FILE, TPCOORD_TLS_CA, TPCOORD_TLS_CERT, TPCOORD_TLS_KEY).
    timeout: seconds an unreachable coordinator is retried per call, and the default of every wait.
    options: call_timeout (10 s, each attempt of a call that does not wait), wait_slack (5 s),
        initial_backoff (0.05 s), max_backoff (1 s).
    """
    global _default
    credentials = Credentials(token=token, token_file=token_file, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key)
    _default = Client(address or os.environ.get("TPCOORD_COORDINATOR", "127.0.0.1:50051"),
                      job or os.environ.get("TPCOORD_JOB", ""), credentials, timeout=timeout, **options)
    return _default


def default_client():
    if _default is None:
        raise RuntimeError("no tpcoord client: call tpcoord.connect(...) first, or pass client=")
    return _default


class _Target:
    """One coordinator of the list, with its channel."""

    def __init__(self, address, credentials, replicas, max_backoff):
        self.address = address
        options = [("grpc.initial_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", int(max_backoff * 1000)),
                   # also gRPC's connect timeout: a TLS handshake with a busy coordinator may take a while
                   ("grpc.min_reconnect_backoff_ms", 5000),
                   ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES)]
        if replicas:  # find a frozen replica within seconds, even while a stream is open
            options += [("grpc.keepalive_time_ms", 2000), ("grpc.keepalive_timeout_ms", 2000)]
        if credentials.tls:
            self.channel = grpc.secure_channel(address, credentials.channel_credentials(), options)
        else:
            self.channel = grpc.insecure_channel(address, options)
        self.stub = pb_grpc.CoordinatorStub(self.channel)


class Client:
    def __init__(self, address, job, credentials=None, *, timeout=60.0, call_timeout=10.0, wait_slack=5.0,
                 initial_backoff=0.05, max_backoff=1.0):
        addresses = address if isinstance(address, (list, tuple)) else address.split(",")
        addresses = [a.strip() for a in addresses if a.strip()]
        if not addresses:
            raise ValueError("no coordinator address given")
        if not _JOB_ID.match(job or ""):
            raise ValueError("job_id %r is not valid: it must be 1-128 characters from [A-Za-z0-9._-]" % (job,))
        self.job = job
        self.credentials = credentials or Credentials()
        self.timeout, self.call_timeout, self.wait_slack = timeout, call_timeout, wait_slack
        self.initial_backoff, self.max_backoff = initial_backoff, max_backoff
        self._replicas = len(addresses) > 1
        self._lock = threading.Lock()
        self._targets = [_Target(a, self.credentials, self._replicas, max_backoff) for a in addresses]
        self._current = 0
        self.member = None  # the membership of the latest join(), which merge_config acts as
        # While calls wait for a coordinator they cannot reach: since when, and when to say so next.
        self._unreachable_since, self._next_report = None, 0.0

    @property
    def address(self):
        return ",".join(t.address for t in self._targets)

    def close(self):
        if self.member is not None:
            self.member.close()
        for t in self._targets:
            t.channel.close()

    # --- DeepSpeed's calls ---------------------------------------------------------------------------------
    def record_tp_init_args(self, tp_size, dtype, tp_group=None):
        """deepspeed.tp_model_init's record for the job (tpcoord.tp_model_init calls this). `dtype` is a torch
        dtype or its name; `tp_group` None or the global ranks of this worker's TP group. Returns the job's
        record (RecordTpInitArgsResponse); a conflict with an earlier record raises DeepSpeedError (a
        ValueError) with DeepSpeed's text."""
        name = str(dtype)
        if name not in _DTYPES:
            raise ValueError("tp_model_init dtype must be torch.float32, torch.float16 or torch.bfloat16, not %s" % name)
        request = pb.RecordTpInitArgsRequest(job_id=self.job, tp_size=int(tp_size), dtype=_DTYPES[name])
        if tp_group is not None:
            request.tp_group.ranks.extend(int(r) for r in tp_group)
        return self._call("RecordTpInitArgs", request)

    def merge_config(self, config, mpu=None):
        """deepspeed.initialize's merge of a DeepSpeed config (a dict, JSON text or a path to a JSON file) with
        the job's record; returns the merged config as a new dict. After join(), the member's merge: every
        worker of the generation must send the same config. Before, a dry run that changes nothing.
        DeepSpeed's conflicts raise DeepSpeedError (a ValueError) with its exact text."""
        member = self.member
        return self._merge(config, mpu, member if member is not None and not member.left else None)

    def _merge(self, config, mpu, member):
        """The merge as `member` (None: a dry run)."""
        request = pb.MergeConfigRequest(job_id=self.job, config_json=_config_text(config), has_mpu=mpu is not None)
        if member is None:
            return json.loads(self._call("MergeConfig", request).merged_config_json)
        request.generation, request.rank = member.generation, member.rank
        return json.loads(self._call("MergeConfig", request, member.key).merged_config_json)

    def join(self, world_size, rank=None, *, tp_size=0, host=None, timeout=None, min_world_size=0,
             rejoin_timeout=0.0, worker_id=None):
        """Joins the job's next generation and waits (up to `timeout`, default the client's) until all
        `world_size` workers have: returns this worker's Member (rank, generation, TP and DP groups), whose
        session beats from then on. `rank`: the rank to ask for (None: the coordinator assigns one, keeping
        TP groups within a host). A timeout raises WaitTimeout naming the ranks and hosts that never came.
        `worker_id`: this process's name in the job (default $TPCOORD_WORKER_ID, else host:pid:nonce)."""
        from .member import Member
        host = host or os.environ.get("TPCOORD_HOST") or socket.gethostname()  # tp-agent names its host
        key = secrets.token_hex(32)
        worker_id = worker_id or os.environ.get("TPCOORD_WORKER_ID") or "%s:%d:%s" % (
            host, os.getpid(), secrets.token_hex(4))
        request = pb.JoinRequest(job_id=self.job, worker_id=worker_id,
                                 host=host, world_size=int(world_size), tp_size=int(tp_size),
                                 min_world_size=int(min_world_size), rejoin_timeout_ms=int(rejoin_timeout * 1000))
        if rank is not None:
            request.requested_rank = int(rank)
        response = self._wait("Join", request, key, self.timeout if timeout is None else timeout)
        self.member = Member(self, response, key)
        return self.member

    def get_job(self):
        """The job as tpctl shows it (a JobStatus message)."""
        return self._call("GetJob", pb.GetJobRequest(job_id=self.job)).job

    def close_job(self, reason="", timeout=None):
        """Closes the job: no new generation starts in it (a running one goes on). Idempotent; the first
        reason stays. `timeout`: the retry budget (default the client's)."""
        self._call("CloseJob", pb.CloseJobRequest(job_id=self.job, reason=reason), budget=timeout)

    # --- the retry loop -----------------------------------------------------------------------------------
    def _call(self, method, request, member_key="", idempotent=True, budget=None):
        """A call that answers at once: each attempt gets call_timeout; retried while unreachable."""
        give_up = time.monotonic() + (self.timeout if budget is None else budget)
        return self._attempts(method, request, member_key, idempotent, give_up, lambda left: self.call_timeout)

    def _wait(self, method, request, member_key, wait):
        """A call that parks in the coordinator for up to `wait` seconds."""
        def prepare(left):
            request.wait_timeout_ms = max(1, min(_MAX_WAIT_MS, math.ceil(left * 1000)))
            return left + self.wait_slack
        return self._attempts(method, request, member_key, True, time.monotonic() + wait, prepare)

    def _attempts(self, method, request, member_key, idempotent, give_up, prepare):
        backoff, hops, tried = self.initial_backoff, 0, 1
        while True:
            attempt = prepare(max(0.001, give_up - time.monotonic()))
            target = self._target()
            try:
                if not self._reachable(target) or not self._await_connected(target, give_up):
                    raise CoordinatorError(grpc.StatusCode.UNAVAILABLE, "cannot reach the coordinator at %s: %s" % (
                        target.address, describe_transport_error(self._probe_error(target), self.credentials.tls)),
                        self.job)
                return getattr(target.stub, method)(request, timeout=attempt, metadata=self.metadata(member_key),
                                                    wait_for_ready=not self._replicas)
            except grpc.RpcError as e:
                code, leader = e.code(), ""
                # The client's own deadline, not the coordinator's answer (which names what it waited for).
                own_deadline = code == grpc.StatusCode.DEADLINE_EXCEEDED and e.details() == "Deadline Exceeded"
                if own_deadline:
                    error = WaitTimeout(code, "no answer from the coordinator at %s within %d ms"
                                        % (target.address, attempt * 1000), self.job)
                else:
                    error = from_rpc_error(e, self.job)
                if code == grpc.StatusCode.UNAVAILABLE:
                    leader = trailer(e, "tpcoord-leader")
            except CoordinatorError as e:
                code, own_deadline, error, leader = e.code, False, e, ""
            # A standby refused the call without acting on it: even a call that is not idempotent goes on.
            if not (code in _RETRIED or own_deadline) or not (idempotent or leader):
                raise error
            self._follow(target, leader)
            # Straight to a named leader (twice at most), and to every other replica once; then back off.
            if leader and hops < 2:
                hops += 1
                continue
            if not leader and tried < len(self._targets):
                tried += 1
                continue
            if time.monotonic() + backoff >= give_up:
                raise error
            time.sleep(random.uniform(0, backoff))
            backoff, tried = min(backoff * 2, self.max_backoff), 1

    def metadata(self, member_key=""):
        md = []
        if self.credentials.token:
            md.append(("authorization", "Bearer " + self.credentials.token))
        if member_key:
            md.append(("tpcoord-member-key", member_key))
        return md

    def _target(self):
        with self._lock:
            return self._targets[self._current]

    def _reachable(self, target):
        """With several coordinators, whether `target` is up or comes up within a second (a dead replica must
        fail at once so that the next is tried); with one, True (_await_connected waits for it)."""
        if not self._replicas:
            return True
        since = time.monotonic()
        try:
            grpc.channel_ready_future(target.channel).result(timeout=1.0)
            self._note_reachable()
            return True
        except grpc.FutureTimeoutError:
            self._note_unreachable(target, since)
            return False

    def _await_connected(self, target, give_up):
        """With one coordinator: waits until its connection is up (True) or `give_up` passes (False), saying
        why every 10 s meanwhile."""
        if self._replicas:
            return True
        since = time.monotonic()
        while True:
            try:
                grpc.channel_ready_future(target.channel).result(timeout=max(0.0, min(1.0, give_up - time.monotonic())))
                self._note_reachable()
                return True
            except grpc.FutureTimeoutError:
                self._note_unreachable(target, since)
                if time.monotonic() >= give_up:
                    return False

    def _note_reachable(self):
        self._unreachable_since = None

    def _note_unreachable(self, target, since):
        """One warning about every 10 s (the first 5 s after `since`, when this caller began to fail) while the
        coordinator cannot be reached: where, for how long, and what the transport says, in words (the tpcoord
        logger, stderr by default)."""
        now = time.monotonic()
        with self._lock:
            if self._unreachable_since is None:
                self._unreachable_since, self._next_report = since, since + 5.0
            elif since < self._unreachable_since:
                if self._next_report == self._unreachable_since + 5.0:
                    self._next_report = since + 5.0
                self._unreachable_since = since
            if now < self._next_report:
                return
            self._next_report = now + 10.0
            waited = now - self._unreachable_since
        error = self._probe_error(target)
        if error:
            _log.warning("still waiting for the coordinator at %s after %d s: %s", target.address, waited,
                         describe_transport_error(error, self.credentials.tls))

    def _probe_error(self, target):
        """The transport's reason why `target` cannot be reached now ("" if it can): a call that does not wait."""
        check = target.channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                                           response_deserializer=lambda b: b)
        try:
            check(b"", timeout=2.0)  # an empty HealthCheckRequest
            return ""
        except grpc.RpcError as e:
            return e.details() or str(e.code())

    def _follow(self, used, leader):
        """After `used` failed for want of a coordinator: go to `leader` (named by a standby; it may be one this
        client was not given) or else to the next in the list."""
        with self._lock:
            if self._targets[self._current] is not used:
                return  # another call moved on already
            for i, t in enumerate(self._targets):
                if leader and t.address == leader:
                    self._current = i
                    return
            if leader and len(self._targets) < 16:
                self._targets.append(_Target(leader, self.credentials, True, self.max_backoff))
                self._current = len(self._targets) - 1
                return
            self._current = (self._current + 1) % len(self._targets)


def _config_text(config):
    """A DeepSpeed config as JSON text: a dict, JSON text, or the path of a JSON file (deepspeed.initialize's
    forms, less base64)."""
    if isinstance(config, dict):
        return json.dumps(config)
    if isinstance(config, str) and config.lstrip().startswith("{"):
        return config
    if isinstance(config, (str, os.PathLike)) and os.path.isfile(config):
        with open(config) as f:
            return f.read()
    raise ValueError("Expected a string path to an existing deepspeed config, or a dictionary. Received: %s"
                     % (config,))
