"""`distill train` (--method sft, the default): supervised fine-tuning with TRL's SFTTrainer.

Each kept row's `messages` becomes a prompt/completion pair, so the loss covers only the assistant turn;
the rest (checks, loading, LoRA, saving) is distill.training.base's.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from transformers import AutoTokenizer
from trl import SFTTrainer

from distill.common.errors import DistillError
from distill.common.models import resolve_model
from distill.training.base import (
    Prepared,
    add_eos_to_generation_config,
    announce,
    apply_length_policy,
    check_positions,
    check_prepared,
    check_stop_token,
    checks_before_loading,
    configure_tokenizer,
    load_sft_rows,
    load_student,
    lora_config,
    row_lengths,
    supervised_example,
    training_args,
)
from distill.training.config import SFT_DEFAULTS, TrainConfig


def prepare(cfg: TrainConfig) -> Prepared:
    """Everything up to trainer.train(): checks that fail fast (hardware, repo id, checkpoints, data, chat
    template and EOS) before any weights are loaded, then the model and SFTTrainer (which tokenizes)."""
    resume_from = checks_before_loading(cfg)
    rows = load_sft_rows(cfg.data, cfg.max_examples)

    out = Path(cfg.output)  # written only when the trained model is saved
    args = training_args(cfg, out)
    path = resolve_model(cfg.model)
    check_positions(cfg, path, args.max_length)
    tokenizer = AutoTokenizer.from_pretrained(path)
    configure_tokenizer(tokenizer, cfg, cfg.model)
    completion_only = {**SFT_DEFAULTS, **cfg.sft}.get("completion_only_loss") is not False
    _, labels = supervised_example(tokenizer, rows[0], completion_only=completion_only)
    check_stop_token(tokenizer, labels)
    rows, lengths = apply_length_policy(rows, row_lengths(tokenizer, rows), args.max_length, cfg.truncation)

    model = load_student(cfg, path, args)
    add_eos_to_generation_config(model, tokenizer.eos_token_id)
    announce(cfg, len(rows), resume_from)
    try:
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=lora_config(cfg) if cfg.lora.lora_r else None,
        )
    except ValueError as e:
        raise DistillError(f"SFTTrainer refused the settings: {' '.join(str(e).split())}") from None
    checked = check_prepared(trainer, tokenizer, args.max_length)
    return Prepared(trainer, tokenizer, model, rows, path, out, resume_from, checked, {"lengths": lengths.summary()})
