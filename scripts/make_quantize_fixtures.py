#!/usr/bin/env python3
"""Write the quantization fixture GGMLQuantizeTests.swift compares against.

The oracle is gguf-py, llama.cpp's Python package, whose `gguf.quants.quantize` for Q4_0, Q4_1,
Q5_0, Q5_1 and Q8_0 mirrors ggml's reference quantizers (quantize_row_*_ref) bit for bit.
gguf-py has no K-quant quantizer; those are tested another way (see the Swift tests).

Requirements: pip install gguf numpy safetensors (generated with gguf 0.19.0, numpy 2.4).

Run from the repository root:

    python scripts/make_quantize_fixtures.py

Seeded, so re-running writes the same file. Output:
Tests/LoRAKitTests/Fixtures/gguf/quantize_expected.safetensors with "input" (F32 [rows, 64]) and,
per type, "<TYPE>" (U8 [rows, bytes per row]) = gguf.quants.quantize(input, TYPE).
"""
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from safetensors.numpy import save_file

OUT = Path(__file__).resolve().parent.parent / "Tests/LoRAKitTests/Fixtures/gguf/quantize_expected.safetensors"


def inputs(rng):
    """Rows of two 32-value blocks: ordinary weights at several scales and the edge cases."""
    rows = [rng.standard_normal(64) * 10.0 ** rng.uniform(-3, 1) for _ in range(12)]
    rows.append(np.zeros(64))                                     # all zero: d = 0, 1/d taken as 0
    rows.append(np.full(64, 0.25))                                # constant: max = min
    rows.append(-np.abs(rng.standard_normal(64)))                 # one sign only
    rows.append(np.abs(rng.standard_normal(64)) + 3)              # offset away from zero
    ties = (np.arange(64) % 17 - 8) * 0.5                         # levels and midpoints exactly
    ties[0], ties[32] = -4.0, 4.0
    rows.append(ties)
    rows.append(rng.standard_normal(64) * 1e-30)                  # scales far below f16's range
    rows.append(rng.standard_normal(64) * 1e5)                    # scales above f16's range
    spike = rng.standard_normal(64) * 0.01
    spike[5], spike[40] = 3.0, -3.0                               # one outlier per block
    rows.append(spike)
    return np.array(rows, dtype=np.float32)


def main():
    x = inputs(np.random.default_rng(20261207))
    tensors = {"input": x}
    for qtype in (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0):
        with np.errstate(all="ignore"):
            tensors[qtype.name] = gguf.quants.quantize(x, qtype)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(OUT))
    print(f"{OUT.stat().st_size:8d}  {OUT}")


if __name__ == "__main__":
    main()
