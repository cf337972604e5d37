#!/usr/bin/env python3
"""Generate PyTorch/PEFT reference fixtures for AdaLoRA (case `adalora`) for the
swift-lora test suite.

Like scripts/make_variant_fixtures.py it reuses the existing `llama_tied` case
written by scripts/make_fixtures.py (it does NOT regenerate it):

    Tests/LoRAKitTests/Fixtures/llama_tied/model/     base model (LlamaForCausalLM,
                                                      float32, loaded as is)
    Tests/LoRAKitTests/Fixtures/llama_tied/reference.safetensors
                                                      the batch (input_ids,
                                                      attention_mask, labels)
    Tests/LoRAKitTests/Fixtures/llama_tied/info.json  optimizer settings (lr 1e-2,
                                                      betas (0.9, 0.999), eps 1e-4,
                                                      weight decay 1e-2, clip 0.5)

Adapter: peft AdaLoraConfig(task_type="CAUSAL_LM", init_r=6, target_r=3,
lora_alpha=8, lora_dropout=0.0, target_modules=<the 7 llama linears>, tinit=1,
tfinal=1, deltaT=1, beta1=0.85, beta2=0.85, orth_reg_weight=0.5, total_step=6),
every other field at its default; created with get_peft_model under
torch.manual_seed(1007). PEFT's init gives lora_A, lora_B ~ N(0, 0.02^2) and
lora_E = 0 (then A and B get no loss gradient), so after get_peft_model every
lora_E is set to 0.5 * torch.randn([r, 1], generator=torch.Generator().manual_seed(1007)),
one draw per module from that ONE generator in named_parameters order (layer 0
q,k,v,o,gate,up,down, then layer 1).

Output:

    Tests/LoRAKitTests/Fixtures/variants/adalora/
        adapter/adapter_config.json          PEFT save_pretrained of the initial
        adapter/adapter_model.safetensors    adapter (rank_pattern null; keys
                                             <module>.lora_A [6, in],
                                             <module>.lora_E [6, 1],
                                             <module>.lora_B [out, 6]; no '.weight'
                                             suffix, no adapter name, no ranknum)
        trained_adapter/adapter_config.json  PEFT save_pretrained after step 6:
        trained_adapter/adapter_model.safetensors
                                             rank_pattern filled (per module a list
                                             of 6 booleans, keys
                                             model.layers.<i>.<proj path>.lora_E), tensors
                                             PRUNED to the kept triplets:
                                             lora_A [rank, in], lora_E [rank, 1],
                                             lora_B [out, rank]; a module can be
                                             pruned to rank 0: [0, in], [0, 1],
                                             [out, 0] (here q_proj and k_proj of
                                             both layers; final ranks in info.json)
        reference.safetensors
        info.json                            hyper-parameters, versions, module order,
                                             PEFT's AdaLoRA formulas as observed,
                                             budgets, per-step masking diagnostics,
                                             final ranks, reload check, checks

Both adapter_config.json files are normalised as make_variant_fixtures.py does
(README.md dropped, target_modules sorted, base_model_name_or_path null, keys
sorted).

reference.safetensors keys (all float32). <K> is a key exactly as written in
adapter/adapter_model.safetensors, e.g.
base_model.model.model.layers.0.self_attn.q_proj.lora_A (also .lora_E, .lora_B);
"every tensor" means all 42 (14 modules x A, E, B), "A and B" the 28 A/B ones.
The batch itself is not copied: read it from llama_tied/reference.safetensors.

    logits              [B,T,V]  train-mode forward of the initial adapter
                                 (dropout is 0, so it equals eval mode)
    ce_loss             [1]      HF causal-LM cross-entropy of that forward alone
                                 (LlamaForCausalLM's loss, captured BEFORE
                                 AdaLoraModel.forward adds the regulariser in place)
    orth_reg            [1]      R = (1/28) * sum over every lora_A of
                                 ||A A^T - I_r||_F and every lora_B of
                                 ||B^T B - I_r||_F (Frobenius norm, NOT squared)
    loss                [1]      outputs.loss as PEFT returns it
                                 = ce_loss + orth_reg_weight * R  (0.5 * R; bitwise)
    grad.<K>            every tensor: gradient after the first backward of PEFT's
                        loss (regulariser included), raw, before clipping
    orth_grad.<K>       A and B: gradient of 0.5 * R alone (separate autograd pass
                        on the initial adapter); grad.<K> = CE gradient + orth_grad.<K>
                        (lora_E gets no regulariser gradient)
    losses              [6]  outputs.loss (incl. regulariser) at steps 1..6, before
                             each update
    ce_losses           [6]  the cross-entropy part of losses
    orth_regs           [6]  R at steps 1..6 (losses = ce_losses + 0.5 * orth_regs)
    grad_norms          [6]  clip_grad_norm_'s total norm (pre-clip) at steps 1..6
                             (the clip at 0.5 acts at steps 3..6 only)
    budgets             [6]  RankAllocator.budget_schedule(step)[0] for step 1..6
                             (84, 59, 47, 42, 42, 42)
    rank_after_step_2 .. rank_after_step_5
                        [14, 6]  lora_config.rank_pattern right after
                                 update_and_allocate(step) as 0/1: row m = module m
                                 of info.json "modules" (named_modules order), column
                                 i = triplet i (1 = kept)
    exp_avg_ipt.<K>     every tensor: RankAllocator.exp_avg_ipt after
                        update_and_allocate(4) (the last EMA update; step 5 masks
                        from these and then resets them)
    exp_avg_unc.<K>     every tensor: RankAllocator.exp_avg_unc after step 4
    final.<K>           every tensor after step 6 (after update_and_allocate(6)):
                        all init_r = 6 rows/columns as in the live model, the
                        E entries of pruned triplets exactly 0
    trained_logits      [B,T,V]  eval-mode logits of the live model after step 6

The loop (from the initial adapter; params = the 42 A/E/B tensors in
named_parameters order; one torch.optim.AdamW(params, lr=1e-2, betas=(0.9, 0.999),
eps=1e-4, weight_decay=0.01)): for step in 1..6: zero_grad(); out =
model(input_ids, attention_mask, labels) (PEFT's loss incl. the regulariser);
out.loss.backward(); norm = clip_grad_norm_(params, max_norm=0.5);
optimizer.step(); model.base_model.update_and_allocate(step).

Checks (asserted): the regulariser re-implemented with plain torch ops (PEFT's
op order: bitwise; textbook sqrt(sum(M^2)) form: numerically) and its gradient
(autograd of the re-implementation vs the closed form
d||M||_F = (2/28) * 0.5 * (A A^T - I) A / ||A A^T - I||_F, resp.
B (B^T B - I) / ||B^T B - I||_F; and PEFT's total gradient = CE-only gradient +
orth_grad); every update_and_allocate step re-implemented (I = |p * grad| with
the post-update p and the CLIPPED grad, EMAs, triplet scores, kthvalue threshold
with k = init_bgt - budget, masked_fill where score <= threshold, the final
force mask, reset and mask_using_rank_pattern) with the EMA state, the rank
pattern and the masked lora_E equal to PEFT's bit for bit at every step; the
saved initial adapter reloads to the same logits bitwise; the trained adapter's
pruned tensors equal the kept rows of final.<K>; PEFT reloads its own trained
adapter (info.json "trained_adapter_reload").

Requirements: torch, transformers, peft (0.21 tested), safetensors. Run from
the repository root:

    python scripts/make_adalora_fixtures.py

Deterministic: PEFT's A/B init comes from torch.manual_seed(1007), lora_E from
a seeded generator; the script runs single-threaded
(torch.set_num_threads(1)) with deterministic algorithms; re-running gives the
same files (up to library-version differences in float32 kernels).
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import torch
from safetensors.torch import load_file
from peft import AdaLoraConfig, PeftModel, PeftModelForCausalLM, get_peft_model
from peft.tuners.adalora import RankAllocator, SVDLinear

# Both generator scripts only define things at import time (their main() runs
# under `if __name__ == "__main__"`), so naming, loading, loss and saving
# helpers are imported rather than copied.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import ADAPTER_NAME, ALL7, manual_causal_lm_loss  # noqa: E402
from make_variant_fixtures import (  # noqa: E402
    BETAS,
    CLIP_DESC,
    EPS,
    LR,
    MAX_NORM,
    OUT_ROOT,
    SRC_CASE,
    WD,
    adapter_key,
    clip_coef,
    eval_logits,
    fresh_dir,
    load_base,
    load_batch,
    max_abs,
    recorded_warnings,
    save_adapter,
    trainable_line,
    trainable_params,
    versions,
    warning_lines,
    write_case,
)

OUT_DIR = OUT_ROOT / "adalora"
ADAPTER_DIR = OUT_DIR / "adapter"
TRAINED_DIR = OUT_DIR / "trained_adapter"

SEED = 1007
INIT_R = 6
TARGET_R = 3
ALPHA = 8
TINIT = 1
TFINAL = 1
DELTA_T = 1
BETA1 = 0.85
BETA2 = 0.85
ORTH_REG_WEIGHT = 0.5
TOTAL_STEP = 6
E_STD = 0.5  # lora_E := E_STD * randn (PEFT: 0)
RANK_STEPS = (2, 3, 4, 5)  # rank_after_step_<s>
EMA_SNAPSHOT_STEP = 4  # exp_avg_ipt / exp_avg_unc recorded after this step
N_MODULES = 14
PARTS = ("lora_A", "lora_E", "lora_B")


def adalora_config() -> AdaLoraConfig:
    return AdaLoraConfig(
        task_type="CAUSAL_LM",
        init_r=INIT_R,
        target_r=TARGET_R,
        lora_alpha=ALPHA,
        lora_dropout=0.0,
        target_modules=list(ALL7),
        tinit=TINIT,
        tfinal=TFINAL,
        deltaT=DELTA_T,
        beta1=BETA1,
        beta2=BETA2,
        orth_reg_weight=ORTH_REG_WEIGHT,
        total_step=TOTAL_STEP,
    )


def svd_layers(model) -> dict[str, SVDLinear]:
    """module prefix (as in the adapter file) -> SVDLinear, named_modules order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, SVDLinear)}


