"""`distill train --method logit-kd`: train the student on the teacher's top-K next-token distributions.

    distill generate --logprobs 20 --output runs/gen        # traces with the teacher's top-20 per token
    distill filter runs/gen --output runs/filtered
    distill train --method logit-kd --data runs/filtered --teacher embedded:teacher --output runs/student-kd

SFT teaches the student the one token the teacher sampled; logit distillation also shows it how likely
the teacher found each alternative, far more signal per token. The loss at each completion token is

    kd_alpha * KL(teacher top-K + rest || student) + (1 - kd_alpha) * cross-entropy(sampled token)

(distill.training.kd_losses.topk_forward_kl: the K listed tokens plus one bucket for the rest of the mass).
The loss never holds the full [tokens, vocab] logits: the model runs to its last hidden states, and
kd_losses.chunked_kd_ce_loss applies the LM head to a few hundred positions at a time (a chunk's float32
logits stay under 256 MiB), recomputing each chunk in the backward; value and gradients are those of the
full-logits computation.
Teacher and student may use different tokenizers: distill.training.align places the teacher's distributions on
the student tokens that start at the same byte of the text and maps tokens with identical bytes; the
share of student tokens that got a target is printed (coverage) and saved in train_metrics.json.

Everything else is `distill train`'s: recipes, chat template and stop-token check, LoRA, resume, saving,
`--push-to-hub`; not QLoRA (--load-in-4bit is refused), packing, padding-free batches or Liger kernels
(dropped, with a message when the recipe sets them).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from peft import get_peft_model
from transformers import AutoTokenizer, Trainer

from distill.common.errors import DistillError
from distill.common.logprobs import unpack
from distill.common.models import resolve_model
from distill.training.align import LEAD_IN, TokenBytes, align, control_ids, lead_in, same_vocabulary, vocab_map
from distill.training.base import (
    Prepared,
    add_eos_to_generation_config,
    announce,
    apply_length_policy,
    check_positions,
    check_stop_token,
    checks_before_loading,
    configure_tokenizer,
    is_main,
    load_sft_rows,
    load_student,
    lora_config,
    method_args,
    row_lengths,
    supervised_example,
)
from distill.training.config import TrainConfig
from distill.training.kd_losses import chunked_kd_ce_loss

KD_COLUMNS = ("kd_ids", "kd_logprobs", "kd_valid")
# config keys of models whose logits are not plain lm_head(hidden) (Gemma 2/3, Cohere, Granite): the chunked
# loss applies the output embeddings alone and would silently train on other logits than the model's
SCALED_LOGITS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


def load_kd_rows(path: str | Path, max_examples: int = 0, drop_system: bool = False) -> list[dict]:
    """Kept rows as for SFT, each with its `teacher_logprobs` (from `distill generate --logprobs K`), the
    answer's `text` and `where` ("FILE, row N") for errors found later."""

    why = "logit distillation needs traces made with `distill generate --logprobs K` (then filtered); or train with --method sft"
    rows = load_sft_rows(path, max_examples, keep={"teacher_logprobs": why}, drop_system=drop_system)
    for r in rows:
        r["text"] = r["completion"][0]["content"]
    return rows


def build_examples(
    rows: list[dict], tokenizer: Any, teacher_tokenizer: Any, max_length: int
) -> tuple[list[dict], dict]:
    """Tokenize each row for the student and place the teacher's top-K on its completion tokens.
    Returns the examples (input_ids, labels, kd_ids [L, K], kd_logprobs [L, K], kd_valid [L]) and stats."""

    same = same_vocabulary(tokenizer, teacher_tokenizer)
    s_bytes = TokenBytes(tokenizer)
    t_bytes = s_bytes if same else TokenBytes(teacher_tokenizer)
    mapping = None if same else vocab_map(t_bytes, s_bytes)
    examples, covered, targets, mapped_mass, cut = [], 0, 0, [], 0
    for idx, row in enumerate(rows):
        tl = unpack(row["teacher_logprobs"], where=row["where"])
        if idx < 8:  # the ids must be the teacher tokenizer's spelling of this completion
            text = teacher_tokenizer.decode(tl.ids.tolist(), skip_special_tokens=True).strip()
            want = row["text"].strip()  # may open with the think tag the teacher's template put in its prompt
            if text != want and not (want.endswith(text) and len(want) - len(text) <= LEAD_IN):
                raise DistillError(
                    f"{row['where']}: the teacher's token ids do not decode to the row's answer with the tokenizer of "
                    f"{teacher_tokenizer.name_or_path!r}: set --teacher to the model that generated the traces"
                )
        input_ids, labels = supervised_example(tokenizer, row)
        if idx == 0:
            check_stop_token(tokenizer, labels)
        start = next(i for i, t in enumerate(labels) if t != -100)
        student_completion = input_ids[start:]
        if same:
            # one tokenizer: train on exactly the tokens the teacher generated (re-tokenizing the decoded text
            # can cut it differently), then whatever the template puts after the answer
            text_ids = [i for i in tl.ids.tolist() if t_bytes.pieces[i] is not None]
            tail = _template_tail(tokenizer, student_completion)
            student_completion = _lead_in_ids(student_completion, text_ids, s_bytes) + text_ids + tail
            input_ids = input_ids[:start] + student_completion
            labels = [-100] * start + student_completion
        a = align(tl.ids, tl.top_ids, tl.top_logprobs, student_completion, t_bytes, s_bytes, mapping)
        k = tl.k
        kd_ids = np.full((len(input_ids), k), -1, dtype=np.int64)
        kd_lps = np.zeros((len(input_ids), k), dtype=np.float32)
        valid = np.zeros(len(input_ids), dtype=bool)
        kd_ids[start:], kd_lps[start:], valid[start:] = a.kd_ids, a.kd_logprobs, a.valid
        if len(input_ids) > max_length:
            input_ids, labels = input_ids[:max_length], labels[:max_length]
            kd_ids, kd_lps, valid = kd_ids[:max_length], kd_lps[:max_length], valid[:max_length]
            cut += 1
        covered += int(valid.sum())
        targets += sum(1 for t in labels if t != -100)
        listed = kd_ids[valid] >= 0
        if listed.size:
            mass = np.where(listed, np.exp(kd_lps[valid]), 0.0).sum(axis=1)
            mapped_mass.append(float(mass.mean()))
        examples.append(
            {"input_ids": input_ids, "labels": labels, "kd_ids": kd_ids, "kd_logprobs": kd_lps, "kd_valid": valid}
        )
    stats = {
        "same_tokenizer": same,
        "coverage": round(covered / max(targets, 1), 4),
        "mapped_teacher_mass": round(float(np.mean(mapped_mass)) if mapped_mass else 0.0, 4),
        "top_k": int(examples[0]["kd_ids"].shape[1]) if examples else 0,
        "rows_cut_at_max_length": cut,
    }
    return examples, stats


