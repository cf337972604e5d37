#!/usr/bin/env python3
"""The bf16 fixture: loss and LoRA gradients of the llama_tied case computed by PyTorch + PEFT with
the forward under torch.autocast("cpu", dtype=torch.bfloat16), the usual mixed-precision setting, on
the same model, adapter and batch as reference.safetensors.

Writes Tests/LoRAKitTests/Fixtures/llama_tied/reference_bf16.safetensors:
    loss            float32 [1]
    grad.<key>      float32, one per LoRA parameter (keys as in adapter_model.safetensors)

Run from the repository root (torch, transformers, peft): python scripts/make_bf16_fixture.py
"""
import sys
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).parent))
from make_fixtures import lora_params  # noqa: E402

case = Path("Tests/LoRAKitTests/Fixtures/llama_tied")
ref = load_file(str(case / "reference.safetensors"))
base = LlamaForCausalLM.from_pretrained(case / "model", dtype=torch.float32, attn_implementation="eager")
model = PeftModel.from_pretrained(base, case / "adapter", is_trainable=True)
model.train()
params = lora_params(model)
with torch.autocast("cpu", dtype=torch.bfloat16):
    out = model(input_ids=ref["input_ids"], labels=ref["labels"])
out.loss.backward()
result = {"loss": out.loss.detach().float().reshape(1)}
for k, p in params.items():
    result[f"grad.{k}"] = p.grad.float().contiguous()
save_file(result, str(case / "reference_bf16.safetensors"))
fp32 = {k[5:]: v for k, v in ref.items() if k.startswith("grad.")}
worst = max(float((result[f"grad.{k}"] - g).norm() / g.norm()) for k, g in fp32.items())
print(f"loss bf16 {result['loss'].item():.6f} vs fp32 {ref['loss'].item():.6f}; "
      f"largest relative gradient difference from fp32 {worst:.2e}")
