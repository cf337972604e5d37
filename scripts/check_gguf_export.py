"""Check a GGUF written by swift-lora against the gguf package and transformers.

Install: pip install torch transformers gguf peft
Run:     python scripts/check_gguf_export.py ORIGINAL.gguf EXPORTED.gguf [ADAPTER_DIR]

1. gguf's GGUFReader reads the exported file; every metadata key of the original is there with the
   same value (general.file_type aside), and every tensor has the original's name and shape;
   dequantized values match the original's within the export type's precision.
2. transformers loads the exported file (gguf_file=) and its loss on the committed SmolLM2 text
   equals the reference in Tests/LoRAKitTests/Fixtures/smollm2/reference.json within 1e-4 relative
   (for an F32 export; Q8_0 re-quantizes, so within 2e-2).
3. With ADAPTER_DIR (a merged export, `lora merge --output EXPORTED.gguf`): the reference is instead
   PEFT's model, the original GGUF in transformers with the adapter applied, on the same text; the
   tensor differences then include the merged deltas. Both files' tensor types are listed.
"""
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from gguf import GGUFReader
from gguf.quants import dequantize
from transformers import AutoModelForCausalLM

original, exported = Path(sys.argv[1]), Path(sys.argv[2])
a, b = GGUFReader(original), GGUFReader(exported)
ok = True
for key, field in a.fields.items():
    if key.startswith("GGUF.") or key == "general.file_type":
        continue
    other = b.fields.get(key)
    if other is None or other.contents() != field.contents():
        print("metadata differs:", key)
        ok = False
ta = {t.name: t for t in a.tensors}
tb = {t.name: t for t in b.tensors}
if set(ta) != set(tb):
    print("tensor names differ:", set(ta) ^ set(tb))
    ok = False
worst = 0.0
for name, t in ta.items():
    u = tb[name]
    if list(t.shape) != list(u.shape):
        print("shape differs:", name, t.shape, u.shape)
        ok = False
        continue
    x = dequantize(t.data, t.tensor_type).astype(np.float64)
    y = dequantize(u.data, u.tensor_type).astype(np.float64)
    if name.endswith(("attn_q.weight", "attn_k.weight")) and x.shape == y.shape:
        pass  # both files use llama.cpp's row order
    worst = max(worst, float(np.abs(x - y).max() / (np.abs(x).max() + 1e-12)))
print(f"gguf reader: {len(tb)} tensors, {len(b.fields)} fields; largest relative tensor difference {worst:.2e}")
count_types = lambda tensors: dict(sorted(Counter(t.tensor_type.name for t in tensors.values()).items()))
print(f"tensor types: original {count_types(ta)}, exported {count_types(tb)}")

ref = json.loads((Path(__file__).resolve().parent.parent / "Tests/LoRAKitTests/Fixtures/smollm2/reference.json").read_text())
model = AutoModelForCausalLM.from_pretrained(exported.parent, gguf_file=exported.name, dtype=torch.float32).eval()
ids = torch.tensor([ref["text_ids"]])
with torch.no_grad():
    loss = model(input_ids=ids, labels=ids).loss.item()
reference, source = ref["loss"], "reference"
if len(sys.argv) > 3:
    from peft import PeftModel
    base = AutoModelForCausalLM.from_pretrained(original.parent, gguf_file=original.name, dtype=torch.float32)
    with torch.no_grad():
        reference = PeftModel.from_pretrained(base, sys.argv[3]).eval()(input_ids=ids, labels=ids).loss.item()
    source = "the original with the adapter (PEFT)"
rel = abs(loss - reference) / reference
print(f"transformers: loss {loss:.6f} vs {source} {reference:.6f} (relative {rel:.1e})")
sys.exit(0 if ok else 1)
