#!/usr/bin/env python3
"""Generate PyTorch/PEFT reference fixtures for the swift-lora test suite.

For each case below this script builds a tiny random decoder-only model
(Llama / Llama-3-RoPE / Qwen2 / Mistral), wraps it with a PEFT LoRA adapter,
runs one forward/backward pass and three AdamW steps on a fixed batch, and
writes everything the Swift tests compare against to

    Tests/LoRAKitTests/Fixtures/<case>/
        model/config.json             base model config (transformers format)
        model/model.safetensors       base weights, float32
        adapter/adapter_config.json   PEFT LoRA config
        adapter/adapter_model.safetensors
                                      initial LoRA weights (what Swift loads);
                                      when lm_head is targeted PEFT also stores
                                      the unchanged base weight as
                                      base_model.model.lm_head.base_layer.weight
        reference.safetensors         batch, logits, loss, grads, step-3 params, ...
        info.json                     optimizer + LoRA hyper-parameters, notes

Requirements (CPU only is fine):

    pip install torch transformers peft safetensors

(generated with torch 2.15, transformers 5.24, peft 0.21.2, safetensors 0.8).

Run from the repository root:

    python scripts/make_fixtures.py             # all cases
    python scripts/make_fixtures.py llama_tied  # just some cases

Everything is float32 and seeded, so re-running reproduces the same files
(up to library-version differences in init / kernels).

reference.safetensors keys
--------------------------
    input_ids       int64 [B,T]
    attention_mask  int64 [B,T]   (row 1 right-padded: last 4 positions are 0)
    labels          int64 [B,T]   (-100 = ignored; labels[0,:3] and row-1 pads)
    logits          f32 [B,T,V]   train-mode forward of the initial adapter
    loss            f32 [1]       HF causal-LM loss (shifted, mean over targets)
    merged_logits   f32 [B,T,V]   logits after merge_and_unload()
    losses          f32 [3]       loss at each AdamW step (before the update)
    grad_norms      f32 [3]       total L2 grad norm (pre-clip) at each step
    rope_inv_freq   f32 [head_dim/2]  the model's RoPE inverse frequencies
    grad.<K>        gradient of LoRA weight K after the first backward
    step3.<K>       LoRA weight K after the 3rd optimizer step
where <K> is the key exactly as written in adapter/adapter_model.safetensors,
e.g. base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from peft import LoraConfig, PeftModel, get_peft_model

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "Tests" / "LoRAKitTests" / "Fixtures"

# --------------------------------------------------------------------------
# Shared settings
# --------------------------------------------------------------------------

ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# Tiny model shape shared by every case.
COMMON_MODEL = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=160,
    num_hidden_layers=2,
    num_attention_heads=4,
    head_dim=16,
    rms_norm_eps=1e-5,
    max_position_embeddings=128,
    initializer_range=0.05,  # HF normal(0, std) init for Linear/Embedding
    hidden_act="silu",
    attention_dropout=0.0,
)

# Batch layout.
B, T, PAD_ID, N_PAD = 2, 12, 0, 4

# Optimizer settings (identical for every case).
OPT = dict(
    lr=1e-2,
    betas=[0.9, 0.999],
    # Not torch's default 1e-8: an element's Adam step is lr * g / (|g| + eps),
    # whose sensitivity to g is lr / eps near g = 0. Gradients carry fp32 noise
    # of ~1e-8 (absolute, where the largest is ~0.1), so at eps = 1e-8 the
    # elements with |g| ~ 1e-7 take steps that follow the noise, and any two
    # fp32 implementations (PyTorch at two thread counts included) differ by
    # ~1e-4 after 3 steps. At 1e-4 the comparison measures the formula, not the
    # noise; most elements (|g| ~ 1e-2) still run in Adam's normal regime.
    eps=1e-4,
    weight_decay=0.01,
    # clip_grad_norm_ max_norm. Chosen well below the total grad norm of every
    # case (step-1 norms are 1.28 .. 2.79, all steps 1.26 .. 5.49; see
    # info.json) so clipping triggers on every step of every case.
    max_norm=0.5,
    steps=3,
)

# Each case: model class + config kwargs + LoRA kwargs + seed.
CASES = {
    "llama_tied": dict(
        seed=1001,
        model_cls=LlamaForCausalLM,
        config_cls=LlamaConfig,
        config=dict(
            num_key_value_heads=2,
            tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        ),
        lora=dict(r=4, lora_alpha=8, target_modules=ALL7, lora_dropout=0.0),
    ),
    "llama3_untied": dict(
        seed=1002,
        model_cls=LlamaForCausalLM,
        config_cls=LlamaConfig,
        config=dict(
            num_key_value_heads=2,
            tie_word_embeddings=False,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        ),
        lora=dict(r=4, lora_alpha=8, target_modules=ALL7 + ["lm_head"], lora_dropout=0.0),
    ),
    "qwen2_bias": dict(
        seed=1003,
        model_cls=Qwen2ForCausalLM,
        config_cls=Qwen2Config,
        config=dict(
            num_key_value_heads=2,
            tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            use_sliding_window=False,
        ),
        lora=dict(
            r=4,
            lora_alpha=8,
            use_rslora=True,
            target_modules=ALL7,
            rank_pattern={"v_proj": 2},
            alpha_pattern={"o_proj": 4},
            lora_dropout=0.0,
        ),
    ),
    "mistral_layers": dict(
        seed=1004,
        model_cls=MistralForCausalLM,
        config_cls=MistralConfig,
        config=dict(
            num_key_value_heads=1,
            tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            sliding_window=None,
        ),
        lora=dict(
            r=4,
            lora_alpha=16,
            target_modules=["q_proj", "v_proj"],
            layers_to_transform=[1],
            lora_dropout=0.0,
        ),
    ),
}

ADAPTER_NAME = "default"


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def build_base_model(case: dict) -> torch.nn.Module:
    """Construct the tiny random model and make its norms/biases non-trivial."""
    cfg = case["config_cls"](**COMMON_MODEL, **case["config"], attn_implementation="eager")
    model = case["model_cls"](cfg).to(torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            # RMSNorm weights: 1 + 0.1*randn (HF init is all-ones).
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            # Biases (only Qwen2 q/k/v have them): 0.1*randn (HF init is zero).
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    return model


def load_base_model(case: dict, model_dir: Path) -> torch.nn.Module:
    return case["model_cls"].from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager"
    )


def saved_key(param_name: str) -> str:
    """PEFT param name -> key in adapter_model.safetensors (drops '.default')."""
    return param_name.replace(f".{ADAPTER_NAME}.", ".")


def lora_params(peft_model) -> dict[str, torch.nn.Parameter]:
    """Trainable LoRA parameters keyed by their saved (adapter-file) name."""
    out = {}
    for name, p in peft_model.named_parameters():
        if p.requires_grad:
            assert "lora_" in name, name
            out[saved_key(name)] = p
    return out


def make_batch(gen: torch.Generator):
    input_ids = torch.randint(1, 256, (B, T), generator=gen, dtype=torch.int64)
    attention_mask = torch.ones(B, T, dtype=torch.int64)
    # Row 1 is right-padded.
    input_ids[1, T - N_PAD :] = PAD_ID
    attention_mask[1, T - N_PAD :] = 0
    labels = input_ids.clone()
    labels[1, T - N_PAD :] = -100
    labels[0, :3] = -100  # masked "prompt"
    return input_ids, attention_mask, labels


def manual_causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """What HF's ForCausalLMLoss does: position t predicts labels[t+1];
    mean cross-entropy over targets != -100 (the whole batch, not per row)."""
    shift_logits = logits[:, :-1, :].reshape(-1, logits.shape[-1])
    shift_labels = labels[:, 1:].reshape(-1)
    return torch.nn.functional.cross_entropy(
        shift_logits, shift_labels, ignore_index=-100, reduction="mean"
    )


def lora_scalings(peft_model) -> dict[str, float]:
    """Effective scaling (alpha/r or alpha/sqrt(r)) per LoRA-wrapped module."""
    out = {}
    for name, mod in peft_model.named_modules():
        if hasattr(mod, "scaling") and isinstance(getattr(mod, "scaling"), dict):
            if ADAPTER_NAME in mod.scaling:
                out[name] = float(mod.scaling[ADAPTER_NAME])
    return out


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# --------------------------------------------------------------------------
# One case
# --------------------------------------------------------------------------


def make_case(name: str, case: dict) -> dict:
    out_dir = FIXTURES / name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    model_dir, adapter_dir = out_dir / "model", out_dir / "adapter"

    torch.manual_seed(case["seed"])

    # ---- base model --------------------------------------------------------
    base = build_base_model(case)
    base.save_pretrained(model_dir, safe_serialization=True)
    # save_pretrained also writes generation_config.json; the fixtures only
    # need config.json + model.safetensors.
    (model_dir / "generation_config.json").unlink(missing_ok=True)
    base_keys = sorted(load_file(model_dir / "model.safetensors").keys())
    tied = bool(case["config"].get("tie_word_embeddings"))
    lm_head_saved = "lm_head.weight" in base_keys

    # ---- LoRA wrap; lora_A keeps PEFT's kaiming init, lora_B := 0.1*randn ---
    lora_cfg = LoraConfig(task_type="CAUSAL_LM", **case["lora"])
    peft_model = get_peft_model(base, lora_cfg)
    with torch.no_grad():
        for pname, p in peft_model.named_parameters():
            if "lora_B" in pname:
                p.copy_(0.1 * torch.randn_like(p))
    with warnings.catch_warnings(record=True) as save_warnings:
        warnings.simplefilter("always")
        peft_model.save_pretrained(adapter_dir)
    # PEFT writes a model-card README.md next to the adapter; drop it.
    (adapter_dir / "README.md").unlink(missing_ok=True)
    # target_modules is a Python set inside PEFT, so its order in the JSON
    # depends on PYTHONHASHSEED. Sort it so re-runs give identical files.
    acfg_path = adapter_dir / "adapter_config.json"
    acfg = json.loads(acfg_path.read_text())
    if isinstance(acfg.get("target_modules"), list):
        acfg["target_modules"] = sorted(acfg["target_modules"])
    acfg_path.write_text(json.dumps(acfg, indent=2, sort_keys=True))  # as PEFT writes it
    adapter_sd = load_file(adapter_dir / "adapter_model.safetensors")
    params = lora_params(peft_model)
    # Every trainable LoRA param must appear under exactly this name on disk.
    missing = sorted(set(params) - set(adapter_sd))
    assert not missing, f"LoRA params not in adapter file: {missing}"
    extra_adapter_keys = sorted(set(adapter_sd) - set(params))
    # With "lm_head" in target_modules PEFT's default save_embedding_layers="auto"
    # also stores the (frozen, unchanged) base lm_head weight as
    # base_model.model.lm_head.base_layer.weight. Check it is just a copy.
    base_sd = load_file(model_dir / "model.safetensors")
    for k in extra_adapter_keys:
        assert k.endswith(".base_layer.weight"), k
        base_k = k.removeprefix("base_model.model.").replace(".base_layer.", ".")
        assert torch.equal(adapter_sd[k], base_sd[base_k]), k
    for k, p in params.items():
        assert torch.equal(adapter_sd[k], p.detach()), k

    # ---- batch ---------------------------------------------------------------
    gen = torch.Generator().manual_seed(case["seed"] + 7)
    input_ids, attention_mask, labels = make_batch(gen)

    # ---- forward / backward with the initial adapter -------------------------
    peft_model.train()
    out = peft_model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    logits = out.logits.detach().clone()
    loss = out.loss.detach().clone()
    torch.testing.assert_close(manual_causal_lm_loss(logits, labels), loss, rtol=0, atol=1e-6)
    out.loss.backward()
    grads = {k: p.grad.detach().clone() for k, p in params.items()}
    for k, g in grads.items():
        assert g.abs().max() > 0, f"zero gradient for {k}"
    scalings = lora_scalings(peft_model)

    # ---- reload from disk into a fresh PeftModel: logits must match ----------
    def fresh_peft(trainable: bool):
        return PeftModel.from_pretrained(
            load_base_model(case, model_dir), adapter_dir, is_trainable=trainable
        )

    reloaded = fresh_peft(trainable=True)
    reloaded.train()
    with torch.no_grad():
        re_logits = reloaded(input_ids=input_ids, attention_mask=attention_mask).logits
    reload_diff = (re_logits - logits).abs().max().item()
    assert reload_diff == 0.0 or reload_diff < 1e-6, reload_diff

    # ---- 3 AdamW steps starting from the initial (saved) adapter -------------
    # The freshly reloaded model holds exactly the initial adapter state.
    train_model = reloaded
    train_params = lora_params(train_model)
    assert list(train_params) == list(params), "param order differs after reload"
    plist = list(train_params.values())
    opt = torch.optim.AdamW(
        plist,
        lr=OPT["lr"],
        betas=tuple(OPT["betas"]),
        eps=OPT["eps"],
        weight_decay=OPT["weight_decay"],
    )
    losses, grad_norms = [], []
    for step in range(OPT["steps"]):
        opt.zero_grad()
        o = train_model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        o.loss.backward()
        if step == 0:
            # Same grads as the first pass (sanity check of the reload).
            for k, p in train_params.items():
                torch.testing.assert_close(p.grad, grads[k], rtol=1e-5, atol=1e-7)
        gn = torch.nn.utils.clip_grad_norm_(plist, max_norm=OPT["max_norm"])
        losses.append(o.loss.item())
        grad_norms.append(gn.item())
        opt.step()
    assert grad_norms[0] > OPT["max_norm"], "clipping did not trigger on step 1"
    step3 = {k: p.detach().clone() for k, p in train_params.items()}

    # ---- merged logits of the initial adapter --------------------------------
    merged = fresh_peft(trainable=False).merge_and_unload()
    merged.train()
    with torch.no_grad():
        merged_logits = merged(input_ids=input_ids, attention_mask=attention_mask).logits.clone()
    merge_diff = (merged_logits - logits).abs().max().item()

    # RoPE inverse frequencies actually used by the model (llama3 scaling etc.).
    inv_freq = base.model.rotary_emb.inv_freq.detach().clone().float()

    # ---- reference.safetensors ----------------------------------------------
    ref = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "logits": logits.float().contiguous(),
        "loss": loss.float().reshape(1),
        "merged_logits": merged_logits.float().contiguous(),
        "losses": torch.tensor(losses, dtype=torch.float32),
        "grad_norms": torch.tensor(grad_norms, dtype=torch.float32),
        "rope_inv_freq": inv_freq.contiguous(),
    }
    for k in params:
        ref[f"grad.{k}"] = grads[k].float().contiguous()
        ref[f"step3.{k}"] = step3[k].float().contiguous()
    save_file(ref, out_dir / "reference.safetensors")

    # ---- info.json ----------------------------------------------------------
    lc = case["lora"]
    info = {
        "case": name,
        "model_type": base.config.model_type,
        "seed": case["seed"],
        "batch": {
            "B": B,
            "T": T,
            "pad_id": PAD_ID,
            "padded_row": 1,
            "num_pad": N_PAD,
            "prompt_masked": "labels[0, :3] = -100",
            "num_loss_targets": int((labels[:, 1:] != -100).sum()),
        },
        "optimizer": {
            "type": "torch.optim.AdamW",
            **OPT,
            "clip": "torch.nn.utils.clip_grad_norm_ (total L2 norm over all LoRA params; "
            "coef = min(1, max_norm / (norm + 1e-6)))",
            "grad_norms_pre_clip": grad_norms,
            "losses": losses,
        },
        "lora": {
            "r": lc["r"],
            "lora_alpha": lc["lora_alpha"],
            "use_rslora": lc.get("use_rslora", False),
            "target_modules": lc["target_modules"],
            "rank_pattern": lc.get("rank_pattern", {}),
            "alpha_pattern": lc.get("alpha_pattern", {}),
            "layers_to_transform": lc.get("layers_to_transform"),
            "lora_dropout": lc["lora_dropout"],
            "init": "lora_A: PEFT default (kaiming_uniform a=sqrt(5)); lora_B: 0.1*randn",
            "scaling_per_module": scalings,
        },
        "model": {
            **COMMON_MODEL,
            **{k: v for k, v in case["config"].items()},
            "attn_implementation": "eager",
            "norm_init": "1 + 0.1*randn",
            "bias_init": "0.1*randn",
            "tied_lm_head_written_to_safetensors": lm_head_saved if tied else None,
            "safetensors_keys": base_keys,
        },
        "adapter_extra_non_lora_keys": extra_adapter_keys,
        "adapter_save_warnings": sorted({str(w.message) for w in save_warnings}),
        "checks": {
            "reload_max_abs_logit_diff": reload_diff,
            "merged_vs_unmerged_max_abs_logit_diff": merge_diff,
        },
        "versions": {
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "peft": __import__("peft").__version__,
        },
    }
    (out_dir / "info.json").write_text(json.dumps(info, indent=2) + "\n")

    return dict(
        case=name,
        size=dir_size(out_dir),
        loss=loss.item(),
        losses=losses,
        grad_norms=grad_norms,
        n_lora=len(params),
        logit_std=logits.std().item(),
        reload_diff=reload_diff,
        merge_diff=merge_diff,
        lm_head_saved=lm_head_saved,
        extra=extra_adapter_keys,
    )


def main(argv: list[str]) -> None:
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    names = argv or list(CASES)
    rows = [make_case(n, CASES[n]) for n in names]

    print()
    print(f"{'case':<16}{'size KB':>9}{'#lora':>7}{'logit std':>10}{'loss':>10}"
          f"{'losses (3 steps)':>28}{'grad norms (pre-clip)':>28}{'reload d':>10}{'merge d':>10}")
    for r in rows:
        print(
            f"{r['case']:<16}{r['size'] / 1024:>9.1f}{r['n_lora']:>7}{r['logit_std']:>10.4f}"
            f"{r['loss']:>10.5f}{' '.join(f'{x:.5f}' for x in r['losses']):>28}"
            f"{' '.join(f'{x:.4f}' for x in r['grad_norms']):>28}"
            f"{r['reload_diff']:>10.1e}{r['merge_diff']:>10.1e}"
        )
    for r in rows:
        if r["extra"]:
            print(f"note: {r['case']} adapter file also holds non-LoRA keys: {r['extra']}")


if __name__ == "__main__":
    main(sys.argv[1:])
