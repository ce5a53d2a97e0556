"""tpcoord's Python client: a training script's rendezvous, DeepSpeed's TP init record and config merge, and
a torchrun rendezvous backend, all through the tp-coordinator.

Under torchrun (--rdzv-backend=tpcoord, or python -m tpcoord.run on torch < 2.5) or tp-agent, one call:

    import tpcoord
    member = tpcoord.init_process_group(config="ds_config.json")  # TP size from tensor_parallel.autotp_size
    ...  # member.rank, member.tp_group, member.dp_group, member.config (merged); the user's own loop

Step by step, with explicit arguments:

    tp = tpcoord.connect("coord:50051", job="llama-run1", token_file="/etc/tpcoord/token", tls_ca="ca.crt")
    model = tpcoord.tp_model_init(model, tp_size=2, dtype=torch.bfloat16, client=tp)
    with tp.join(world_size=4) as member:          # rank, generation, TP and DP groups; heartbeats from now
        config = tp.merge_config(ds_config)        # DeepSpeed's merge; its conflicts raise ValueError
        dist.init_process_group("gloo", store=member.store(), rank=member.rank, world_size=member.world_size)
        tp_group, dp_group = member.new_groups()
        for step in ...:
            member.check()                         # raises GenerationEnded naming the rank that failed

README "Using tpcoord from PyTorch" and "Python client" have the whole story; python/examples/train.py a
complete script.
"""
from .client import Client, connect
from .errors import CoordinatorError, DeepSpeedError, GenerationEnded, WaitTimeout
from .member import Member
from .tp_init import tp_model_init


def init_process_group(backend=None, *, config=None, tp_size=None, dtype=None, timeout=None):
    """Joins this process to its job and initialises torch.distributed through the coordinator's store;
    returns the Member, with member.tp_group and member.dp_group (tpcoord/process_group.py)."""
    from .process_group import init_process_group as init
    return init(backend, config=config, tp_size=tp_size, dtype=dtype, timeout=timeout)


__all__ = ["Client", "CoordinatorError", "DeepSpeedError", "GenerationEnded", "Member", "WaitTimeout", "connect",
           "init_process_group", "tp_model_init"]
