"""tpcoord.init_process_group(): the whole set-up of a training process in one call.

    import tpcoord
    member = tpcoord.init_process_group(config="ds_config.json")   # under torchrun or tp-agent: no argument
    model = shard(model, member.tp_group)                          # the user's own model and loop
    for step in ...:
        loss = train_step(model, member.dp_group)

It connects (TPCOORD_COORDINATOR / TPCOORD_JOB, which tpcoord's torchrun backend and tp-agent set; else
torchrun's TORCHELASTIC_RUN_ID names the job), takes the TP size (`tp_size`: recorded as
deepspeed.tp_model_init records it; else the config's tensor_parallel.autotp_size, DeepSpeed's config-only
AutoTP, which records nothing), joins (world and rank from torchrun's WORLD_SIZE and RANK, or tp-agent's
TPCOORD_WORLD_SIZE), merges the DeepSpeed config (member.config: the merged dict), initialises the default
process group through the coordinator's store, and creates the TP and DP groups (member.tp_group,
member.dp_group).

It also watches the rest of the process, as `with member:` would:
- a generation that ends (a peer died, hung past its lease, or left) raises GenerationEnded, naming the rank,
  at the next torch.distributed collective or member.check(); a collective that fails because a peer died
  raises it too, once the coordinator has named the peer;
- the process then exits 75 (restartable: torchrun and tp-agent start it again, and it joins the next
  generation), or 3 when the rank that ended it said no restart cures it (also for a DeepSpeed conflict, a
  ValueError); any other uncaught exception ends the generation for the others with its text;
- a process that ends normally leaves finished.
Collectives time out after the coordinator's lease (not torch's 30 minutes), when a hung peer has been
declared dead; `timeout` says otherwise.
"""
import atexit
import datetime
import functools
import json
import os
import sys

import grpc
import torch
import torch.distributed as dist

from . import client as _client
from .client import Client, _config_text
from .credentials import Credentials
from .errors import CoordinatorError, GenerationEnded

EXIT_RESTARTABLE = 75  # EX_TEMPFAIL: torchrun and tp-agent restart the worker
EXIT_FATAL = 3         # tp-agent does not restart it (tp-worker's code for a configuration error)
JOIN_TIMEOUT = 300.0   # seconds every worker of a generation has to arrive

# The torch.distributed calls that wait for peers, watched for the end of the generation.
_COLLECTIVES = ("all_reduce", "all_gather", "all_gather_object", "all_to_all", "all_to_all_single", "barrier",
                "broadcast", "broadcast_object_list", "gather", "gather_object", "reduce", "reduce_scatter",
                "scatter", "scatter_object_list", "send", "recv", "isend", "irecv", "monitored_barrier",
                "all_gather_into_tensor", "reduce_scatter_tensor", "_all_gather_base", "_reduce_scatter_base")

_member = None  # the process's member, once init_process_group returned


def init_process_group(backend=None, *, config=None, tp_size=None, dtype=None, timeout=None):
    """Joins this process to its job and initialises torch.distributed; returns the Member (rank, world_size,
    tp_group, dp_group, config, device).

    backend: "nccl" when CUDA is available, else "gloo". config: a DeepSpeed config (a dict, or the path of a
    JSON file), merged with the job's record; its tensor_parallel.autotp_size is the TP size when `tp_size` is
    not given. tp_size, dtype: deepspeed.tp_model_init's arguments, recorded for the job (dtype default: the
    config's, else torch.float32). timeout: seconds (or a timedelta) a collective waits for its peers;
    default the coordinator's lease.
    """
    global _member
    if _member is not None:
        raise RuntimeError("tpcoord.init_process_group was called twice in this process (rank %d of job %s)"
                           % (_member.rank, _member.job))
    if dtype is not None and tp_size is None:
        raise TypeError("dtype is tp_model_init's, recorded with tp_size: give tp_size too, or leave both to "
                        "the config (tensor_parallel.autotp_size, bf16/fp16)")
    ds_config = json.loads(_config_text(config)) if config is not None else None
    client = _client_from_environment()
    world, min_world = _world_size()
    rank = _int_env("RANK")
    if tp_size is not None:  # deepspeed.tp_model_init: the record every worker's Join and merge are held to
        client.record_tp_init_args(tp_size, dtype or _config_dtype(ds_config))
        join_tp = int(tp_size)
    else:  # DeepSpeed's config-only AutoTP: the config's autotp_size, nothing recorded
        join_tp = _autotp_size(ds_config)
    member = client.join(world, rank, tp_size=join_tp, timeout=JOIN_TIMEOUT, min_world_size=min_world,
                         rejoin_timeout=10.0 if min_world else 0.0)
    _watch(member)
    try:
        _set_up(member, backend, ds_config, timeout)
    except BaseException as e:  # the others learn why instead of waiting; the caller gets the error
        _leave_after(e)
        raise
    return member


