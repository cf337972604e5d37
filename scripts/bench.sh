#!/usr/bin/env bash
# Side-by-side training throughput and peak memory: swift-lora's `lora bench` against PyTorch + PEFT
# (scripts/bench_peft.py) on the same machine, the same shapes (SmolLM2-135M, batch 4 x 256,
# LoRA r=8 alpha 16 on all 7 linear layers, AdamW, fp32), alternating runs so both see the same load.
#
#   bash scripts/bench.sh [ROUNDS] [STEPS] [EXTRA FLAGS...]   (defaults: 2 rounds of 5 timed steps each)
#   e.g. bash scripts/bench.sh 2 3 --seq-len 512 --grad-checkpoint   (flags go to both sides)
#
# Needs: a Python with torch, transformers and peft (PYTHON=/path/to/python to choose one).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
steps=${2:-5}
shift $(( $# < 2 ? $# : 2 ))
python=${PYTHON:-python3}
swift build -c release --product lora >/dev/null
out=$(mktemp)
for r in $(seq "$rounds"); do
    ./.build/release/lora bench --steps "$steps" --json "$@" >>"$out"
    "$python" scripts/bench_peft.py --steps "$steps" --json "$@" 2>/dev/null | tail -n 1 >>"$out"
done
"$python" - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
swift = [r for r in rows if r["tool"] == "swift-lora"]
peft = [r for r in rows if r["tool"] == "peft"]
best = lambda rs, k: max(r[k] for r in rs)
low = lambda rs, k: min(r[k] for r in rs)
s_tps, p_tps = best(swift, "tokens_per_second"), best(peft, "tokens_per_second")
s_mem, p_mem = low(swift, "peak_rss_mb"), low(peft, "peak_rss_mb")
print(f"{'':22s}{'swift-lora':>12s}{'PyTorch+PEFT':>14s}{'ratio':>8s}")
print(f"{'tokens/s (best run)':22s}{s_tps:12.1f}{p_tps:14.1f}{s_tps / p_tps:8.2f}")
print(f"{'peak memory MB':22s}{s_mem:12.0f}{p_mem:14.0f}{s_mem / p_mem:8.2f}")
print("per run tokens/s: swift " + " ".join(f"{r['tokens_per_second']:.1f}" for r in swift)
      + " | peft " + " ".join(f"{r['tokens_per_second']:.1f}" for r in peft))
s = max(swift, key=lambda r: r["tokens_per_second"])
print(f"swift-lora: {s['gflop_per_token']:.3f} GFLOP/token, {s['achieved_gflops']:.1f} GFLOP/s = "
      f"{100 * s['fraction_of_sgemm']:.0f}% of sgemm's {s['sgemm_gflops']:.1f} GFLOP/s on the same shapes ({s['blas']})")
PY
rm -f "$out"
