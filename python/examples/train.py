#!/usr/bin/env python3
"""Trains a small tensor- and data-parallel MLP with plain PyTorch, rendezvousing through the tp-coordinator:
DeepSpeed's tp_model_init record, its config merge, a Gloo process group over the coordinator's store, TP and
DP groups from the ranks the coordinator answered, and a member session that says who failed.

    PYTHONPATH=build/python /usr/bin/python3 python/examples/train.py \
        --coordinator 127.0.0.1:50051 --job mlp --world-size 4 --tp-size 2 [--rank R] [--token-file F]

Start it world-size times (any order, any host). Each process prints one JSON line per step:
{"rank", "step", "loss", "grads"}: the loss averaged over the DP group, and a SHA-256 of this rank's gradient
shard after the DP all-reduce (equal across a DP group). Exit status as tp-worker's: 0 done, 3 a
configuration error no restart cures (a DeepSpeed conflict), 75 the generation ended (a peer died or hung:
restart this process), 1 anything else.
"""
import argparse
import datetime
import hashlib
import json
import os
import sys

import torch
import torch.distributed as dist

import tpcoord

DS_CONFIG = {
    "train_micro_batch_size_per_gpu": 16,
    "gradient_accumulation_steps": 1,
    "optimizer": {"type": "SGD", "params": {"lr": 0.05}},
    "bf16": {"enabled": False},
}


class CopyToTensorParallel(torch.autograd.Function):
    """Identity forward; backward all-reduces the input's gradient over the TP group (each rank's shard of
    the column-parallel layer saw the whole input)."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class ReduceFromTensorParallel(torch.autograd.Function):
    """All-reduces the row-parallel layer's partial sums over the TP group; identity backward."""

    @staticmethod
    def forward(ctx, x, group):
        x = x.clone()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class ParallelMLP(torch.nn.Module):
    """y = W2 gelu(W1 x + b1) + b2, with W1 split by rows (column-parallel) and W2 by columns (row-parallel)
    over the TP group, as AutoTP shards an MLP's up and down projections: one all-reduce per forward. Every
    TP rank builds the same full model from `seed` and keeps its slice, so TP=2 trains what TP=1 trains."""

    def __init__(self, d_in, hidden, d_out, seed, tp_rank, tp_size, tp_group):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        w1, b1 = torch.randn(hidden, d_in, generator=g) / d_in ** 0.5, torch.zeros(hidden)
        w2, b2 = torch.randn(d_out, hidden, generator=g) / hidden ** 0.5, torch.zeros(d_out)
        lo, hi = hidden * tp_rank // tp_size, hidden * (tp_rank + 1) // tp_size
        self.w1, self.b1 = torch.nn.Parameter(w1[lo:hi].clone()), torch.nn.Parameter(b1[lo:hi].clone())
        self.w2, self.b2 = torch.nn.Parameter(w2[:, lo:hi].clone()), torch.nn.Parameter(b2)
        self.group = tp_group

    def forward(self, x):
        x = CopyToTensorParallel.apply(x, self.group)
        h = torch.nn.functional.gelu(x @ self.w1.t() + self.b1)
        return ReduceFromTensorParallel.apply(h @ self.w2.t(), self.group) + self.b2


def batch(step, dp_rank, size, d_in, d_out, seed):
    """This DP rank's batch of a fixed teacher's regression task: the same on every TP rank of the group."""
    teacher = torch.Generator().manual_seed(seed + 1)
    w = torch.randn(d_out, d_in, generator=teacher)
    g = torch.Generator().manual_seed(seed * 1000003 + step * 1009 + dp_rank)
    x = torch.randn(size, d_in, generator=g)
    return x, torch.tanh(x @ w.t())


def check_groups(member, tp_group, dp_group, device):
    """Every group all-reduces what its ranks should add up to."""
    for name, group, ranks in (("tp", tp_group, member.tp_group_ranks), ("dp", dp_group, member.dp_group_ranks),
                               ("world", None, list(range(member.world_size)))):
        t = torch.tensor([float(member.rank)], device=device)
        dist.all_reduce(t, group=group)
        if t.item() != sum(ranks):
            raise RuntimeError("all-reduce over the %s group %s gave %s, not %s" % (name, ranks, t.item(), sum(ranks)))
    print(json.dumps({"rank": member.rank, "groups": {"tp": member.tp_group_ranks, "dp": member.dp_group_ranks},
                      "all_reduce": "ok"}), flush=True)