def inner(model):
    """The LlamaForCausalLM inside PeftModel -> AdaLoraModel (its names are the
    RankAllocator's and rank_pattern's: model.layers.0...lora_E.default)."""
    return model.base_model.model


def live_to_key(n: str) -> str:
    """RankAllocator / rank_pattern name (relative to the inner model) -> <K>."""
    return adapter_key("base_model.model." + n)


def module_of_key(k: str) -> str:
    """<K> -> module prefix."""
    return k.rsplit(".", 1)[0]


def capture_ce(model) -> list:
    """AdaLoraModel.forward calls self.model.forward(...) and then adds the
    regulariser to outputs.loss IN PLACE, so the cross-entropy is recorded by
    wrapping the inner model's forward (a forward hook would not fire: the
    call goes to .forward directly). Returns the list the values land in."""
    m = inner(model)
    orig = m.forward
    rec = []

    def forward(*args, **kwargs):
        out = orig(*args, **kwargs)
        if getattr(out, "loss", None) is not None:
            rec.append(out.loss.detach().clone())
        return out

    m.forward = forward
    return rec


# --------------------------------------------------------------------------
# The regulariser, re-implemented
# --------------------------------------------------------------------------


def orth_reg_peft_order(model) -> torch.Tensor:
    """AdaLoraModel.forward's regulariser with PEFT's own ops and order."""
    regu, num = 0, 0
    for n, p in inner(model).named_parameters():
        if ("lora_A" in n or "lora_B" in n) and ADAPTER_NAME in n:
            cov = p @ p.T if "lora_A" in n else p.T @ p
            eye = torch.eye(*cov.size(), out=torch.empty_like(cov))
            num += 1
            regu += torch.norm(cov - eye, p="fro")
    assert num == 2 * N_MODULES
    return regu / num


