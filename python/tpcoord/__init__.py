"""tpcoord's Python client: record DeepSpeed's TP init args, merge DeepSpeed configs and rendezvous a
PyTorch training script through the tp-coordinator, as tp-worker does.

    import torch, torch.distributed as dist, tpcoord
    tp = tpcoord.connect("coord:50051", job="llama-run1", token_file="/etc/tpcoord/token", tls_ca="ca.crt")
    model = tpcoord.tp_model_init(model, tp_size=2, dtype=torch.bfloat16, client=tp)
    with tp.join(world_size=4) as member:          # rank, generation, TP and DP groups; heartbeats from now
        config = tp.merge_config(ds_config)        # DeepSpeed's merge; its conflicts raise ValueError
        dist.init_process_group("gloo", store=member.store(), rank=member.rank, world_size=member.world_size)
        tp_group, dp_group = member.new_groups()
        for step in ...:
            member.check()                         # raises GenerationEnded naming the rank that failed
            ...
    # leaving the block leaves finished (or, on an exception, unfinished with the reason)

README "Python client" has the whole story; python/examples/train.py a complete script.
"""
from .client import Client, connect
from .errors import CoordinatorError, DeepSpeedError, GenerationEnded, WaitTimeout
from .member import Member
from .tp_init import tp_model_init

__all__ = ["Client", "CoordinatorError", "DeepSpeedError", "GenerationEnded", "Member", "WaitTimeout", "connect",
           "tp_model_init"]