def train(args, tp):
    model = tpcoord.tp_model_init(None, tp_size=args.tp_size, dtype=torch.float32, client=tp)  # records
    with tp.join(world_size=args.world_size, rank=args.rank) as member:
        config = tp.merge_config(args.config or DS_CONFIG)  # DeepSpeed's merge: tensor_parallel filled in
        print(json.dumps({"rank": member.rank, "generation": member.generation,
                          "tensor_parallel": config["tensor_parallel"]}), flush=True)
        # A collective waits for a frozen peer this long before it fails (and the member's verdict names it).
        timeout = datetime.timedelta(seconds=args.timeout)
        device = torch.device(args.device or ("cuda:%d" % (member.rank % torch.cuda.device_count())
                                              if args.backend == "nccl" else "cpu"))
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(args.backend, store=member.store(), rank=member.rank, world_size=member.world_size,
                                timeout=timeout)
        tp_group, dp_group = member.new_groups(timeout=timeout)
        check_groups(member, tp_group, dp_group, device)

        model = ParallelMLP(args.d_in, args.hidden, args.d_out, args.seed, member.tp_rank, member.tp_size,
                            tp_group).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=config["optimizer"]["params"]["lr"])
        micro = config["train_micro_batch_size_per_gpu"]
        for step in range(1, args.steps + 1):
            member.check()  # the generation ended (a peer died or hung): GenerationEnded names it
            x, y = (t.to(device) for t in batch(step, member.dp_rank, micro, args.d_in, args.d_out, args.seed))
            loss = torch.nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            grads = []
            for p in model.parameters():  # data parallelism: the mean gradient over the DP group
                dist.all_reduce(p.grad, group=dp_group)
                p.grad /= member.dp_size
                grads.append(p.grad.reshape(-1))
            optimizer.step()
            mean_loss = loss.detach().clone()
            dist.all_reduce(mean_loss, group=dp_group)
            mean_loss = mean_loss.item() / member.dp_size
            digest = hashlib.sha256(torch.cat(grads).cpu().numpy().tobytes()).hexdigest()[:16]
            print(json.dumps({"rank": member.rank, "step": step, "loss": mean_loss, "grads": digest}), flush=True)
            if member.rank == 0:
                member.report_progress(step, mean_loss, total_steps=args.steps)
        dist.barrier()  # every rank has finished its last step before any leaves
    dist.destroy_process_group()
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--coordinator", default=None, help="host:port, or a comma-separated list (HA)")
    parser.add_argument("--job", default=None)
    world = os.environ.get("TPCOORD_WORLD_SIZE", "")  # what tp-agent gives its workers
    parser.add_argument("--world-size", type=int, default=int(world) if world.isdigit() else None,
                        required=not world.isdigit(), help="default: $TPCOORD_WORLD_SIZE")
    parser.add_argument("--tp-size", type=int, default=1)
    parser.add_argument("--rank", type=int, default=None, help="the rank to ask for (default: assigned)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--config", default=None, help="a DeepSpeed config (JSON file); default: a built-in one")
    parser.add_argument("--token-file", default=None)
    parser.add_argument("--tls-ca", default=None)
    parser.add_argument("--tls-cert", default=None)
    parser.add_argument("--tls-key", default=None)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds any wait may take")
    parser.add_argument("--d-in", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--d-out", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--backend", default="gloo", help="gloo (CPU), or nccl (GPUs)")
    parser.add_argument("--device", default=None, help="default: cpu for gloo, cuda:RANK %% GPUs for nccl")
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        tp = tpcoord.connect(args.coordinator, args.job, token_file=args.token_file, tls_ca=args.tls_ca,
                             tls_cert=args.tls_cert, tls_key=args.tls_key, timeout=args.timeout)
        train(args, tp)
    except tpcoord.GenerationEnded as e:
        print(json.dumps({"generation_ended": str(e), "failed_rank": e.rank}), flush=True)
        return 75 if e.restartable else 3
    except ValueError as e:  # DeepSpeed's conflicts (tpcoord.DeepSpeedError), a bad config
        print("train.py: %s" % e, file=sys.stderr)
        return 3
    print(json.dumps({"done": True}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