def orth_reg_textbook(params: dict) -> torch.Tensor:
    """R = mean over A of ||A A^T - I||_F and over B of ||B^T B - I||_F,
    ||M||_F = sqrt(sum M^2), accumulated in float64."""
    terms = []
    for k, p in params.items():
        if k.endswith(".lora_A") or k.endswith(".lora_B"):
            p = p.detach().double()
            cov = p @ p.T if k.endswith(".lora_A") else p.T @ p
            terms.append(((cov - torch.eye(cov.shape[0], dtype=cov.dtype)) ** 2).sum().sqrt())
    return torch.stack(terms).mean()


def orth_grad_closed_form(params: dict) -> dict[str, torch.Tensor]:
    """d(w * R)/dA = (w / n) * 2 (A A^T - I) A / ||A A^T - I||_F,
    d(w * R)/dB = (w / n) * 2 B (B^T B - I) / ||B^T B - I||_F (float64)."""
    ab = {k: p.detach().double() for k, p in params.items() if not k.endswith(".lora_E")}
    n = len(ab)
    out = {}
    for k, p in ab.items():
        if k.endswith(".lora_A"):
            M = p @ p.T - torch.eye(p.shape[0], dtype=p.dtype)
            g = 2 * M @ p / torch.linalg.norm(M)
        else:
            M = p.T @ p - torch.eye(p.shape[1], dtype=p.dtype)
            g = 2 * p @ M / torch.linalg.norm(M)
        out[k] = (ORTH_REG_WEIGHT / n * g).float()
    return out


# --------------------------------------------------------------------------
# update_and_allocate, re-implemented
# --------------------------------------------------------------------------


def budget_formula(step: int, init_bgt: int, target_bgt: int) -> tuple[int, bool]:
    """RankAllocator.budget_schedule written out."""
    if step <= TINIT:
        return init_bgt, False
    if step > TOTAL_STEP - TFINAL:
        return target_bgt, True
    mul = 1 - (step - TINIT) / (TOTAL_STEP - TFINAL - TINIT)
    return int((init_bgt - target_bgt) * mul**3 + target_bgt), step % DELTA_T == 0


class ManualAllocator:
    """Independent AdaLoRA allocator, keyed by <K>. step(params, t) is meant to
    run right before PEFT's update_and_allocate(t) (after optimizer.step(), grads
    = the clipped ones) and returns what PEFT must then have: the EMA state, the
    rank pattern (or None) and the lora_E values after masking."""

    def __init__(self, params: dict):
        self.modules = list(dict.fromkeys(module_of_key(k) for k in params))
        self.init_bgt = INIT_R * len(self.modules)
        self.target_bgt = TARGET_R * len(self.modules)
        self.reset()
        self.pattern = None  # module -> bool list
        self.log = []

    def reset(self):
        self.ipt, self.unc = {}, {}

    def scores(self) -> dict[str, torch.Tensor]:
        """triplet score per module [r]: s(E) + mean_in s(A rows) + mean_out s(B cols),
        s = exp_avg_ipt * exp_avg_unc; PEFT's op order (E + (A + B))."""
        out = {}
        for m in self.modules:
            s = {part: self.ipt[f"{m}.{part}"] * self.unc[f"{m}.{part}"] for part in PARTS}
            ab = s["lora_A"].mean(dim=1) + s["lora_B"].mean(dim=0)
            out[m] = s["lora_E"].view(-1) + ab
        return out

    def mask(self, params: dict, budget: int, t: int) -> dict:
        sc = self.scores()
        flat = torch.cat([sc[m] for m in self.modules])
        k = self.init_bgt - budget
        assert k >= 1, f"k = {k}: torch.kthvalue needs k >= 1"
        thr = torch.sort(flat).values[k - 1]
        self.pattern = {m: (sc[m] > thr).tolist() for m in self.modules}
        n_masked = int((flat <= thr).sum())
        self.log.append({
            "step": t,
            "budget": budget,
            "k": k,
            "threshold": thr.item(),
            "triplets_masked": n_masked,
            "triplets_kept": flat.numel() - n_masked,
            "scores_equal_to_threshold": int((flat == thr).sum()),
            "scores_equal_to_zero": int((flat == 0).sum()),
            "score_range": [flat.min().item(), flat.max().item()],
        })
        return self.expected_E(params)

    def expected_E(self, params: dict) -> dict:
        return {
            f"{m}.lora_E": params[f"{m}.lora_E"].detach().clone().masked_fill_(
                ~torch.tensor(self.pattern[m]).view(-1, 1), 0.0
            )
            for m in self.modules
        }

    def step(self, params: dict, t: int):
        last = TOTAL_STEP - TFINAL
        if t < last:
            b1, b2 = BETA1, BETA2
            for k, p in params.items():
                I = (p.detach() * p.grad).abs()  # noqa: E741
                e_ipt = self.ipt.get(k, torch.zeros_like(I))
                e_unc = self.unc.get(k, torch.zeros_like(I))
                self.ipt[k] = b1 * e_ipt + (1 - b1) * I
                self.unc[k] = b2 * e_unc + (1 - b2) * (I - self.ipt[k]).abs()
            budget, do_mask = budget_formula(t, self.init_bgt, self.target_bgt)
            E = self.mask(params, budget, t) if do_mask else None
            ema = ({k: v.clone() for k, v in self.ipt.items()}, {k: v.clone() for k, v in self.unc.items()})
        elif t == last:
            budget, _ = budget_formula(t, self.init_bgt, self.target_bgt)
            E = self.mask(params, budget, t)  # force_mask, no EMA update
            self.reset()
            ema = ({}, {})
        else:
            E = self.expected_E(params)  # mask_using_rank_pattern
            ema = ({}, {})
        return ema, (None if self.pattern is None else dict(self.pattern)), E


def peft_state(model):
    """RankAllocator EMAs keyed by <K>, and lora_config.rank_pattern keyed by module."""
    ra: RankAllocator = model.base_model.rankallocator
    ipt = {live_to_key(n): v for n, v in ra.exp_avg_ipt.items()}
    unc = {live_to_key(n): v for n, v in ra.exp_avg_unc.items()}
    rp = model.base_model.peft_config[ADAPTER_NAME].rank_pattern
    pattern = None if rp is None else {module_of_key(live_to_key(n)): v for n, v in rp.items()}
    return ipt, unc, pattern


