#!/usr/bin/env bash
# The ARM64 NEON kernels, checked on any machine: builds LoRAKernels for aarch64 with the Debian
# cross compiler and runs Tests/NEONChecks/neon_check.c (the fp32 and bf16 SGEMM tiles bit for bit
# against scalar models, the quantized dot products against the dequantized product) natively on
# arm64, or under qemu-aarch64 elsewhere (its "max" CPU, which has FEAT_BF16). Needs gcc-aarch64-linux-gnu and qemu-user off arm64.
#
#   bash scripts/neon_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
if [ "$(uname -m)" = aarch64 ]; then cc=${CC:-cc}; run=(); else cc=aarch64-linux-gnu-gcc; run=(qemu-aarch64 -cpu max); fi
# The whole C target, so every file compiles for arm64 and the tile links as the package links it.
"$cc" -O2 -std=c11 -static -I Sources/LoRAKernels/include Sources/LoRAKernels/*.c Tests/NEONChecks/neon_check.c \
    -lm -o "$out/neon_check"
"${run[@]}" "$out/neon_check"
