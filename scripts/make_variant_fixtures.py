#!/usr/bin/env python3
"""Generate PyTorch/PEFT reference fixtures for LoRA variants for the
swift-lora test suite: two *optimizer* variants, LoRA+ and LoRA-FA, and two
*adapter* variants, DoRA and VeRA (see their sections at the end of this
docstring).

LoRA+ and LoRA-FA change only the optimizer, not the model or the adapter, so
this script reuses the existing `llama_tied` case written by
scripts/make_fixtures.py (it does NOT regenerate it):

    Tests/LoRAKitTests/Fixtures/llama_tied/model/     base model (loaded as is)
    Tests/LoRAKitTests/Fixtures/llama_tied/adapter/   initial LoRA weights (loaded,
                                                      is_trainable=True)
    Tests/LoRAKitTests/Fixtures/llama_tied/reference.safetensors
                                                      the batch (input_ids,
                                                      attention_mask, labels)

and runs, for each variant, the same 3-step loop as make_fixtures.py
(zero_grad -> HF causal-LM loss -> backward -> clip_grad_norm_(max_norm=0.5)
-> optimizer.step()) with the same lr / weight decay / betas / eps / clipping
as llama_tied/info.json records, except where the variant's PEFT factory fixes
a value itself (see info.json of each variant). Output:

    Tests/LoRAKitTests/Fixtures/variants/lora_plus/
        reference.safetensors
        info.json
    Tests/LoRAKitTests/Fixtures/variants/lora_fa/
        reference.safetensors
        info.json

lora_plus: optimizer = peft.optimizers.create_loraplus_optimizer(model,
    torch.optim.AdamW, lr=1e-2, loraplus_lr_ratio=16, loraplus_weight_decay=1e-2,
    betas=(0.9, 0.999), eps=1e-4)  -> torch AdamW with lr 1e-2 on lora_A and
    1.6e-1 on lora_B (both weight decay 1e-2).
lora_fa:   optimizer = peft.optimizers.create_lorafa_optimizer(model, r=4,
    lora_alpha=8, lr=1e-2, weight_decay=1e-2) -> peft LoraFAOptimizer: lora_A is
    frozen (requires_grad=False), lora_B's gradient is projected with
    (1/s^2) (A A^T + 1e-8 I)^+ before an HF-style AdamW update. The factory does
    not take eps; PEFT's default eps=1e-6 is overridden to 1e-4 in the param
    group after creation (the same value and reason as make_fixtures.py; see
    info.json "eps_note").

reference.safetensors keys (all float32)
----------------------------------------
    losses              [3]  loss at each step (before the update)
    grad_norms          [3]  total L2 grad norm returned by clip_grad_norm_
                             (pre-clip) at each step
    grad.<K>            gradient of LoRA weight K after the first backward
                        (raw, before clipping). lora_plus: every lora_A and
                        lora_B; lora_fa: lora_B only (lora_A is frozen and has
                        no gradient)
    step3.<K>           every LoRA weight K (A and B) after the 3rd step
                        (for lora_fa the A entries equal the initial adapter
                        bit for bit; the script asserts it)
    projected_grad.<K>  lora_fa only, K = every lora_B: the projected gradient
                        LoraFAOptimizer uses at step 1, i.e. computed from the
                        CLIPPED step-1 gradient of B (clip coefficient in
                        info.json), bf16-autocast product as PEFT does it,
                        cast back to float32
where <K> is the key exactly as written in
llama_tied/adapter/adapter_model.safetensors, e.g.
base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight.
The batch itself is not copied: read it from llama_tied/reference.safetensors.

Besides running PEFT's optimizers, the script re-implements both update rules
with plain torch ops (the formulas written in info.json) and asserts that the
re-implementation reproduces PEFT's 3 steps bit for bit, and that the step-1
projected gradient it stores is the one PEFT's optimizer consumed (its
exp_avg_B / exp_avg_sq_B state after step 1 match bitwise).

DoRA (case `dora`)
------------------
Base model: llama_tied/model/ (loaded as is). Adapter: llama_tied's LoraConfig
with use_dora=True (every other field identical; lora_dropout is already 0).
lora_A and lora_B are copied from llama_tied/adapter/adapter_model.safetensors,
PEFT's own DoRA init (DoraLinearLayer.update_layer) is re-run on them, giving
m0 = ||W + s B A||_row, and the magnitude is set to m = m0 * U(0.8, 1.2) (seeded)
so that m != ||W + s B A|| and the magnitude matters. Output:

    Tests/LoRAKitTests/Fixtures/variants/dora/
        adapter/adapter_config.json       PEFT save_pretrained of that adapter
        adapter/adapter_model.safetensors (magnitude keys:
                                          <module>.lora_magnitude_vector [out],
                                          no '.weight' suffix)
        reference.safetensors
        info.json                         hyper-parameters, PEFT's DoRA forward /
                                          backward / merge / unmerge formulas,
                                          trainable-parameter counts (also for
                                          SmolLM2-135M: LoRA, DoRA, VeRA)

reference.safetensors keys for dora (all float32): logits [B,T,V] (train-mode
forward of the initial adapter), loss [1], grad.<K> (first backward; every
trainable tensor: lora_A, lora_B, lora_magnitude_vector), losses [3],
grad_norms [3] (pre-clip), step3.<K>, merged_logits (eval mode, after
merge_and_unload() of the initial adapter), unmerged_logits (eval mode, initial
adapter), with <K> exactly as in dora/adapter/adapter_model.safetensors. The
loop is make_fixtures.py's (torch AdamW, llama_tied's lr/betas/eps/weight
decay, clip 0.5, 3 steps) over all trainable tensors. The script checks an
op-for-op re-implementation of PEFT's DoRA forward bit for bit (logits, grads,
3 steps), the textbook W' = m (W + sBA)/||W + sBA|| with a detached norm
numerically, and the merged weights against the merge formula bit for bit.

VeRA (case `vera`)
------------------
Base model: llama_tied/model/ (loaded as is). Adapter: peft VeraConfig(
task_type="CAUSAL_LM", r=8, target_modules=llama_tied's 7, vera_dropout=0,
d_initial=0.1, projection_prng_key=0, save_projection=True), other fields at
their defaults. After get_peft_model (under torch.manual_seed(1006)) the shared
projections and lambda_d keep PEFT's init (vera_A/vera_B kaiming-uniform from
projection_prng_key, lambda_d = 0.1); every lambda_b (PEFT: 0) is set to
1.5 * randn from torch.Generator().manual_seed(1006), one draw per module in
module order, so lambda_d gets a gradient and the clip acts. Output:

    Tests/LoRAKitTests/Fixtures/variants/vera/
        adapter/adapter_config.json       PEFT save_pretrained of that adapter
        adapter/adapter_model.safetensors <module>.vera_lambda_b [out],
                                          <module>.vera_lambda_d [r] (no
                                          '.weight'), base_model.vera_A
                                          [r, max_in], base_model.vera_B
                                          [max_out, r]
        reference.safetensors
        info.json                         hyper-parameters, PEFT's VeRA forward /
                                          backward / merge / init formulas,
                                          trainable-parameter count, load check

reference.safetensors keys for vera (all float32): logits [B,T,V] (train-mode
forward of the initial adapter), loss [1], grad.<K> (first backward; every
trainable tensor: vera_lambda_b, vera_lambda_d), losses [3], grad_norms [3]
(pre-clip), step3.<K>, merged_logits (eval mode, after merge_and_unload() of
the initial adapter), with <K> exactly as in vera/adapter/adapter_model.safetensors.
Same loop as dora. The script checks an op-for-op re-implementation of PEFT's
VeRA forward bit for bit (logits, grads, 3 steps), the merged-weight form and
the closed-form lambda gradients numerically, the merged weights against
W + diag(lambda_b) B_l diag(lambda_d) A_l bit for bit, and (load_check in
info.json) that PeftModel.from_pretrained uses the projections saved in the
file even when projection_prng_key would generate others.

Requirements: torch, transformers, peft (>= 0.16 for LoRA-FA), safetensors.
Run from the repository root:

    python scripts/make_variant_fixtures.py                # all cases
    python scripts/make_variant_fixtures.py dora lora_fa   # just some cases
                                       (lora_plus, lora_fa, dora, vera)

Deterministic: LoRA+ and LoRA-FA draw no random numbers, DoRA's magnitude
factor and VeRA's projections and lambda_b are seeded; re-running gives the same files (up to library-version /
thread-count differences in float32 kernels).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import math
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

import peft
from peft import LoraConfig, PeftModel, VeraConfig, get_peft_model
from peft.optimizers import create_lorafa_optimizer, create_loraplus_optimizer
from peft.optimizers import lorafa as peft_lorafa
from peft.tuners import lora as peft_lora
from peft.tuners.lora import dora as peft_dora
from peft.tuners.lora import variants as peft_variants
from peft.tuners.vera import layer as peft_vera_layer

# make_fixtures.py (which wrote llama_tied) only defines things at import time
# (its main() runs under `if __name__ == "__main__"`), so its naming and loss
# helpers are imported rather than copied: the two scripts cannot drift apart.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import ADAPTER_NAME, ALL7, dir_size, manual_causal_lm_loss, saved_key  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "Tests" / "LoRAKitTests" / "Fixtures"
SRC_CASE = FIXTURES / "llama_tied"
OUT_ROOT = FIXTURES / "variants"

LORAPLUS_LR_RATIO = 16.0

# --------------------------------------------------------------------------
# Settings taken from the llama_tied case (make_fixtures.py OPT)
# --------------------------------------------------------------------------

SRC_INFO = json.loads((SRC_CASE / "info.json").read_text())
_O = SRC_INFO["optimizer"]
LR = float(_O["lr"])  # 1e-2
BETAS = (float(_O["betas"][0]), float(_O["betas"][1]))  # (0.9, 0.999)
EPS = float(_O["eps"])  # 1e-4
WD = float(_O["weight_decay"])  # 1e-2
MAX_NORM = float(_O["max_norm"])  # 0.5
STEPS = int(_O["steps"])  # 3
assert (LR, BETAS, EPS, WD, MAX_NORM, STEPS) == (1e-2, (0.9, 0.999), 1e-4, 1e-2, 0.5, 3), _O

ADAPTER_CFG = json.loads((SRC_CASE / "adapter" / "adapter_config.json").read_text())
R = int(ADAPTER_CFG["r"])
ALPHA = ADAPTER_CFG["lora_alpha"]
assert not ADAPTER_CFG["use_rslora"] and not ADAPTER_CFG["rank_pattern"] and not ADAPTER_CFG["alpha_pattern"]
SCALING = ALPHA / R  # 2.0 for every module

CLIP_DESC = (
    "torch.nn.utils.clip_grad_norm_(params, max_norm=0.5) after backward, before "
    "optimizer.step(): total L2 norm over the grads of the listed params (params whose "
    ".grad is None are skipped), every grad multiplied in place by "
    "clamp(max_norm / (norm + 1e-6), max=1.0); returns the pre-clip norm"
)

MAG = "lora_magnitude_vector"  # DoRA's per-output-feature magnitude

# --------------------------------------------------------------------------
# Helpers shared by every case
# --------------------------------------------------------------------------


def adapter_key(param_name: str) -> str:
    """Live PEFT name -> key in adapter_model.safetensors. One function for the
    three forms these cases save:
      LoRA   <m>.lora_A.default.weight -> <m>.lora_A.weight (make_fixtures.saved_key)
      DoRA   <m>.lora_magnitude_vector.default.weight -> <m>.lora_magnitude_vector
             (lora/model.py _get_adapter_state_dict keeps the pre-refactor key)
      VeRA   <m>.vera_lambda_b.default -> <m>.vera_lambda_b (ParameterDict /
             BufferDict entries: the live name ENDS with the adapter name)."""
    k = saved_key(param_name).removesuffix(f".{ADAPTER_NAME}")
    return k.removesuffix(".weight") if k.endswith(f".{MAG}.weight") else k


@contextlib.contextmanager
def recorded_warnings():
    """Collect every warning raised inside (for the peft_warnings notes)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def warning_lines(caught) -> list[str]:
    return sorted({f"{w.category.__name__}: {w.message}" for w in caught})


def load_base() -> LlamaForCausalLM:
    """llama_tied's base model, as every case uses it."""
    return LlamaForCausalLM.from_pretrained(
        SRC_CASE / "model", dtype=torch.float32, attn_implementation="eager"
    )


def load_lora_model(dtype: torch.dtype = torch.float32) -> PeftModel:
    """llama_tied's base model with its LoRA adapter, trainable, train mode."""
    model = PeftModel.from_pretrained(load_base(), SRC_CASE / "adapter", is_trainable=True)
    model.train()
    if dtype != torch.float32:  # diagnostics only
        model = model.to(dtype)
    return model