# --------------------------------------------------------------------------
# The case
# --------------------------------------------------------------------------


def build_initial_adapter() -> tuple[PeftModel, dict]:
    torch.manual_seed(SEED)
    with recorded_warnings() as caught:
        model = get_peft_model(load_base(), adalora_config())
    layers = svd_layers(model)
    assert len(layers) == N_MODULES, list(layers)
    notes = {}
    with torch.no_grad():
        es = [(n, p) for n, p in model.named_parameters() if ".lora_E." in n]
        assert len(es) == N_MODULES and all(torch.count_nonzero(p) == 0 for _, p in es)
        ab = [p for n, p in model.named_parameters() if ".lora_A." in n or ".lora_B." in n]
        notes["peft_init_A_B_std_observed"] = torch.cat([p.flatten() for p in ab]).std().item()
        gen = torch.Generator().manual_seed(SEED)
        for _, p in es:
            p.copy_(E_STD * torch.randn(p.shape, generator=gen))
        for name, mod in layers.items():
            assert mod.ranknum[ADAPTER_NAME].item() == INIT_R and not mod.ranknum[ADAPTER_NAME].requires_grad
            assert mod.scaling[ADAPTER_NAME] == ALPHA
    n_trainable, n_all = model.get_nb_trainable_parameters()
    notes.update(trainable_params=n_trainable, all_params=n_all,
                 print_trainable_parameters=trainable_line(model))
    acfg, save_caught = save_adapter(model, ADAPTER_DIR)
    sd = load_file(ADAPTER_DIR / "adapter_model.safetensors")
    params = trainable_params(model)
    assert set(sd) == set(params), sorted(set(sd) ^ set(params))
    for k, p in params.items():
        assert torch.equal(sd[k], p.detach()), k
    assert not any("ranknum" in k for k in sd)
    notes["warnings"] = warning_lines(list(caught) + list(save_caught))
    notes["keys_and_shapes"] = {k: list(v.shape) for k, v in sorted(sd.items())}
    notes["adapter_config_json"] = acfg
    return model, notes