def _set_up(member, backend, ds_config, timeout):
    """What follows the Join: the merge, the device, the default process group and the TP/DP groups."""
    member.config = member.merge_config(ds_config) if ds_config is not None else None
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    member.device = torch.device("cpu")
    if backend == "nccl":
        local = _int_env("LOCAL_RANK")
        member.device = torch.device("cuda", (member.rank if local is None else local) % torch.cuda.device_count())
        torch.cuda.set_device(member.device)
    if timeout is None:
        timeout = datetime.timedelta(seconds=member.lease)
    elif not isinstance(timeout, datetime.timedelta):
        timeout = datetime.timedelta(seconds=float(timeout))
    dist.init_process_group(backend, store=member.store(timeout), rank=member.rank, world_size=member.world_size,
                            timeout=timeout)
    member.tp_group, member.dp_group = member.new_groups(timeout=timeout)
    return member


def _client_from_environment():
    address = os.environ.get("TPCOORD_COORDINATOR", "")
    job = os.environ.get("TPCOORD_JOB") or os.environ.get("TORCHELASTIC_RUN_ID", "")
    if not address:
        raise ValueError("tpcoord.init_process_group: no coordinator: set TPCOORD_COORDINATOR=HOST:PORT (and "
                         "TPCOORD_JOB), or start the script with torchrun --rdzv-backend=tpcoord (python -m "
                         "tpcoord.run on torch < 2.5) or tp-agent, which set both")
    if not job:
        raise ValueError("tpcoord.init_process_group: no job: set TPCOORD_JOB (torchrun's --rdzv-id sets it)")
    client = Client(address, job, Credentials())
    _client._default = client  # tpcoord.tp_model_init's, when it is given none
    return client


def _world_size():
    """(world_size, min_world_size): torchrun's WORLD_SIZE, else tp-agent's TPCOORD_WORLD_SIZE (N or MIN:MAX)."""
    world = os.environ.get("WORLD_SIZE") or os.environ.get("TPCOORD_WORLD_SIZE", "")
    parts = world.split(":")
    if not world or len(parts) > 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError("tpcoord.init_process_group: the world size is unknown: WORLD_SIZE (torchrun) or "
                         "TPCOORD_WORLD_SIZE (N or MIN:MAX, tp-agent) must be set, not %r" % world)
    return int(parts[-1]), int(parts[0]) if len(parts) == 2 else 0


def _int_env(name):
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else None


def _autotp_size(ds_config):
    """The config's tensor_parallel.autotp_size (0: none; the coordinator's Join takes 0 as 1)."""
    section = (ds_config or {}).get("tensor_parallel") or {}
    size = section.get("autotp_size") if isinstance(section, dict) else None
    if size is None:
        return 0
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError("tensor_parallel.autotp_size must be a positive integer, got %r" % (size,))
    return size


def _config_dtype(ds_config):
    for section, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16), ("bfloat16", torch.bfloat16)):
        if ((ds_config or {}).get(section) or {}).get("enabled"):
            return dtype
    return torch.float32


def _watch(member):
    """The process-wide watch: collectives, uncaught exceptions and the exit (module docstring)."""
    global _member
    _member = member
    for name in _COLLECTIVES:
        fn = getattr(dist, name, None)
        if fn is not None and not getattr(fn, "_tpcoord_watched", False):
            setattr(dist, name, _watched(fn))
    previous_hook = sys.excepthook

    def excepthook(kind, error, traceback):
        previous_hook(kind, error, traceback)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_finish_with(error))

    sys.excepthook = excepthook
    atexit.register(_leave_at_exit)


def _watched(fn):
    @functools.wraps(fn)
    def call(*args, **kwargs):
        member = _member
        if member is not None:
            member.check()
        try:
            return fn(*args, **kwargs)
        except RuntimeError as e:
            ended = member.verdict_on(e) if member is not None else None
            if ended is not None:
                raise ended from e
            raise
    call._tpcoord_watched = True
    return call


def _finish_with(error):
    """Leaves the generation after an uncaught `error`; the exit status for it."""
    ended = _leave_after(error)
    if ended is not None:
        return _exit_code_saying(ended)
    return EXIT_FATAL if _cureless(error) else 1


def _exit_code_saying(ended):
    """The exit status for the GenerationEnded `ended`, said on stderr."""
    code = EXIT_RESTARTABLE if ended.restartable else EXIT_FATAL
    print("tpcoord: %s; exiting %d" % (ended, code), file=sys.stderr, flush=True)
    return code


def _cureless(error):
    """No restart cures it: a DeepSpeed conflict or a bad config (ValueError), or what the coordinator refuses
    as a precondition (a config that does not fit the job)."""
    return isinstance(error, ValueError) or (isinstance(error, CoordinatorError) and
                                             error.code == grpc.StatusCode.FAILED_PRECONDITION)


def _leave_after(error):
    """Leaves the generation after `error` (Member.end_with): the GenerationEnded behind it, or None."""
    if _member is None:
        return error if isinstance(error, GenerationEnded) else None
    return _member.end_with(error, fatal=_cureless(error))


def _leave_at_exit():
    member = _member
    if member is None or member.left:
        return
    try:
        member.leave(finished=True)
    except GenerationEnded as e:  # the generation failed before this rank was done
        os._exit(_exit_code_saying(e))
    except CoordinatorError as e:
        print("tpcoord: leaving the job at exit: %s" % e, file=sys.stderr, flush=True)
