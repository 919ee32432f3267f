"""`distill train --method onpolicy`: the student learns from the teacher's scores of its OWN samples.

    distill serve --model embedded:teacher --port 8000 &
    distill train --method onpolicy --teacher-url http://127.0.0.1:8000 --data runs/filtered --output runs/student-op

SFT and logit KD train on text the teacher wrote (off-policy): the student never sees the states its own
mistakes lead to. Here every step

  1. the student samples a completion for each prompt of the batch (transformers `generate`),
  2. the teacher's server scores those tokens in one prefill pass (vLLM `prompt_logprobs` on the
     completions endpoint: no teacher generation at all, so a teacher token costs a fraction of a
     generated one),
  3. the student minimizes the reverse KL(student || teacher) estimated from its samples
     (distill.kd_losses.sampled_reverse_kl_loss: per piece of text, log p - log q as a negative reward).

Teacher and student may use different tokenizers: each completion is cut into the shortest spans both
tokenizers agree on (distill.align.spans), and log-probabilities are compared per span (per token when
the tokenizer is shared). The end-of-turn token is scored too when both tokenizers spell it alike, so
the student also learns where the teacher would stop.

GKD's mixture (Agarwal et al. 2024): `--onpolicy-lambda` < 1 takes that share of sequences from the
teacher's traces in --data instead of the student's samples (off-policy), and `--onpolicy-loss jsd`
uses the generalized JSD with `--onpolicy-beta` on the teacher's top-K (`--onpolicy-top-k`) per token
instead of the sampled reverse KL (which needs on-policy samples: with lambda < 1 use jsd).

Budget: `train_metrics.json` counts the teacher tokens scored (prefill) and the student tokens sampled.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from distill import config as config_mod
from distill.config import TrainConfig
from distill.errors import DistillError
from distill.models import resolve_model
from distill.records import read_jsonl, write_json

# --------------------------------------------------------------------------------------------------
# The teacher's scores through its server


@dataclass
class Scored:
    """The teacher's log-probability of each token of one sequence's completion, and its top-K there."""

    logprobs: list[float]  # [T] log q(token_t | tokens_<t)
    top: list[dict[int, float]]  # [T] {token id: log-probability} of the teacher's top-K (empty when K = 0)


async def _score_one(
    session: aiohttp.ClientSession, url: str, model: str, ids: list[int], start: int, k: int, timeout: float
) -> Scored:
    body = {"model": model, "prompt": ids, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": k}
    err = ""
    for attempt in range(4):
        if attempt:
            await asyncio.sleep(min(2.0**attempt, 10.0))
        try:
            async with session.post(url + "/completions", json=body, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                text = await r.text()
                if r.status != 200:
                    err = f"HTTP {r.status}: {text[:200]}"
                    if r.status < 500 and r.status != 429:
                        break
                    continue
                entries = json.loads(text)["choices"][0]["prompt_logprobs"]
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            err = f"{type(e).__name__}: {e}"
            continue
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise DistillError(
                f"the teacher server at {url} returned no prompt_logprobs ({type(e).__name__}: {e}); on-policy "
                "distillation needs a vLLM server (its completions endpoint scores prompt tokens)"
            ) from None
        if not isinstance(entries, list) or len(entries) != len(ids):
            raise DistillError(f"the teacher server at {url} scored {len(entries or [])} of {len(ids)} prompt tokens")
        lps, tops = [], []
        for pos in range(start, len(ids)):
            entry = {int(t): v for t, v in (entries[pos] or {}).items()}
            if ids[pos] not in entry:
                raise DistillError(f"the teacher server at {url} gave no log-probability for prompt token {pos}")
            lps.append(float(entry[ids[pos]]["logprob"]))
            tops.append({t: float(v["logprob"]) for t, v in entry.items() if k and int(v.get("rank", k + 1)) <= k})
        return Scored(lps, tops)
    raise DistillError(f"the teacher server at {url} failed to score a sequence: {err}")


def score(
    url: str, model: str, sequences: list[tuple[list[int], int]], k: int = 0, timeout: float = 300.0
) -> list[Scored]:
    """Score each (teacher token ids, completion start) with the teacher: its log-probabilities of the
    completion tokens (and its top-K at each, when k > 0), all sequences in flight at once."""

    async def main() -> list[Scored]:
        async with aiohttp.ClientSession() as session:
            return await asyncio.gather(*(_score_one(session, url, model, ids, s, k, timeout) for ids, s in sequences))

    return asyncio.run(main())


# --------------------------------------------------------------------------------------------------
# Prompts


def load_prompts_for(cfg: TrainConfig) -> list[dict]:
    """[{prompt: [messages], completion: str | None}]: from --data (kept rows; their answers serve the
    off-policy share) or, with --data builtin, the built-in train problems (no answers)."""
    if cfg.data == "builtin":
        from distill.config import DEFAULT_PROMPT_TEMPLATE
        from distill.generate import build_messages
        from distill.prompts import load_prompts

        probs = load_prompts("builtin", split="train", num_prompts=512, seed=0)
        return [{"prompt": build_messages(p["problem"], DEFAULT_PROMPT_TEMPLATE), "completion": None} for p in probs]
    p = Path(cfg.data)
    if p.is_dir():
        p = p / "kept.jsonl"
    out = []
    for n, row in enumerate(read_jsonl(p), start=1):
        msgs = row.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise DistillError(f"{p}, row {n}: 'messages' must be a list of chat turns")
        if msgs[-1].get("role") == "assistant":
            out.append({"prompt": msgs[:-1], "completion": msgs[-1]["content"]})
        else:
            out.append({"prompt": msgs, "completion": None})
        if cfg.max_examples and len(out) >= cfg.max_examples:
            break
    if not out:
        raise DistillError(f"{p}: no prompts")
    return out


# --------------------------------------------------------------------------------------------------
# Training


def _settings(cfg: TrainConfig) -> dict:
    """The few SFTConfig-style keys this loop honours, with distill's defaults."""
    from distill.train import SFT_DEFAULTS

    s = {**SFT_DEFAULTS, **cfg.sft}
    steps = int(s.get("max_steps") or 0)
    if steps <= 0:
        raise DistillError("onpolicy trains for a number of steps: set max_steps (each step samples a new batch)")
    return {
        "steps": steps,
        "batch": int(s["per_device_train_batch_size"]),
        "lr": float(s["learning_rate"]),
        "scheduler": str(s.get("lr_scheduler_type", "constant")),
        "warmup": float(s.get("warmup_steps", 0) or 0),
        "max_grad_norm": float(s.get("max_grad_norm", 1.0)),
        "bf16": bool(s.get("bf16", False)),
        "seed": int(s.get("seed", 0)),
        "logging_steps": int(s.get("logging_steps", 1)),
    }


