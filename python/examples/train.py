#!/usr/bin/env python3
"""Trains a small tensor- and data-parallel MLP with plain PyTorch, set up by tpcoord.init_process_group: the
coordinator records the TP size (--tp-size; else the config's tensor_parallel.autotp_size), merges the
DeepSpeed config, and brings up a Gloo (or NCCL) process group over its store with the TP and DP groups of
the ranks it answered; a member session says who failed.

    python3 -m tpcoord.run --rdzv-backend=tpcoord --rdzv-endpoint=127.0.0.1:50051 --rdzv-id=mlp \
        --nnodes=2 --nproc-per-node=2 python/examples/train.py --tp-size 2      # torchrun (torch 1.13)
    python3 python/examples/train.py --coordinator 127.0.0.1:50051 --job mlp --world-size 4 --tp-size 2 \
        [--rank R] [--token-file F]                                             # by hand, 4 times

Under torchrun or tp-agent it needs no flag but its own. By hand, start it world-size times (any order, any
host). Each process prints one JSON line per step:
{"rank", "step", "loss", "grads"}: the loss averaged over the DP group, and a SHA-256 of this rank's gradient
shard after the DP all-reduce (equal across a DP group). Exit status as tp-worker's: 0 done, 3 a
configuration error no restart cures (a DeepSpeed conflict), 75 the generation ended (a peer died or hung:
restart this process), 1 anything else.
"""
import argparse
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


def train(args):
    # The one call: connect, record (--tp-size) or take the config's autotp_size, join, merge, process group
    # and TP/DP groups through the coordinator. A collective waits --timeout for a frozen peer before it fails
    # (and the coordinator's verdict names it); default the coordinator's lease.
    member = tpcoord.init_process_group(args.backend, config=args.config or DS_CONFIG, tp_size=args.tp_size,
                                        dtype=torch.float32 if args.tp_size else None, timeout=args.timeout)
    with member:  # a clean exit leaves finished; an exception ends the generation for the others, with its text
        config = member.config  # DeepSpeed's merge: tensor_parallel filled in
        print(json.dumps({"rank": member.rank, "world_size": member.world_size, "generation": member.generation,
                          "pid": os.getpid(), "tensor_parallel": config.get("tensor_parallel")}), flush=True)
        check_groups(member, member.tp_group, member.dp_group, member.device)
        model = ParallelMLP(args.d_in, args.hidden, args.d_out, args.seed, member.tp_rank, member.tp_size,
                            member.tp_group).to(member.device)
        optimizer = torch.optim.SGD(model.parameters(), lr=config["optimizer"]["params"]["lr"])
        micro = config["train_micro_batch_size_per_gpu"]
        for step in range(1, args.steps + 1):
            member.check()  # the generation ended (a peer died or hung): GenerationEnded names it
            x, y = (t.to(member.device) for t in batch(step, member.dp_rank, micro, args.d_in, args.d_out,
                                                       args.seed))
            loss = torch.nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            grads = []
            for p in model.parameters():  # data parallelism: the mean gradient over the DP group
                dist.all_reduce(p.grad, group=member.dp_group)
                p.grad /= member.dp_size
                grads.append(p.grad.reshape(-1))
            optimizer.step()
            mean_loss = loss.detach().clone()
            dist.all_reduce(mean_loss, group=member.dp_group)
            mean_loss = mean_loss.item() / member.dp_size
            digest = hashlib.sha256(torch.cat(grads).cpu().numpy().tobytes()).hexdigest()[:16]
            print(json.dumps({"rank": member.rank, "step": step, "loss": mean_loss, "grads": digest}), flush=True)
            if member.rank == 0:
                member.report_progress(step, mean_loss, total_steps=args.steps)
        dist.barrier()  # every rank has finished its last step before any leaves
    dist.destroy_process_group()
    return model


# Flags that stand for the environment tpcoord.init_process_group reads (torchrun, tp-agent and tpcoord's
# torchrun backend set it; a flag given wins).
ENVIRONMENT = {"coordinator": "TPCOORD_COORDINATOR", "job": "TPCOORD_JOB", "world_size": "WORLD_SIZE",
               "rank": "RANK", "token_file": "TPCOORD_TOKEN_FILE", "tls_ca": "TPCOORD_TLS_CA",
               "tls_cert": "TPCOORD_TLS_CERT", "tls_key": "TPCOORD_TLS_KEY"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--coordinator", help="host:port, or a comma-separated list (HA); default "
                        "$TPCOORD_COORDINATOR")
    parser.add_argument("--job", help="default $TPCOORD_JOB, else torchrun's --rdzv-id")
    parser.add_argument("--world-size", help="default $WORLD_SIZE (torchrun), else $TPCOORD_WORLD_SIZE (tp-agent)")
    parser.add_argument("--rank", type=int, help="the rank to ask for (default $RANK, else assigned)")
    parser.add_argument("--tp-size", type=int, default=None,
                        help="tp_model_init's tp_size (default: the config's tensor_parallel.autotp_size)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--config", default=None, help="a DeepSpeed config (JSON file); default: a built-in one")
    parser.add_argument("--token-file", default=None)
    parser.add_argument("--tls-ca", default=None)
    parser.add_argument("--tls-cert", default=None)
    parser.add_argument("--tls-key", default=None)
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds a collective waits for its peers (default: the coordinator's lease)")
    parser.add_argument("--d-in", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--d-out", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--backend", default=None, help="gloo (CPU) or nccl (GPUs); default nccl if CUDA works")
    args = parser.parse_args()
    for flag, env in ENVIRONMENT.items():
        if getattr(args, flag) is not None:
            os.environ[env] = str(getattr(args, flag))
    torch.set_num_threads(1)
    try:
        train(args)
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
