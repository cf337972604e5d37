#!/usr/bin/env bash
# Tokenizer load time and encoding throughput: swift-lora (release build) against Hugging Face `tokenizers`
# on one thread, on the same ~1 MB text (Tests/LoRAKitTests/Fixtures/tokenizers/text.txt repeated), with
# SmolLM2's tokenizer.json.
#
#   bash scripts/bench_tokenizer.sh            # needs python3 with `tokenizers` (pip install tokenizers)
#   PYTHON=/path/to/python bash scripts/bench_tokenizer.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}

log=$(mktemp)
trap 'rm -f "$log"' EXIT
LORA_TOKENIZER_BENCH=1 swift test -c release -Xswiftc -enable-testing --scratch-path .build-release-tests \
    --filter TokenizerTests/testEncodingThroughput > "$log" 2>&1 || true
grep -E "^swift-lora tokenizer" "$log" || { echo "the Swift benchmark did not run:"; tail -20 "$log"; }

TOKENIZERS_PARALLELISM=false "$python" - <<'PY'
import time
import tokenizers
from tokenizers import Tokenizer

fx = "Tests/LoRAKitTests/Fixtures/tokenizers"
loads = []
for _ in range(5):
    t0 = time.perf_counter()
    tok = Tokenizer.from_file(fx + "/smollm2/tokenizer.json")
    loads.append(time.perf_counter() - t0)
text = open(fx + "/text.txt", encoding="utf-8", newline="").read()
big = ""
while len(big.encode()) < 1_000_000:
    big += text + "\n"
n = len(big.encode())
best = float("inf")
for _ in range(5):
    t0 = time.perf_counter()
    ids = tok.encode(big, add_special_tokens=False).ids
    best = min(best, time.perf_counter() - t0)
t0 = time.perf_counter()
tok.decode(ids, skip_special_tokens=False)
dec = time.perf_counter() - t0
print("HF tokenizers %s (1 thread): load %.3f s (first %.3f s); encode %d bytes -> %d ids: best %.3f s = %.1f MB/s; decode %.3f s"
      % (tokenizers.__version__, min(loads), loads[0], n, len(ids), best, n / best / 1e6, dec))
PY
