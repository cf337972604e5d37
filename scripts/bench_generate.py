#!/usr/bin/env python3
"""Token-by-token generation side by side: `lora generate` (exact, and with --quantize-activations)
against llama.cpp (llama-cpp-python) on the same GGUF, the same chat prompt, the same thread count,
greedy, N new tokens; alternating runs, medians.

    pip install llama-cpp-python        # builds llama.cpp for this CPU (several minutes)
    python scripts/bench_generate.py [--lora .build/release/lora] [--threads 2] [--tokens 128] [--runs 5]
"""
import argparse
import os
import re
import statistics
import subprocess
import time
from pathlib import Path

from llama_cpp import Llama

PROMPT = "Write a short story about a lighthouse keeper."
# SmolLM2's chat template with its default system message: what `lora generate` renders.
CHAT = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        f"<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n")


def run_lora(lora: str, model: str, threads: int, tokens: int, flags: list[str]) -> tuple[float, float]:
    env = dict(os.environ, LORA_THREADS=str(threads))
    out = subprocess.run([lora, "generate", "-m", model, "-p", PROMPT, "--max-tokens", str(tokens), *flags],
                         capture_output=True, text=True, env=env, check=True).stderr
    m = re.search(r"prompt: \d+ tokens, ([\d.]+) tokens/s; generation: (\d+) tokens, ([\d.]+) tokens/s", out)
    if not m or int(m.group(2)) != tokens:
        raise SystemExit(f"lora generate stopped early or printed no rates: {out}")
    return float(m.group(1)), float(m.group(3))


def run_llama(llm: Llama, tokens: int) -> tuple[float, float]:
    ids = llm.tokenize(CHAT.encode(), add_bos=False, special=True)
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(ids)
    t1 = time.perf_counter()
    for _ in range(tokens):
        llm.eval([llm.sample(temp=0.0, top_k=1)])
    t2 = time.perf_counter()
    return len(ids) / (t1 - t0), tokens / (t2 - t1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lora", default=".build/release/lora")
    p.add_argument("--model", default=str(Path.home() / ".cache/swift-lora/SmolLM2-135M-Instruct.Q4_1.gguf"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    llm = Llama(model_path=a.model, n_threads=a.threads, n_threads_batch=a.threads, n_ctx=512, verbose=False)
    run_llama(llm, 8)  # warm-up: the first evaluation allocates
    exact, q8, theirs = [], [], []
    for _ in range(a.runs):
        exact.append(run_lora(a.lora, a.model, a.threads, a.tokens, []))
        q8.append(run_lora(a.lora, a.model, a.threads, a.tokens, ["--quantize-activations"]))
        theirs.append(run_llama(llm, a.tokens))
    rows = (("lora generate", exact), ("  --quantize-activations", q8), ("llama.cpp", theirs))
    for name, runs in rows:
        print(f"{name:25s} prompt {statistics.median(r[0] for r in runs):7.1f} tok/s   generation "
              f"{statistics.median(r[1] for r in runs):6.1f} tok/s   (runs: {', '.join(f'{r[1]:.1f}' for r in runs)})")
    for name, runs in rows[:2]:
        print(f"ratio of medians, {name.strip()}: prompt {statistics.median(r[0] for r in runs) / statistics.median(r[0] for r in theirs):.2f}x, "
              f"generation {statistics.median(r[1] for r in runs) / statistics.median(r[1] for r in theirs):.2f}x "
              f"({a.threads} threads, {a.tokens} tokens, greedy)")

if __name__ == "__main__":
    main()