def _lead_in_ids(completion_ids: list[int], teacher_ids: list[int], pieces: TokenBytes) -> list[int]:
    """The completion's first tokens that spell the text before the teacher's own (align.lead_in: the `<think>\n`
    an R1-family template put in the teacher's prompt), so the student is still trained to open its reasoning;
    [] when there is none or it does not end on a token boundary."""
    text = b"".join(pieces.pieces[i] or b"" for i in completion_ids)
    lead = lead_in(b"".join(pieces.pieces[i] or b"" for i in teacher_ids), text)
    n, at = 0, 0
    while lead and n < len(completion_ids) and at < lead:
        at += len(pieces.pieces[completion_ids[n]] or b"")
        n += 1
    return completion_ids[:n] if lead and at == lead else []


def _template_tail(tokenizer: Any, completion_ids: list[int]) -> list[int]:
    """The tokens the chat template puts after the answer's text: from the last special token of the
    completion on (e.g. <|im_end|> and a newline); none when the template adds no special token."""
    special = control_ids(tokenizer)  # not </think>: a text token of the answer (align.control_ids)
    for i in range(len(completion_ids) - 1, -1, -1):
        if completion_ids[i] in special:
            return completion_ids[i:]
    return []


class Collator:
    """Pads a batch: input_ids (pad id), attention_mask, labels (-100), kd_ids (-1), kd_logprobs, kd_valid."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict:

        n = max(len(f["input_ids"]) for f in features)
        k = np.asarray(features[0]["kd_ids"]).shape[1]
        b = len(features)
        ids = torch.full((b, n), self.pad_id, dtype=torch.long)
        mask = torch.zeros((b, n), dtype=torch.long)
        labels = torch.full((b, n), -100, dtype=torch.long)
        kd_ids = torch.full((b, n, k), -1, dtype=torch.long)
        kd_lps = torch.zeros((b, n, k), dtype=torch.float32)
        valid = torch.zeros((b, n), dtype=torch.bool)
        for r, f in enumerate(features):
            m = len(f["input_ids"])
            ids[r, :m] = torch.tensor(f["input_ids"])
            mask[r, :m] = 1
            labels[r, :m] = torch.tensor(f["labels"])
            kd_ids[r, :m] = torch.as_tensor(np.asarray(f["kd_ids"]))
            kd_lps[r, :m] = torch.as_tensor(np.asarray(f["kd_logprobs"], dtype=np.float32))
            valid[r, :m] = torch.as_tensor(np.asarray(f["kd_valid"]))
        return {
            "input_ids": ids, "attention_mask": mask, "labels": labels, "kd_ids": kd_ids, "kd_logprobs": kd_lps,
            "kd_valid": valid,
        }  # fmt: skip


def kd_trainer_class() -> type:
    """transformers.Trainer whose loss mixes top-K forward KL and cross-entropy (built lazily: torch import)."""

    class LogitKDTrainer(Trainer):
        # compute_loss returns a mean over this micro-batch's tokens: the Trainer must still divide it by the
        # accumulation steps (it would not, the model's forward taking **kwargs, and sum the micro-batches)
        loss_is_scaled_for_ga = False

        def __init__(self, *args: Any, kd_alpha: float = 0.5, kd_chunk: int = 0, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.kd_alpha = kd_alpha
            self.kd_chunk = kd_chunk  # positions per chunk of the loss (0: from the vocabulary, kd_chunk_rows)
            self._parts: dict[str, list[float]] = {"kd_loss": [], "ce_loss": []}

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001, ARG002
            kd_ids, kd_lps, valid = inputs.pop("kd_ids"), inputs.pop("kd_logprobs"), inputs.pop("kd_valid")
            labels = inputs.pop("labels")
            # The model's own forward (so the wrappers' hooks run: DDP, DeepSpeed, FSDP, PEFT, accelerate's
            # autocast), with logits for the last position only. The last hidden states are taken from the
            # decoder by a hook, as the LM head would get them: asked for as outputs, they would come back as
            # fp32 copies under accelerate's mixed precision.
            unwrapped = self.accelerator.unwrap_model(model)
            captured: list[Any] = []
            hook = unwrapped.get_decoder().register_forward_hook(lambda _m, _args, o: captured.append(o))
            try:
                out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], logits_to_keep=1)
            finally:
                hook.remove()
            if len(captured) != 1:
                raise DistillError(
                    f"logit-kd: the decoder of {type(unwrapped).__name__} ran {len(captured)} times in one forward "
                    "(expected once); its last hidden states cannot be told apart"
                )
            hidden = getattr(captured[0], "last_hidden_state", None)
            hidden = captured[0][0] if hidden is None else hidden
            with self.accelerator.autocast():  # the LM head in the forward's precision, chunk by chunk
                loss, kd, ce = chunked_kd_ce_loss(
                    hidden, unwrapped.get_output_embeddings(), labels, kd_ids, kd_lps, valid, self.kd_alpha,
                    self.kd_chunk,
                )  # fmt: skip
            self._parts["kd_loss"].append(float(kd.detach()))
            self._parts["ce_loss"].append(float(ce.detach()))
            return (loss, out) if return_outputs else loss

        def log(self, logs: dict, *args: Any, **kwargs: Any) -> None:
            if "loss" in logs:
                for key, vals in self._parts.items():
                    if vals:
                        logs[key] = round(sum(vals) / len(vals), 4)
                    vals.clear()
            super().log(logs, *args, **kwargs)

    return LogitKDTrainer


def prepare(cfg: TrainConfig) -> Any:
    """Like distill.training.train.prepare, for --method logit-kd: checks, tokenizers, aligned targets, the trainer."""

    if cfg.lora.load_in_4bit:
        raise DistillError("--method logit-kd does not train QLoRA (4-bit) students yet: drop --load-in-4bit")
    resume_from = checks_before_loading(cfg)
    rows = load_kd_rows(cfg.data, cfg.max_examples, cfg.drop_system_prompt)

    out = Path(cfg.output)  # written only when the trained model is saved
    args = method_args(cfg, out)

    path = resolve_model(cfg.model)
    check_positions(cfg, path, args.max_length)
    tokenizer = AutoTokenizer.from_pretrained(path)
    configure_tokenizer(tokenizer, cfg, cfg.model)
    rows, lengths = apply_length_policy(rows, row_lengths(tokenizer, rows), args.max_length, cfg.truncation)
    teacher_tok = AutoTokenizer.from_pretrained(resolve_model(cfg.teacher))
    t0 = time.monotonic()
    examples, stats = build_examples(rows, tokenizer, teacher_tok, args.max_length or 1 << 30)
    if is_main():
        print(
            f"[distill] logit-kd: {len(examples)} rows, teacher top-{stats['top_k']}, "
            f"{'one tokenizer' if stats['same_tokenizer'] else 'two tokenizers aligned by bytes'}: "
            f"{stats['coverage']:.1%} of completion tokens get a teacher target, carrying "
            f"{stats['mapped_teacher_mass']:.1%} of the teacher's probability on average "
            f"({time.monotonic() - t0:.1f} s)",
            flush=True,
        )
    model = load_student(cfg, path, args)
    scaled = [k for k in SCALED_LOGITS if getattr(model.config, k, None) not in (None, 0, 1, 1.0)]
    if scaled:
        raise DistillError(
            f"--method logit-kd: {cfg.model} scales its logits ({', '.join(scaled)}), which the chunked KD loss "
            "does not apply: train it with --method sft"
        )
    if cfg.lora.lora_r:
        model = get_peft_model(model, lora_config(cfg))
    add_eos_to_generation_config(model, tokenizer.eos_token_id)
    announce(cfg, len(rows), resume_from)
    columns = {k: [e[k].tolist() for e in examples] for k in KD_COLUMNS}
    ds = Dataset.from_dict(
        {"input_ids": [e["input_ids"] for e in examples], "labels": [e["labels"] for e in examples], **columns}
    )
    trainer = kd_trainer_class()(
        model=model,
        args=args,
        train_dataset=ds,
        data_collator=Collator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        kd_alpha=cfg.kd.kd_alpha,
    )
    stats = {"method_detail": "logit-kd", "kd_alpha": cfg.kd.kd_alpha, **stats}
    return Prepared(trainer, tokenizer, model, rows, path, out, resume_from, 1, {**stats, "lengths": lengths.summary()})
