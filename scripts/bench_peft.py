#!/usr/bin/env python3
"""PyTorch + PEFT half of the swift-lora training-throughput benchmark.

Measures LoRA fine-tuning throughput (tokens/s) and peak resident memory for
a model with SmolLM2-135M's shapes -- the same work `lora bench` gives the
Swift engine, so the two numbers can be compared side by side.

What is built (random weights, nothing is downloaded):

  * transformers LlamaForCausalLM with SmolLM2-135M's config: hidden 576,
    intermediate 1536, 30 layers, 9 attention heads, 3 KV heads, head_dim 64,
    vocab 49152, tied embeddings, rope_theta 100000, rms_norm_eps 1e-5,
    float32, attention "sdpa" (PyTorch's default and fastest on CPU; `--attn
    eager` for the plain matmul/softmax path).
  * PEFT LoRA r=8, alpha=16, dropout 0 on all seven linear projections
    (q, k, v, o, gate, up, down). As in `lora bench`, every lora_B is set to
    0.001 instead of PEFT's zeros so losses and gradients are non-trivial
    (PyTorch does the same multiplications either way).
  * torch.optim.AdamW over the LoRA parameters only (lr 1e-4), model.train().
  * One fixed batch of 4 x 256 random token ids (seeded), labels = input_ids
    (transformers shifts them internally), no padding, no attention mask.

One step = optimizer.zero_grad(), forward with labels, loss.backward(),
optimizer.step(). `--warmup` untimed steps run first, then `--steps` timed
ones. Reported:

  * tokens/s = batch * seq_len * steps / (sum of timed step times),
    plus each step's time;
  * peak resident memory of the whole process (getrusage ru_maxrss, KB -> MB,
    cross-checked against VmHWM in /proc/self/status on Linux).

Install (CPU wheels are enough; tested with torch 2.15, transformers 5.24,
peft 0.21.2):

    pip install torch transformers peft

Run from the repository root:

    python scripts/bench_peft.py                        # readable summary
    python scripts/bench_peft.py --json                 # one JSON line
    python scripts/bench_peft.py --threads 8 --warmup 1 --steps 5
    python scripts/bench_peft.py --attn eager
    python scripts/bench_peft.py --precision bf16       # under bf16 autocast

The JSON line is
    {"tool": "peft", "tokens_per_second": ..., "peak_rss_mb": ...,
     "step_seconds": [...], "threads": ..., "torch": "...", "peft": "...", ...}
(plus a few extra descriptive keys: transformers, attn, batch_size, seq_len,
layers, loss, vmhwm_mb, import_rss_mb, sdpa).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import warnings


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads(N); default: torch's default")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    p.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    p.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa",
                   help="attention implementation (default sdpa)")
    p.add_argument("--batch-size", type=int, default=4, help="sequences per step (default 4)")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per sequence (default 256)")
    p.add_argument("--layers", type=int, default=30,
                   help="transformer blocks (SmolLM2-135M has 30)")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank (default 8)")
    p.add_argument("--alpha", type=float, default=16.0, help="LoRA alpha (default 16)")
    p.add_argument("--grad-checkpoint", action="store_true",
                   help="transformers' gradient checkpointing (non-reentrant), as --grad-checkpoint in lora bench")
    p.add_argument("--json", action="store_true", help="print one JSON line instead of a summary")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: forward and loss under torch.autocast('cpu', dtype=torch.bfloat16), the usual "
                        "mixed-precision setting (weights, LoRA parameters and AdamW stay fp32)")
    args = p.parse_args()
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    return args


def peak_rss_mb() -> float:
    """Peak resident set size of this process. ru_maxrss is KB on Linux (bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":
        return rss / (1024 * 1024)
    return rss / 1024


def vmhwm_mb() -> float | None:
    """VmHWM ("high water mark" of RSS) from /proc/self/status, in MB; None where absent."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # value is in kB
    except OSError:
        pass
    return None


def main() -> None:
    args = parse_args()

    import torch
    import transformers
    import peft
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    # What the process holds before any model exists: torch (a CUDA build maps
    # several hundred MB of libraries even on CPU), transformers, peft.
    import_rss = peak_rss_mb()
    # peft 0.21 calls transformers 5's deprecated is_gradient_checkpointing.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    torch.manual_seed(0)
    torch.set_default_dtype(torch.float32)

    # SmolLM2-135M (HuggingFaceTB/SmolLM2-135M config.json). transformers 5 keeps
    # rope_theta inside rope_parameters and calls torch_dtype `dtype`.
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=args.layers,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        hidden_act="silu",
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
        tie_word_embeddings=True,
        attention_bias=False,
        mlp_bias=False,
        use_cache=False,
        dtype="float32",
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=None,
        attn_implementation=args.attn,
    )
    model = LlamaForCausalLM(config).to(torch.float32)
    assert model.lm_head.weight is model.model.embed_tokens.weight, "embeddings not tied"
    assert model.config._attn_implementation == args.attn, model.config._attn_implementation

    lora_config = LoraConfig(
        r=args.rank,
        lora_alpha=args.alpha,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora_config)
    if args.grad_checkpoint:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.fill_(0.001)
    model.train()

    params = [p for p in model.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    total = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    gen = torch.Generator().manual_seed(3)
    input_ids = torch.randint(0, config.vocab_size, (args.batch_size, args.seq_len),
                              generator=gen, dtype=torch.int64)
    labels = input_ids.clone()

    # During the first warmup step (never a timed one) record how attention reaches
    # torch's SDPA -- is_causal / mask / GQA of the first call -- and which ATen
    # attention kernels forward and backward actually dispatch to.
    from torch.utils._python_dispatch import TorchDispatchMode

    sdpa_calls: list[dict] = []
    real_sdpa = torch.nn.functional.scaled_dot_product_attention

    def probe_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
        if not sdpa_calls:
            sdpa_calls.append({
                "is_causal": bool(is_causal),
                "attn_mask": None if attn_mask is None else list(attn_mask.shape),
                "enable_gqa": bool(kw.get("enable_gqa", False)),
                "q": list(q.shape), "k": list(k.shape),
            })
        return real_sdpa(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                         is_causal=is_causal, scale=scale, **kw)

    class AttentionOps(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if ("attention" in name or "softmax" in name) and "log_softmax" not in name \
                    and name not in self.ops:
                self.ops.append(name)
            return func(*args, **(kwargs or {}))

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            out = model(input_ids=input_ids, labels=labels, use_cache=False)
        out.loss.backward()
        optimizer.step()
        return out.loss.item()

    losses = []
    step_seconds = []
    attention_ops: list[str] = []
    for i in range(args.warmup + args.steps):
        if i == 0 and args.warmup > 0:
            torch.nn.functional.scaled_dot_product_attention = probe_sdpa
            try:
                with AttentionOps() as mode:
                    losses.append(step())
            finally:
                torch.nn.functional.scaled_dot_product_attention = real_sdpa
            attention_ops = mode.ops
            continue
        t0 = time.perf_counter()
        losses.append(step())
        dt = time.perf_counter() - t0
        if i >= args.warmup:
            step_seconds.append(dt)

    elapsed = sum(step_seconds)
    tokens_per_second = args.batch_size * args.seq_len * args.steps / elapsed
    peak = peak_rss_mb()
    hwm = vmhwm_mb()
    sdpa = sdpa_calls[0] if sdpa_calls else None
    if sdpa is not None:
        sdpa["aten_ops"] = attention_ops

    if args.json:
        print(json.dumps({
            "tool": "peft",
            "tokens_per_second": tokens_per_second,
            "peak_rss_mb": peak,
            "step_seconds": step_seconds,
            "threads": threads,
            "torch": torch.__version__,
            "peft": peft.__version__,
            "transformers": transformers.__version__,
            "attn": args.attn,
            "precision": args.precision,
            "batch_size": args.batch_size,
            "seq_len": args.seq_len,
            "layers": args.layers,
            "loss": losses[-1],
            "vmhwm_mb": hwm,
            "import_rss_mb": import_rss,
            "sdpa": sdpa,
        }, sort_keys=True))
        return

    print(f"model: SmolLM2-135M shapes, {args.layers} layers, random weights, float32, "
          f"attn={args.attn}; LoRA r={args.rank} alpha={args.alpha:g} on all linear layers")
    print(f"parameters: {total / 1e6:.1f}M total, {trainable / 1e6:.3f}M trainable (LoRA)")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"peft {peft.__version__}, threads: {threads}")
    if sdpa is not None:
        print(f"sdpa call: is_causal={sdpa['is_causal']} attn_mask={sdpa['attn_mask']} "
              f"enable_gqa={sdpa['enable_gqa']} q={sdpa['q']} k={sdpa['k']}")
    if attention_ops:
        print("attention kernels: " + ", ".join(attention_ops))
    print(f"batch {args.batch_size} x {args.seq_len} tokens, {args.warmup} warmup + {args.steps} timed steps, "
          f"precision {args.precision}")
    print("steps (s): " + " ".join(f"{s:.3f}" for s in step_seconds))
    print("losses: " + " ".join(f"{l:.4f}" for l in losses))
    print(f"throughput: {tokens_per_second:.1f} tokens/s")
    hwm_text = f" (VmHWM {hwm:.0f} MB)" if hwm is not None else ""
    print(f"peak resident memory: {peak:.0f} MB{hwm_text}; "
          f"{import_rss:.0f} MB of it already after importing torch/transformers/peft")


if __name__ == "__main__":
    main()
