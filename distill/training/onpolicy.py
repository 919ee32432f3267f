"""`distill train --method onpolicy`: the student learns from the teacher's scores of its OWN samples.

    distill serve --model embedded:teacher --port 8000 &
    distill train --method onpolicy --teacher-url http://127.0.0.1:8000 --data runs/filtered --output runs/student-op

SFT and logit KD train on text the teacher wrote (off-policy): the student never sees the states its own
mistakes lead to. Here, at every training step, `OnPolicyTrainer.training_step`

  1. has the student sample a completion for each prompt of the batch (transformers `generate`, under
     TRL's `unwrap_model_for_generation`, which gathers ZeRO-3 shards),
  2. has the teacher's server score those tokens in one prefill pass (vLLM `prompt_logprobs` on the
     completions endpoint: no teacher generation at all, so a teacher token costs a fraction of a
     generated one),
  3. hands the batch to `transformers.Trainer.training_step`, whose `compute_loss` here is the sampled
     reverse KL(student || teacher) (distill.training.kd_losses.sampled_reverse_kl_loss: per piece of
     text, log p - log q as a negative reward).

Everything else is the Trainer's, as for SFT and logit KD: optimizer and schedule, gradient accumulation,
LoRA (`--lora-r`), checkpoints and `--resume`, `--launcher` (each process samples its own prompts), and
saving and the Hub push through distill.training.base. This is the shape of TRL's GKD and
server-distillation trainers (swap the batch in `training_step`, score in `compute_loss`); TRL's own
DistillationTrainer is not used because it loads the teacher in the training process (or talks TRL's own
server protocol) and needs one tokenizer, while here the teacher is any vLLM OpenAI server and the two
tokenizers may differ.

Teacher and student may use different tokenizers: each completion is cut into the shortest spans both
tokenizers agree on (distill.training.align.spans), and log-probabilities are compared per span (per
token when the tokenizer is shared). The end-of-turn token is scored too when both tokenizers spell it
alike, so the student also learns where the teacher would stop.

GKD's mixture (Agarwal et al. 2024): `--onpolicy-lambda` < 1 takes that share of sequences from the
teacher's traces in --data instead of the student's samples (off-policy), and `--onpolicy-loss jsd` uses
the generalized JSD with `--onpolicy-beta` on the teacher's top-K (`--onpolicy-top-k`) per token instead
of the sampled reverse KL (which needs on-policy samples: with lambda < 1 use jsd).

Budget: train_metrics.json counts the teacher tokens scored (prefill) and the student tokens sampled.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import torch
from datasets import Dataset
from peft import get_peft_model
from transformers import AutoTokenizer, Trainer
from trl.models import unwrap_model_for_generation

from distill.common.client import build_messages
from distill.common.config import DEFAULT_PROMPT_TEMPLATE
from distill.common.errors import DistillError
from distill.common.models import resolve_model
from distill.common.records import KEPT, read_jsonl
from distill.common.server import connect
from distill.problems.prompts import load_prompts
from distill.training.align import TokenBytes, align, same_vocabulary, spans, vocab_map
from distill.training.base import (
    Prepared,
    add_eos_to_generation_config,
    announce,
    apply_length_policy,
    check_positions,
    checks_before_loading,
    configure_tokenizer,
    load_student,
    lora_config,
    method_args,
    prompt_length,
    without_system,
)
from distill.training.config import TrainConfig
from distill.training.kd_losses import chunked_token_logprobs, sampled_reverse_kl_loss, topk_generalized_jsd

END_OF_TURN = b"\x00EOT"  # the byte piece both tokenizers' end-of-turn tokens stand for in span alignment

# --------------------------------------------------------------------------------------------------
# The teacher's scores through its server


@dataclass
class Scored:
    """The teacher's log-probability of each token of one sequence's completion, and its top-K there."""

    logprobs: list[float]  # [T] log q(token_t | tokens_<t)
    top: list[dict[int, float]]  # [T] {token id: log-probability} of the teacher's top-K (empty when K = 0)


async def score_one(
    session: aiohttp.ClientSession, url: str, model: str, ids: list[int], start: int, k: int, timeout: float
) -> Scored:
    """One sequence scored by the server, retried on 5xx, 429 and dropped connections."""
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
            return await asyncio.gather(*(score_one(session, url, model, ids, s, k, timeout) for ids, s in sequences))

    return asyncio.run(main())


# --------------------------------------------------------------------------------------------------
# Prompts


def load_prompt_rows(cfg: TrainConfig) -> list[dict]:
    """[{prompt: [messages], completion: str | None}]: from --data (kept rows; their answers serve the
    off-policy share) or, with --data builtin, the built-in train problems (no answers)."""
    if cfg.data == "builtin":
        probs = load_prompts("builtin", split="train", num_prompts=512, seed=0)
        return [{"prompt": build_messages(p["problem"], DEFAULT_PROMPT_TEMPLATE), "completion": None} for p in probs]
    p = Path(cfg.data)
    if p.is_dir():
        p = p / KEPT
    out = []
    for n, row in enumerate(read_jsonl(p), start=1):
        msgs = row.get("messages")
        if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) for m in msgs):
            raise DistillError(f"{p}, row {n}: 'messages' must be a list of chat turns")
        prompt = msgs[:-1] if msgs[-1].get("role") == "assistant" else msgs
        prompt = without_system(prompt) if cfg.drop_system_prompt else prompt
        answer = str(msgs[-1].get("content") or "") if msgs[-1].get("role") == "assistant" else None
        out.append({"prompt": prompt, "completion": answer})
        if cfg.max_examples and len(out) >= cfg.max_examples:
            break
    if not out:
        raise DistillError(f"{p}: no prompts")
    return out


def keep_rows(features: list[dict]) -> dict:
    """The data collator: a batch stays a list of prompt rows; the trainer samples and tokenizes it."""
    return {"rows": features}


# --------------------------------------------------------------------------------------------------
# The trainer


class OnPolicyTrainer(Trainer):
    """A `transformers.Trainer` whose batches are the student's own samples, scored by the teacher's server.

    `training_step` turns a batch of prompt rows into token tensors with the teacher's targets on them
    (see `make_batch`), then lets the Trainer do the rest; `compute_loss` is the sampled reverse KL per
    shared span (or the generalized JSD on the teacher's top-K). Shapes: B sequences, N tokens (prompt +
    completion, right-padded), S spans, K top-K entries."""

    # compute_loss returns each micro-batch's mean: the Trainer divides it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        *args: Any,
        cfg: TrainConfig,
        teacher_tokenizer: Any,
        server_url: str,
        server_model: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        tok = self.processing_class
        self.opts = cfg.onpolicy
        self.t_tok = teacher_tokenizer
        self.url, self.server_model = server_url, server_model
        self.same = same_vocabulary(tok, teacher_tokenizer)
        self.s_bytes = TokenBytes(tok)
        self.t_bytes = self.s_bytes if self.same else TokenBytes(teacher_tokenizer)
        self.mapping = None if self.same else vocab_map(self.t_bytes, self.s_bytes)
        vocab = teacher_tokenizer.get_vocab()
        self.t_eos = vocab.get(tok.eos_token) if tok.eos_token in vocab else None
        self.rng = random.Random(self.args.seed)
        # Counters of the batches since the last log, and cumulative budgets (logged, so a resumed run's
        # log_history carries them on).
        self.window: dict[str, list[float]] = {"divergence": [], "completion_tokens": [], "stopped": []}
        self.totals = {"teacher_tokens": 0, "student_tokens": 0, "off_policy_sequences": 0}
        self.totals_restored = False

    # ---- 1. sequences: the student's samples, or (share 1 - lambda) the teacher's traces
    def sample(self, model: Any, prompts: list[list[int]]) -> list[list[int]]:
        """The student's completions (token ids, ending with EOS when it stopped) for the prompts."""
        if not prompts:
            return []
        tok = self.processing_class
        n = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), n), tok.pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(prompts), n), dtype=torch.long)
        for r, p in enumerate(prompts):  # left-padded: generation continues from the last column
            ids[r, n - len(p) :] = torch.tensor(p)
            attn[r, n - len(p) :] = 1
        temperature = self.opts.onpolicy_temperature
        with unwrap_model_for_generation(model, self.accelerator) as unwrapped:
            was_training = unwrapped.training
            unwrapped.eval()
            with torch.no_grad():
                out = unwrapped.generate(
                    input_ids=ids.to(self.args.device),
                    attention_mask=attn.to(self.args.device),
                    do_sample=temperature > 0,
                    temperature=temperature if temperature > 0 else None,
                    top_p=1.0,
                    top_k=0,
                    max_new_tokens=self.opts.onpolicy_max_new_tokens,
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=tok.eos_token_id,
                )
            unwrapped.train(was_training)
        result = []
        for row in out[:, n:].cpu().tolist():
            if tok.eos_token_id in row:
                row = row[: row.index(tok.eos_token_id) + 1]
            else:
                while row and row[-1] == tok.pad_token_id and tok.pad_token_id != tok.eos_token_id:
                    row.pop()
            result.append(row)
        return result

    def chat_ids(self, tokenizer: Any, messages: list[dict]) -> list[int]:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"]) if hasattr(ids, "keys") else list(ids)

    # ---- 2. + tensors: the teacher scores the same text in its own tokens; targets laid on student tokens
    def make_batch(self, model: Any, rows: list[dict]) -> dict[str, torch.Tensor]:
        """Prompt rows -> input_ids/attention_mask [B, N] with the teacher's targets:
        reverse-kl: token_span [B, N] (the span of each completion token, -1 elsewhere), teacher_span [B, S]
        (the teacher's log-probability of each span), span_valid [B, S];
        jsd: kd_ids [B, N, K] (-1 absent), kd_logprobs [B, N, K], kd_valid [B, N] on completion tokens."""
        tok, opts = self.processing_class, self.opts
        prompt_ids = [self.chat_ids(tok, r["prompt"]) for r in rows]
        off = [bool(r.get("completion")) and self.rng.random() >= opts.onpolicy_lambda for r in rows]
        sampled = iter(self.sample(model, [p for p, o in zip(prompt_ids, off, strict=True) if not o]))
        seqs = []
        for r, o in zip(rows, off, strict=True):
            if o:
                seqs.append(tok(r["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
                self.totals["off_policy_sequences"] += 1
            else:
                seqs.append(next(sampled))
        requests, t_completions = [], []
        for r, ids in zip(rows, seqs, strict=True):
            text_ids = [i for i in ids if self.s_bytes.pieces[i] is not None]
            tc = list(
                text_ids if self.same else self.t_tok(tok.decode(text_ids), add_special_tokens=False)["input_ids"]
            )
            if ids and ids[-1] == tok.eos_token_id and self.t_eos is not None:
                tc.append(self.t_eos)
            tp = self.chat_ids(self.t_tok, r["prompt"])
            requests.append((tp + tc, len(tp)))
            t_completions.append(tc)
        scored = score(self.url, self.server_model, requests, k=opts.onpolicy_top_k)
        self.totals["teacher_tokens"] += sum(len(ids) for ids, _ in requests)
        self.totals["student_tokens"] += sum(len(s) for s in seqs)
        self.window["completion_tokens"] += [float(len(s)) for s in seqs]
        self.window["stopped"] += [float(bool(s) and s[-1] == tok.eos_token_id) for s in seqs]

        b, n = len(rows), max(len(p) + len(s) for p, s in zip(prompt_ids, seqs, strict=True))
        batch = {
            "input_ids": torch.full((b, n), tok.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros((b, n), dtype=torch.long),
        }
        for i, (p, s) in enumerate(zip(prompt_ids, seqs, strict=True)):
            batch["input_ids"][i, : len(p) + len(s)] = torch.tensor(p + s)
            batch["attention_mask"][i, : len(p) + len(s)] = 1
        if opts.onpolicy_loss == "reverse-kl":
            per_row = []
            for p, s, tc, sc in zip(prompt_ids, seqs, t_completions, scored, strict=True):
                t_pieces = [self.t_bytes.pieces[i] if i != self.t_eos else END_OF_TURN for i in tc]
                s_pieces = [self.s_bytes.pieces[i] if i != tok.eos_token_id else END_OF_TURN for i in s]
                t_span, s_span, nspan = spans(t_pieces, s_pieces)
                t_sum = np.zeros(nspan, dtype=np.float32)
                np.add.at(t_sum, t_span[t_span >= 0], np.asarray(sc.logprobs, dtype=np.float32)[t_span >= 0])
                per_row.append((len(p), s_span, t_sum))
            width = max(1, max(len(t) for _, _, t in per_row))
            batch["token_span"] = torch.full((b, n), -1, dtype=torch.long)
            batch["teacher_span"] = torch.zeros((b, width), dtype=torch.float32)
            batch["span_valid"] = torch.zeros((b, width), dtype=torch.bool)
            for i, (start, s_span, t_sum) in enumerate(per_row):
                batch["token_span"][i, start : start + len(s_span)] = torch.as_tensor(s_span)
                batch["teacher_span"][i, : len(t_sum)] = torch.as_tensor(t_sum)
                batch["span_valid"][i, : len(t_sum)] = True
        else:
            k = opts.onpolicy_top_k
            batch["kd_ids"] = torch.full((b, n, k), -1, dtype=torch.long)
            batch["kd_logprobs"] = torch.zeros((b, n, k), dtype=torch.float32)
            batch["kd_valid"] = torch.zeros((b, n), dtype=torch.bool)
            for i, (p, s, tc, sc) in enumerate(zip(prompt_ids, seqs, t_completions, scored, strict=True)):
                top_ids = np.full((len(tc), k), -1, dtype=np.int64)
                top_lps = np.full((len(tc), k), -np.inf, dtype=np.float32)
                for j, d in enumerate(sc.top):
                    for c, (tid, lp) in enumerate(sorted(d.items(), key=lambda kv: -kv[1])[:k]):
                        top_ids[j, c], top_lps[j, c] = tid, lp
                a = align(np.array(tc), top_ids, top_lps, s, self.t_bytes, self.s_bytes, self.mapping)
                start = len(p)
                batch["kd_ids"][i, start : start + len(s)] = torch.as_tensor(a.kd_ids)
                batch["kd_logprobs"][i, start : start + len(s)] = torch.as_tensor(a.kd_logprobs)
                batch["kd_valid"][i, start : start + len(s)] = torch.as_tensor(a.valid)
        return batch

    def training_step(self, model: Any, inputs: dict, num_items_in_batch: Any = None) -> torch.Tensor:
        if not self.totals_restored:  # a resumed run continues the budget counters of its log_history
            for entry in reversed(self.state.log_history):
                if "teacher_tokens_total" in entry:
                    for key in self.totals:
                        self.totals[key] = int(entry.get(f"{key}_total", 0))
                    break
            self.totals_restored = True
        batch = self.make_batch(model, inputs["rows"])
        return super().training_step(model, batch, num_items_in_batch)

    # ---- 3. the loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001, ARG002
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        if "token_span" in inputs:
            # The sampled tokens' log-probabilities from the last hidden states, the LM head chunk by chunk: never
            # the [B, N, V] logits (16 samples x 4k tokens x 152k vocabulary would be ~20 GB in bf16, twice that
            # in the float32 log-softmax). The hidden states come from a hook on the decoder, as in logit-kd.
            unwrapped = self.accelerator.unwrap_model(model)
            captured: list[Any] = []
            hook = unwrapped.get_decoder().register_forward_hook(lambda _m, _args, o: captured.append(o))
            try:
                out = model(input_ids=ids, attention_mask=mask, logits_to_keep=1)
            finally:
                hook.remove()
            hidden = getattr(captured[-1], "last_hidden_state", None)
            hidden = captured[-1][0] if hidden is None else hidden
            with self.accelerator.autocast():
                token_lp = chunked_token_logprobs(hidden[:, :-1], unwrapped.get_output_embeddings(), ids[:, 1:])
            span = inputs["token_span"][:, 1:]
            b, width = inputs["teacher_span"].shape
            flat = torch.where(span >= 0, span + torch.arange(b, device=span.device)[:, None] * width, b * width)
            student = torch.zeros(b * width + 1, dtype=token_lp.dtype, device=token_lp.device)
            student = student.index_add(0, flat.reshape(-1), token_lp.reshape(-1))[:-1].view(b, width)
            loss, metrics = sampled_reverse_kl_loss(student, inputs["teacher_span"], inputs["span_valid"])
            divergence = metrics["reverse_kl"]
        else:
            out = model(input_ids=ids, attention_mask=mask)
            logits = out.logits[:, :-1]  # position t predicts token t + 1
            sel = inputs["kd_valid"][:, 1:]
            loss = topk_generalized_jsd(
                logits[sel],
                inputs["kd_ids"][:, 1:][sel],
                inputs["kd_logprobs"][:, 1:][sel],
                beta=self.opts.onpolicy_beta,
            )
            divergence = float(loss.detach())
        self.window["divergence"].append(divergence)
        return (loss, out) if return_outputs else loss

    def log(self, logs: dict, *args: Any, **kwargs: Any) -> None:
        if "loss" in logs:
            for key, vals in self.window.items():
                if vals:
                    logs[key] = round(float(np.mean(vals)), 4)
                vals.clear()
            logs.update({f"{key}_total": value for key, value in self.totals.items()})
        super().log(logs, *args, **kwargs)

    def summary(self) -> dict:
        """What train_metrics.json records of the run (from log_history, so a resumed run is whole)."""
        divs = [h["divergence"] for h in self.state.log_history if "divergence" in h]
        return {
            "method_detail": f"onpolicy ({self.opts.onpolicy_loss})",
            "first_divergence": divs[0] if divs else None,
            "last_divergence": divs[-1] if divs else None,
            "same_tokenizer": self.same,
            **self.totals,
        }


# --------------------------------------------------------------------------------------------------
# Building it


def prepare(cfg: TrainConfig) -> Prepared:
    """Checks (teacher server, loss settings, hardware, checkpoints) before any weights load, then the
    student (LoRA when asked), both tokenizers and the OnPolicyTrainer. Nothing is written until training
    saves (checkpoints, then the model)."""
    opts = cfg.onpolicy
    if opts.onpolicy_loss == "reverse-kl" and opts.onpolicy_lambda < 1.0:
        raise DistillError("onpolicy_lambda < 1 mixes in the teacher's own traces: use --onpolicy-loss jsd with it")
    if opts.onpolicy_loss == "jsd" and opts.onpolicy_top_k < 1:
        raise DistillError("--onpolicy-loss jsd compares distributions: set --onpolicy-top-k K (e.g. 20)")
    if not opts.teacher_url:
        raise DistillError(
            "--method onpolicy needs the teacher's server: start it with `distill serve --model "
            f"{cfg.teacher}` and pass --teacher-url"
        )
    if cfg.lora.load_in_4bit:
        raise DistillError("--method onpolicy does not train QLoRA (4-bit) students yet: drop --load-in-4bit")
    resume_from = checks_before_loading(cfg)
    server = connect(opts.teacher_url)
    rows = load_prompt_rows(cfg)
    if opts.onpolicy_lambda < 1.0 and not any(r["completion"] for r in rows):
        raise DistillError("onpolicy_lambda < 1 takes sequences from the teacher's traces, and --data has none")

    out = Path(cfg.output)
    args = method_args(cfg, out)  # the batch is built in training_step from the raw rows (METHODS)
    path = resolve_model(cfg.model)
    check_positions(cfg, path, args.max_length)
    tokenizer = AutoTokenizer.from_pretrained(path)
    configure_tokenizer(tokenizer, cfg, cfg.model)
    # a prompt and the longest sample the student may write must fit max_length: longer ones by cfg.truncation
    lengths = [prompt_length(tokenizer, r["prompt"]) + opts.onpolicy_max_new_tokens for r in rows]
    rows, report = apply_length_policy(rows, lengths, args.max_length, cfg.truncation, "prompts (+ max new tokens)")
    longest = max((n for n in lengths if not args.max_length or n <= args.max_length), default=0)
    if server.max_model_len and longest > server.max_model_len:  # the teacher scores prompt + the whole sample
        raise DistillError(
            f"the teacher's server at {server.url} holds {server.max_model_len:,} tokens (max_model_len) and scoring "
            f"needs up to {longest:,} (the longest prompt + onpolicy_max_new_tokens {opts.onpolicy_max_new_tokens}): "
            f"restart it with --max-model-len {longest}, or lower onpolicy_max_new_tokens"
        )
    teacher_tok = AutoTokenizer.from_pretrained(resolve_model(cfg.teacher))
    model = load_student(cfg, path, args)
    add_eos_to_generation_config(model, tokenizer.eos_token_id)
    if cfg.lora.lora_r:
        model = get_peft_model(model, lora_config(cfg))
    announce(cfg, len(rows), resume_from)
    trainer = OnPolicyTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        data_collator=keep_rows,
        processing_class=tokenizer,
        cfg=cfg,
        teacher_tokenizer=teacher_tok,
        server_url=server.url,
        server_model=server.model,
    )
    print(
        f"[distill] onpolicy: {cfg.model} learns from {server.model} at {server.url} ({opts.onpolicy_loss}, "
        f"{'one tokenizer' if trainer.same else 'two tokenizers, byte spans'})",
        flush=True,
    )
    return Prepared(
        trainer, tokenizer, model, rows, path, out, resume_from, 0, {"lengths": report.summary()}, trainer.summary
    )
