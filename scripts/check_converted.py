"""Check that a folder written by `lora convert` loads in transformers with the reference loss.

Install: pip install torch transformers
Run:     lora convert --model smollm2-135m --output /tmp/smollm2-hf && python scripts/check_converted.py /tmp/smollm2-hf
"""
import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

ref = json.loads((Path(__file__).resolve().parent.parent / "Tests/LoRAKitTests/Fixtures/smollm2/reference.json").read_text())
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32).eval()
ids = torch.tensor([ref["text_ids"]])
with torch.no_grad():
    loss = model(input_ids=ids, labels=ids).loss.item()
rel = abs(loss - ref["loss"]) / ref["loss"]
print(f"converted folder: loss {loss:.6f} vs transformers on the GGUF {ref['loss']:.6f} (relative {rel:.1e})")
sys.exit(0 if rel < 1e-5 else 1)