def trainable_params(model, marker: str = ".lora_") -> dict[str, torch.nn.Parameter]:
    """make_fixtures.lora_params for any adapter type: every trainable
    parameter (asserted to be an adapter one, i.e. its name contains marker),
    keyed by its adapter-file name, in named_parameters order."""
    out = {}
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert marker in n, n
            out[adapter_key(n)] = p
    return out


def load_batch():
    ref = load_file(SRC_CASE / "reference.safetensors")
    return ref, (ref["input_ids"], ref["attention_mask"], ref["labels"])


def eval_logits(model, batch) -> torch.Tensor:
    """Logits of a forward without labels (call under torch.no_grad())."""
    input_ids, attention_mask, _ = batch
    return model(input_ids=input_ids, attention_mask=attention_mask).logits.clone()


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


class ManualOptimizer:
    """Enough of a torch optimizer for train_loop, so a written-out update rule
    runs in the very loop PEFT's optimizer ran in: step() calls
    update(key, param, t) for each param under no_grad (t = 1-based step)."""

    def __init__(self, params: dict, update: Callable):
        self.params, self.update, self.t = params, update, 0

    def zero_grad(self):
        for p in self.params.values():
            p.grad = None

    def step(self):
        self.t += 1
        with torch.no_grad():
            for k, p in self.params.items():
                self.update(k, p, self.t)


def train_loop(model, opt, params, batch, after_clip=None, after_step=None, require_clip=True) -> dict:
    """make_fixtures.py's 3-step loop. Grads are recorded and clipped over the
    params that require one (LoRA-FA's frozen A has none); step3 holds all
    params. after_clip(step) runs between clip_grad_norm_ and opt.step(),
    after_step(step) right after opt.step()."""
    input_ids, attention_mask, labels = batch
    trained = {k: p for k, p in params.items() if p.requires_grad}
    losses, grad_norms, first_grads = [], [], None
    for step in range(STEPS):
        opt.zero_grad()
        o = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        o.loss.backward()
        if step == 0:
            first_grads = {k: p.grad.detach().clone() for k, p in trained.items()}
        gn = torch.nn.utils.clip_grad_norm_(list(trained.values()), max_norm=MAX_NORM)
        losses.append(o.loss.item())
        grad_norms.append(gn.item())
        if after_clip is not None:
            after_clip(step)
        opt.step()
        if after_step is not None:
            after_step(step)
    # Every fixture is meant to exercise the clip on every step.
    if require_clip:
        assert all(g > MAX_NORM for g in grad_norms), f"clipping did not trigger: {grad_norms}"
    step3 = {k: p.detach().clone() for k, p in params.items()}
    return dict(losses=losses, grad_norms=grad_norms, grads=first_grads, step3=step3)


def clip_coef(norm: float) -> float:
    """clip_grad_norm_'s coefficient, in float32 as torch computes it."""
    n = torch.tensor(norm, dtype=torch.float32)
    return torch.clamp(MAX_NORM / (n + 1e-6), max=1.0).item()


def loop_tensors(run: dict) -> dict[str, torch.Tensor]:
    """The reference.safetensors entries every case has: losses, grad_norms,
    grad.<K> (first backward, raw) and step3.<K>."""
    return {
        "losses": torch.tensor(run["losses"]),
        "grad_norms": torch.tensor(run["grad_norms"]),
        **{f"grad.{k}": g for k, g in run["grads"].items()},
        **{f"step3.{k}": p for k, p in run["step3"].items()},
    }


def loop_info(clip_params: str, run: dict, loop: str | None = None) -> dict:
    """info.json's record of train_loop (inside "optimizer"): clip, steps and
    what each step gave. clip_params says which tensors were clipped."""
    out = {"max_norm": MAX_NORM, "clip": CLIP_DESC + "; params = " + clip_params, "steps": STEPS}
    if loop is not None:  # the adapter variants describe the loop, between steps and losses
        out["loop"] = loop
    out["losses"] = run["losses"]
    out["grad_norms_pre_clip"] = run["grad_norms"]
    out["clip_coefs"] = [clip_coef(n) for n in run["grad_norms"]]
    return out


def versions() -> dict:
    import safetensors
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "safetensors": safetensors.__version__,
        "llama_tied_generated_with": SRC_INFO["versions"],
    }


