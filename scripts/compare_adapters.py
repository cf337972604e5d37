#!/usr/bin/env python3
"""Largest relative difference between two adapter_model.safetensors files (standard library only):
per tensor max|a - b| / max|b|, the largest over tensors; exits 1 above --tolerance.

    python3 scripts/compare_adapters.py A/adapter_model.safetensors B/adapter_model.safetensors [--tolerance 1e-5]
"""
import argparse
import json
import struct
import sys
from array import array


def read(path: str) -> dict[str, array]:
    with open(path, "rb") as f:
        data = f.read()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"{path}: {name} is {info['dtype']}, not F32")
        begin, end = info["data_offsets"]
        values = array("f")
        values.frombytes(data[8 + size + begin:8 + size + end])
        if sys.byteorder != "little":
            values.byteswap()
        out[name] = values
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--tolerance", type=float, default=1e-5)
    args = p.parse_args()
    a, b = read(args.a), read(args.b)
    if a.keys() != b.keys():
        raise SystemExit(f"the files hold different tensors: {sorted(a.keys() ^ b.keys())[:5]}")
    worst, where = 0.0, ""
    for name in a:
        scale = max((abs(v) for v in b[name]), default=0.0) or 1.0
        diff = max((abs(x - y) for x, y in zip(a[name], b[name])), default=0.0) / scale
        if diff > worst:
            worst, where = diff, name
    print(f"largest relative difference {worst:.3e}" + (f" ({where})" if where else ""))
    sys.exit(0 if worst <= args.tolerance else 1)


if __name__ == "__main__":
    main()