def run(cfg: TrainConfig) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.align import TokenBytes, align, same_vocabulary, spans, vocab_map
    from distill.kd_losses import sampled_reverse_kl_loss, topk_generalized_jsd
    from distill.server import connect, has_cuda
    from distill.train import _add_eos_to_generation_config, _check_hardware, configure_tokenizer

    _check_hardware(cfg, has_cuda())
    if cfg.onpolicy_loss not in ("reverse-kl", "jsd"):
        raise DistillError(f"onpolicy_loss must be reverse-kl or jsd, got {cfg.onpolicy_loss!r}")
    if cfg.onpolicy_loss == "reverse-kl" and cfg.onpolicy_lambda < 1.0:
        raise DistillError("onpolicy_lambda < 1 mixes in the teacher's own traces: use --onpolicy-loss jsd with it")
    if cfg.onpolicy_loss == "jsd" and cfg.onpolicy_top_k < 1:
        raise DistillError("--onpolicy-loss jsd compares distributions: set --onpolicy-top-k K (e.g. 20)")
    if not cfg.teacher_url:
        raise DistillError(
            "--method onpolicy needs the teacher's server: start it with `distill serve --model "
            f"{cfg.teacher}` and pass --teacher-url"
        )
    if cfg.push_to_hub:
        from distill.hub import check_repo_id

        check_repo_id(cfg.push_to_hub)
    if cfg.lora_r or cfg.launcher:
        raise DistillError("--method onpolicy trains in one process without LoRA for now; drop --lora-r/--launcher")
    st = _settings(cfg)
    server = connect(cfg.teacher_url)
    prompts = load_prompts_for(cfg)
    if cfg.onpolicy_lambda < 1.0 and not any(p["completion"] for p in prompts):
        raise DistillError("onpolicy_lambda < 1 takes sequences from the teacher's traces, and --data has none")
    out = Path(cfg.output)  # created only when the trained model is saved: a failed run leaves nothing

    random.seed(st["seed"])
    torch.manual_seed(st["seed"])
    path = resolve_model(cfg.model)
    tok = AutoTokenizer.from_pretrained(path)
    configure_tokenizer(tok, cfg, cfg.model)
    teacher_tok = AutoTokenizer.from_pretrained(resolve_model(cfg.teacher))
    same = same_vocabulary(tok, teacher_tok)
    s_bytes = TokenBytes(tok)
    t_bytes = s_bytes if same else TokenBytes(teacher_tok)
    mapping = None if same else vocab_map(t_bytes, s_bytes)
    t_eos = teacher_tok.convert_tokens_to_ids(tok.eos_token) if tok.eos_token in teacher_tok.get_vocab() else None
    dtype = torch.bfloat16 if st["bf16"] else torch.float32
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    _add_eos_to_generation_config(model, tok.eos_token_id)
    opt = torch.optim.AdamW(model.parameters(), lr=st["lr"], weight_decay=0.0)
    warm = int(st["warmup"] * st["steps"]) if 0 < st["warmup"] < 1 else int(st["warmup"])

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        if st["scheduler"] == "cosine":
            return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, st["steps"] - warm)))
        return 1.0

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    order = list(range(len(prompts)))
    random.shuffle(order)
    cursor = 0
    history: list[dict] = []
    totals = {"teacher_tokens": 0, "student_tokens": 0, "off_policy_sequences": 0}
    print(
        f"[distill] onpolicy: {cfg.model} learns from {server.model} at {server.url} ({st['steps']} steps x "
        f"{st['batch']} prompts, {cfg.onpolicy_loss}, {'one tokenizer' if same else 'two tokenizers, byte spans'})",
        flush=True,
    )
    start_time = time.monotonic()
    for step in range(st["steps"]):
        t0 = time.monotonic()
        batch = []
        for _ in range(st["batch"]):
            if cursor == len(order):
                random.shuffle(order)
                cursor = 0
            batch.append(prompts[order[cursor]])
            cursor += 1
        # 1. sequences: the student's samples (on-policy) or, for a share 1 - lambda, the teacher's traces
        prompt_ids = [tok.apply_chat_template(b["prompt"], add_generation_prompt=True, tokenize=True) for b in batch]
        prompt_ids = [
            list(p["input_ids"]) if isinstance(p, dict) or hasattr(p, "keys") else list(p) for p in prompt_ids
        ]
        off = [bool(b["completion"]) and random.random() >= cfg.onpolicy_lambda for b in batch]
        completions = _sample(model, tok, [p for p, o in zip(prompt_ids, off, strict=True) if not o], cfg, torch)
        seqs: list[list[int]] = []
        it = iter(completions)
        for b, o in zip(batch, off, strict=True):
            if o:
                ids = tok(b["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                totals["off_policy_sequences"] += 1
            else:
                ids = next(it)
            seqs.append(ids)
        # 2. the teacher scores the same text in its own tokens
        requests, t_pieces_all = [], []
        for b, ids in zip(batch, seqs, strict=True):
            text_ids = [i for i in ids if s_bytes.pieces[i] is not None]
            ended = bool(ids) and ids[-1] == tok.eos_token_id
            text = tok.decode(text_ids)
            tp = teacher_tok.apply_chat_template(b["prompt"], add_generation_prompt=True, tokenize=True)
            tp = list(tp["input_ids"]) if hasattr(tp, "keys") else list(tp)
            tc = list(text_ids if same else teacher_tok(text, add_special_tokens=False)["input_ids"])
            if ended and t_eos is not None:
                tc.append(t_eos)
            requests.append((tp + tc, len(tp)))
            t_pieces_all.append(tc)
        scored = score(server.url, server.model, requests, k=cfg.onpolicy_top_k)
        totals["teacher_tokens"] += sum(len(ids) for ids, _ in requests)
        totals["student_tokens"] += sum(len(s) for s in seqs)
        # 3. the student's log-probabilities of its tokens, with grad
        model.train()
        n = max(len(p) + len(s) for p, s in zip(prompt_ids, seqs, strict=True))
        input_ids = torch.full((len(batch), n), tok.pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(batch), n), dtype=torch.long)
        for r, (p, s) in enumerate(zip(prompt_ids, seqs, strict=True)):
            input_ids[r, : len(p) + len(s)] = torch.tensor(p + s)
            attn[r, : len(p) + len(s)] = 1
        logits = model(input_ids=input_ids.to(device), attention_mask=attn.to(device)).logits.float()
        losses, kls, used = [], [], 0
        for r, (p, s) in enumerate(zip(prompt_ids, seqs, strict=True)):
            if not s:
                continue
            pos = torch.arange(
                len(p) - 1, len(p) + len(s) - 1, device=device
            )  # logits at pos predict the completion tokens
            lg = logits[r, pos]
            target = torch.tensor(s, device=device)
            s_lp = torch.log_softmax(lg, dim=-1).gather(-1, target[:, None])[:, 0]
            sc = scored[r]
            tc = t_pieces_all[r]
            t_pieces = [t_bytes.pieces[i] if i != t_eos else b"\x00EOT" for i in tc]
            s_pieces = [s_bytes.pieces[i] if i != tok.eos_token_id else b"\x00EOT" for i in s]
            if cfg.onpolicy_loss == "reverse-kl":
                t_span, s_span, nspan = spans(t_pieces, s_pieces)
                if nspan == 0:
                    continue
                s_in, t_in = s_span >= 0, t_span >= 0
                s_sum = torch.zeros(nspan, device=device).index_add(
                    0, torch.as_tensor(s_span[s_in], device=device), s_lp[torch.as_tensor(s_in, device=device)]
                )
                t_lp = torch.tensor(sc.logprobs, device=device)[torch.as_tensor(t_in, device=device)]
                t_sum = torch.zeros(nspan, device=device).index_add(
                    0, torch.as_tensor(t_span[t_in], device=device), t_lp
                )
                loss, m = sampled_reverse_kl_loss(s_sum[None], t_sum[None])
                kls.append(m["reverse_kl"])
            else:
                k = cfg.onpolicy_top_k
                top_ids = np.full((len(tc), k), -1, dtype=np.int64)
                top_lps = np.full((len(tc), k), -np.inf, dtype=np.float32)
                for i, d in enumerate(sc.top):
                    for c, (tid, lp) in enumerate(sorted(d.items(), key=lambda kv: -kv[1])[:k]):
                        top_ids[i, c], top_lps[i, c] = tid, lp
                a = align(np.array(tc), top_ids, top_lps, s, t_bytes, s_bytes, mapping)
                if not a.valid.any():
                    continue
                sel = torch.as_tensor(a.valid, device=device)
                loss = topk_generalized_jsd(
                    lg[sel],
                    torch.as_tensor(a.kd_ids, device=device)[sel],
                    torch.as_tensor(a.kd_logprobs, device=device)[sel],
                    beta=cfg.onpolicy_beta,
                )
                kls.append(float(loss.detach()))
            losses.append(loss)
            used += 1
        if losses:
            total = torch.stack(losses).mean()
            opt.zero_grad(set_to_none=True)
            total.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), st["max_grad_norm"]))
            opt.step()
        else:
            grad_norm = 0.0
        sched.step()
        entry = {
            "step": step + 1,
            "divergence": round(float(np.mean(kls)), 4) if kls else None,
            "completion_tokens": round(float(np.mean([len(s) for s in seqs])), 1),
            "stopped": round(float(np.mean([bool(s) and s[-1] == tok.eos_token_id for s in seqs])), 3),
            "sequences": used,
            "grad_norm": round(grad_norm, 4),
            "learning_rate": sched.get_last_lr()[0],
            "seconds": round(time.monotonic() - t0, 1),
        }
        history.append(entry)
        if (step + 1) % st["logging_steps"] == 0 or step + 1 == st["steps"]:
            print(f"[distill] onpolicy {json.dumps(entry)}", flush=True)

    seconds = time.monotonic() - start_time
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".saving"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    model.generation_config.save_pretrained(str(tmp))
    from distill.train import _replace_files

    _replace_files(tmp, out)
    divs = [h["divergence"] for h in history if h["divergence"] is not None]
    metrics = {
        "method": "full",
        "method_detail": f"onpolicy ({cfg.onpolicy_loss})",
        "steps": st["steps"],
        "seconds": round(seconds, 1),
        "first_divergence": divs[0] if divs else None,
        "last_divergence": divs[-1] if divs else None,
        "same_tokenizer": same,
        **totals,
    }
    write_json(out / "log_history.json", history)
    config_mod.save(cfg, out, extra={"resolved_model": path})
    write_json(out / "train_metrics.json", metrics)  # last: its presence says the run finished
    if cfg.push_to_hub:
        from distill.modelcard import push_model

        metrics["hub_url"] = push_model(out, cfg.push_to_hub, private=cfg.hub_private, eval_results=cfg.eval_results)
        write_json(out / "train_metrics.json", metrics)
    print(
        f"[distill] onpolicy: {st['steps']} steps in {seconds:.0f} s, divergence {metrics['first_divergence']} -> "
        f"{metrics['last_divergence']}; {totals['teacher_tokens']} teacher tokens scored; model saved to {out}",
        flush=True,
    )
    return metrics


def _sample(model: Any, tok: Any, prompts: list[list[int]], cfg: TrainConfig, torch: Any) -> list[list[int]]:
    """The student's completions (token ids, ending with EOS when it stopped) for left-padded prompts."""
    if not prompts:
        return []
    model.eval()
    n = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), n), tok.pad_token_id, dtype=torch.long)
    attn = torch.zeros((len(prompts), n), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, n - len(p) :] = torch.tensor(p)
        attn[r, n - len(p) :] = 1
    with torch.no_grad():
        out = model.generate(
            input_ids=ids.to(model.device),
            attention_mask=attn.to(model.device),
            do_sample=cfg.onpolicy_temperature > 0,
            temperature=cfg.onpolicy_temperature if cfg.onpolicy_temperature > 0 else None,
            top_p=1.0,
            top_k=0,
            max_new_tokens=cfg.onpolicy_max_new_tokens,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
    result = []
    for row in out[:, n:].cpu().tolist():
        if tok.eos_token_id in row:
            row = row[: row.index(tok.eos_token_id) + 1]
        else:
            while row and row[-1] == tok.pad_token_id and tok.pad_token_id != tok.eos_token_id:
                row.pop()
        result.append(row)
    return result