def info_footer(caught, checks: dict, diag: dict | None = None) -> dict:
    """The last entries of every info.json."""
    out = {"peft_warnings": warning_lines(caught), "checks": checks}
    if diag is not None:
        out["diagnostics"] = diag
    out["versions"] = versions()
    return out


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def write_case(out_dir: Path, ref: dict, info: dict) -> dict:
    """Write reference.safetensors and info.json into out_dir (made by
    fresh_dir when the case started); return the summary row main prints."""
    ref = {k: v.detach().to(torch.float32).contiguous() for k, v in ref.items()}
    save_file(ref, out_dir / "reference.safetensors")
    (out_dir / "reference.safetensors").chmod(0o644)  # save_file creates it 0600
    (out_dir / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    opt = info["optimizer"]
    return dict(case=info["case"], size=dir_size(out_dir), losses=opt["losses"],
                grad_norms=opt["grad_norms_pre_clip"], checks=info["checks"],
                diag=info.get("diagnostics"))


def sanity_vs_llama_tied(src_ref, run: dict) -> dict:
    """The step-1 forward/backward is the plain LoRA one: compare with llama_tied."""
    loss_diff = abs(run["losses"][0] - SRC_INFO["optimizer"]["losses"][0])
    grad_diff = max(max_abs(g, src_ref[f"grad.{k}"]) for k, g in run["grads"].items())
    assert loss_diff < 1e-5 and grad_diff < 1e-5, (loss_diff, grad_diff)
    return {
        "step1_loss_vs_llama_tied_abs_diff": loss_diff,
        "step1_grads_vs_llama_tied_max_abs_diff": grad_diff,
    }


# The two optimizer variants reuse llama_tied's adapter as is.
LLAMA_TIED_REUSED = (
    "llama_tied (model/, adapter/ and the batch in reference.safetensors "
    "are reused; nothing is regenerated)"
)
LORA_INFO = {"r": R, "lora_alpha": ALPHA, "scaling": SCALING, "use_rslora": False}


# --------------------------------------------------------------------------
# LoRA+
# --------------------------------------------------------------------------

GROUP_NAMES = ["groupA", "embedding", "groupB", "groupB_no_decay"]  # PEFT's order


def manual_adamw_step(p, g, m, v, step, lr, wd):
    """torch.optim.AdamW, single-tensor path (CPU default: foreach=False,
    fused=False, amsgrad=False, maximize=False), written out. step is 1-based."""
    b1, b2 = BETAS
    p.mul_(1 - lr * wd)
    m.lerp_(g, 1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    bc1 = 1 - b1**step
    bc2 = 1 - b2**step
    step_size = lr / bc1
    denom = (v.sqrt() / bc2**0.5).add_(EPS)
    p.addcdiv_(m, denom, value=-step_size)


def make_lora_plus(src_ref, batch) -> dict:
    out_dir = fresh_dir(OUT_ROOT / "lora_plus")
    model = load_lora_model()
    params = trainable_params(model)
    assert len(params) == 28
    name_of = {id(p): adapter_key(n) for n, p in model.named_parameters()}

    with recorded_warnings() as caught:
        opt = create_loraplus_optimizer(
            model,
            torch.optim.AdamW,
            lr=LR,
            loraplus_lr_ratio=LORAPLUS_LR_RATIO,
            loraplus_weight_decay=WD,
            betas=BETAS,
            eps=EPS,
        )
    assert len(opt.param_groups) == 4
    groups = []
    lr_of, wd_of = {}, {}
    for gname, g in zip(GROUP_NAMES, opt.param_groups):
        keys = [name_of[id(p)] for p in g["params"]]
        for k in keys:
            lr_of[k], wd_of[k] = g["lr"], g["weight_decay"]
        groups.append(
            {
                "name": gname,
                "lr": g["lr"],
                "weight_decay": g["weight_decay"],
                "betas": list(g["betas"]),
                "eps": g["eps"],
                "amsgrad": g["amsgrad"],
                "maximize": g["maximize"],
                "foreach": g["foreach"],
                "fused": g["fused"],
                "decoupled_weight_decay": g["decoupled_weight_decay"],
                "num_params": len(keys),
                "param_keys": keys,
            }
        )
    # Expected membership for this adapter: A in groupA, B in groupB, others empty.
    assert all(".lora_A." in k for k in groups[0]["param_keys"]) and len(groups[0]["param_keys"]) == 14
    assert groups[1]["num_params"] == 0 and groups[3]["num_params"] == 0
    assert all(".lora_B." in k for k in groups[2]["param_keys"]) and len(groups[2]["param_keys"]) == 14
    assert groups[0]["lr"] == LR and groups[2]["lr"] == LR * LORAPLUS_LR_RATIO
    assert groups[0]["weight_decay"] == WD and groups[2]["weight_decay"] == WD
    assert groups[1]["lr"] == 1e-6  # loraplus_lr_embedding default (unused here)

    run = train_loop(model, opt, params, batch)
    checks = sanity_vs_llama_tied(src_ref, run)

    # ---- re-implementation: per-parameter lr/wd + written-out AdamW ----------
    model2 = load_lora_model()
    params2 = trainable_params(model2)
    state = {k: (torch.zeros_like(p), torch.zeros_like(p)) for k, p in params2.items()}

    def adamw(k, p, t):
        m, v = state[k]
        manual_adamw_step(p, p.grad, m, v, t, lr_of[k], wd_of[k])

    manual = train_loop(model2, ManualOptimizer(params2, adamw), params2, batch)
    manual_diff = max(max_abs(manual["step3"][k], run["step3"][k]) for k in params)
    assert manual_diff == 0.0, f"LoRA+ re-implementation differs from PEFT/torch: {manual_diff}"
    checks["reimplementation_step3_max_abs_diff"] = manual_diff

    info = {
        "case": "lora_plus",
        "source_case": LLAMA_TIED_REUSED,
        "optimizer": {
            "factory": "peft.optimizers.create_loraplus_optimizer(model, torch.optim.AdamW, "
            f"lr={LR}, loraplus_lr_ratio={LORAPLUS_LR_RATIO}, loraplus_weight_decay={WD}, "
            f"betas={BETAS}, eps={EPS})",
            "class": f"{type(opt).__module__}.{type(opt).__qualname__}",
            "lr": LR,
            "loraplus_lr_ratio": LORAPLUS_LR_RATIO,
            "loraplus_weight_decay": WD,
            "loraplus_lr_embedding": 1e-6,
            "betas": list(BETAS),
            "eps": EPS,
            "amsgrad": False,
            "bias_correction": True,
            "param_groups_in_optimizer_order": groups,
            "group_rule": (
                "PEFT loraplus.py: for each trainable param (named_parameters order): if its "
                "owning module (name minus last 2 segments) is a peft lora.Embedding -> "
                "'embedding' (lr=loraplus_lr_embedding, wd=loraplus_weight_decay); elif 'lora_B' "
                "in name or param.ndim == 1 -> 'groupB' (lr=lr*ratio, wd=loraplus_weight_decay) if "
                "the name is in transformers' decay list (not inside nn.LayerNorm, no 'bias' in "
                "the name) else 'groupB_no_decay' (lr=lr*ratio, wd=0); else -> 'groupA' (lr=lr, "
                "wd=loraplus_weight_decay). Groups are passed in the order groupA, embedding, "
                "groupB, groupB_no_decay (empty groups included). loraplus_weight_decay defaults "
                "to 0.0, not AdamW's 0.01; a plain weight_decay kwarg would only set the "
                "optimizer default, which every group overrides."
            ),
            "update_formula": (
                "torch.optim.AdamW single-tensor path (CPU: foreach=False, fused=False), per "
                "param with its group's lr and wd, t = 1-based step: p <- p * (1 - lr*wd) "
                "[decoupled weight decay FIRST, on the pre-update weights]; m <- m.lerp(g, 1-b1) "
                "(= b1*m + (1-b1)*g); v <- b2*v + (1-b2)*g*g; bc1 = 1 - b1^t; bc2 = 1 - b2^t; "
                "p <- p - (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps) [eps added AFTER dividing "
                "sqrt(v) by sqrt(bc2)]. m, v start at 0. g is the clipped gradient."
            ),
            **loop_info("all 28 LoRA params (A and B)", run),
        },
        "lora": LORA_INFO,
        **info_footer(caught, checks),
    }
    return write_case(out_dir, loop_tensors(run), info)


# --------------------------------------------------------------------------
# LoRA-FA
# --------------------------------------------------------------------------

LORAFA_DELTA = 1e-8  # lorafa.py: delta added to A A^T before pinv


def lorafa_projection(A: torch.Tensor, gB: torch.Tensor, scaling: float, bf16: bool) -> torch.Tensor:
    """lorafa.py's projection, op for op."""
    AA_T = A @ A.T
    AA_T_inv = torch.linalg.pinv(AA_T + LORAFA_DELTA * torch.eye(A.shape[0]).to(A.device))
    if bf16:
        with torch.autocast(device_type=peft_lorafa.infer_device(), dtype=torch.bfloat16):
            out = (1 / scaling**2) * (gB @ AA_T_inv)
    else:
        out = (1 / scaling**2) * (gB @ AA_T_inv)
    if out.dtype != gB.dtype:
        out = out.to(gB.dtype)
    return out


def manual_lorafa_step(B, gproj, m, v, step, lr, wd, eps):
    """LoraFAOptimizer's B update (HF adamw), written out. step is 1-based."""
    b1, b2 = BETAS
    m.mul_(b1).add_(gproj, alpha=1.0 - b1)
    v.mul_(b2).addcmul_(gproj, gproj, value=1.0 - b2)
    denom = v.sqrt().add_(eps)
    step_size = lr * math.sqrt(1.0 - b2**step) / (1.0 - b1**step)
    B.addcdiv_(m, denom, value=-step_size)
    if wd > 0.0:
        B.add_(B, alpha=-lr * wd)


def lora_pairs(params: dict) -> tuple[dict, dict]:
    """What LoRA-FA works on: every lora_B and, under the same key, its module's lora_A."""
    Bs = {k: p for k, p in params.items() if ".lora_B." in k}
    return Bs, {k: params[k.replace(".lora_B.", ".lora_A.")] for k in Bs}


def run_manual_lorafa(batch, bf16: bool, eps: float, dtype: torch.dtype = torch.float32):
    """Independent LoRA-FA run (no PEFT optimizer). Returns train_loop's dict
    (step3 holds A and B) plus proj1, the step-1 projected grads.
    dtype=float64 (with bf16=False) gives a high-precision run for the
    diagnostics."""
    model = load_lora_model(dtype)
    params = trainable_params(model)
    for k, p in params.items():
        if ".lora_A." in k:
            p.requires_grad_(False)
    Bs, As = lora_pairs(params)
    state = {k: (torch.zeros_like(p), torch.zeros_like(p)) for k, p in Bs.items()}
    proj1 = {}

    def lorafa(k, B, t):
        gp = lorafa_projection(As[k], B.grad, SCALING, bf16)
        if t == 1:
            proj1[k] = gp.clone()
        m, v = state[k]
        manual_lorafa_step(B, gp, m, v, t, LR, WD, eps)

    # The diagnostic runs (other eps / precision) need not clip on every step;
    # the run at the fixture's settings is compared with PEFT's, which does.
    run = train_loop(model, ManualOptimizer(Bs, lorafa), params, batch, require_clip=False)
    return dict(run, proj1=proj1)


def make_lora_fa(src_ref, batch, adapter_init) -> dict:
    out_dir = fresh_dir(OUT_ROOT / "lora_fa")
    model = load_lora_model()
    params = trainable_params(model)

    with recorded_warnings() as caught:
        opt = create_lorafa_optimizer(model, r=R, lora_alpha=ALPHA, lr=LR, weight_decay=WD)
    assert isinstance(opt, peft_lorafa.LoraFAOptimizer)
    assert len(opt.param_groups) == 1
    group = opt.param_groups[0]
    peft_default_eps = group["eps"]
    assert peft_default_eps == 1e-6, peft_default_eps
    # create_lorafa_optimizer has no eps argument; set the llama_tied value.
    group["eps"] = EPS
    bf16 = bool(peft_lorafa.is_bf16_available())
    autocast_device = peft_lorafa.infer_device()

    # A frozen, B trainable; scaling factor per LoRA param = alpha/r.
    Bs, As = lora_pairs(params)
    A_keys = [k for k in params if ".lora_A." in k]
    B_keys = list(Bs)
    assert all(not params[k].requires_grad for k in A_keys)
    assert all(params[k].requires_grad for k in B_keys)
    lora_sf = [
        (adapter_key(n), sf) for n, sf in zip(group["names"], group["scaling_factors"]) if ".lora_" in n
    ]
    assert all(sf == SCALING for _, sf in lora_sf), lora_sf
    # The optimizer pairs consecutive lora params: must be A then B of one module.
    lora_names = [adapter_key(n) for n in group["names"] if "lora" in n]
    for a, b in zip(lora_names[0::2], lora_names[1::2]):
        assert ".lora_A." in a and b == a.replace(".lora_A.", ".lora_B."), (a, b)
    n_group_params = len(group["params"])
    n_frozen_non_lora = sum(1 for n in group["names"] if "lora" not in n)

    # ---- hooks: capture step-1 inputs of the optimizer and verify step 1 -----
    cap = {}

    def after_clip(step):
        if step == 0:
            for k in A_keys:
                assert params[k].grad is None, f"frozen A has a grad: {k}"
            cap["B0"] = {k: B.detach().clone() for k, B in Bs.items()}
            cap["gB"] = {k: B.grad.detach().clone() for k, B in Bs.items()}  # clipped
            cap["proj"] = {
                k: lorafa_projection(As[k].detach(), cap["gB"][k], SCALING, bf16) for k in B_keys
            }

    def after_step(step):
        if step != 0:
            return
        b1, b2 = BETAS
        for k, B in Bs.items():
            st = opt.state[k[: k.find("lora")] + "lora"]
            gp = cap["proj"][k]
            assert st["step"] == 1
            m = torch.zeros_like(gp).mul_(b1).add_(gp, alpha=1.0 - b1)
            v = torch.zeros_like(gp).mul_(b2).addcmul_(gp, gp, value=1.0 - b2)
            assert torch.equal(st["exp_avg_B"], m), f"projected grad mismatch (exp_avg_B) {k}"
            assert torch.equal(st["exp_avg_sq_B"], v), f"projected grad mismatch (exp_avg_sq_B) {k}"
            B1 = cap["B0"][k].clone()
            manual_lorafa_step(B1, gp, torch.zeros_like(gp), torch.zeros_like(gp), 1, LR, WD, EPS)
            assert torch.equal(B1, B.detach()), f"step-1 update mismatch {k}"

    run = train_loop(model, opt, params, batch, after_clip=after_clip, after_step=after_step)
    step3 = run["step3"]
    for k in A_keys:
        assert torch.equal(step3[k], adapter_init[k]), f"lora_A changed: {k}"
    for k in B_keys:
        assert not torch.equal(step3[k], adapter_init[k]), f"lora_B did not change: {k}"
    checks = sanity_vs_llama_tied(src_ref, run)
    checks["step1_projected_grad_matches_optimizer_state_bitwise"] = True
    checks["step1_update_matches_formula_bitwise"] = True
    checks["lora_A_bitwise_unchanged_after_3_steps"] = True
    checks["step1_clip_coef"] = clip_coef(run["grad_norms"][0])

    # ---- independent re-implementation, 3 steps -----------------------------
    manual = run_manual_lorafa(batch, bf16=bf16, eps=EPS)
    d = max(max_abs(manual["step3"][k], step3[k]) for k in params)
    assert d == 0.0 and manual["losses"] == run["losses"] and manual["grad_norms"] == run["grad_norms"], d
    assert all(torch.equal(manual["proj1"][k], cap["proj"][k]) for k in B_keys)
    checks["reimplementation_step3_max_abs_diff"] = d

    # ---- diagnostics for implementers ---------------------------------------
    diag = {}
    with torch.no_grad():
        delta_noop, inv_vs_pinv, fp32_vs_bf16, fp32_vs_bf16_rel, conds = [], [], [], [], []
        recipe_mismatch = recipe_total = 0
        for k in B_keys:
            A = As[k].detach()
            AA_T = A @ A.T
            delta_noop.append(torch.equal(AA_T + LORAFA_DELTA * torch.eye(R), AA_T))
            P_pinv = torch.linalg.pinv(AA_T + LORAFA_DELTA * torch.eye(R))
            P_inv = torch.linalg.inv(AA_T.double()).float()
            inv_vs_pinv.append(max_abs(P_pinv, P_inv) / P_inv.abs().max().item())
            conds.append(torch.linalg.cond(AA_T.double()).item())
            p32 = lorafa_projection(A, cap["gB"][k], SCALING, bf16=False)
            fp32_vs_bf16.append(max_abs(p32, cap["proj"][k]))
            fp32_vs_bf16_rel.append(max_abs(p32, cap["proj"][k]) / p32.abs().max().item())
            # Recipe without autocast: round inputs to bf16, fp32 matmul, round to
            # bf16, multiply by 1/s^2 in fp32 and round to bf16 again.
            bf = lambda t: t.to(torch.bfloat16).to(torch.float32)  # noqa: E731
            P = torch.linalg.pinv(AA_T + LORAFA_DELTA * torch.eye(R))
            emul = bf(bf(bf(cap["gB"][k]) @ bf(P)) * torch.tensor(1 / SCALING**2, dtype=torch.float32))
            recipe_mismatch += int((emul != cap["proj"][k]).sum())
            recipe_total += emul.numel()
        diag["delta_1e-8_changes_AAt_in_fp32"] = (
            f"{sum(not x for x in delta_noop)} of {len(delta_noop)} modules "
            "(it is lost to rounding where a diagonal entry of A A^T is >= 0.25)"
        )
        diag["AAt_condition_number_range"] = [min(conds), max(conds)]
        diag["pinv_vs_fp64_inverse_max_rel_diff"] = max(inv_vs_pinv)
        diag["step1_projection_fp32_vs_bf16_max_abs_diff"] = max(fp32_vs_bf16)
        diag["step1_projection_fp32_vs_bf16_max_abs_diff_over_max_abs"] = max(fp32_vs_bf16_rel)
        diag["bf16_recipe_elements_differing_from_autocast"] = f"{recipe_mismatch} of {recipe_total}"
        diag["step1_projected_grad_max_abs"] = max(cap["proj"][k].abs().max().item() for k in B_keys)
    f32 = run_manual_lorafa(batch, bf16=False, eps=EPS)
    diag["fp32_projection_run_step3_B_max_abs_diff"] = max(max_abs(f32["step3"][k], step3[k]) for k in B_keys)
    diag["fp32_projection_run_losses"] = f32["losses"]
    e6 = run_manual_lorafa(batch, bf16=bf16, eps=peft_default_eps)
    diag["peft_default_eps_1e-6_run_step3_B_max_abs_diff"] = max(max_abs(e6["step3"][k], step3[k]) for k in B_keys)
    diag["peft_default_eps_1e-6_run_losses"] = e6["losses"]
    # Sensitivity of the 3-step result to float32 rounding (fp32 projection,
    # float32 run vs float64 run), at the fixture's eps and at PEFT's default.
    for eps, tag in ((EPS, "1e-4"), (peft_default_eps, "1e-6")):
        a32 = run_manual_lorafa(batch, bf16=False, eps=eps)["step3"]
        a64 = run_manual_lorafa(batch, bf16=False, eps=eps, dtype=torch.float64)["step3"]
        diag[f"eps_{tag}_fp32_vs_fp64_run_step3_B_max_abs_diff"] = max(
            max_abs(a32[k], a64[k]) for k in B_keys
        )

    # run["grads"] holds B only: A is frozen and has no gradient.
    ref = {**loop_tensors(run), **{f"projected_grad.{k}": cap["proj"][k] for k in B_keys}}

    info = {
        "case": "lora_fa",
        "source_case": LLAMA_TIED_REUSED,
        "optimizer": {
            "factory": f"peft.optimizers.create_lorafa_optimizer(model, r={R}, lora_alpha={ALPHA}, "
            f"lr={LR}, weight_decay={WD}); then optimizer.param_groups[0]['eps'] = {EPS}",
            "class": f"{type(opt).__module__}.{type(opt).__qualname__}",
            "base": "HF transformers' old AdamW ('adamw-hf'), not torch.optim.AdamW",
            "lr": LR,
            "betas": list(group["betas"]),
            "eps": group["eps"],
            "eps_peft_default": peft_default_eps,
            "eps_note": (
                "create_lorafa_optimizer takes no eps, so PEFT always uses LoraFAOptimizer's "
                "default 1e-6. These fixtures set the group's eps to 1e-4 after creation, the "
                "llama_tied value, for the reason make_fixtures.py gives (near g = 0 the step "
                "follows float32 noise when eps is tiny). Implement the default as 1e-6."
            ),
            "weight_decay": group["weight_decay"],
            "correct_bias": group["correct_bias"],
            "bias_correction": "step_size = lr * sqrt(1 - b2^t) / (1 - b1^t); applied to the "
            "step size only, eps is NOT rescaled (HF adamw form, unlike torch AdamW)",
            "r": R,
            "lora_alpha": ALPHA,
            "use_rslora": False,
            "scaling_factor_s": SCALING,
            "projection_delta": LORAFA_DELTA,
            "projection_dtype": (
                f"bf16 autocast (device_type={autocast_device!r}) because accelerate's "
                f"is_bf16_available() returned {bf16}: gB (clipped, fp32) and P = pinv(...) (fp32) "
                "are rounded to bf16, the matmul result is rounded to bf16, the scalar multiply "
                "by 1/s^2 runs in bf16, then the result is cast back to float32"
                if bf16
                else "float32 (is_bf16_available() was False)"
            ),
            "frozen": "lora_A: create_lorafa_optimizer calls requires_grad_(False) on every "
            "param whose name contains 'lora_A'; A never gets a grad and never changes",
            "param_group": {
                "num_params_in_group": n_group_params,
                "num_non_lora_frozen_params_in_group": n_frozen_non_lora,
                "note": "the single group holds ALL named_parameters of the model (frozen base "
                "weights too); step() skips non-LoRA params whose grad is None and pairs "
                "consecutive LoRA params as (lora_A, lora_B) in named_parameters order; state "
                "is keyed by the name up to 'lora' (e.g. "
                "'base_model.model.model.layers.0.self_attn.q_proj.lora')",
                "scaling_factors": "module.scaling['default'] of each LoRA module (alpha/r = "
                f"{SCALING} for every module here)",
            },
            "update_formula": (
                "For each LoRA module, with A (r x in, frozen), B (out x r), g = B.grad "
                "(after clip_grad_norm_), s = module scaling (alpha/r, or alpha/sqrt(r) for "
                "rsLoRA), t = 1-based step of that module: "
                "(1) projection: AA_T = A @ A.T; AA_T_inv = torch.linalg.pinv(AA_T + 1e-8 * I_r); "
                "g~ = (1 / s^2) * (g @ AA_T_inv) [under bf16 autocast when available, then cast "
                "to g's dtype]. lorafa.py comment: g^B = (r/alpha)^2 (A^T A)^{-1} g^B_LoRA-FA "
                "(the code right-multiplies by (A A^T)^{-1}). "
                "(2) moments: m <- m*b1 + (1-b1)*g~ (mul_ then add_, not lerp); "
                "v <- v*b2 + (1-b2)*g~*g~; m, v start at 0. "
                "(3) denom = sqrt(v) + eps [eps added to the UN-corrected sqrt(v)]. "
                "(4) step_size = lr; if correct_bias: step_size = lr * sqrt(1 - b2^t) / (1 - b1^t). "
                "(5) B <- B - step_size * m / denom (addcdiv_). "
                "(6) weight decay AFTER the Adam update, on the updated B: if wd > 0: "
                "B <- B + (-lr*wd) * B (B.add_(B, alpha=-lr*wd); uses lr, not step_size). "
                "Non-LoRA trainable params (none here) get the same HF AdamW without projection."
            ),
            **loop_info(
                "the 14 lora_B weights (A is frozen, grad None). "
                "Clipping therefore sees the RAW B gradient: the projection happens inside "
                "optimizer.step(), after clipping, on the clipped gradient. LoraFAOptimizer has no "
                "clipping of its own and says nothing about it; this is the order HF Trainer uses "
                "(clip in the training loop, then optimizer.step()).",
                run,
            ),
            "projected_grad_is": "step 1, from the clipped gradient (clip_coefs[0] * grad.<K>)",
        },
        "lora": LORA_INFO,
        **info_footer(caught, checks, diag),
    }
    return write_case(out_dir, ref, info)


# --------------------------------------------------------------------------
# Adapter variants (DoRA, VeRA): the steps both take
# --------------------------------------------------------------------------
# Both build a new adapter on llama_tied's base model and save it as PEFT does,
# train it with make_fixtures.py's AdamW loop, re-run that loop with PEFT's
# layer forward replaced by re-implementations, and check the merge. They
# differ in the config, the init, the layer class and the formulas; the
# steps themselves live here once.


@dataclasses.dataclass(frozen=True)
class AdapterVariant:
    name: str  # the case, and its folder under variants/
    seed: int  # torch.manual_seed before get_peft_model
    config: Callable[[], peft.PeftConfig]
    param_marker: str  # every trainable parameter's name contains it
    layer_cls: type  # the PEFT layer wrapping each targeted Linear
    forward_owner: type  # the class whose forward the re-implementations replace
    shared_keys: tuple[str, ...] = ()  # saved keys that are not parameters

    @property
    def dir(self) -> Path:
        return OUT_ROOT / self.name

    @property
    def adapter_dir(self) -> Path:
        return self.dir / "adapter"

    def layers(self, model) -> dict:
        """module key prefix (as in the adapter file) -> PEFT layer."""
        return {n: m for n, m in model.named_modules() if isinstance(m, self.layer_cls)}


def load_adapter(variant: AdapterVariant, trainable: bool = True, adapter_dir: Path | None = None,
                 **kwargs) -> PeftModel:
    """A saved adapter (the fixture's unless adapter_dir is given) on llama_tied's base model."""
    return PeftModel.from_pretrained(
        load_base(), adapter_dir or variant.adapter_dir, is_trainable=trainable, **kwargs
    )


def trainable_line(model) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        model.print_trainable_parameters()
    return buf.getvalue().strip()


def save_adapter(model, adapter_dir: Path) -> tuple[dict, list]:
    """save_pretrained, normalised as make_fixtures.py does it. Returns the
    adapter config as written and the warnings of the save."""
    adapter_dir.mkdir(parents=True)
    with recorded_warnings() as caught:
        model.save_pretrained(adapter_dir)
    (adapter_dir / "README.md").unlink(missing_ok=True)
    # Same normalisation as make_fixtures.py (target_modules is a set in PEFT).
    acfg_path = adapter_dir / "adapter_config.json"
    acfg = json.loads(acfg_path.read_text())
    if isinstance(acfg.get("target_modules"), list):
        acfg["target_modules"] = sorted(acfg["target_modules"])
    # PEFT records the absolute path the base model was loaded from; keep the
    # file machine-independent and equal to llama_tied's (null there).
    acfg["base_model_name_or_path"] = None
    acfg_path.write_text(json.dumps(acfg, indent=2, sort_keys=True))
    (adapter_dir / "adapter_model.safetensors").chmod(0o644)
    return acfg, caught


def build_adapter(variant: AdapterVariant, customise: Callable) -> tuple[PeftModel, dict, dict, dict]:
    """PEFT's init of the variant (get_peft_model under torch.manual_seed(seed)),
    then customise(model, layers), which changes that init and returns notes
    for info.json; save it to the fixture's adapter/ and check that the file
    holds exactly the trainable tensors (plus shared_keys), bit for bit.
    Returns the model, the notes (with parameter counts, warnings and saved
    shapes added), the adapter config as written and the saved tensors."""
    torch.manual_seed(variant.seed)
    with recorded_warnings() as caught:
        model = get_peft_model(load_base(), variant.config())
    layers = variant.layers(model)
    assert len(layers) == 14, list(layers)
    notes = customise(model, layers)
    n_trainable, n_all = model.get_nb_trainable_parameters()
    notes.update(trainable_params=n_trainable, all_params=n_all,
                 print_trainable_parameters=trainable_line(model))

    acfg, save_warnings = save_adapter(model, variant.adapter_dir)
    sd = load_file(variant.adapter_dir / "adapter_model.safetensors")
    params = trainable_params(model, variant.param_marker)
    assert set(sd) == set(params) | set(variant.shared_keys), sorted(set(sd) ^ set(params))
    for k, p in params.items():
        assert torch.equal(sd[k], p.detach()), k
    notes["warnings"] = warning_lines(list(caught) + list(save_warnings))
    notes["keys"] = {k: list(v.shape) for k, v in sorted(sd.items())}
    return model, notes, acfg, sd


@contextlib.contextmanager
def forward_replaced(owner: type, forward: Callable | None):
    """owner.forward := forward while inside (nothing when forward is None).
    The original comes from owner.__dict__ and the replacement is wrapped the
    same way, so DoRA's staticmethod stays a staticmethod."""
    if forward is None:
        yield
        return
    orig = owner.__dict__["forward"]
    owner.forward = staticmethod(forward) if isinstance(orig, staticmethod) else forward
    try:
        yield
    finally:
        owner.forward = orig


def run_adapter(variant: AdapterVariant, batch, forward: Callable | None = None) -> dict:
    """The saved adapter in train mode: logits and loss of the initial adapter,
    then make_fixtures.py's AdamW loop over every trainable tensor. forward:
    optional replacement of PEFT's layer forward (variant.forward_owner)."""
    with forward_replaced(variant.forward_owner, forward):
        model = load_adapter(variant)
        model.train()
        params = trainable_params(model, variant.param_marker)
        input_ids, attention_mask, labels = batch
        with torch.no_grad():
            o = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        logits, loss = o.logits.clone(), o.loss.clone()
        opt = torch.optim.AdamW(
            list(params.values()), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD
        )
        run = train_loop(model, opt, params, batch)
    assert run["losses"][0] == loss.item()
    return dict(run, model=model, params=params, logits=logits, loss=loss)


def peft_run(variant: AdapterVariant, batch) -> tuple[dict, list, dict, dict]:
    """The run the fixture records (PEFT's own forward), with the checks every
    variant makes on it. Returns the run, its warnings, the saved adapter
    tensors and the first checks."""
    with recorded_warnings() as caught:
        run = run_adapter(variant, batch)
    saved = load_file(variant.adapter_dir / "adapter_model.safetensors")
    assert set(run["params"]) == set(saved) - set(variant.shared_keys)
    for k, g in run["grads"].items():
        assert g.abs().max() > 0, f"zero gradient for {k}"
    labels = batch[2]
    checks = {
        "loss_vs_manual_causal_lm_loss_abs_diff": abs(
            manual_causal_lm_loss(run["logits"], labels).item() - run["loss"].item()
        ),
    }
    return run, caught, saved, checks


def assert_bitwise_rerun(variant: AdapterVariant, batch, run: dict, forward: Callable) -> bool:
    """Re-run with PEFT's layer forward replaced by an op-for-op
    re-implementation: logits, grads, losses, norms and step 3 must all equal
    PEFT's bit for bit."""
    other = run_adapter(variant, batch, forward)
    assert torch.equal(other["logits"], run["logits"])
    for k in run["params"]:
        assert torch.equal(other["grads"][k], run["grads"][k]), k
        assert torch.equal(other["step3"][k], run["step3"][k]), k
    assert other["losses"] == run["losses"] and other["grad_norms"] == run["grad_norms"]
    return True


def rerun_diffs(variant: AdapterVariant, batch, run: dict, forward: Callable, prefix: str):
    """Re-run with a formula-level forward (not PEFT's op order, so float32
    rounding differs): record how far its logits, first grads and step 3 land
    from PEFT's, and require the logits and grads within 1e-5. Returns that
    run and the <prefix>_*_max_abs_diff checks."""
    other = run_adapter(variant, batch, forward)
    params = run["params"]
    diffs = {
        f"{prefix}_logits_max_abs_diff": max_abs(other["logits"], run["logits"]),
        f"{prefix}_grads_max_abs_diff": max(max_abs(other["grads"][k], run["grads"][k]) for k in params),
        f"{prefix}_step3_max_abs_diff": max(max_abs(other["step3"][k], run["step3"][k]) for k in params),
    }
    assert diffs[f"{prefix}_logits_max_abs_diff"] < 1e-5, diffs
    assert diffs[f"{prefix}_grads_max_abs_diff"] < 1e-5, diffs
    return other, diffs


def merge_checks(variant: AdapterVariant, batch, run: dict, expected_weight: Callable, checks: dict,
                 unload_check: str, merge_notes: Callable | None = None):
    """The saved adapter in eval mode: logits unmerged; merge_adapter() in
    place, every merged base weight equal bit for bit to
    expected_weight(name, layer, W) (W = the unmerged weight); unmerge_adapter()
    (round trip); merge_and_unload() (the same weights, and logits equal to the
    in-place merge's). Adds the results to checks (unload_check names the
    merge_and_unload weight check) and returns (unmerged, merged) logits.
    merge_notes(layers, W0, merged_caches) adds a variant's own checks after the
    unmerge; merged_caches is each layer's _caches (PEFT LoRA layers' ad hoc
    cache, where DoRA's merge keeps its norm) as it was while merged."""
    with torch.no_grad():
        um = load_adapter(variant, trainable=False)
        um.eval()
        unmerged_logits = eval_logits(um, batch)
        checks["eval_vs_train_logits_bitwise_equal"] = bool(torch.equal(unmerged_logits, run["logits"]))
        layers = variant.layers(um)
        W0 = {n: m.get_base_layer().weight.detach().clone() for n, m in layers.items()}
        expect_w = {n: expected_weight(n, m, W0[n]) for n, m in layers.items()}
        um.merge_adapter()
        for n, m in layers.items():
            assert torch.equal(m.get_base_layer().weight, expect_w[n]), n
        merged_caches = {n: dict(getattr(m, "_caches", {})) for n, m in layers.items()}
        merged_adapter_logits = eval_logits(um, batch)
        um.unmerge_adapter()
        checks["merge_weight_formula_bitwise"] = True
        # Insertion order is info.json's key order: the variant's notes go here.
        if merge_notes is not None:
            checks.update(merge_notes(layers, W0, merged_caches))
        checks["unmerge_roundtrip_W_max_abs_diff"] = max(
            max_abs(m.get_base_layer().weight, W0[n]) for n, m in layers.items()
        )

        mu = load_adapter(variant, trainable=False).merge_and_unload()
        mu.eval()
        assert not variant.layers(mu)
        merged_logits = eval_logits(mu, batch)
        mu_w = dict(mu.named_parameters())
        for n in layers:
            assert torch.equal(mu_w[n.removeprefix("base_model.model.") + ".weight"], expect_w[n]), n
        checks[unload_check] = True
        checks["merged_adapter_vs_merge_and_unload_logits_bitwise_equal"] = bool(
            torch.equal(merged_adapter_logits, merged_logits)
        )
    checks["merged_vs_unmerged_logits_max_abs_diff"] = max_abs(merged_logits, unmerged_logits)
    assert checks["merged_vs_unmerged_logits_max_abs_diff"] < 1e-5
    return unmerged_logits, merged_logits


def training_checks(run: dict, saved: dict) -> dict:
    """The clip acted on step 1 (its coefficient) and the 3 steps moved every
    trainable tensor away from the saved adapter."""
    out = {
        "step1_clip_coef": clip_coef(run["grad_norms"][0]),
        "step3_changed_every_tensor": all(
            not torch.equal(run["step3"][k], saved[k]) for k in run["params"]
        ),
    }
    assert out["step3_changed_every_tensor"]
    return out


def variant_tensors(run: dict, merged_logits: torch.Tensor, **more) -> dict[str, torch.Tensor]:
    """reference.safetensors of an adapter variant."""
    return {
        "logits": run["logits"],
        "loss": run["loss"].reshape(1),
        **loop_tensors(run),
        "merged_logits": merged_logits,
        **more,
    }


def adamw_info(kind: str, clip_params: str, run: dict) -> dict:
    """info.json "optimizer" of an adapter variant: torch AdamW with
    llama_tied's settings; kind describes its param group."""
    return {
        "type": kind,
        "lr": LR,
        "betas": list(BETAS),
        "eps": EPS,
        "weight_decay": WD,
        "amsgrad": False,
        **loop_info(
            clip_params,
            run,
            loop="per step: zero_grad -> train-mode forward with labels (HF causal-LM loss) "
            "-> backward -> clip_grad_norm_ -> step",
        ),
    }


def reference_keys_info(trainable: str, step3_note: str = "", **more) -> dict:
    """info.json "reference_keys" of an adapter variant; trainable lists the
    trained tensors, more adds entries before "batch"."""
    return {
        "logits": "[B,T,V] train-mode forward of the initial adapter",
        "loss": "[1] HF causal-LM loss of that forward",
        "grad.<K>": "raw gradient after the first backward, every trainable tensor: "
        f"{trainable}; K exactly as in adapter/adapter_model.safetensors",
        "losses": "[3] loss at each step (before the update)",
        "grad_norms": "[3] pre-clip total norm at each step",
        "step3.<K>": "every trainable tensor after step 3" + step3_note,
        "merged_logits": "eval-mode logits after merge_and_unload() of the initial adapter",
        **more,
        "batch": "not copied: read input_ids, attention_mask, labels from "
        "llama_tied/reference.safetensors",
    }


# --------------------------------------------------------------------------
# DoRA
# --------------------------------------------------------------------------

DORA_SEED = 1005  # seeds the magnitude factor (and PEFT's throw-away lora_A init)
DORA_FACTOR_RANGE = (0.8, 1.2)  # m = ||W + s B A||_row * U(0.8, 1.2)


def dora_config() -> LoraConfig:
    """llama_tied's LoraConfig with use_dora=True (and trainable)."""
    cfg = LoraConfig.from_pretrained(SRC_CASE / "adapter")
    assert cfg.lora_dropout == 0.0 and not cfg.use_dora and cfg.bias == "none" and not cfg.lora_bias
    assert cfg.init_lora_weights is True and not cfg.fan_in_fan_out
    return dataclasses.replace(cfg, use_dora=True, inference_mode=False)


DORA = AdapterVariant(
    name="dora",
    seed=DORA_SEED,
    config=dora_config,
    param_marker=".lora_",
    layer_cls=peft_lora.Linear,
    forward_owner=peft_variants.DoraLinearVariant,
)


def dora_init_adapter(adapter_init: dict) -> dict:
    """Build and save the initial DoRA adapter. Returns notes for info.json."""

    def init_magnitudes(model, layers) -> dict:
        gen = torch.Generator().manual_seed(DORA_SEED)
        lo, hi = DORA_FACTOR_RANGE
        factor_range = [math.inf, -math.inf]
        ratio_range = [math.inf, -math.inf]
        with torch.no_grad():
            copied = set()
            for n, p in model.named_parameters():
                if ".lora_A." in n or ".lora_B." in n:
                    k = adapter_key(n)
                    p.copy_(adapter_init[k])
                    copied.add(k)
            assert copied == set(adapter_init), sorted(set(adapter_init) ^ copied)
            for name, mod in layers.items():
                dl = mod.lora_magnitude_vector[ADAPTER_NAME]
                A, B = mod.lora_A[ADAPTER_NAME].weight, mod.lora_B[ADAPTER_NAME].weight
                W, s = mod.get_base_layer().weight, mod.scaling[ADAPTER_NAME]
                # PEFT's init (DoraLinearVariant.init -> DoraLinearLayer.update_layer),
                # now on the copied A and B: m = ||W + s * (B @ A)||_row.
                dl.update_layer(base_layer=mod.get_base_layer(), lora_A=A, lora_B=B, scaling=s)
                m = dl.weight
                assert m.requires_grad and m.shape == (W.shape[0],)
                assert torch.equal(m, torch.linalg.norm(W + s * (B @ A), dim=1)), name
                f = lo + (hi - lo) * torch.rand(m.shape[0], generator=gen, dtype=torch.float32)
                m.mul_(f)
                factor_range = [min(factor_range[0], f.min().item()), max(factor_range[1], f.max().item())]
                r = m / torch.linalg.norm(W, dim=1)
                ratio_range = [min(ratio_range[0], r.min().item()), max(ratio_range[1], r.max().item())]
        return {"factor_range_drawn": factor_range, "magnitude_over_base_row_norm_range": ratio_range}

    _, init, acfg, sd = build_adapter(DORA, init_magnitudes)
    diff_keys = sorted(k for k in set(acfg) | set(ADAPTER_CFG) if acfg.get(k) != ADAPTER_CFG.get(k))
    assert diff_keys == ["use_dora"], diff_keys
    init["adapter_config_differs_from_llama_tied_only_in"] = diff_keys
    mag_keys = sorted(k for k in sd if k.endswith(MAG))
    assert len(mag_keys) == 14 and not any(k.endswith(f"{MAG}.weight") for k in sd)
    return init


def dora_forward_opwise(module, active_adapter, x, result, **kwargs):
    """DoraLinearVariant.forward + DoraLinearLayer.forward for this case
    (dropout = Identity, no bias, fan_in_fan_out False, caching off), written
    out with plain torch ops in PEFT's order."""
    A = module.lora_A[active_adapter].weight
    B = module.lora_B[active_adapter].weight
    W = module.get_base_layer().weight
    m = module.lora_magnitude_vector[active_adapter].weight
    s = module.scaling[active_adapter]
    eye = torch.eye(A.shape[1], dtype=A.dtype)
    lora_weight = F.linear(F.linear(eye, A), B).T  # = B @ A, via forward calls
    weight_norm = torch.linalg.norm(W + s * lora_weight.detach(), dim=1).detach()
    k = (m / weight_norm).view(1, -1)
    lora = F.linear(F.linear(x, A), B)
    return result + ((k - 1) * result + k * lora * s)


def dora_forward_textbook(detach_norm: bool):
    """W' = m * (W + s B A) / ||W + s B A||_row ; y = x W'^T (+ bias)."""

    def fwd(module, active_adapter, x, result, **kwargs):
        A = module.lora_A[active_adapter].weight
        B = module.lora_B[active_adapter].weight
        base = module.get_base_layer()
        m = module.lora_magnitude_vector[active_adapter].weight
        s = module.scaling[active_adapter]
        V = base.weight + s * (B @ A)
        norm = torch.linalg.norm(V, dim=1)
        if detach_norm:
            norm = norm.detach()
        return F.linear(x, (m / norm).view(-1, 1) * V, base.bias)

    return fwd


def dora_merge_delta_norm(layer, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DoraLinearVariant.merge: delta = (B @ A) * s (get_delta_weight) and
    n = ||W + delta||_row of the UNMERGED weight W."""
    A, B = layer.lora_A[ADAPTER_NAME].weight, layer.lora_B[ADAPTER_NAME].weight
    delta = (B @ A) * layer.scaling[ADAPTER_NAME]
    return delta, torch.linalg.norm(W + delta, dim=1)


def dora_merged_weight(name: str, layer, W: torch.Tensor) -> torch.Tensor:
    """W' = (m / n)[:, None] * (W + delta)."""
    delta, norm = dora_merge_delta_norm(layer, W)
    mag = layer.lora_magnitude_vector[ADAPTER_NAME].weight
    return (mag / norm).view(-1, 1) * (W + delta)


def dora_norm_cache_checks(layers, W0, merged_caches) -> dict:
    """merge keeps n in _caches['default-weight_norm'] for unmerge, which pops it."""
    key = f"{ADAPTER_NAME}-weight_norm"
    return {
        "merge_caches_weight_norm_of_unmerged_W_plus_delta_bitwise": all(
            torch.equal(merged_caches[n][key], dora_merge_delta_norm(m, W0[n])[1])
            for n, m in layers.items()
        ),
        "merge_cache_keys": sorted({k for c in merged_caches.values() for k in c}),
        "cache_keys_after_unmerge": sorted({k for m in layers.values() for k in m._caches}),
    }


def smollm2_trainable_parameters() -> dict:
    """PEFT's print_trainable_parameters for SmolLM2-135M-Instruct's
    architecture (random weights on the meta device; only the shapes count)."""
    sizes = dict(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        tie_word_embeddings=True,
    )
    configs = {
        "lora_r8_all7": LoraConfig(task_type="CAUSAL_LM", r=8, target_modules=ALL7),
        "dora_r8_all7": LoraConfig(task_type="CAUSAL_LM", r=8, target_modules=ALL7, use_dora=True),
        "vera_r256_all7": VeraConfig(task_type="CAUSAL_LM", r=256, target_modules=ALL7),
    }
    out = {"model": {**sizes, "head_dim": 576 // 9, "built_on": "meta device (LlamaConfig, random init)"}}
    for name, cfg in configs.items():
        with torch.device("meta"):
            base = LlamaForCausalLM(LlamaConfig(**sizes))
        n_base = sum(p.numel() for p in base.parameters())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pm = get_peft_model(base, cfg)
        n_tr, n_all = pm.get_nb_trainable_parameters()
        out[name] = {
            "trainable_params": n_tr,
            "all_params": n_all,
            "base_params": n_base,
            "print_trainable_parameters": trainable_line(pm),
            "config": {
                k: getattr(cfg, k)
                for k in ("peft_type", "r", "lora_alpha", "lora_dropout", "use_dora", "d_initial",
                          "projection_prng_key", "save_projection", "vera_dropout", "bias")
                if hasattr(cfg, k)
            },
        }
    assert out["lora_r8_all7"]["trainable_params"] == 2_442_240, out
    assert out["dora_r8_all7"]["trainable_params"] == 2_597_760, out
    assert out["vera_r256_all7"]["trainable_params"] == 209_280, out
    out["note"] = (
        "per layer, out features of q,k,v,o,gate,up,down = 576,192,192,576,1536,1536,576 "
        "(sum 5184), in features 576 x6 and 1536 (down). LoRA r=8: 8*(in+out) per module = "
        "81,408 per layer x 30. DoRA adds one magnitude per out feature: +5,184 per layer x 30 "
        "= +155,520. VeRA r=256: lambda_d [r] + lambda_b [out] per module = 7*256 + 5184 = "
        "6,976 per layer x 30; the shared vera_A/vera_B are buffers, not counted. "
        "all_params counts the tied embedding once."
    )
    return out


def make_dora(src_ref, batch, adapter_init) -> dict:
    fresh_dir(DORA.dir)
    init = dora_init_adapter(adapter_init)

    # ---- PEFT: logits, loss, grads, 3 AdamW steps ----------------------------
    run, caught, saved, checks = peft_run(DORA, batch)
    params = run["params"]

    # ---- op-for-op re-implementation (bitwise) and textbook formula ---------
    checks["opwise_reimplementation_bitwise"] = assert_bitwise_rerun(DORA, batch, run, dora_forward_opwise)
    tb, diffs = rerun_diffs(DORA, batch, run, dora_forward_textbook(detach_norm=True), "textbook_detached_norm")
    checks.update(diffs)
    nd = run_adapter(DORA, batch, dora_forward_textbook(detach_norm=False))
    diag = {
        "undetached_norm_logits_max_abs_diff": max_abs(nd["logits"], run["logits"]),
        "undetached_norm_grads_max_abs_diff": {
            part: max(max_abs(nd["grads"][k], run["grads"][k]) for k in params if part in k)
            for part in (".lora_A.", ".lora_B.", MAG)
        },
    }
    assert diag["undetached_norm_grads_max_abs_diff"][".lora_B."] > 1e-4

    # ---- eval-mode logits, unmerged and merged -------------------------------
    unmerged_logits, merged_logits = merge_checks(
        DORA, batch, run, dora_merged_weight, checks,
        "merge_and_unload_weights_equal_merge_adapter_bitwise", merge_notes=dora_norm_cache_checks,
    )
    checks["textbook_forward_vs_merged_logits_max_abs_diff"] = max_abs(tb["logits"], merged_logits)
    # m != ||W + sBA||, so DoRA differs from plain LoRA with the same A, B:
    diag["logits_vs_llama_tied_lora_logits_max_abs_diff"] = max_abs(run["logits"], src_ref["logits"])
    checks.update(training_checks(run, saved))

    ref = variant_tensors(run, merged_logits, unmerged_logits=unmerged_logits)
    mag_keys = [k for k in params if k.endswith(MAG)]
    info = {
        "case": "dora",
        "source_case": "llama_tied: model/ (loaded as is), the batch in reference.safetensors, "
        "lora_A/lora_B of adapter/adapter_model.safetensors and the optimizer settings of "
        "info.json are reused; nothing there is regenerated",
        "adapter": {
            "dir": "adapter/ (PEFT save_pretrained; README.md dropped, target_modules sorted, "
            "as make_fixtures.py does)",
            "config": "llama_tied/adapter/adapter_config.json with use_dora=true; every other "
            "field identical (the script asserts it)",
            "r": R,
            "lora_alpha": ALPHA,
            "scaling": SCALING,
            "use_rslora": False,
            "lora_dropout": 0.0,
            "lora_dropout_note": "llama_tied already uses 0.0, so nothing was changed",
            "bias": "none (no lora_bias; the Llama projections have no bias)",
            "target_modules": sorted(ADAPTER_CFG["target_modules"]),
            "init": (
                "get_peft_model(base, config) under torch.manual_seed(%d) (its lora_A draw is "
                "thrown away); lora_A and lora_B := llama_tied's adapter tensors (B is llama_tied's "
                "0.1*randn, not zero); then for every module PEFT's own DoRA init "
                "DoraLinearLayer.update_layer(base_layer, lora_A, lora_B, scaling) is re-run on the "
                "copied weights, giving m0 = torch.linalg.norm(W + s * (B @ A), dim=1) (asserted "
                "bitwise); finally m = m0 * f, f = 0.8 + 0.4 * torch.rand(out, "
                "generator=torch.Generator().manual_seed(%d)), one fresh draw per module in "
                "named_modules order (layer 0 q,k,v,o,gate,up,down, then layer 1). So m != "
                "||W + sBA||_row and the magnitude changes the output." % (DORA_SEED, DORA_SEED)
            ),
            "magnitude_factor_range": list(DORA_FACTOR_RANGE),
            "magnitude_factor_range_drawn": init["factor_range_drawn"],
            "magnitude_over_base_row_norm_range": init["magnitude_over_base_row_norm_range"],
            "magnitude_key_format": (
                "<module>.lora_magnitude_vector (NO '.weight' suffix, no adapter name), e.g. "
                "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector, shape "
                "[out_features]. In the live model the parameter is "
                "<module>.lora_magnitude_vector.default.weight (a DoraLinearLayer's 'weight'); "
                "lora/model.py strips '.weight' on save and re-appends it on load."
            ),
            "magnitude_keys": mag_keys,
            "keys_and_shapes": init["keys"],
            "peft_warnings": init["warnings"],
        },
        "trainable_parameters": {
            "print_trainable_parameters": init["print_trainable_parameters"],
            "trainable_params": init["trainable_params"],
            "all_params": init["all_params"],
            "breakdown": "28 LoRA tensors (8,960 values, as llama_tied) + 14 magnitudes "
            "(2 layers x (64+32+32+64+160+160+64) = 1,152)",
        },
        "dora_formulas": {
            "source": "peft %s: tuners/lora/variants.py DoraLinearVariant, tuners/lora/dora.py "
            "DoraLinearLayer, tuners/lora/layer.py Linear.forward/merge/unmerge" % peft.__version__,
            "notation": "x [.., in], W [out, in] base weight, b base bias (None here), A [r, in], "
            "B [out, r], s = alpha/r (alpha/sqrt(r) with rsLoRA), m [out]; all float32 here (the "
            "norm and the scale are computed in x's dtype: W and B@A are cast to x.dtype first)",
            "weight_norm": "n = torch.linalg.norm(W + s * lora_weight, dim=1): L2 norm of each ROW "
            "of W + s*B*A (one value per output feature, shape [out]); lora_weight = "
            "lora_B(lora_A(eye(in))).T, i.e. B@A computed through the two Linear forwards (PEFT: "
            "'because of FSDP'), detached before use",
            "norm_detached": "yes: weight_norm.detach() (DoRA paper sec. 4.3). No gradient flows "
            "through n; it is recomputed from the CURRENT A, B on every forward (caching is off: "
            "dora.ENABLE_DORA_CACHING = %s)" % peft_dora.ENABLE_DORA_CACHING,
            "forward": (
                "result = base_layer(x) = x W^T + b; k = (m / n).view(1, -1); "
                "if lora_dropout is nn.Identity (p = 0, as here) OR the module is in eval mode: "
                "base = result - b (the base output is REUSED, bias removed when the base layer has "
                "one), x_d = x; else (training with p > 0): x_d = dropout(x), base = "
                "F.linear(x_d, W) (RECOMPUTED on the dropped-out input, no bias). "
                "lora = B(A(x_d)); out = result + [(k - 1) * base + k * lora * s]. So "
                "out = k * (x_d W^T + s * x_d A^T B^T) + b when p = 0: the bias is NOT scaled by "
                "m/n. Evaluation order matters for bitwise equality: the bracket is formed first "
                "and added to result (not k * result)."
            ),
            "backward": (
                "autograd through the forward with n constant: d out/d m = (base + s*lora) / n; "
                "A and B get the gradient of k * s * B(A(x_d)) only (not through n); W is frozen. "
                "Same as y = x W'^T with W' = (m/n)[:,None] * (W + s B A) and n detached (checked "
                "numerically, see checks.textbook_*)."
            ),
            "merge": (
                "Linear.merge -> DoraLinearVariant.merge_unsafe (merge_and_unload default "
                "safe_merge=False; merge_safe is the same on a copy): delta = (B @ A) * s "
                "(get_delta_weight: matmul, then scaling); with the base weight UNMERGED "
                "(_unmerged_base_weight, for several adapters): n = "
                "get_weight_norm(W, delta, scaling=1).detach() = ||W + delta||_row; "
                "module._caches['default-weight_norm'] = n; W <- (m / n).view(-1, 1) * (W + delta); "
                "bias untouched (lora_bias False)."
            ),
            "unmerge": (
                "n = module._caches.pop('default-weight_norm') (the norm cached at merge time, "
                "NOT recomputed from the merged weight); delta = (B @ A) * s; "
                "W <- W_merged / (m / n).view(-1, 1) - delta"
            ),
            "weight_norm_cache": (
                "two different caches: (1) LoraLayer._caches['<adapter>-weight_norm'], written by "
                "merge, popped by unmerge (a merged DoRA layer can only be unmerged with it; "
                "'unmerged_base_weight' is a transient entry inside merge); (2) DoraLinearLayer's "
                "'weight-norm-<adapter>' / 'lora-weight-<adapter>' forward cache, used only if "
                "peft.tuners.lora.dora.ENABLE_DORA_CACHING is True AND the layer is in eval mode "
                "(default False; cleared by .train())"
            ),
            "init": "DoraLinearLayer.update_layer: m = nn.Parameter(torch.linalg.norm(W + s * "
            "(B @ A), dim=1)) (B @ A here is a plain matmul); with PEFT's default init B = 0, so "
            "m = ||W||_row and the initial adapter is a no-op",
        },
        "optimizer": adamw_info(
            "torch.optim.AdamW (one param group with all 42 trainable tensors, as "
            "make_fixtures.py; the magnitudes get weight decay too, as HF Trainer's "
            "get_decay_parameter_names would also decay them)",
            "all 42 trainable tensors (A, B and m)",
            run,
        ),
        "reference_keys": reference_keys_info(
            "lora_A, lora_B, lora_magnitude_vector",
            unmerged_logits="eval-mode logits of the initial adapter (not merged); equal bit "
            "for bit to logits here (dropout 0)",
        ),
        "smollm2_trainable_parameters": smollm2_trainable_parameters(),
        **info_footer(caught, checks, diag),
    }
    return write_case(DORA.dir, ref, info)


# --------------------------------------------------------------------------
# VeRA
# --------------------------------------------------------------------------

VERA_R = 8  # small, so the shared projections (and the fixture) stay small
VERA_D_INITIAL = 0.1
VERA_PRNG_KEY = 0
VERA_SEED = 1006  # seeds lambda_b (and PEFT's throw-away lambda_d randn)
# lambda_b = 1.5 * randn (PEFT's init is 0, which leaves lambda_d without a
# gradient). 1.5, not 0.1: VeRA's gradients are small (pre-clip norms 0.11-0.13
# with 0.1 * randn, 0.47-0.48 with 1.0), and the clip at 0.5 should act on
# every step, as in the other cases (train_loop asserts it).
VERA_LAMBDA_B_STD = 1.5
VERA_FOREIGN_SEED = 1007  # the foreign projections of the load check
VERA_PROJ_KEYS = ("base_model.vera_A", "base_model.vera_B")


def vera_config() -> VeraConfig:
    """r=8, llama_tied's 7 target modules, VeRA fields otherwise at their
    defaults (written out). task_type as llama_tied (CAUSAL_LM)."""
    return VeraConfig(
        task_type=ADAPTER_CFG["task_type"],
        r=VERA_R,
        target_modules=list(ADAPTER_CFG["target_modules"]),
        vera_dropout=0.0,
        d_initial=VERA_D_INITIAL,
        projection_prng_key=VERA_PRNG_KEY,
        save_projection=True,
    )


VERA = AdapterVariant(
    name="vera",
    seed=VERA_SEED,
    config=vera_config,
    param_marker=".vera_lambda_",
    layer_cls=peft_vera_layer.Linear,
    forward_owner=peft_vera_layer.Linear,
    shared_keys=VERA_PROJ_KEYS,  # the projections, saved once per model
)


def vera_projections(max_out: int, max_in: int, r: int, key: int) -> tuple[torch.Tensor, torch.Tensor]:
    """VeraModel._init_vera_A_vera_B / _kaiming_init written out: ONE CPU
    generator seeded with projection_prng_key, vera_A drawn first, then vera_B;
    U(-bound, bound), bound = sqrt(3) * sqrt(2) / sqrt(fan_in), fan_in = size(1)."""
    gen = torch.Generator(device="cpu").manual_seed(key)
    out = []
    for shape in ((r, max_in), (max_out, r)):
        bound = math.sqrt(3.0) * (math.sqrt(2) / math.sqrt(shape[1]))
        out.append(torch.empty(shape).uniform_(-bound, bound, generator=gen))
    return out[0], out[1]


def vera_init_adapter() -> dict:
    """Build and save the initial VeRA adapter. Returns notes for info.json."""

    def init_lambdas(model, layers) -> dict:
        vm = model.base_model
        A, B = vm.vera_A[ADAPTER_NAME], vm.vera_B[ADAPTER_NAME]
        max_out = max(m.out_features for m in layers.values())
        max_in = max(m.in_features for m in layers.values())
        assert A.shape == (VERA_R, max_in) and B.shape == (max_out, VERA_R), (A.shape, B.shape)
        assert not A.requires_grad and not B.requires_grad
        # Every layer holds a reference to the model's two BufferDicts (no copies).
        assert all(m.vera_A is vm.vera_A and m.vera_B is vm.vera_B for m in layers.values())
        ref_A, ref_B = vera_projections(max_out, max_in, VERA_R, VERA_PRNG_KEY)
        assert torch.equal(A, ref_A) and torch.equal(B, ref_B)
        gen6 = torch.Generator().manual_seed(VERA_PRNG_KEY)
        alt_A = torch.empty(VERA_R, max_in).uniform_(-math.sqrt(6 / max_in), math.sqrt(6 / max_in), generator=gen6)
        gen = torch.Generator().manual_seed(VERA_SEED)
        with torch.no_grad():
            for name, mod in layers.items():
                lb, ld = mod.vera_lambda_b[ADAPTER_NAME], mod.vera_lambda_d[ADAPTER_NAME]
                assert lb.requires_grad and ld.requires_grad
                # PEFT's init (reset_vera_parameters): lambda_b = 0, lambda_d = d_initial.
                assert torch.equal(lb, torch.zeros(mod.out_features)), name
                assert torch.equal(ld, torch.full((VERA_R,), VERA_D_INITIAL)), name
                lb.copy_(VERA_LAMBDA_B_STD * torch.randn(mod.out_features, generator=gen))
        return {
            "max_out": max_out,
            "max_in": max_in,
            "module_shapes_out_in": {n: [m.out_features, m.in_features] for n, m in layers.items()},
            "kaiming_bound_sqrt6_over_fan_in_gives_same_vera_A": bool(torch.equal(alt_A, A)),
            "vera_A_abs_max": A.abs().max().item(),
            "vera_B_abs_max": B.abs().max().item(),
        }

    model, init, acfg, sd = build_adapter(VERA, init_lambdas)
    expect = dict(peft_type="VERA", r=VERA_R, d_initial=VERA_D_INITIAL, vera_dropout=0.0,
                  projection_prng_key=VERA_PRNG_KEY, save_projection=True, init_weights=True,
                  bias="none", fan_in_fan_out=False, inference_mode=True, task_type="CAUSAL_LM",
                  target_modules=sorted(ALL7))
    assert all(acfg[k] == v for k, v in expect.items()), acfg
    vm = model.base_model
    assert torch.equal(sd["base_model.vera_A"], vm.vera_A[ADAPTER_NAME])
    assert torch.equal(sd["base_model.vera_B"], vm.vera_B[ADAPTER_NAME])
    init["adapter_config_keys_written_by_peft"] = sorted(acfg)
    init["adapter_config"] = acfg
    return init


def vera_forward_opwise(self, x, *args, **kwargs):
    """peft vera.Linear.forward for this case (one active adapter, not merged,
    not quantized, float32, dropout = Identity), written out in PEFT's order."""
    result = self.base_layer(x, *args, **kwargs)
    lambda_d = self.vera_lambda_d[ADAPTER_NAME]
    lambda_b = self.vera_lambda_b[ADAPTER_NAME]
    A = self.vera_A[ADAPTER_NAME][:, : self.in_features]
    B = self.vera_B[ADAPTER_NAME][: self.out_features, :]
    return result + lambda_b * F.linear(lambda_d * F.linear(x, A), B)


def vera_forward_merged_weight(self, x, *args, **kwargs):
    """y = x (W + diag(lambda_b) B_l diag(lambda_d) A_l)^T (+ bias)."""
    base = self.get_base_layer()
    A = self.vera_A[ADAPTER_NAME][:, : self.in_features]
    B = self.vera_B[ADAPTER_NAME][: self.out_features, :]
    lb, ld = self.vera_lambda_b[ADAPTER_NAME], self.vera_lambda_d[ADAPTER_NAME]
    return F.linear(x, base.weight + (lb[:, None] * B) @ (ld[:, None] * A), base.bias)


def vera_merged_weight(saved: dict, name: str, layer, W: torch.Tensor) -> torch.Tensor:
    """W + diag(lambda_b) B_l diag(lambda_d) A_l from the saved tensors, also
    asserted equal to PEFT's get_delta_weight."""
    A = saved["base_model.vera_A"][:, : layer.in_features]
    B = saved["base_model.vera_B"][: layer.out_features, :]
    lb, ld = saved[f"{name}.vera_lambda_b"], saved[f"{name}.vera_lambda_d"]
    delta = (lb.unsqueeze(-1) * B) @ (ld.unsqueeze(-1) * A)
    assert torch.equal(layer.get_delta_weight(ADAPTER_NAME), delta), name
    return W + delta


def vera_closed_form_grads(batch) -> dict[str, torch.Tensor]:
    """First-backward lambda gradients from the closed form, with x and
    g = dL/dy of every VeRA module captured by hooks: u = A_l x,
    d lambda_b = sum_tokens g * (B_l (lambda_d * u)),
    d lambda_d = sum_tokens u * (B_l^T (lambda_b * g))."""
    model = load_adapter(VERA)
    model.train()
    mods = VERA.layers(model)
    cap = {}

    def hook(name):
        def fwd_hook(mod, args, out):
            cap[name] = {"x": args[0].detach()}
            out.register_hook(lambda g: cap[name].__setitem__("g", g.detach()))
        return fwd_hook

    handles = [m.register_forward_hook(hook(n)) for n, m in mods.items()]
    input_ids, attention_mask, labels = batch
    model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss.backward()
    for h in handles:
        h.remove()
    out = {}
    with torch.no_grad():
        for n, m in mods.items():
            A = m.vera_A[ADAPTER_NAME][:, : m.in_features]
            B = m.vera_B[ADAPTER_NAME][: m.out_features, :]
            lb, ld = m.vera_lambda_b[ADAPTER_NAME], m.vera_lambda_d[ADAPTER_NAME]
            x = cap[n]["x"].reshape(-1, m.in_features)
            g = cap[n]["g"].reshape(-1, m.out_features)
            u = x @ A.T
            out[f"{n}.vera_lambda_b"] = (g * ((ld * u) @ B.T)).sum(0)
            out[f"{n}.vera_lambda_d"] = (u * ((lb * g) @ B)).sum(0)
    return out

def vera_load_check(batch) -> dict:
    """Does PeftModel.from_pretrained use the projections SAVED in the file,
    even when they are not what projection_prng_key generates? The fixture's
    adapter is copied with vera_A / vera_B replaced by foreign random values."""
    saved = load_file(VERA.adapter_dir / "adapter_model.safetensors")
    gen = torch.Generator().manual_seed(VERA_FOREIGN_SEED)
    foreign = {k: 0.3 * torch.randn(saved[k].shape, generator=gen) for k in VERA_PROJ_KEYS}
    res = {}
    # The same foreign projections copied in place into the fixture's loaded
    # model: what a PEFT run with these projections computes.
    with torch.no_grad():
        ref_model = load_adapter(VERA, trainable=False)
        ref_model.eval()
        ref_model.base_model.vera_A[ADAPTER_NAME].copy_(foreign["base_model.vera_A"])
        ref_model.base_model.vera_B[ADAPTER_NAME].copy_(foreign["base_model.vera_B"])
        ref_logits = eval_logits(ref_model, batch)

    def load_from(sd: dict, cfg_changes: dict | None = None, **kwargs):
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            acfg = json.loads((VERA.adapter_dir / "adapter_config.json").read_text())
            acfg.update(cfg_changes or {})
            (d / "adapter_config.json").write_text(json.dumps(acfg))
            save_file(sd, d / "adapter_model.safetensors")
            with recorded_warnings() as caught:
                try:
                    m = load_adapter(VERA, trainable=False, adapter_dir=d, **kwargs)
                except Exception as e:  # noqa: BLE001 - recorded in info.json
                    return None, f"{type(e).__name__}: {' '.join(str(e).split())[:400]}", caught
        return m, None, caught

    def buffers_equal(m, proj: dict) -> bool:
        vm = m.base_model
        ok = torch.equal(vm.vera_A[ADAPTER_NAME], proj["base_model.vera_A"])
        ok &= torch.equal(vm.vera_B[ADAPTER_NAME], proj["base_model.vera_B"])
        for mod in VERA.layers(m).values():  # what each layer actually slices
            ok &= torch.equal(mod.vera_A[ADAPTER_NAME][:, : mod.in_features],
                              proj["base_model.vera_A"][:, : mod.in_features])
            ok &= torch.equal(mod.vera_B[ADAPTER_NAME][: mod.out_features, :],
                              proj["base_model.vera_B"][: mod.out_features, :])
        return bool(ok)

    prng = dict(zip(VERA_PROJ_KEYS, vera_projections(
        saved["base_model.vera_B"].shape[0], saved["base_model.vera_A"].shape[1], VERA_R, VERA_PRNG_KEY)))
    for tag, kwargs in (("default", {}), ("low_cpu_mem_usage", {"low_cpu_mem_usage": True})):
        m, err, caught = load_from({**saved, **foreign}, **kwargs)
        assert err is None, err
        m.eval()
        with torch.no_grad():
            logits = eval_logits(m, batch)
        res[tag] = {
            "buffers_equal_file_bitwise": buffers_equal(m, foreign),
            "logits_equal_in_place_foreign_projection_run_bitwise": bool(torch.equal(logits, ref_logits)),
            "lambdas_equal_file_bitwise": all(
                torch.equal(p.detach(), saved[adapter_key(n)])
                for n, p in m.named_parameters() if ".vera_lambda_" in n
            ),
            "warnings": warning_lines(caught),
        }
        assert res[tag]["buffers_equal_file_bitwise"] and res[tag]["lambdas_equal_file_bitwise"], res
        assert res[tag]["logits_equal_in_place_foreign_projection_run_bitwise"], res
    # save_projection=false in the config: the file's projections are IGNORED.
    m, err, caught = load_from({**saved, **foreign}, {"save_projection": False})
    res["config_save_projection_false"] = {
        "error": err,
        "buffers_equal_file": None if m is None else buffers_equal(m, foreign),
        "buffers_equal_prng_key_projections": None if m is None else buffers_equal(m, prng),
        "warnings": warning_lines(caught),
    }
    # Projections missing from the file (save_projection=true) / wrong shapes.
    m, err, _ = load_from({k: v for k, v in saved.items() if k not in VERA_PROJ_KEYS})
    res["projections_missing_from_file"] = {"error": err}
    bigger = {**saved, "base_model.vera_A": torch.zeros(VERA_R, saved["base_model.vera_A"].shape[1] + 8)}
    m, err, _ = load_from(bigger)
    res["vera_A_wider_than_max_in"] = {"error": err}
    return res

def make_vera(src_ref, batch, adapter_init) -> dict:
    fresh_dir(VERA.dir)
    init = vera_init_adapter()

    # ---- PEFT: logits, loss, grads, 3 AdamW steps ----------------------------
    run, caught, saved, checks = peft_run(VERA, batch)
    params = run["params"]
    vm = run["model"].base_model
    assert torch.equal(vm.vera_A[ADAPTER_NAME], saved["base_model.vera_A"])
    assert torch.equal(vm.vera_B[ADAPTER_NAME], saved["base_model.vera_B"])
    checks["projections_unchanged_after_3_steps_bitwise"] = True
    checks["projections_in_file_equal_prng_key_0_generation_bitwise"] = True

    # ---- op-for-op re-implementation (bitwise), merged-weight form, closed-form grads
    checks["opwise_reimplementation_bitwise"] = assert_bitwise_rerun(VERA, batch, run, vera_forward_opwise)
    _, diffs = rerun_diffs(VERA, batch, run, vera_forward_merged_weight, "merged_weight_forward")
    checks.update(diffs)
    cf = vera_closed_form_grads(batch)
    assert set(cf) == set(params)
    checks["closed_form_grads_max_abs_diff"] = max(max_abs(cf[k], run["grads"][k]) for k in params)
    assert checks["closed_form_grads_max_abs_diff"] < 1e-5

    # ---- eval-mode logits, unmerged and merged -------------------------------
    _, merged_logits = merge_checks(
        VERA, batch, run, functools.partial(vera_merged_weight, saved), checks,
        "merge_and_unload_weights_equal_formula_bitwise",
    )
    with torch.no_grad():
        base_logits = eval_logits(load_base().eval(), batch)
    checks.update(training_checks(run, saved))
    diag = {
        "logits_vs_base_model_logits_max_abs_diff": max_abs(run["logits"], base_logits),
        "grad_abs_max": {
            part: max(run["grads"][k].abs().max().item() for k in params if k.endswith(part))
            for part in ("vera_lambda_b", "vera_lambda_d")
        },
    }
    load_check = vera_load_check(batch)

    ref = variant_tensors(run, merged_logits)
    info = {
        "case": "vera",
        "source_case": "llama_tied: model/ (loaded as is), the batch in reference.safetensors and "
        "the optimizer settings of info.json are reused; nothing there is regenerated",
        "adapter": {
            "dir": "adapter/ (PEFT save_pretrained; README.md dropped, target_modules sorted, "
            "base_model_name_or_path set to null, as make_fixtures.py / dora do)",
            "config": (
                "VeraConfig(task_type='CAUSAL_LM', r=%d, target_modules=<llama_tied's 7>, "
                "vera_dropout=0.0, d_initial=%s, projection_prng_key=%d, save_projection=True); "
                "every other field at its default (fan_in_fan_out=False, bias='none', "
                "init_weights=True, modules_to_save/layers_to_transform/layers_pattern=None). "
                "task_type CAUSAL_LM as llama_tied (a PeftConfig field, not a VeRA one)"
                % (VERA_R, VERA_D_INITIAL, VERA_PRNG_KEY)
            ),
            "r": VERA_R,
            "d_initial": VERA_D_INITIAL,
            "projection_prng_key": VERA_PRNG_KEY,
            "save_projection": True,
            "vera_dropout": 0.0,
            "target_modules": sorted(ADAPTER_CFG["target_modules"]),
            "max_out_max_in": [init["max_out"], init["max_in"]],
            "module_shapes_out_in": init["module_shapes_out_in"],
            "init": (
                "torch.manual_seed(%d); get_peft_model(base, config) -> PEFT's init: vera_A, vera_B "
                "from projection_prng_key (see vera_formulas.init; the script regenerates them and "
                "asserts bitwise equality), lambda_d = d_initial = 0.1 (kept), lambda_b = 0 "
                "(asserted); then lambda_b := %s * torch.randn(out_features, "
                "generator=torch.Generator().manual_seed(%d)), one draw per module from that ONE "
                "generator in named_modules order (layer 0 q,k,v,o,gate,up,down, then layer 1). "
                "With PEFT's lambda_b = 0 the adapter is a no-op and lambda_d's gradient is 0 "
                "(d lambda_d is proportional to lambda_b), hence the random lambda_b."
                % (VERA_SEED, VERA_LAMBDA_B_STD, VERA_SEED)
            ),
            "lambda_b_std": VERA_LAMBDA_B_STD,
            "lambda_b_std_note": (
                "%s, not 0.1: with lambda_b = 0.1 * randn the pre-clip grad norms are about "
                "0.11-0.13 and with 1.0 * randn 0.47-0.48, so the clip at max_norm 0.5 would never "
                "act; with %s it acts on all 3 steps (see optimizer.clip_coefs)"
                % (VERA_LAMBDA_B_STD, VERA_LAMBDA_B_STD)
            ),
            "vera_A_abs_max": init["vera_A_abs_max"],
            "vera_B_abs_max": init["vera_B_abs_max"],
            "key_format": (
                "lambdas: <module>.vera_lambda_b [out_features] and <module>.vera_lambda_d [r], NO "
                "'.weight' suffix and no adapter name (live names: <module>.vera_lambda_b.default, "
                "ParameterDict entries), e.g. "
                "base_model.model.model.layers.0.self_attn.q_proj.vera_lambda_b. Projections "
                "ONCE per model: base_model.vera_A [r, max_in] and base_model.vera_B [max_out, r] "
                "(live: base_model.vera_A.default, BufferDict entries, plus per-layer references "
                "<module>.vera_A.default to the same tensor, which save drops). float32."
            ),
            "keys_and_shapes": init["keys"],
            "adapter_config_keys_written_by_peft": init["adapter_config_keys_written_by_peft"],
            "adapter_config_json": init["adapter_config"],
            "peft_warnings": init["warnings"],
        },
        "trainable_parameters": {
            "print_trainable_parameters": init["print_trainable_parameters"],
            "trainable_params": init["trainable_params"],
            "all_params": init["all_params"],
            "breakdown": "28 trainable tensors: per module lambda_d [8] + lambda_b [out]; 2 layers x "
            "(7*8 + 64+32+32+64+160+160+64) = 2 x 632 = 1,264. vera_A / vera_B are buffers (not "
            "parameters): counted in neither number",
        },
        "vera_formulas": {
            "source": "peft %s: tuners/vera/layer.py Linear.forward / get_delta_weight / merge / "
            "unmerge, VeraLayer.update_layer / reset_vera_parameters; tuners/vera/model.py "
            "_find_dim, _init_vera_A_vera_B, _kaiming_init, _get_adapter_state_dict" % peft.__version__,
            "notation": "x [.., in] input of the targeted Linear, W [out, in] its frozen weight, "
            "b its bias (None here); vera_A [r, max_in], vera_B [max_out, r] shared by ALL "
            "modules; lambda_d [r], lambda_b [out] per module; all float32 here",
            "sizing": "_find_dim: (max_out, max_in) = elementwise max of (out_features, "
            "in_features) over every targeted module; here (%d, %d): vera_A [%d, %d], "
            "vera_B [%d, %d]" % (init["max_out"], init["max_in"], VERA_R, init["max_in"],
                                 init["max_out"], VERA_R),
            "slicing": "A_l = vera_A[:, :in_features] (ALL r rows, the FIRST in_features columns); "
            "B_l = vera_B[:out_features, :] (the FIRST out_features rows, all r columns). Sliced "
            "from the start, at every forward (views); e.g. q_proj 64x64 uses vera_A[:, :64] and "
            "vera_B[:64, :], gate_proj 160x64 uses vera_A[:, :64] and all of vera_B, down_proj "
            "64x160 uses all of vera_A and vera_B[:64, :]",
            "forward": (
                "result = base_layer(x) (= x W^T + b, on the UN-dropped x); x = x cast to "
                "lambda_d.dtype; result = result + lambda_b * F.linear(lambda_d * "
                "F.linear(dropout(x), A_l), B_l); result cast back to x's original dtype. I.e. "
                "y = x W^T + b + lambda_b ⊙ (B_l (lambda_d ⊙ (A_l x))): A_l first, lambda_d scales "
                "the r-dim hidden vector, then B_l, then lambda_b scales the output. NO scaling "
                "factor (no alpha, nothing divided by r). dropout = nn.Dropout(vera_dropout) on "
                "the VeRA branch only, nn.Identity when vera_dropout == 0 (here); inactive in eval"
            ),
            "backward": (
                "g = dL/dy [.., out]; u = A_l x [.., r] (x dropped-out if p > 0); "
                "d lambda_b = sum over all tokens of g ⊙ (B_l (lambda_d ⊙ u)) [out]; "
                "d lambda_d = sum over all tokens of u ⊙ (B_l^T (lambda_b ⊙ g)) [r]; "
                "dx = g W + A_l^T (lambda_d ⊙ (B_l^T (lambda_b ⊙ g))) (times the dropout mask/(1-p) "
                "on the VeRA term if p > 0). vera_A, vera_B are buffers: no gradient, never "
                "updated (asserted bitwise after 3 steps); W frozen. Checked: closed form vs "
                "autograd, see checks.closed_form_grads_max_abs_diff"
            ),
            "merge": (
                "merge_and_unload -> Linear.merge(safe_merge=False): W += get_delta_weight(), "
                "in place; delta = transpose((lambda_b.unsqueeze(-1) * B_l) @ "
                "(lambda_d.unsqueeze(-1) * A_l), fan_in_fan_out) = diag(lambda_b) B_l diag(lambda_d) "
                "A_l [out, in] (elementwise row scalings first, then ONE matmul; asserted bitwise). "
                "safe_merge=True: same on a clone plus an isfinite check. On CPU with fp16/bf16 "
                "projections everything is cast to float32 for the delta and the delta cast back. "
                "Bias untouched. unmerge: W -= delta (same delta)"
            ),
            "init": (
                "generator = torch.Generator(device='cpu').manual_seed(projection_prng_key); "
                "vera_A = torch.empty(r, max_in).uniform_(-bound_A, bound_A, generator=generator) "
                "FIRST, then vera_B = torch.empty(max_out, r).uniform_(-bound_B, bound_B, "
                "generator=generator) from the SAME generator; bound = math.sqrt(3.0) * "
                "(math.sqrt(2) / math.sqrt(fan_in)), fan_in = tensor.size(1) (max_in for vera_A, r "
                "for vera_B): kaiming-uniform with gain sqrt(2) (a = 0, not LoRA's a = sqrt(5)), "
                "bound = sqrt(6 / fan_in). The global RNG is not used for them. lambda_b = "
                "Parameter(ones(out)) then zeros_(); lambda_d = Parameter(torch.randn(r)) (a "
                "throw-away draw from the GLOBAL RNG) then fill_(d_initial)"
            ),
            "init_matters_with_save_projection": (
                "Only when an adapter is created (get_peft_model). On load PEFT regenerates the "
                "projections from projection_prng_key and then load_state_dict copies the file's "
                "base_model.vera_A / vera_B over them (see load_check: foreign projections load "
                "bit for bit). So a writer need not reproduce torch's CPU generator as long as it "
                "saves the projections and writes save_projection: true"
            ),
            "kaiming_bound_sqrt6_over_fan_in_gives_same_vera_A_bitwise": init[
                "kaiming_bound_sqrt6_over_fan_in_gives_same_vera_A"
            ],
        },
        "optimizer": adamw_info(
            "torch.optim.AdamW (one param group with all 28 trainable tensors: the lambdas, "
            "in named_parameters order lambda_b before lambda_d per module; all decayed)",
            "all 28 lambdas",
            run,
        ),
        "reference_keys": reference_keys_info(
            "vera_lambda_b, vera_lambda_d", " (the projections do not change)"
        ),
        "load_check": {
            "question": "does PeftModel.from_pretrained use the projections saved in the file when "
            "they are NOT what projection_prng_key generates?",
            "how": "copy of adapter/ with base_model.vera_A / vera_B replaced by 0.3 * randn "
            "(generator seeded %d); loaded with PeftModel.from_pretrained (default and "
            "low_cpu_mem_usage=True); its buffers (model level and each layer's slices) compared "
            "with the file, its eval logits with the fixture adapter whose buffers were "
            "overwritten in place with the same values" % VERA_FOREIGN_SEED,
            "answer": "yes: the saved projections are used, bit for bit, and the logits are "
            "identical; a save_projection=false config ignores them (PRNG regenerated), a "
            "missing projection or a wrong shape is an error (see below)",
            **load_check,
        },
        **info_footer(caught, checks, diag),
    }
    return write_case(VERA.dir, ref, info)


CASES = {
    "lora_plus": lambda src_ref, batch, adapter_init: make_lora_plus(src_ref, batch),
    "lora_fa": make_lora_fa,
    "dora": make_dora,
    "vera": make_vera,
}


def main(argv: list[str]) -> None:
    unknown = [n for n in argv if n not in CASES]
    if unknown:
        sys.exit(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    src_ref, batch = load_batch()
    adapter_init = load_file(SRC_CASE / "adapter" / "adapter_model.safetensors")
    rows = [CASES[n](src_ref, batch, adapter_init) for n in (argv or list(CASES))]
    for r in rows:
        print(
            f"{r['case']:<10} {r['size'] / 1024:7.1f} KB  losses "
            + " ".join(f"{x:.6f}" for x in r["losses"])
            + "  grad norms "
            + " ".join(f"{x:.5f}" for x in r["grad_norms"])
        )
        print("   checks:", json.dumps(r["checks"]))
        if r["diag"] is not None:
            print("   diagnostics:", json.dumps(r["diag"]))


if __name__ == "__main__":
    main(sys.argv[1:])
