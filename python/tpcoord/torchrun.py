"""torchrun's rendezvous backend `tpcoord`: the nodes of a torchrun job meet in the coordinator, not in rank
0's TCPStore or an etcd v2 cluster, so the rendezvous survives a coordinator restart or failover (HA), speaks
TLS and tokens, and shows in tpctl.

    torchrun --rdzv-backend=tpcoord --rdzv-endpoint=HOST:PORT --rdzv-id=JOB --nnodes=MIN:MAX \\
             --nproc-per-node=K train.py                      # torch >= 2.5 (entry point torchrun.handlers)
    python -m tpcoord.run ...the same flags...                # torch 1.13 (tpcoord/run.py registers it)

One rendezvous round is one generation of the job's node-level twin, JOB.nodes (a job of its own, whose
members are torchrun's agents, one per node): next_rendezvous() joins this node (world MAX nodes, at least
MIN after last_call_timeout), the generation's rank is torchrun's group rank, and the store handed back is
the coordinator's c10d Store of that generation, empty in every round. An agent that comes back for another
round (its workers failed) first leaves its generation, which ends it for every node: their
num_nodes_waiting() then says so and torchrun restarts their workers into the next round, as it does for a
node that arrives (its Join ends the running generation). set_closed() closes JOB.nodes (CloseJob), for
good: a later round is refused with the coordinator's text. shutdown() closes it too, as torchrun's c10d
backend closes its rendezvous when the run ends.

The workers' own job is JOB: the handler hands them TPCOORD_COORDINATOR and TPCOORD_JOB (and the agent's
credentials), so tpcoord.init_process_group() in the training script needs no argument.

--rdzv-conf keys (all optional): token_file, tls_ca, tls_cert, tls_key (else TPCOORD_TOKEN_FILE,
TPCOORD_TOKEN, TPCOORD_TLS_CA, TPCOORD_TLS_CERT, TPCOORD_TLS_KEY), join_timeout (s, default 600; torchrun's
`timeout` is the same), last_call_timeout (s, default 30), close_timeout (s, default 30). Any other key is an
error, not ignored.
"""
import datetime
import logging
import os
import socket
import threading
import time

from ._proto import pb
from .client import Client
from .credentials import Credentials
from .errors import CoordinatorError, GenerationEnded, WaitTimeout

import grpc
from torch.distributed.elastic.rendezvous import api as _api
from torch.distributed.elastic.rendezvous.api import (RendezvousClosedError, RendezvousConnectionError,
                                                      RendezvousError, RendezvousHandler, RendezvousTimeoutError)

BACKEND = "tpcoord"
NODES_SUFFIX = ".nodes"
_log = logging.getLogger("tpcoord")

# --rdzv-conf: key -> (kind, default). `timeout` is what torchrun adds itself (900) for every backend.
_CONF = {"token_file": (str, None), "tls_ca": (str, None), "tls_cert": (str, None), "tls_key": (str, None),
         "join_timeout": (int, 600), "timeout": (int, None), "last_call_timeout": (int, 30),
         "close_timeout": (int, 30)}
# How often num_nodes_waiting asks the coordinator at most (torch >= 2.x asks every 0.1 s).
_WAITING_REFRESH = 1.0


def create_handler(params):
    """The creator torchrun's registry calls: RendezvousParameters -> the handler."""
    return TpcoordRendezvousHandler(params)


def handler_creator():
    """The entry point's value (group torchrun.handlers, name tpcoord): torch >= 2.5 calls it with no argument
    and registers what it returns as the creator."""
    return create_handler


def conf_from(params):
    """The --rdzv-conf settings as {key: value}, checked: an unknown key or a value of the wrong kind raises
    ValueError naming it."""
    unknown = sorted(set(params.config) - set(_CONF))
    if unknown:
        raise ValueError("--rdzv-conf: the tpcoord backend has no key %s; it knows %s" % (
            ", ".join(repr(k) for k in unknown), ", ".join(sorted(_CONF))))
    conf = {}
    for key, (kind, default) in _CONF.items():
        value = params.config.get(key, default)
        if value is not None and kind is int:
            try:
                value = int(value)
            except (TypeError, ValueError):
                raise ValueError("--rdzv-conf: %s=%r is not a whole number of seconds" % (key, value)) from None
            if value <= 0:
                raise ValueError("--rdzv-conf: %s=%d must be at least 1 second" % (key, value))
        conf[key] = value
    if conf["timeout"] is not None and "join_timeout" not in params.config:
        conf["join_timeout"] = conf["timeout"]
    return conf


