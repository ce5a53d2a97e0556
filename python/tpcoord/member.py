"""A worker's place in one generation of a job, as Join answered it: its rank, DeepSpeed's (DP x TP) mesh
(rank g has TP rank g % T and DP rank g // T; TP groups are contiguous ranks, DP groups strided ones), the
key that proves the seat is this process's, and the session that beats for it.

Use it as a context manager around training: a clean exit leaves finished; an exception leaves unfinished
(ending the generation for the others, with the reason), and a collective that failed because a peer died
is raised as the GenerationEnded naming that peer.
"""
import datetime


from ._proto import pb
from .errors import CoordinatorError, GenerationEnded
from .session import MemberSession


class Member:
    def __init__(self, client, response, key, on_end=None):
        self.client = client
        self.job = client.job
        self.key = key  # the secret the seat is bound to; never printed
        self.generation = response.generation
        self.rank = response.rank
        self.world_size = response.mesh.world_size
        self.tp_size = response.mesh.tp_size
        self.dp_size = response.mesh.dp_size
        self.tp_rank = response.tp_rank
        self.dp_rank = response.dp_rank
        self.heartbeat_interval = response.heartbeat_interval_ms / 1000.0
        self.lease = response.lease_ms / 1000.0
        self.left = False
        # Set by tpcoord.init_process_group: the merged DeepSpeed config, the torch.distributed groups of this
        # rank's TP and DP groups, and the device it computes on.
        self.config = self.tp_group = self.dp_group = self.device = None
        self._barrier_rounds = {}
        self._session = MemberSession(client, self, on_end)
        # From here on this process's death ends the generation at once (not only after the lease).
        self._session.wait_open(client.call_timeout)

    def __repr__(self):
        return "Member(job=%r, generation=%d, rank=%d, world_size=%d, tp_size=%d)" % (
            self.job, self.generation, self.rank, self.world_size, self.tp_size)

    # --- the mesh -----------------------------------------------------------------------------------------
    @property
    def tp_group_ranks(self):
        """The global ranks of this rank's TP group: {d*T .. d*T+T-1} for its DP rank d."""
        return self.tp_groups()[self.dp_rank]

    @property
    def dp_group_ranks(self):
        """The global ranks of this rank's DP group: {t, t+T, t+2T, ...} for its TP rank t."""
        return self.dp_groups()[self.tp_rank]

    def tp_groups(self):
        T = self.tp_size
        return [list(range(d * T, d * T + T)) for d in range(self.dp_size)]

    def dp_groups(self):
        return [list(range(t, self.world_size, self.tp_size)) for t in range(self.tp_size)]

    # --- torch.distributed --------------------------------------------------------------------------------
    def store(self, timeout=datetime.timedelta(minutes=5)):
        """A torch.distributed.Store over the coordinator's key-value API, scoped to this job and generation,
        for init_process_group(store=...). `timeout` bounds its waits (init_process_group sets its own)."""
        from .store import CoordinatorStore
        return CoordinatorStore(self, timeout)

    def new_groups(self, backend=None, timeout=None):
        """(tp_group, dp_group): torch.distributed groups of this rank's TP and DP groups. Every rank creates
        every group, in the same order (torch.distributed.new_group is collective), after init_process_group."""
        import torch.distributed as dist
        kwargs = {"backend": backend}
        if timeout is not None:
            kwargs["timeout"] = timeout
        tp = [dist.new_group(ranks, **kwargs) for ranks in self.tp_groups()]
        dp = [dist.new_group(ranks, **kwargs) for ranks in self.dp_groups()]
        return tp[self.dp_rank], dp[self.tp_rank]

    # --- the rendezvous -----------------------------------------------------------------------------------
    def merge_config(self, config, mpu=None):
        """The member's merge (Client.merge_config): every worker of the generation sends the same config."""
        self.check()
        return self.client._merge(config, mpu, self)

    def barrier(self, name, timeout=None):
        """Waits until every rank of the generation has entered the barrier `name` as often as this one has."""
        self.check()
        round_ = self._barrier_rounds[name] = self._barrier_rounds.get(name, 0) + 1
        request = pb.BarrierRequest(job_id=self.job, generation=self.generation, rank=self.rank, name=name,
                                    round=round_)
        self.client._wait("Barrier", request, self.key, self.client.timeout if timeout is None else timeout)

    def report_progress(self, step, loss, total_steps=0, tokens_per_second=0.0, step_seconds=0.0, eval_loss=None):
        """How training goes, for tpctl watch, /metrics and the status page (sent with a heartbeat, now)."""
        progress = pb.TrainingProgress(step=int(step), total_steps=int(total_steps), loss=float(loss),
                                       tokens_per_second=_rate(tokens_per_second), step_seconds=_rate(step_seconds))
        if eval_loss is not None:
            progress.eval_loss = float(eval_loss)
        if step >= 1 and (total_steps <= 0 or step <= total_steps):  # the coordinator ends a session otherwise
            self._session.send(progress)

    # --- the end ------------------------------------------------------------------------------------------
    def generation_ended(self):
        """The GenerationEnded the coordinator pushed, or None while the generation goes on."""
        return self._session.ended

    def wait_ended(self, timeout):
        """The GenerationEnded once the coordinator pushed it, waiting up to `timeout` seconds; else None."""
        return self._session.wait_ended(timeout)

    def check(self):
        """Raises the GenerationEnded once the generation has ended: call it every step."""
        if self._session.ended is not None:
            raise self._session.ended

    def leave(self, finished=True, reason="", fatal=False):
        """finished=True: this member is done (the generation completes when every member is). finished=False
        ends the generation now for everyone, with `reason` (fatal: no restart cures it, so the others stop
        too instead of rejoining). Then closes the session."""
        if self.left:
            return
        request = pb.LeaveRequest(job_id=self.job, generation=self.generation, rank=self.rank, finished=finished,
                                  reason=_truncate(reason, 1024), fatal=fatal)
        try:
            self.client._call("Leave", request, self.key)
        except GenerationEnded:
            if finished:
                raise  # the generation failed before this member was done: the caller must know
        finally:
            self.left = True
            self._session.close()

    def close(self):
        """Closes the session without leaving (the coordinator takes it for this worker's death)."""
        self.left = True
        self._session.close()

    def verdict_on(self, error):
        """The GenerationEnded behind `error`, or None. A collective that failed (RuntimeError from Gloo: a
        peer's connection closed) is most often a peer that died: the coordinator's verdict naming it arrives
        within its lease, so this waits that long for it."""
        if isinstance(error, RuntimeError) and not isinstance(error, CoordinatorError):
            return self.wait_ended(self.lease + self.client.wait_slack)
        return self._session.ended

    def end_with(self, error, fatal=False):
        """After `error` stopped this member's work: the GenerationEnded behind it, if there is one (the
        session closed); else leaves unfinished with the error's text (`fatal`: no restart cures it, so the
        others stop too) and returns None."""
        if isinstance(error, GenerationEnded):
            self.close()
            return error
        if self.left:
            return None
        ended = self.verdict_on(error)
        if ended is not None:
            self.close()
            return ended
        try:
            self.leave(finished=False, reason="%s: %s" % (type(error).__name__, error), fatal=fatal)
        except CoordinatorError:
            pass  # the original error is the one to raise
        return None

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if self.left:
            return False
        if error is None:
            self.leave(finished=True)
            return False
        ended = self.end_with(error, fatal=isinstance(error, ValueError))
        if ended is not None and ended is not error:
            raise ended from error
        return False


def _rate(value):
    value = float(value)
    return value if value >= 0 and value != float("inf") and value == value else 0.0


def _truncate(text, limit):
    data = text.encode()[:limit]
    return data.decode(errors="ignore")
