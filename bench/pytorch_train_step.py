"""The baseline of train_bench: the same Llama preset, batch and optimizer as a TP=1 tp-worker, trained in
PyTorch (Debian's python3-torch, the same LibTorch 1.13 and OpenBLAS underneath) on one process.

    /usr/bin/python3 bench/pytorch_train_step.py --preset small --seq-len 128 --steps 20 --threads 1

Prints "pytorch step_ms <mean over the steps after the first three>". The model is transformers'
LlamaForCausalLM written out (eager attention, RMSNorm in fp32, rotate-half RoPE, GQA); each step is what a
tp-worker step does at TP=1 x DP=1: forward, next-token loss, backward, the global gradient norm,
AdamW (lr 0.001, weight decay 0.01), and reading the loss. Threads are set as tp-worker sets them: LibTorch
intra-op and OpenBLAS to --threads, inter-op to 1, OMP_WAIT_POLICY=PASSIVE.
"""
import argparse
import math
import os
import sys
import time

# OpenBLAS and libgomp read their settings once, as they load, so they go in before torch is imported:
# OpenBLAS's thread count (torch.set_num_threads does not reach it) and the wait policy tp-worker runs with.
_threads = sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv else "1"
os.environ.setdefault("OPENBLAS_NUM_THREADS", _threads)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

PRESETS = {  # worker/model/llama_model.cc, LlamaConfig::Preset
    "tiny": dict(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=172, vocab=256),
    "small": dict(hidden=256, layers=4, heads=8, kv_heads=4, intermediate=688, vocab=256),
    "350m": dict(hidden=1024, layers=24, heads=16, kv_heads=8, intermediate=2816, vocab=32000),
}


class RMSNorm(torch.nn.Module):
    def __init__(self, hidden, eps=1e-5):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(hidden))
        self.eps = eps

    def forward(self, x):
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Layer(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        h, d = c["hidden"], c["hidden"] // c["heads"]
        self.heads, self.kv_heads, self.head_dim = c["heads"], c["kv_heads"], d
        self.input_layernorm = RMSNorm(h)
        self.q_proj = torch.nn.Linear(h, c["heads"] * d, bias=False)
        self.k_proj = torch.nn.Linear(h, c["kv_heads"] * d, bias=False)
        self.v_proj = torch.nn.Linear(h, c["kv_heads"] * d, bias=False)
        self.o_proj = torch.nn.Linear(c["heads"] * d, h, bias=False)
        self.post_attention_layernorm = RMSNorm(h)
        self.gate_proj = torch.nn.Linear(h, c["intermediate"], bias=False)
        self.up_proj = torch.nn.Linear(h, c["intermediate"], bias=False)
        self.down_proj = torch.nn.Linear(c["intermediate"], h, bias=False)

    def forward(self, x, cos, sin, mask):
        b, s, _ = x.shape
        y = self.input_layernorm(x)
        q = self.q_proj(y).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(y).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(y).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        groups = self.heads // self.kv_heads
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        scores = q @ k.transpose(2, 3) / math.sqrt(self.head_dim) + mask
        attn = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype) @ v
        x = x + self.o_proj(attn.transpose(1, 2).reshape(b, s, -1))
        y = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(y)) * self.up_proj(y))


class Llama(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(c["vocab"], c["hidden"])
        self.layers = torch.nn.ModuleList(Layer(c) for _ in range(c["layers"]))
        self.norm = RMSNorm(c["hidden"])
        self.lm_head = torch.nn.Linear(c["hidden"], c["vocab"], bias=False)
        self.head_dim = c["hidden"] // c["heads"]
        for p in self.parameters():
            if p.dim() == 2:
                torch.nn.init.normal_(p, std=0.02)

    def forward(self, tokens):
        s, device = tokens.shape[1], tokens.device
        inv_freq = 1.0 / (10000.0 ** (torch.arange(0, self.head_dim, 2, device=device).float() / self.head_dim))
        freqs = torch.outer(torch.arange(s, device=device).float(), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        mask = torch.full((s, s), float("-inf"), device=device).triu(1)
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.lm_head(self.norm(x))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="small")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="autocast to bf16 (fp32 weights, as tp-worker's masters)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(1234)
    config = PRESETS[args.preset]
    vocab = config["vocab"]
    model = Llama(config).to(args.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.001, weight_decay=0.01)
    data = torch.randint(0, vocab, (args.steps, 8, args.seq_len + 1), device=args.device)
    times = []
    for step in range(args.steps):
        start = time.perf_counter()
        tokens = data[step]
        with torch.autocast(device_type=args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.bf16):
            logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, vocab).float(), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
        optimizer.step()
        loss.item()
        times.append(time.perf_counter() - start)
    warm = times[3:] or times
    print(f"pytorch step_ms {1e3 * sum(warm) / len(warm):.1f}")


if __name__ == "__main__":
    main()