class TpcoordRendezvousHandler(RendezvousHandler):
    def __init__(self, params):
        if not params.endpoint:
            raise ValueError("--rdzv-endpoint is required with --rdzv-backend=tpcoord: the coordinator's HOST:PORT "
                             "(or a comma-separated list of its HA replicas)")
        conf = conf_from(params)
        self._run_id = params.run_id
        self._min_nodes, self._max_nodes = params.min_nodes, params.max_nodes
        self._join_timeout = conf["join_timeout"]
        self._last_call = conf["last_call_timeout"]
        self._close_timeout = conf["close_timeout"]
        self._host = os.environ.get("TPCOORD_HOST") or socket.gethostname()
        self._local_addr = getattr(params, "local_addr", None)
        credentials = Credentials(token_file=conf["token_file"], tls_ca=conf["tls_ca"], tls_cert=conf["tls_cert"],
                                  tls_key=conf["tls_key"])
        # The client raises ValueError for a job id the coordinator would refuse.
        self._client = Client(params.endpoint, params.run_id + NODES_SUFFIX, credentials,
                              timeout=float(self._join_timeout))
        self._member = None
        self._round = 0
        self._lock = threading.Lock()
        self._waiting, self._waiting_at = 0, 0.0
        # What the workers need to reach their own job (tpcoord.init_process_group): the agent starts them
        # with its environment.
        os.environ["TPCOORD_COORDINATOR"] = params.endpoint
        os.environ["TPCOORD_JOB"] = params.run_id
        for key, env in (("token_file", "TPCOORD_TOKEN_FILE"), ("tls_ca", "TPCOORD_TLS_CA"),
                         ("tls_cert", "TPCOORD_TLS_CERT"), ("tls_key", "TPCOORD_TLS_KEY")):
            if conf[key]:
                os.environ[env] = os.path.abspath(conf[key])

    def get_backend(self):
        return BACKEND

    def get_run_id(self):
        return self._run_id

    @property
    def use_agent_store(self):
        """torch >= 2.x: False, so that worker rank 0 hosts its own TCPStore at MASTER_ADDR:MASTER_PORT for
        scripts that use env:// (tpcoord.init_process_group uses the coordinator's store instead)."""
        return False

    def next_rendezvous(self):
        """Joins this node to the next generation of JOB.nodes and waits (join_timeout) until it starts:
        (store, group rank, nodes) on torch 1.13, a RendezvousInfo on torch >= 2.4."""
        self._leave("torchrun on host %s starts round %d of its workers" % (self._host, self._round + 1))
        self._round += 1
        worker_id = "%s:%d:%d" % (self._host, os.getpid(), self._round)
        deadline = time.monotonic() + self._join_timeout
        try:
            self._wait_for_a_seat(deadline)
            member = self._client.join(self._max_nodes, tp_size=1, host=self._host, worker_id=worker_id,
                                       min_world_size=self._min_nodes, rejoin_timeout=self._last_call,
                                       timeout=max(1.0, deadline - time.monotonic()))
        except Exception as e:
            raise _rendezvous_error(e) from e
        self._member = member
        with self._lock:
            self._waiting, self._waiting_at = 0, 0.0
        _log.info("tpcoord rendezvous %s: round %d is generation %d: node rank %d of %d", self._client.job,
                  self._round, member.generation, member.rank, member.world_size)
        store = member.store(datetime.timedelta(seconds=self._join_timeout))
        if not hasattr(_api, "RendezvousInfo"):  # torch 1.13: a tuple
            return store, member.rank, member.world_size
        return _api.RendezvousInfo(store, member.rank, member.world_size, self._bootstrap(store, member.rank))

    def _wait_for_a_seat(self, deadline):
        """A node that would be one too many for a running round (MAX nodes run it) waits for that round to
        end, as torchrun's c10d backend keeps such a node waiting, instead of ending it by joining."""
        said = False
        while True:
            try:
                job = self._client.get_job()
            except CoordinatorError as e:
                if e.code == grpc.StatusCode.NOT_FOUND:
                    return  # no node came yet
                raise
            if job.closed or job.phase != pb.PHASE_RUNNING or job.member_count < self._max_nodes:
                return
            if time.monotonic() >= deadline:
                raise RendezvousTimeoutError(
                    "job %s: the rendezvous is full: its %d nodes (--nnodes at most %d) run generation %d, and none "
                    "left within join_timeout (%d s)" % (self._client.job, job.member_count, self._max_nodes,
                                                          job.generation, self._join_timeout))
            if not said:
                _log.warning("tpcoord rendezvous %s: %d nodes (the most --nnodes allows) run generation %d: this "
                             "node waits for a seat", self._client.job, job.member_count, job.generation)
                said = True
            time.sleep(1.0)

    def _bootstrap(self, store, rank):
        """torch >= 2.4: where worker rank 0's TCPStore listens (the handler says; the agent no longer does):
        chosen by node rank 0, read from the round's store by every node."""
        if rank == 0:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("", 0))
                port = s.getsockname()[1]
            store.set("MASTER_ADDR", self._local_addr or socket.getfqdn())
            store.set("MASTER_PORT", str(port))
        return _api.RendezvousStoreInfo(store.get("MASTER_ADDR").decode(), int(store.get("MASTER_PORT").decode()))

    def num_nodes_waiting(self):
        """Nodes waiting for the next round: those of the joining generation that followed this node's, once
        its own has ended (at least 1 then: the round must be done again). Asked at most once a second;
        never raises (torchrun's agent would die of it): a failure is logged and counts as 0."""
        member = self._member
        if member is None or member.generation_ended() is None:
            return 0
        with self._lock:
            if time.monotonic() - self._waiting_at < _WAITING_REFRESH:
                return self._waiting
        try:
            job = self._client.get_job()
            joining = job.member_count if job.generation > member.generation else 0
            waiting = max(1, joining)
        except Exception as e:  # noqa: BLE001 (a monitor must not die of the coordinator)
            _log.warning("tpcoord rendezvous %s: num_nodes_waiting: %s", self._client.job, e)
            waiting = 1  # the round has ended in any case
        with self._lock:
            self._waiting, self._waiting_at = waiting, time.monotonic()
        return waiting

    def is_closed(self):
        try:
            return self._client.get_job().closed
        except CoordinatorError as e:
            if e.code == grpc.StatusCode.NOT_FOUND:
                return False
            raise _rendezvous_error(e) from e

    def set_closed(self):
        reason = "torchrun on host %s closed the rendezvous" % self._host
        try:
            self._client.close_job(reason, timeout=self._close_timeout)
        except Exception as e:
            raise _rendezvous_error(e) from e

    def shutdown(self):
        """The run is over (torchrun calls this when its agent returns, done or failed): closes the rendezvous
        for every node, as torchrun's c10d backend does, and leaves this node's generation. False (logged) if
        the coordinator could not be told."""
        try:
            self._client.close_job("torchrun on host %s ended its run" % self._host, timeout=self._close_timeout)
            self._leave("", finished=True)
            return True
        except Exception as e:  # noqa: BLE001
            _log.warning("tpcoord rendezvous %s: shutdown: %s", self._client.job, e)
            return False

    def _leave(self, reason, finished=False):
        """Leaves this node's generation, if it holds one: unfinished (it ends the round for every node), or
        finished."""
        member, self._member = self._member, None
        if member is None or member.left:
            return
        try:
            member.leave(finished=finished, reason=reason)
        except GenerationEnded:
            pass  # the round had ended already
        except CoordinatorError as e:
            _log.warning("tpcoord rendezvous %s: leaving generation %d: %s", self._client.job, member.generation, e)


def _rendezvous_error(e):
    """torchrun's exception for what the coordinator (or the client) said, with the coordinator's text."""
    if isinstance(e, RendezvousError):
        return e
    if isinstance(e, WaitTimeout):
        return RendezvousTimeoutError(str(e))
    if isinstance(e, CoordinatorError):
        if e.code == grpc.StatusCode.UNAVAILABLE:
            return RendezvousConnectionError(str(e))
        if e.code == grpc.StatusCode.FAILED_PRECONDITION and " is closed" in str(e):
            return RendezvousClosedError(str(e))
        return RendezvousError("%s: %s" % (e.code.name, e))
    return RendezvousError(str(e))
