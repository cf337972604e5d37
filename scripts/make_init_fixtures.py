#!/usr/bin/env python3
"""Generate PyTorch/PEFT reference fixtures for PEFT's data-driven LoRA
initializations PiSSA and OLoRA, and for PEFT's post-training conversion of a
trained PiSSA/OLoRA adapter into a plain rank-2r LoRA that applies to the
UNTOUCHED base model (`save_pretrained(..., path_initial_model_for_weight_conversion=...)`).

This script reuses the existing `llama_tied` case written by
scripts/make_fixtures.py (it does NOT regenerate it):

    Tests/LoRAKitTests/Fixtures/llama_tied/model/     base model (loaded as is)
    Tests/LoRAKitTests/Fixtures/llama_tied/adapter/adapter_config.json
                                                      the LoraConfig (r=4,
                                                      lora_alpha=8, all 7 linear
                                                      projections, no rslora);
                                                      only init_lora_weights is
                                                      changed (and lora_dropout
                                                      forced to 0, as it is)
    Tests/LoRAKitTests/Fixtures/llama_tied/reference.safetensors
                                                      the batch (input_ids,
                                                      attention_mask, labels)

For each init in INITS ("pissa", "olora", "pissa_niter_4") it

  1. loads the base model, computes its logits, wraps it with get_peft_model
     (PEFT runs the init: it sets lora_A / lora_B from an SVD / QR of each
     adapted weight W and MUTATES the base weight to the residual W - s*B@A);
  2. saves the initial adapter (with init_lora_weights set to True in the live
     config first, as PEFT's PiSSA/OLoRA docs instruct) to a temp folder;
  3. runs the same 3-step loop as make_fixtures.py / llama_tied (zero_grad ->
     HF causal-LM loss -> backward -> clip_grad_norm_(max_norm=0.5) ->
     torch AdamW(lr 1e-2, betas (0.9, 0.999), eps 1e-4, weight decay 1e-2))
     directly on the initialized model;
  4. saves the trained adapter with path_initial_model_for_weight_conversion=
     <temp initial folder>, which writes a rank-2r plain LoRA
     (A' = cat([A, A0], 0), B' = cat([B, -B0], 1), r' = 2r, alpha' = 2 alpha);
  5. loads that converted adapter onto a FRESH copy of the original base model
     with PeftModel.from_pretrained and compares its eval logits with the eval
     logits of the trained PiSSA/OLoRA model (residual base + trained A, B).

Output:

    Tests/LoRAKitTests/Fixtures/inits/<init>/
        reference.safetensors
        converted/adapter_config.json      as PEFT writes it (target_modules
                                           sorted, base_model_name_or_path set
                                           to null: it would be a local path)
        converted/adapter_model.safetensors
        info.json                          hyper-parameters, versions, the
                                           formulas PEFT implements, checks

reference.safetensors keys (float32 unless noted)
-------------------------------------------------
    input_ids, attention_mask, labels   int64 [B,T], copied from llama_tied
    base_logits         [B,T,V]  train-mode logits of the untouched base model
    logits              [B,T,V]  train-mode logits right after get_peft_model
                                 (residual base + initial A, B); equal to
                                 base_logits up to rounding (info.json checks)
    init.<K>            lora_A / lora_B right after get_peft_model
    residual.<M>.weight the base weight PEFT left in adapted module M after
                        the init (W - s*B0@A0, computed by PEFT in float32)
    singular_values.<M> pissa / pissa_niter_4 only: the top-r singular values
                        of the ORIGINAL W (exact, float64 SVD cast to float32);
                        for plain pissa  B0 = V_r diag(sqrt(S_r/s)),
                        A0 = diag(sqrt(S_r/s)) U_r^T, so the column norms of B0
                        (and row norms of A0) are sqrt(S_r/s)
    losses              [3]  loss at each step (before the update)
    grad_norms          [3]  total L2 grad norm (pre-clip) at each step
    grad.<K>            gradient of LoRA weight K after the first backward
    step3.<K>           LoRA weight K after the 3rd optimizer step
    trained_logits      [B,T,V]  eval-mode logits of the trained PiSSA/OLoRA
                                 model (residual base + step-3 A, B)
    converted_logits    [B,T,V]  eval-mode logits of the ORIGINAL base model
                                 with converted/ loaded by PeftModel.from_pretrained
where <K> is the key exactly as PEFT writes it in adapter_model.safetensors,
e.g. base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight, and <M>
is the module path in the base model, e.g. model.layers.0.self_attn.q_proj
(so residual.<M>.weight sits next to <M>.weight of model.safetensors).

Sign conventions: torch.linalg.svd / qr fix the signs of singular vectors /
Q columns by LAPACK's conventions. Another implementation may produce A0, B0
with component i negated in both (row i of A0, column i of B0); B0@A0, the
residual, every loss / grad norm / logit, and the converted delta are
unaffected, and since AdamW, weight decay and global-norm clipping are
elementwise / sign-equivariant the whole trajectory just carries the same
flips (step3 row i of A and column i of B negated; the script checks this
bit for bit by re-training with components 1, 2 negated). info.json records the
number of such flips against numpy's LAPACK (float64) and the max difference
after aligning them.

pissa_niter_4 uses torch.svd_lowrank (randomized, torch.randn from the global
generator seeded with SEED right before get_peft_model): reproducible with the
same torch build on CPU, not reproducible by any other implementation. Only
its B0@A0 / residual are approximately comparable to the exact top-r part.

Requirements (CPU only): torch, transformers, peft, safetensors, numpy
(generated with torch 2.15, transformers 5.24, peft 0.21.2, safetensors 0.8).

Run from the repository root:

    python scripts/make_init_fixtures.py            # all inits
    python scripts/make_init_fixtures.py olora      # just some

Deterministic: float32, single CPU thread, torch.use_deterministic_algorithms.
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM
from peft import LoraConfig, PeftModel, get_peft_model

# make_fixtures.py only defines things at import time, so its key naming is imported, not copied.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import lora_params, saved_key  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "Tests" / "LoRAKitTests" / "Fixtures"
SRC = FIXTURES / "llama_tied"
OUT_ROOT = FIXTURES / "inits"

INITS = ["pissa", "olora", "pissa_niter_4"]
SEED = 2024  # only consumed by pissa_niter_4 (torch.randn in svd_lowrank)
ADAPTER_NAME = "default"

# Same optimizer settings as make_fixtures.py (llama_tied/info.json).
OPT = dict(lr=1e-2, betas=[0.9, 0.999], eps=1e-4, weight_decay=0.01, max_norm=0.5, steps=3)


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def load_base() -> torch.nn.Module:
    return LlamaForCausalLM.from_pretrained(
        SRC / "model", dtype=torch.float32, attn_implementation="eager"
    )


def lora_modules(peft_model) -> dict[str, torch.nn.Module]:
    """module path in the base model (model.layers.0.self_attn.q_proj) -> LoRA layer."""
    out = {}
    for name, mod in peft_model.named_modules():
        if hasattr(mod, "lora_A") and ADAPTER_NAME in getattr(mod, "lora_A", {}):
            out[name.removeprefix("base_model.model.")] = mod
    return out


def fmax(x: torch.Tensor) -> float:
    return float(x.abs().max().item())


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def fix_adapter_config(path: Path) -> dict:
    """Sort target_modules (a set inside PEFT) and null the local base path."""
    cfg = json.loads(path.read_text())
    original_base = cfg.get("base_model_name_or_path")
    if isinstance(cfg.get("target_modules"), list):
        cfg["target_modules"] = sorted(cfg["target_modules"])
    cfg["base_model_name_or_path"] = None
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True))
    return {"base_model_name_or_path_written_by_peft_was_a_local_path": original_base is not None}


def align_components(A_ref, B_ref, A, B):
    """Flip component i (row i of A, column i of B) so that A matches A_ref in
    sign; return (#flips, max|A-A_ref|, max|B-B_ref|) after aligning."""
    A, B = A.clone(), B.clone()
    flips = 0
    for i in range(A.shape[0]):
        if float((A[i] * A_ref[i]).sum()) < 0:
            A[i] = -A[i]
            B[:, i] = -B[:, i]
            flips += 1
    return flips, fmax(A - A_ref), fmax(B - B_ref)


def numpy_init(init: str, W: torch.Tensor, r: int, s: float):
    """Independent float64 re-derivation of PEFT's formulas with numpy's LAPACK."""
    Wd = W.double().numpy()
    if init.startswith("pissa"):
        U, S, Vh = np.linalg.svd(Wd, full_matrices=False)
        Sr = S[:r] / s
        A = np.diag(np.sqrt(Sr)) @ Vh[:r]
        B = U[:, :r] @ np.diag(np.sqrt(Sr))
        topr = (U[:, :r] * S[:r]) @ Vh[:r]
        return torch.from_numpy(A), torch.from_numpy(B), torch.from_numpy(topr), torch.from_numpy(S[:r])
    if init == "olora":
        Q, R = np.linalg.qr(Wd, mode="reduced")
        A, B = R[:r], Q[:, :r]
        proj = Q[:, :r] @ (Q[:, :r].T @ Wd)  # = Q_r R_r
        return torch.from_numpy(A), torch.from_numpy(B), torch.from_numpy(proj), None
    raise ValueError(init)


def train3(peft_model, params, fwd, labels):
    """The make_fixtures.py loop; returns (losses, grad_norms, first grads)."""
    plist = list(params.values())
    opt = torch.optim.AdamW(plist, lr=OPT["lr"], betas=tuple(OPT["betas"]), eps=OPT["eps"],
                            weight_decay=OPT["weight_decay"])
    losses, grad_norms, grads = [], [], {}
    for step in range(OPT["steps"]):
        opt.zero_grad()
        o = peft_model(**fwd, labels=labels)
        o.loss.backward()
        if step == 0:
            grads = {k: p.grad.detach().clone() for k, p in params.items()}
        gn = torch.nn.utils.clip_grad_norm_(plist, max_norm=OPT["max_norm"])
        losses.append(o.loss.item())
        grad_norms.append(gn.item())
        opt.step()
    opt.zero_grad()
    return losses, grad_norms, grads


def sign_flip_check(cfg, fwd, labels, losses, grad_norms, step3) -> dict:
    """Re-init, negate components 1 and 2 of every module (rows of A, columns
    of B), train again: losses / norms must match and step3 = D * step3."""
    torch.manual_seed(SEED)
    pm = get_peft_model(load_base(), copy.deepcopy(cfg))
    params = lora_params(pm)
    D = torch.ones(cfg.r)
    D[1:3] = -1
    with torch.no_grad():
        for k, p in params.items():
            p.mul_(D[:, None] if ".lora_A." in k else D[None, :])
    l2, g2, _ = train3(pm, params, fwd, labels)
    d = max(fmax(p.detach() - step3[k] * (D[:, None] if ".lora_A." in k else D[None, :]))
            for k, p in params.items())
    return {
        "flip_pattern": D.tolist(),
        "losses_max_abs_diff": max(abs(a - b) for a, b in zip(l2, losses)),
        "grad_norms_max_abs_diff": max(abs(a - b) for a, b in zip(g2, grad_norms)),
        "step3_vs_D_times_step3_max_abs": d,
    }


FORMULAS = {
    "common": {
        "notation": "W: nn.Linear weight [out, in] (fan_in_fan_out=False, no transpose); "
        "r = 4, alpha = 8, s = scaling = alpha / r = 2 (alpha / sqrt(r) under rslora). "
        "A = lora_A.weight [r, in], B = lora_B.weight [out, r]; forward y = x W_res^T + s * (x A^T) B^T.",
        "residual": "after computing A0, B0 PEFT overwrites the base weight in place with "
        "W_res = W - s * B0 @ A0, computed in float32 (then cast back to W's dtype, float32 here). "
        "The forward pass of the freshly initialized model is therefore the base model's up to rounding.",
        "order": "PEFT runs update_layer (and so the init) module by module while injecting; each init "
        "only reads its own module's W, so the order does not matter.",
        "dtype": "W must be float32/float16/bfloat16; the decomposition is done in float32 (W.to(float32)).",
    },
    "pissa": {
        "decomposition": "V, S, Uh = torch.linalg.svd(W_f32, full_matrices=False)  (reduced SVD of W itself, "
        "W = V diag(S) Uh, S descending; PEFT names the left factor V and the right Uh)",
        "truncation": "V_r = V[:, :r], S_r = S[:r] / s (in-place division by the scaling), Uh_r = Uh[:r]",
        "A0": "lora_A = diag(sqrt(S_r)) @ Uh_r   -> [r, in]",
        "B0": "lora_B = V_r @ diag(sqrt(S_r))    -> [out, r]",
        "product": "s * B0 @ A0 = V_r diag(S[:r]) Uh_r = the best rank-r approximation of W, so "
        "W_res = W - (top-r part of W) = sum_{i>r} S_i v_i u_i^T",
    },
    "pissa_niter_4": {
        "decomposition": "V_r, S_r, U_r = torch.svd_lowrank(W_f32, q=r, niter=4) (randomized range finder "
        "with q = r columns, no oversampling; torch.randn from the global generator), Uh_r = U_r^T",
        "A0_B0": "S_r /= s; A0 = diag(sqrt(S_r)) @ Uh_r, B0 = V_r @ diag(sqrt(S_r)) (same as pissa)",
        "product": "s * B0 @ A0 is only an approximation of the top-r part of W (error in info.checks)",
        "reproducibility": "depends on torch's RNG stream and kernels: not reproducible outside this torch build",
    },
    "olora": {
        "decomposition": "Q, R = torch.linalg.qr(W_f32)  (mode='reduced', of W [out, in] itself, not W^T: "
        "Q [out, k], R [k, in], k = min(out, in); Householder, no sign normalization of diag(R))",
        "A0": "lora_A = R[:r]     -> [r, in] (upper-trapezoidal: A0[i, j] = 0 for j < i)",
        "B0": "lora_B = Q[:, :r]  -> [out, r] (orthonormal columns)",
        "scaling": "no division by s and no square roots: A0, B0 are the raw QR factors, so "
        "s * B0 @ A0 = s * Q_r Q_r^T W (s times the projection of W onto the span of its first r columns); "
        "with s = 2 the residual W - 2 Q_r Q_r^T W does NOT remove the top-r part, it negates the projected part",
    },
    "conversion": {
        "api": "peft_model.save_pretrained(out, path_initial_model_for_weight_conversion=INIT_DIR)",
        "initial_adapter": "INIT_DIR = a folder written by save_pretrained right after get_peft_model "
        "(before training). PEFT loads it into the trained model with load_adapter(dirname(INIT_DIR), "
        "subfolder=basename(INIT_DIR), adapter_name=basename(INIT_DIR)), so the path must not end in '/' "
        "(peft 0.21.2 then fails with ValueError 'Adapter  does not exist'); its basename becomes a temporary "
        "adapter name (deleted afterwards). Its adapter_config.json must have init_lora_weights = true, "
        "otherwise load_adapter would run PiSSA/OLoRA again on the residual base (PEFT raises ValueError for "
        "'pissa*'/'olora'); in peft 0.21.2 save_pretrained itself first OVERWRITES INIT_DIR/adapter_config.json "
        "with a copy of the trained adapter's config with init_lora_weights = True, and only the weights of "
        "INIT_DIR are actually used.",
        "A_converted": "A' = cat([A_trained, A0], dim=0)   -> [2r, in]",
        "B_converted": "B' = cat([B_trained, -B0], dim=1)  -> [out, 2r]  (minus sign on the initial B only)",
        "config": "init_lora_weights = true, r' = 2 r, lora_alpha' = 2 alpha (rslora: alpha * sqrt(2)); "
        "rank_pattern / alpha_pattern values doubled; rslora together with a rank/alpha pattern is refused "
        "(ValueError). Hence s' = alpha'/r' = s (rslora: alpha sqrt2 / sqrt(2r) = s).",
        "delta": "s' * B' @ A' = s * (B A - B0 A0), so W + s' B' A' = W_res + s B A: the converted adapter on the "
        "ORIGINAL base reproduces the trained model.",
        "keys": "same key names as a plain LoRA adapter (base_model.model.<M>.lora_A.weight / lora_B.weight); "
        "no extra keys",
    },
}


# --------------------------------------------------------------------------
# One init
# --------------------------------------------------------------------------


def make_init(init: str, batch: dict, tmp: Path) -> dict:
    out_dir = OUT_ROOT / init
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    conv_dir = out_dir / "converted"
    init_dir = tmp / f"{init}_initial"  # basename -> temporary adapter name
    input_ids, attention_mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    fwd = dict(input_ids=input_ids, attention_mask=attention_mask)

    orig_sd = load_file(SRC / "model" / "model.safetensors")

    # ---- base logits ---------------------------------------------------------
    base = load_base()
    base.train()
    with torch.no_grad():
        base_logits = base(**fwd).logits.clone()

    # ---- LoraConfig = llama_tied's, except init_lora_weights ------------------
    cfg = LoraConfig.from_pretrained(SRC / "adapter")
    cfg.init_lora_weights = init
    cfg.inference_mode = False
    cfg.lora_dropout = 0.0
    assert cfg.r == 4 and cfg.lora_alpha == 8 and not cfg.use_rslora

    torch.manual_seed(SEED)
    with warnings.catch_warnings(record=True) as init_warnings:
        warnings.simplefilter("always")
        # a copy: PEFT keeps the config object, and its init_lora_weights is set to True below
        peft_model = get_peft_model(base, copy.deepcopy(cfg))
    params = lora_params(peft_model)
    mods = lora_modules(peft_model)
    init_state = {k: p.detach().clone() for k, p in params.items()}

    # ---- residuals + formula checks -------------------------------------------
    ref: dict[str, torch.Tensor] = {}
    checks: dict = {
        "residual_vs_W_minus_sBA_max_abs": 0.0,
        "sBA_vs_reference_max_abs": 0.0,
        "A0_vs_numpy_after_sign_alignment_max_abs": 0.0,
        "B0_vs_numpy_after_sign_alignment_max_abs": 0.0,
        "sign_flips_vs_numpy_total": 0,
        "components_total": 0,
    }
    per_module = {}
    for M, mod in mods.items():
        W = orig_sd[f"{M}.weight"]
        s = float(mod.scaling[ADAPTER_NAME])
        r = int(mod.r[ADAPTER_NAME])
        A0 = mod.lora_A[ADAPTER_NAME].weight.detach().clone()
        B0 = mod.lora_B[ADAPTER_NAME].weight.detach().clone()
        W_res = mod.get_base_layer().weight.detach().clone()
        ref[f"residual.{M}.weight"] = W_res.contiguous()
        sBA = s * (B0 @ A0)
        d_res = fmax(W_res - (W - sBA))
        A_np, B_np, target, S_np = numpy_init(init, W, r, s)
        # pissa: s*B0@A0 vs the rank-r truncation of W; olora: vs s * Q_r Q_r^T W.
        d_target = fmax(sBA.double() - s * target) if init == "olora" else fmax(sBA.double() - target)
        if S_np is not None:
            ref[f"singular_values.{M}"] = S_np.float().contiguous()
        entry = {"shape_W": list(W.shape), "scaling": s, "r": r,
                 "residual_vs_W_minus_sBA": d_res, "sBA_vs_reference": d_target}
        if init != "pissa_niter_4":
            flips, dA, dB = align_components(A_np, B_np, A0.double(), B0.double())
            entry.update(sign_flips_vs_numpy=flips, A0_vs_numpy=dA, B0_vs_numpy=dB)
            checks["A0_vs_numpy_after_sign_alignment_max_abs"] = max(checks["A0_vs_numpy_after_sign_alignment_max_abs"], dA)
            checks["B0_vs_numpy_after_sign_alignment_max_abs"] = max(checks["B0_vs_numpy_after_sign_alignment_max_abs"], dB)
            checks["sign_flips_vs_numpy_total"] += flips
            checks["components_total"] += r
            assert dA < 1e-4 and dB < 1e-4, (init, M, dA, dB)
        else:
            # singular values estimated by svd_lowrank: column norms^2 of B0 times s.
            est = (B0.double().norm(dim=0) ** 2) * s
            entry["est_singular_values_vs_exact_max_abs"] = fmax(est - S_np)
        if init == "olora":
            # A0 = R_r is upper trapezoidal; record the signs torch chose for diag(R_r).
            entry["diag_R_r_signs"] = [int(torch.sign(A0[i, i]).item()) for i in range(r)]
        per_module[M] = entry
        checks["residual_vs_W_minus_sBA_max_abs"] = max(checks["residual_vs_W_minus_sBA_max_abs"], d_res)
        checks["sBA_vs_reference_max_abs"] = max(checks["sBA_vs_reference_max_abs"], d_target)
        assert d_res < 1e-5, (init, M, d_res)
        if init != "pissa_niter_4":
            assert d_target < 1e-4, (init, M, d_target)
    if init == "pissa_niter_4":  # randomized SVD: no exact A0/B0 to compare with
        for k in ("A0_vs_numpy_after_sign_alignment_max_abs", "B0_vs_numpy_after_sign_alignment_max_abs",
                  "sign_flips_vs_numpy_total", "components_total"):
            checks[k] = None
        checks["sBA_vs_exact_top_r_is_approximate"] = True

    # ---- logits of the initialized model (train mode) --------------------------
    peft_model.train()
    with torch.no_grad():
        logits = peft_model(**fwd).logits.clone()
    checks["init_vs_base_logits_max_abs"] = fmax(logits - base_logits)

    # ---- save the initial adapter (docs: set init_lora_weights=True first) -------
    peft_model.peft_config[ADAPTER_NAME].init_lora_weights = True
    with warnings.catch_warnings(record=True) as init_save_warnings:
        warnings.simplefilter("always")
        peft_model.save_pretrained(str(init_dir))
    init_file = load_file(init_dir / "adapter_model.safetensors")
    assert sorted(init_file) == sorted(params), "initial adapter keys"
    for k in params:
        assert torch.equal(init_file[k], init_state[k]), k

    # ---- 3 AdamW steps (same loop as make_fixtures.py) ---------------------------
    losses, grad_norms, grads = train3(peft_model, params, fwd, labels)
    for k, g in grads.items():
        assert g.abs().max() > 0, f"zero gradient for {k}"
    step3 = {k: p.detach().clone() for k, p in params.items()}

    peft_model.eval()
    with torch.no_grad():
        trained_logits = peft_model(**fwd).logits.clone()

    # ---- conversion -------------------------------------------------------------
    with warnings.catch_warnings(record=True) as conv_warnings:
        warnings.simplefilter("always")
        peft_model.save_pretrained(str(conv_dir), path_initial_model_for_weight_conversion=str(init_dir))
    (conv_dir / "README.md").unlink(missing_ok=True)
    cfg_note = fix_adapter_config(conv_dir / "adapter_config.json")
    conv_cfg = json.loads((conv_dir / "adapter_config.json").read_text())
    overwritten_init_cfg = json.loads((init_dir / "adapter_config.json").read_text())

    # The trained model must be unchanged by the conversion (temp adapter deleted).
    assert list(peft_model.peft_config) == [ADAPTER_NAME], list(peft_model.peft_config)
    with torch.no_grad():
        after_logits = peft_model(**fwd).logits
    checks["trained_logits_before_vs_after_conversion_max_abs"] = fmax(after_logits - trained_logits)

    conv = load_file(conv_dir / "adapter_model.safetensors")
    assert sorted(conv) == sorted(params), "converted adapter keys"
    conv_delta = 0.0
    merged_w = 0.0
    for k in params:
        if ".lora_A." in k:
            assert torch.equal(conv[k], torch.cat([step3[k], init_state[k]], 0)), k
        else:
            assert torch.equal(conv[k], torch.cat([step3[k], -init_state[k]], 1)), k
    s_conv = conv_cfg["lora_alpha"] / conv_cfg["r"]
    for M, mod in mods.items():
        kA = f"base_model.model.{M}.lora_A.weight"
        kB = f"base_model.model.{M}.lora_B.weight"
        s = float(mod.scaling[ADAPTER_NAME])
        d_conv = s_conv * conv[kB] @ conv[kA]
        d_true = s * (step3[kB] @ step3[kA] - init_state[kB] @ init_state[kA])
        conv_delta = max(conv_delta, fmax(d_conv - d_true))
        W = orig_sd[f"{M}.weight"]
        merged_w = max(merged_w, fmax((W + d_conv) - (ref[f"residual.{M}.weight"] + s * step3[kB] @ step3[kA])))
    checks["converted_delta_vs_s_times_BA_minus_B0A0_max_abs"] = conv_delta
    checks["W_plus_converted_delta_vs_Wres_plus_sBA_max_abs"] = merged_w

    # ---- converted adapter on the ORIGINAL base ------------------------------------
    with warnings.catch_warnings(record=True) as load_warnings:
        warnings.simplefilter("always")
        conv_model = PeftModel.from_pretrained(load_base(), conv_dir)
    conv_model.eval()
    for M, mod in lora_modules(conv_model).items():  # base untouched by loading
        assert torch.equal(mod.get_base_layer().weight, orig_sd[f"{M}.weight"]), M
        assert float(mod.scaling[ADAPTER_NAME]) == float(mods[M].scaling[ADAPTER_NAME])
    with torch.no_grad():
        converted_logits = conv_model(**fwd).logits.clone()
    checks["converted_vs_trained_logits_max_abs"] = fmax(converted_logits - trained_logits)
    assert checks["converted_vs_trained_logits_max_abs"] < 1e-4, checks

    # ---- sign conventions do not matter beyond A/B themselves -------------------
    if init != "pissa_niter_4":
        sf = sign_flip_check(cfg, fwd, labels, losses, grad_norms, step3)
        assert sf["losses_max_abs_diff"] < 1e-6 and sf["step3_vs_D_times_step3_max_abs"] < 1e-6, sf
        checks["sign_flip_equivariance"] = sf

    # ---- reference.safetensors ------------------------------------------------------
    ref.update({
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "base_logits": base_logits.contiguous(),
        "logits": logits.contiguous(),
        "losses": torch.tensor(losses, dtype=torch.float32),
        "grad_norms": torch.tensor(grad_norms, dtype=torch.float32),
        "trained_logits": trained_logits.contiguous(),
        "converted_logits": converted_logits.contiguous(),
    })
    for k in params:
        ref[f"init.{k}"] = init_state[k].float().contiguous()
        ref[f"grad.{k}"] = grads[k].float().contiguous()
        ref[f"step3.{k}"] = step3[k].float().contiguous()
    assert all(v.dtype in (torch.float32, torch.int64) for v in ref.values())
    save_file({k: ref[k] for k in sorted(ref)}, out_dir / "reference.safetensors")

    # ---- info.json ------------------------------------------------------------------
    formulas = {"common": FORMULAS["common"], init: FORMULAS[init], "conversion": FORMULAS["conversion"]}
    info = {
        "case": f"inits/{init}",
        "source_case": "llama_tied (model/, batch; adapter_config.json except init_lora_weights)",
        "init_lora_weights": init,
        "seed_before_get_peft_model": SEED,
        "torch_num_threads": torch.get_num_threads(),
        "optimizer": {
            "type": "torch.optim.AdamW",
            **OPT,
            "clip": "torch.nn.utils.clip_grad_norm_ (total L2 norm over all LoRA params; "
            "coef = min(1, max_norm / (norm + 1e-6)))",
            "trained_model": "the get_peft_model model itself (residual base, initial A0/B0), not a reload",
            "grad_norms_pre_clip": grad_norms,
            "losses": losses,
        },
        "lora": {
            "r": cfg.r,
            "lora_alpha": cfg.lora_alpha,
            "use_rslora": cfg.use_rslora,
            "target_modules": sorted(cfg.target_modules),
            "rank_pattern": cfg.rank_pattern,
            "alpha_pattern": cfg.alpha_pattern,
            "lora_dropout": cfg.lora_dropout,
            "fan_in_fan_out": cfg.fan_in_fan_out,
            "scaling": sorted({e["scaling"] for e in per_module.values()}),
        },
        "formulas": formulas,
        "converted_config": {
            "r": conv_cfg["r"],
            "lora_alpha": conv_cfg["lora_alpha"],
            "use_rslora": conv_cfg["use_rslora"],
            "rank_pattern": conv_cfg["rank_pattern"],
            "alpha_pattern": conv_cfg["alpha_pattern"],
            "init_lora_weights": conv_cfg["init_lora_weights"],
            "scaling": s_conv,
            **cfg_note,
        },
        "initial_adapter_folder": {
            "saved_with": "peft_model.peft_config['default'].init_lora_weights = True; "
            "peft_model.save_pretrained(INIT_DIR) right after get_peft_model",
            "adapter_config_after_conversion_init_lora_weights": overwritten_init_cfg.get("init_lora_weights"),
            "note": "not stored in the fixtures: its weights are exactly the init.<K> tensors",
        },
        "checks": checks,
        "per_module": per_module,
        "warnings": {
            "get_peft_model": sorted({str(w.message) for w in init_warnings}),
            "save_initial": sorted({str(w.message) for w in init_save_warnings}),
            "save_converted": sorted({str(w.message) for w in conv_warnings}),
            "load_converted": sorted({str(w.message) for w in load_warnings}),
        },
        "sign_conventions": "A0/B0 are determined only up to negating component i (row i of A0 together with "
        "column i of B0) — torch/LAPACK's choice; B0@A0, residuals, logits, losses, grad norms and the converted "
        "delta are invariant, and grad.<K>/step3.<K> carry the same flips (AdamW and global-norm clipping are "
        "sign-equivariant; verified bit for bit in checks.sign_flip_equivariance by re-training from A0/B0 with "
        "components 1 and 2 negated). Compare A/B after aligning signs (e.g. by the sign of <A_row_i, A_ref_row_i>; for "
        "olora diag(R_r) = A0[i, i]), or compare B@A.",
        "versions": {
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "peft": __import__("peft").__version__,
            "numpy": np.__version__,
            "safetensors": __import__("safetensors").__version__,
        },
    }
    if init == "pissa_niter_4":
        info["reproducibility"] = FORMULAS["pissa_niter_4"]["reproducibility"]
    (out_dir / "info.json").write_text(json.dumps(info, indent=2) + "\n")

    return dict(init=init, size=dir_size(out_dir), losses=losses, grad_norms=grad_norms,
                conv_r=conv_cfg["r"], conv_alpha=conv_cfg["lora_alpha"], checks=checks)


def main(argv: list[str]) -> None:
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    torch.set_num_threads(1)
    names = argv or INITS
    src_ref = load_file(SRC / "reference.safetensors")
    batch = {k: src_ref[k] for k in ("input_ids", "attention_mask", "labels")}
    OUT_ROOT.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in names:
            rows.append(make_init(n, batch, Path(tmp)))
    for r in rows:
        print(f"{r['init']:<14} {r['size'] / 1024:8.1f} KB  r'={r['conv_r']} alpha'={r['conv_alpha']}  "
              f"losses {' '.join(f'{x:.5f}' for x in r['losses'])}  "
              f"norms {' '.join(f'{x:.4f}' for x in r['grad_norms'])}")
        for k, v in r["checks"].items():
            print(f"    {k}: {v}")


if __name__ == "__main__":
    main(sys.argv[1:])
