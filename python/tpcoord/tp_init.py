"""deepspeed.tp_model_init through the coordinator: the record goes to the job, not to a process-global dict
(spec gap G1), so every worker's call is checked against every other's."""
from .client import default_client


def tp_model_init(model, tp_size, dtype, tp_group=None, *, client=None):
    """Records (tp_size, dtype, tp_group) for the client's job and returns `model` unmodified, as DeepSpeed
    does; sharding happens later, in the training script. `tp_group`: None, the global ranks of this worker's
    TP group, or a torch.distributed group. A call that conflicts with an earlier record (of any worker of the
    job) raises ValueError("Conflicting tp_model_init arguments detected across multiple calls.")."""
    (client or default_client()).record_tp_init_args(tp_size, dtype, _ranks(tp_group))
    return model


def _ranks(group):
    if group is None or isinstance(group, (list, tuple, range)):
        return group
    import torch.distributed as dist
    if hasattr(dist, "get_process_group_ranks"):
        return dist.get_process_group_ranks(group)
    return sorted(dist.distributed_c10d._pg_group_ranks[group].keys())  # torch 1.13
