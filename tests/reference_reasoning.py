"""Independent reference implementations of SwiReasoning and Soft Thinking over a transformers
model, written from shared/spec/swireasoning.md (sections 1.3 and 2.2-2.3), greedy decoding.

A manual decode loop: prefill the prompt ids, then feed every generated position through
``inputs_embeds`` with transformers' own cache (fp32 model). Probabilities, entropies and soft
embeddings are computed in float64 from the fp32 logits. One prompt at a time: batch tests
compare rio_rt's batches with per-prompt runs of this code.

``dtype`` is the precision of that math (float64 in the tests; the latent benchmark passes the
model's dtype, to time the algorithm as a transformers user would run it).

Each run returns a dict of per-step lists in the shape of ``rio_rt.Trace.to_dict()`` plus
``tokens``, ``finish`` and ``fed`` (the input embedding fed after each step, float64).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch


def _prefill(model, prompt: Sequence[int], dtype=torch.float64):
    with torch.no_grad():
        out = model(input_ids=torch.tensor([list(prompt)]), use_cache=True)
    return out.logits[0, -1].to(dtype), out.past_key_values


def _feed(model, past, emb: torch.Tensor, dtype=torch.float64):
    with torch.no_grad():
        out = model(inputs_embeds=emb.to(model.dtype).view(1, 1, -1), past_key_values=past, use_cache=True)
    return out.logits[0, -1].to(dtype), out.past_key_values


def _entropy(p: torch.Tensor) -> float:
    return float(-(p * p.clamp(min=1e-12).log()).sum())


def _row(steps: Dict[str, List[Any]], **values: Any) -> None:
    for k, v in values.items():
        steps[k].append(v)


def _new_record() -> Dict[str, List[Any]]:
    return {k: [] for k in ("step", "mode", "entropy", "ref_entropy", "switched", "injected", "token_id",
                            "fed_soft", "fed")}


def swireasoning(model, prompt: Sequence[int], *, max_new_tokens: int, window: int, think_id: int,
                 end_think_id: int, eos_ids: Sequence[int], alpha0: float = 1.0, beta0: float = 0.7,
                 max_switch_count: Optional[int] = None, convergence_ids: Sequence[int] = (),
                 termination_ids: Sequence[int] = (), termination_max_tokens: int = 32,
                 step0_id: Optional[int] = None, math_ids: Sequence[int] = (), start_explicit: bool = False,
                 faithful: bool = False, dtype=torch.float64) -> Dict[str, Any]:
    """SwiReasoning under greedy decoding (spec 1.3, steps 1-12), one sequence."""
    E = model.get_input_embeddings().weight.detach().to(dtype)
    z, past = _prefill(model, prompt, dtype)
    mode = 1 if start_explicit else 0  # 0 latent, 1 explicit
    stay, ref_h, locked, count = 0, None, False, 0
    queue: List[int] = []
    budget = -1
    rec = _new_record()
    tokens: List[int] = []
    finish = "length"
    for step in range(max_new_tokens):
        p = torch.softmax(z, dim=-1)  # untempered, unfiltered (1.1)
        tok = int(torch.argmax(z))  # greedy: argmax of q_t = argmax of z_t
        locked = locked or tok == end_think_id  # 3: before any override
        injected = False
        if queue:  # 4
            tok = queue.pop(0)
            injected = True
        h = _entropy(p)  # 5
        to_normal = to_soft = False
        if step == 0:  # 6
            ref_h = h
        else:
            stay += 1
            to_normal = mode == 0 and h < ref_h
            to_soft = mode == 1 and h > ref_h and stay >= window and not locked
            if to_normal:
                mode = 1
            if to_soft:
                mode = 0
            if to_normal or to_soft:
                stay, ref_h = 0, h
            if to_normal and max_switch_count is not None:
                count += 1
        is_normal = mode == 1 or locked or tok in math_ids  # 7
        if injected and not faithful:
            is_normal = True  # clean: forced tokens are fed hard
        progress = step / max_new_tokens
        soft = p @ E  # 8
        if step == 0 and step0_id is not None:
            soft = 0.9 * soft + 0.1 * E[step0_id]
        normal = E[tok]
        if to_soft:
            alpha = alpha0 + (1 - alpha0) * progress
            soft = alpha * soft + (1 - alpha) * E[think_id]
        if to_normal and (faithful or not locked):
            beta = beta0 + (1 - beta0) * progress
            normal = beta * soft + (1 - beta) * E[end_think_id]
        fed = normal if is_normal else soft
        fed_soft = not is_normal or (to_normal and (faithful or not locked))
        if max_switch_count is not None and to_normal:  # 9
            c = max_switch_count
            if c <= count <= 2 * c:
                queue = list(convergence_ids)
            elif count > 2 * c:
                queue = list(termination_ids)
                budget = termination_max_tokens
        if budget >= 0:
            budget -= 1
        tokens.append(tok)  # 10
        _row(rec, step=step, mode="explicit" if mode == 1 or locked else "latent", entropy=h, ref_entropy=ref_h,
             switched="to_explicit" if to_normal else "to_latent" if to_soft else None, injected=injected,
             token_id=tok, fed_soft=bool(fed_soft), fed=fed)
        if tok in eos_ids:  # 11
            finish = "eos"
            break
        if budget == 0:
            finish = "budget"
            break
        z, past = _feed(model, past, fed, dtype)
    return {**rec, "tokens": tokens, "finish": finish}


def soft_thinking(model, prompt: Sequence[int], *, max_new_tokens: int, end_think_id: int, eos_ids: Sequence[int],
                  top_k: int = 10, filter_top_k: int = 30, top_p: float = 0.95, min_p: float = 0.001,
                  temperature: float = 0.6, cold_stop_entropy: float = 0.0, cold_stop_steps: int = 256,
                  start_explicit: bool = False) -> Dict[str, Any]:
    """Soft Thinking (spec 2.2-2.3) with a greedy answer phase, one sequence."""
    E = model.get_input_embeddings().weight.detach().double()
    z, past = _prefill(model, prompt)
    thinking = not start_explicit
    low = 0
    rec = _new_record()
    rec["concept"] = []
    tokens: List[int] = []
    finish = "length"
    for step in range(max_new_tokens):
        t = 1.0 if temperature == 0 else temperature
        probs = torch.softmax(z / t, dim=-1)
        h = _entropy(probs)
        switched, injected, fed_soft = None, False, False
        if thinking:
            k = 1 if temperature == 0 else top_k
            order = torch.argsort(probs, descending=True, stable=True)
            sp = probs[order]
            if filter_top_k > 0:
                sp, order = sp[:filter_top_k], order[:filter_top_k]
            sp = sp / sp.sum()
            if top_p < 1.0:
                cum = torch.cumsum(sp, 0)
                n = int((cum < top_p).sum()) + 1
                sp, order = sp[:n] / sp[:n].sum(), order[:n]
            keep = sp >= min_p * sp[0]
            sp, order = sp[keep] / sp[keep].sum(), order[keep]
            w, ids = sp[:k] / sp[:k].sum(), order[:k]
            tok = int(ids[0])
            if cold_stop_entropy > 0:
                low = low + 1 if h < cold_stop_entropy else 0
                if low >= cold_stop_steps:
                    tok, injected = end_think_id, True
            if tok == end_think_id:
                thinking, low, switched = False, 0, "to_explicit"
                fed = E[tok]
            else:
                fed = (w.unsqueeze(1) * E[ids]).sum(0)
                fed_soft = len(ids) > 1
            rec["concept"].append((ids.tolist(), w.tolist()))
        else:
            tok = int(torch.argmax(z))
            fed = E[tok]
            rec["concept"].append(None)
        tokens.append(tok)
        _row(rec, step=step, mode="latent" if thinking else "explicit", entropy=h, ref_entropy=None,
             switched=switched, injected=injected, token_id=tok, fed_soft=fed_soft, fed=fed)
        if tok in eos_ids:
            finish = "eos"
            break
        z, past = _feed(model, past, fed)
    return {**rec, "tokens": tokens, "finish": finish}