def train(model, batch) -> dict:
    input_ids, attention_mask, labels = batch
    model.train()
    ce_rec = capture_ce(model)
    params = trainable_params(model)
    assert len(params) == 3 * N_MODULES
    modules = list(svd_layers(model))
    assert modules == list(dict.fromkeys(module_of_key(k) for k in params))
    opt = torch.optim.AdamW(list(params.values()), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    ra = model.base_model.rankallocator
    manual = ManualAllocator(params)
    assert (manual.init_bgt, manual.target_bgt) == (ra.init_bgt, ra.target_bgt)

    rec = dict(losses=[], ce_losses=[], orth_regs=[], grad_norms=[], budgets=[], mask_ind=[])
    ranks, pattern_log, regrowth = {}, {}, {}
    prev_pattern = None
    for step in range(1, TOTAL_STEP + 1):
        opt.zero_grad()
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        ce = ce_rec[-1]
        with torch.no_grad():
            reg = orth_reg_peft_order(model)
        assert torch.equal(ce + ORTH_REG_WEIGHT * reg, out.loss.detach()), "loss != ce + 0.5 R"
        out.loss.backward()
        if step == 1:
            rec["logits"] = out.logits.detach().clone()
            rec["loss"], rec["ce_loss"], rec["orth_reg"] = out.loss.detach().clone(), ce, reg
            rec["grads"] = {k: p.grad.detach().clone() for k, p in params.items()}
        gn = torch.nn.utils.clip_grad_norm_(list(params.values()), max_norm=MAX_NORM)
        opt.step()
        if prev_pattern is not None:  # masked E entries after the next AdamW step
            regrowth[step] = max(
                (params[f"{m}.lora_E"].detach().view(-1)[i].abs().item()
                 for m, keep in prev_pattern.items() for i, kept in enumerate(keep) if not kept),
                default=0.0,
            )
        (m_ipt, m_unc), m_pattern, m_E = manual.step(params, step)
        model.base_model.update_and_allocate(step)
        p_ipt, p_unc, p_pattern = peft_state(model)
        # ---- PEFT == re-implementation, bit for bit ----
        assert set(p_ipt) == set(m_ipt) and set(p_unc) == set(m_unc), step
        for k in m_ipt:
            assert torch.equal(p_ipt[k], m_ipt[k]) and torch.equal(p_unc[k], m_unc[k]), (step, k)
        assert p_pattern == m_pattern, step
        if m_E is not None:
            for k, e in m_E.items():
                assert torch.equal(params[k].detach(), e), (step, k)
        budget, mask_ind = ra.budget_schedule(step)
        assert (budget, mask_ind) == budget_formula(step, ra.init_bgt, ra.target_bgt)
        rec["losses"].append(out.loss.item())
        rec["ce_losses"].append(ce.item())
        rec["orth_regs"].append(reg.item())
        rec["grad_norms"].append(gn.item())
        rec["budgets"].append(budget)
        rec["mask_ind"].append(mask_ind)
        if step == EMA_SNAPSHOT_STEP:
            rec["exp_avg_ipt"] = {k: v.clone() for k, v in p_ipt.items()}
            rec["exp_avg_unc"] = {k: v.clone() for k, v in p_unc.items()}
        if step in RANK_STEPS:
            ranks[step] = torch.tensor([[float(x) for x in p_pattern[m]] for m in modules])
        if p_pattern is not None:
            pattern_log[step] = {m: int(sum(v)) for m, v in p_pattern.items()}
        prev_pattern = p_pattern
        if step == TOTAL_STEP - TFINAL:
            assert ra.ipt == {} and ra.exp_avg_ipt == {} and ra.exp_avg_unc == {}
    rec["final"] = {k: p.detach().clone() for k, p in params.items()}
    model.eval()
    with torch.no_grad():
        rec["trained_logits"] = eval_logits(model, batch)
    rec.update(params=params, modules=modules, ranks=ranks, ranks_per_step=pattern_log,
               mask_log=manual.log, regrowth=regrowth, final_pattern=manual.pattern)
    return rec


def regulariser_checks(batch, run: dict) -> tuple[dict, dict]:
    """On the saved initial adapter (reloaded): logits/loss/grads reproduce the
    loop's step 1 bitwise; the regulariser value and gradient re-implemented;
    PEFT's gradient = CE-only gradient + regulariser gradient."""
    input_ids, attention_mask, labels = batch
    model = PeftModel.from_pretrained(load_base(), ADAPTER_DIR, is_trainable=True)
    model.train()
    params = trainable_params(model)
    checks = {}
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    out.loss.backward()
    assert torch.equal(out.logits, run["logits"]) and torch.equal(out.loss, run["loss"])
    for k, p in params.items():
        assert torch.equal(p.grad, run["grads"][k]), k
    checks["initial_adapter_reload_logits_loss_grads_bitwise"] = True

    # regulariser value: PEFT's op order (bitwise) and textbook float64 form
    R = orth_reg_peft_order(model)
    assert torch.equal(R, run["orth_reg"])
    checks["orth_reg_peft_op_order_bitwise"] = True
    checks["orth_reg_vs_float64_textbook_abs_diff"] = abs(R.item() - orth_reg_textbook(params).item())
    assert checks["orth_reg_vs_float64_textbook_abs_diff"] < 1e-6
    checks["ce_loss_vs_manual_causal_lm_loss_abs_diff"] = abs(
        manual_causal_lm_loss(run["logits"], labels).item() - run["ce_loss"].item()
    )
    assert checks["ce_loss_vs_manual_causal_lm_loss_abs_diff"] < 1e-5

    # regulariser gradient: separate autograd pass, vs the closed form
    ab = {k: p for k, p in params.items() if not k.endswith(".lora_E")}
    g = torch.autograd.grad(ORTH_REG_WEIGHT * orth_reg_peft_order(model), list(ab.values()))
    orth_grad = dict(zip(ab, g))
    cf = orth_grad_closed_form(params)
    checks["orth_grad_vs_closed_form_max_abs_diff"] = max(max_abs(orth_grad[k], cf[k]) for k in ab)
    assert checks["orth_grad_vs_closed_form_max_abs_diff"] < 1e-7

    # CE-only gradient (inner model, no regulariser) + orth_grad = PEFT's gradient
    model.zero_grad()
    ce_out = inner(model)(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    assert torch.equal(ce_out.loss, run["ce_loss"])
    ce_out.loss.backward()
    checks["grad_vs_ce_grad_plus_orth_grad_max_abs_diff"] = max(
        max_abs(run["grads"][k], p.grad + orth_grad.get(k, 0)) for k, p in params.items()
    )
    assert checks["grad_vs_ce_grad_plus_orth_grad_max_abs_diff"] < 1e-8
    checks["lora_E_grad_equals_ce_grad_bitwise"] = all(
        torch.equal(run["grads"][k], p.grad) for k, p in params.items() if k.endswith(".lora_E")
    )
    diag = {
        "grad_abs_max": {part: max(run["grads"][k].abs().max().item() for k in params if k.endswith(part))
                         for part in PARTS},
        "ce_grad_abs_max": {part: max(p.grad.abs().max().item() for k, p in params.items() if k.endswith(part))
                            for part in PARTS},
        "orth_grad_abs_max": {part: max(orth_grad[k].abs().max().item() for k in ab if k.endswith(part))
                              for part in ("lora_A", "lora_B")},
    }
    return orth_grad, {"checks": checks, "diag": diag}


def pad_pruned(sd: dict, pattern: dict) -> dict:
    """Pruned tensors -> init_r rows/columns, zeros at the pruned positions."""
    out = {}
    for k, v in sd.items():
        keep = torch.tensor(pattern[module_of_key(k)])
        if k.endswith(".lora_B"):
            full = torch.zeros(v.shape[0], INIT_R)
            full[:, keep] = v
        else:
            full = torch.zeros(INIT_R, v.shape[1])
            full[keep] = v
        out[k] = full
    return out


def trained_adapter_checks(model, batch, run: dict) -> dict:
    res = {}
    with recorded_warnings() as caught:
        acfg, save_caught = save_adapter(model, TRAINED_DIR)
    sd = load_file(TRAINED_DIR / "adapter_model.safetensors")
    pattern = run["final_pattern"]
    assert set(sd) == set(run["final"])
    # the pruned tensors are the kept rows (A, E) / columns (B) of the live ones
    for k, v in sd.items():
        keep = torch.tensor(pattern[module_of_key(k)])
        full = run["final"][k]
        assert torch.equal(v, full[:, keep] if k.endswith(".lora_B") else full[keep]), k
    # every pruned E was exactly 0 in the live model
    for m, keep in pattern.items():
        E = run["final"][f"{m}.lora_E"].view(-1)
        assert all(E[i] == 0 for i, kept in enumerate(keep) if not kept), m
    res["pruned_tensors_equal_kept_rows_of_final_bitwise"] = True
    res["rank_pattern_in_config_equals_final_pattern"] = (
        {module_of_key(live_to_key(n + ".default")): v for n, v in acfg["rank_pattern"].items()} == pattern
    )
    assert res["rank_pattern_in_config_equals_final_pattern"]
    res["keys_and_shapes"] = {k: list(v.shape) for k, v in sorted(sd.items())}
    res["adapter_config_json"] = acfg
    res["save_warnings"] = warning_lines(list(caught) + list(save_caught))

    # ---- PEFT reloads its own pruned adapter? ----
    reload = {}
    try:
        with recorded_warnings() as caught:
            m2 = PeftModel.from_pretrained(load_base(), TRAINED_DIR)
        m2.eval()
        with torch.no_grad():
            logits = eval_logits(m2, batch)
        layers = svd_layers(m2)
        reload["ok"] = True
        reload["peft_reload_max_abs_diff"] = max_abs(logits, run["trained_logits"])
        reload["bitwise_equal"] = bool(torch.equal(logits, run["trained_logits"]))
        reload["live_ranks_after_load"] = {n: int(mod.r[ADAPTER_NAME]) for n, mod in layers.items()}
        reload["ranknum_after_load"] = sorted({mod.ranknum[ADAPTER_NAME].item() for mod in layers.values()})
        reload["lora_A_rows_after_load"] = {n: mod.lora_A[ADAPTER_NAME].shape[0] for n, mod in layers.items()}
        reload["warnings"] = warning_lines(caught)
        assert reload["peft_reload_max_abs_diff"] < 1e-5, reload
    except Exception as e:  # noqa: BLE001
        reload["ok"] = False
        reload["exception"] = f"{type(e).__name__}: {e}"
        reload["traceback"] = traceback.format_exc().splitlines()[-8:]

    # ---- workaround / alternative: zero-pad to init_r and load without rank_pattern
    cfg = AdaLoraConfig.from_pretrained(TRAINED_DIR)
    cfg.rank_pattern = None
    cfg.inference_mode = True
    m3 = PeftModelForCausalLM(load_base(), cfg)
    padded = pad_pruned(sd, pattern)
    with torch.no_grad():
        live = dict(m3.named_parameters())
        for k, v in padded.items():
            name = k + f".{ADAPTER_NAME}"
            assert live[name].shape == v.shape, k
            live[name].copy_(v)
    m3.eval()
    with torch.no_grad():
        logits3 = eval_logits(m3, batch)
    reload["zero_padded_init_r_load_max_abs_diff"] = max_abs(logits3, run["trained_logits"])
    reload["zero_padded_init_r_load_bitwise_equal"] = bool(torch.equal(logits3, run["trained_logits"]))
    reload["zero_padded_note"] = (
        "alternative load: AdaLoraConfig.from_pretrained(trained_adapter) with rank_pattern=None "
        "(layers built at init_r, ranknum = init_r), the pruned tensors scattered back into "
        "init_r rows (A, E) / columns (B) at the rank_pattern True positions, zeros elsewhere, "
        "copied into the parameters. Same function as the pruned model (pruned triplets have "
        "E = 0), used as a cross-check and as the workaround if PEFT's own load fails"
    )
    res["reload"] = reload
    return res


def main() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    _, batch = load_batch()
    fresh_dir(OUT_DIR)

    model, init = build_initial_adapter()
    with recorded_warnings() as caught:
        run = train(model, batch)
    orth_grad, reg = regulariser_checks(batch, run)
    trained = trained_adapter_checks(model, batch, run)
    reload = trained["reload"]

    modules = run["modules"]
    final_ranks = {m: int(sum(run["final_pattern"][m])) for m in modules}
    assert sum(final_ranks.values()) == TARGET_R * N_MODULES, final_ranks
    params = run["params"]
    checks = {
        **reg["checks"],
        "loss_equals_ce_plus_half_orth_reg_bitwise_every_step": True,
        "update_and_allocate_reimplementation_bitwise_every_step": True,
        "budget_schedule_formula_matches": True,
        "ema_state_reset_at_step_5": True,
        **{k: v for k, v in trained.items() if isinstance(v, bool)},
        "step1_clip_coef": clip_coef(run["grad_norms"][0]),
        "clip_acted_at_steps": [i + 1 for i, g in enumerate(run["grad_norms"]) if g > MAX_NORM],
    }

    ref = {
        "logits": run["logits"],
        "ce_loss": run["ce_loss"].reshape(1),
        "orth_reg": run["orth_reg"].reshape(1),
        "loss": run["loss"].reshape(1),
        **{f"grad.{k}": g for k, g in run["grads"].items()},
        **{f"orth_grad.{k}": g for k, g in orth_grad.items()},
        "losses": torch.tensor(run["losses"]),
        "ce_losses": torch.tensor(run["ce_losses"]),
        "orth_regs": torch.tensor(run["orth_regs"]),
        "grad_norms": torch.tensor(run["grad_norms"]),
        "budgets": torch.tensor(run["budgets"], dtype=torch.float32),
        **{f"rank_after_step_{s}": run["ranks"][s] for s in RANK_STEPS},
        **{f"exp_avg_ipt.{k}": v for k, v in run["exp_avg_ipt"].items()},
        **{f"exp_avg_unc.{k}": v for k, v in run["exp_avg_unc"].items()},
        **{f"final.{k}": v for k, v in run["final"].items()},
        "trained_logits": run["trained_logits"],
    }

    scaling = ALPHA / (torch.tensor(float(INIT_R)) + 1e-5).item()
    info = {
        "case": "adalora",
        "source_case": "llama_tied: model/ (loaded as is), the batch in reference.safetensors and "
        "the optimizer settings of info.json are reused; nothing there is regenerated",
        "adapter": {
            "config": (
                "AdaLoraConfig(task_type='CAUSAL_LM', init_r=%d, target_r=%d, lora_alpha=%d, "
                "lora_dropout=0.0, target_modules=<the 7 llama linears>, tinit=%d, tfinal=%d, "
                "deltaT=%d, beta1=%s, beta2=%s, orth_reg_weight=%s, total_step=%d); every other "
                "field at its default (r=8 is unused by AdaLoRA, init_lora_weights=True, "
                "fan_in_fan_out=False, bias='none', rank_pattern=None)"
                % (INIT_R, TARGET_R, ALPHA, TINIT, TFINAL, DELTA_T, BETA1, BETA2, ORTH_REG_WEIGHT, TOTAL_STEP)
            ),
            "init_r": INIT_R, "target_r": TARGET_R, "lora_alpha": ALPHA, "tinit": TINIT,
            "tfinal": TFINAL, "deltaT": DELTA_T, "beta1": BETA1, "beta2": BETA2,
            "orth_reg_weight": ORTH_REG_WEIGHT, "total_step": TOTAL_STEP, "lora_dropout": 0.0,
            "target_modules": sorted(ALL7),
            "init": (
                "torch.manual_seed(%d); get_peft_model(base, config) -> PEFT's init "
                "(SVDLinear.update_layer: A = randn(r, in), E = randn(r, 1), B = randn(out, r), "
                "then reset_lora_parameters: E zeros_, A normal_(0, 0.02), B normal_(0, 0.02), all "
                "from the global RNG); then every lora_E := %s * torch.randn([r, 1], "
                "generator=torch.Generator().manual_seed(%d)), one draw per module from that ONE "
                "generator in named_parameters order. With PEFT's E = 0 neither A nor B gets a "
                "loss gradient (only the regulariser's)." % (SEED, E_STD, SEED)
            ),
            "peft_init_A_B_std_observed": init["peft_init_A_B_std_observed"],
            "key_format": (
                "<module>.lora_A [r, in], <module>.lora_E [r, 1], <module>.lora_B [out, r]: NO "
                "'.weight' suffix and no adapter name (live names <module>.lora_A.default, "
                "ParameterDict entries), e.g. base_model.model.model.layers.0.self_attn.q_proj.lora_A. "
                "ranknum (a non-trainable [1] parameter = r) is NOT saved. float32."
            ),
            "keys_and_shapes": init["keys_and_shapes"],
            "adapter_config_keys": sorted(init["adapter_config_json"]),
            "adapter_config_json": init["adapter_config_json"],
            "peft_warnings": init["warnings"],
            "trainable_params": init["trainable_params"],
            "all_params": init["all_params"],
            "print_trainable_parameters": init["print_trainable_parameters"],
        },
        "modules": modules,
        "rank_pattern_key_of_module": {m: m.removeprefix("base_model.model.") + ".lora_E" for m in modules},
        "scaling": {
            "peft": "forward: result += (dropout(x) @ (lora_A * lora_E).T @ lora_B.T) * scaling / "
            "ranknum, with scaling = lora_alpha (%d, a python int; alpha itself, NOT alpha/r) and "
            "ranknum = self.ranknum + 1e-5 (a float32 tensor, ranknum = init_r = %d); i.e. multiply "
            "by 8, then divide by float32(6 + 1e-5)" % (ALPHA, INIT_R),
            "effective": scaling,
            "ranknum": float(INIT_R),
            "ranknum_note": "ranknum stays init_r for the whole run (masking does not change it) and "
            "on load of a pruned adapter resize_modules_by_rank_pattern copies the old ranknum "
            "(init_r) back after update_layer(rank) set it to rank, so the effective scale of a "
            "pruned adapter is still alpha/(init_r + 1e-5); for a module pruned to rank 0 ranknum "
            "stays 0 (no copy) but the branch is empty",
            "merge": "get_delta_weight = transpose(B @ (A * E), fan_in_fan_out) * scaling / (ranknum + 1e-5)",
        },
        "adalora_formulas": {
            "source": "peft %s: tuners/adalora/layer.py (SVDLinear.forward, RankAllocator), "
            "tuners/adalora/model.py (AdaLoraModel.forward, update_and_allocate, "
            "resize_modules_by_rank_pattern, resize_state_dict_by_rank_pattern, "
            "_get_adapter_state_dict)" % versions()["peft"],
            "loss": "AdaLoraModel.forward: outputs = self.model.forward(...); if outputs.loss is a "
            "tensor: outputs.loss += orth_reg_weight * R (in place on the HF loss), "
            "R = (sum over named_parameters with 'lora_A' or 'lora_B' and the adapter name in the "
            "name, in named_parameters order, of torch.norm(cov - I, p='fro')) / count; cov = A @ A.T "
            "[r, r] for lora_A, B.T @ B [r, r] for lora_B; count = 28 here. Not squared. Added only "
            "when labels are passed (no loss -> no regulariser). Uses the FULL init_r matrices "
            "(masked triplets' A rows / B columns included: masking zeroes E only)",
            "regulariser_gradient": "d(w R)/dA = (w/n) * 2 (A A^T - I) A / ||A A^T - I||_F; "
            "d(w R)/dB = (w/n) * 2 B (B^T B - I) / ||B^T B - I||_F; w = 0.5, n = 28; none for E",
            "importance": "RankAllocator.update_ipt, for every param with 'lora_' and the adapter "
            "name (A, E, B): I = |p * p.grad| elementwise, with p AFTER optimizer.step() and "
            "p.grad the CLIPPED gradient of that step (update_and_allocate runs after "
            "optimizer.step(), before zero_grad); exp_avg_ipt = beta1 * exp_avg_ipt + (1 - beta1) "
            "* I; exp_avg_unc = beta2 * exp_avg_unc + (1 - beta2) * |I - exp_avg_ipt| (the NEW "
            "exp_avg_ipt); both start at 0 (zeros_like at the first update)",
            "score": "s = exp_avg_ipt * exp_avg_unc elementwise; triplet score of module m, index i: "
            "s_E[i, 0] + (mean over in of s_A[i, :] + mean over out of s_B[:, i]) (PEFT: "
            "cat([mean_A [r,1], mean_B [r,1]], dim=1).sum(dim=1), then + E)",
            "budget_schedule": "init_bgt = sum of lora_A rows = 84, target_bgt = target_r * #modules "
            "= 42. step <= tinit: (init_bgt, mask=False); step > total_step - tfinal: (target_bgt, "
            "True); else mul = 1 - (step - tinit) / (total_step - tfinal - tinit), budget = "
            "int((init_bgt - target_bgt) * mul**3 + target_bgt) (truncation), mask = step %% deltaT == 0",
            "threshold": "mask_threshold = torch.kthvalue(cat(all triplet scores), k = init_bgt - "
            "budget)[0] (the k-th SMALLEST, 1-based); E.masked_fill_(score <= threshold, 0.0); "
            "rank_pattern[name of lora_E] = (~(score <= threshold)).view(-1).tolist(). Ties at the "
            "threshold mask more than k triplets; k = 0 (budget == init_bgt with a mask) would "
            "raise in kthvalue (does not happen with these settings: the mask only runs for step "
            ">= 2 where budget < init_bgt)",
            "update_and_allocate(step)": "AdaLoraModel: if step < total_step - tfinal (steps 1..4): "
            "update_ipt, then mask_to_budget(budget_schedule(step)) if its mask flag is set (steps "
            "2..4), and lora_config.rank_pattern = that pattern; elif step == total_step - tfinal "
            "(step 5): NO importance update, force mask with budget_schedule(5) = target_bgt using "
            "the step-4 EMAs, rank_pattern = it, then reset_ipt() (EMAs emptied); elif step > "
            "total_step - tfinal (step 6): mask_using_rank_pattern (E of pruned triplets := 0 "
            "again, nothing re-scored)",
            "masking_is_soft": "masking only zeroes E in place; A, B and the optimizer state are "
            "untouched, so the next AdamW step moves a masked E off 0 again (momentum, and its "
            "gradient is not zero) and a triplet masked at one step can be kept at the next; the "
            "pattern is final from step 5 on, and steps 5 and 6 re-zero the pruned E after their "
            "update. The module shapes never change during training",
            "save": "save_pretrained with rank_pattern set: _get_adapter_state_dict drops ranknum, "
            "strips '.default' from the rank_pattern keys (in the live config too) and "
            "resize_state_dict_by_rank_pattern keeps lora_E[rank_idx], lora_A[rank_idx], "
            "lora_B[:, rank_idx] (boolean index; a tensor is left as is when the kept count equals "
            "its size); adapter_config.json then holds rank_pattern {<module path relative to the "
            "inner model>.lora_E: [6 booleans]}",
            "load": "PeftModel.from_pretrained builds every layer at init_r, then "
            "_remap_adapter_state_dict_for_load -> resize_modules_by_rank_pattern: per entry "
            "update_layer(adapter, rank = sum(pattern), lora_alpha, config) (new randn tensors of "
            "the pruned size, ranknum = rank), then copies the kept rows of the old init-r tensors "
            "and the OLD ranknum (= init_r) into them (rank > 0 only); then load_state_dict loads "
            "the pruned file",
        },
        "optimizer": {
            "type": "torch.optim.AdamW, one param group with all 42 A/E/B tensors (named_parameters "
            "order), all decayed",
            "lr": LR, "betas": list(BETAS), "eps": EPS, "weight_decay": WD, "amsgrad": False,
            "max_norm": MAX_NORM,
            "clip": CLIP_DESC + "; params = all 42 A/E/B tensors",
            "steps": TOTAL_STEP,
            "loop": "for step in 1..6: zero_grad -> train-mode forward with labels (PEFT loss = CE + "
            "0.5 R) -> backward -> clip_grad_norm_ -> AdamW step -> "
            "model.base_model.update_and_allocate(step)",
            "losses": run["losses"],
            "ce_losses": run["ce_losses"],
            "orth_regs": run["orth_regs"],
            "grad_norms_pre_clip": run["grad_norms"],
            "clip_coefs": [clip_coef(n) for n in run["grad_norms"]],
        },
        "budgets": run["budgets"],
        "budget_mask_flags": run["mask_ind"],
        "init_bgt": INIT_R * N_MODULES,
        "target_bgt": TARGET_R * N_MODULES,
        "masking_per_step": run["mask_log"],
        "ranks_per_module_after_step": {str(s): v for s, v in run["ranks_per_step"].items()},
        "masked_E_max_abs_after_next_adamw_step": {str(s): v for s, v in run["regrowth"].items()},
        "final_ranks": final_ranks,
        "final_rank_total": sum(final_ranks.values()),
        "trained_adapter": {
            "dir": "trained_adapter/ (PEFT save_pretrained after step 6, normalised like adapter/)",
            "keys_and_shapes": trained["keys_and_shapes"],
            "adapter_config_json": trained["adapter_config_json"],
            "save_warnings": trained["save_warnings"],
        },
        "trained_adapter_reload": reload,
        "peft_reload_max_abs_diff": reload.get("peft_reload_max_abs_diff"),
        "reference_keys": {
            "logits": "[B,T,V] train-mode forward of the initial adapter",
            "ce_loss": "[1] HF causal-LM cross-entropy of that forward (no regulariser)",
            "orth_reg": "[1] R (see adalora_formulas.loss)",
            "loss": "[1] PEFT's outputs.loss = ce_loss + 0.5 * orth_reg",
            "grad.<K>": "raw gradient of PEFT's loss after the first backward, every A/E/B",
            "orth_grad.<K>": "gradient of 0.5 * R alone, every A/B",
            "losses/ce_losses/orth_regs/grad_norms": "[6] per step (before its update); grad norms pre-clip",
            "budgets": "[6] budget_schedule(step)[0], step 1..6",
            "rank_after_step_<s>": "[14, 6] 0/1 rank_pattern after update_and_allocate(s), s = 2..5, "
            "rows in 'modules' order",
            "exp_avg_ipt.<K> / exp_avg_unc.<K>": "RankAllocator EMAs after update_and_allocate(4), every A/E/B",
            "final.<K>": "every A/E/B after step 6, full init_r size",
            "trained_logits": "[B,T,V] eval-mode logits after step 6",
            "batch": "not copied: read input_ids, attention_mask, labels from "
            "llama_tied/reference.safetensors",
        },
        "peft_warnings": warning_lines(caught),
        "checks": checks,
        "diagnostics": reg["diag"],
        "versions": {**versions(), "torch_num_threads": torch.get_num_threads()},
    }
    row = write_case(OUT_DIR, ref, info)
    print(f"adalora {row['size'] / 1024:.1f} KB")
    print("losses    ", " ".join(f"{x:.6f}" for x in run["losses"]))
    print("ce_losses ", " ".join(f"{x:.6f}" for x in run["ce_losses"]))
    print("orth_regs ", " ".join(f"{x:.6f}" for x in run["orth_regs"]))
    print("grad_norms", " ".join(f"{x:.5f}" for x in run["grad_norms"]))
    print("budgets   ", run["budgets"])
    print("final ranks", final_ranks)
    print("reload", json.dumps({k: v for k, v in reload.items() if k != "traceback"}))
    print("checks", json.dumps(checks))
    print("diag", json.dumps(reg["diag"]))


if __name__ == "__main__":
    main()
