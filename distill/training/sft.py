"""`distill train` (--method sft, the default): supervised fine-tuning with TRL's SFTTrainer.

Each kept row's `messages` becomes a prompt/completion pair, so the loss covers only the assistant turn.
The rows are memory-mapped Arrow (distill.training.sft_data.sft_dataset: checked per row, token lengths as a
column, the length policy as a filter, a --data mixture drawn with the seed), cached under --dataset-cache
so a resume or a second run on the same files reads them, and TRL's tokenization, from there; the rest
(checks, loading, LoRA, saving) is distill.training.base's.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer
from trl import SFTTrainer

from distill.common.errors import DistillError
from distill.common.models import resolve_model
from distill.training.base import (
    Prepared,
    add_eos_to_generation_config,
    announce,
    check_positions,
    check_prepared,
    check_stop_token,
    checks_before_loading,
    configure_tokenizer,
    kept_file,
    load_student,
    lora_config,
    method_args,
    recipe_max_length,
    supervised_example,
)
from distill.training.config import SFT_DEFAULTS, TrainConfig, data_sources
from distill.training.sft_data import cores, data_procs, first_pair, sft_dataset


def prepare(cfg: TrainConfig) -> Prepared:
    """Everything up to trainer.train(): checks that fail fast (hardware, repo id, checkpoints, data, chat
    template and EOS) before any weights are loaded, then the model and SFTTrainer (which tokenizes)."""
    resume_from = checks_before_loading(cfg)

    out = Path(cfg.output)  # written only when the trained model is saved
    args = method_args(cfg, out)
    max_length = recipe_max_length(cfg)  # enforced here, also where TRL is given none (padding-free)
    path = resolve_model(cfg.model)
    check_positions(cfg, path, max_length)
    tokenizer = AutoTokenizer.from_pretrained(path)
    configure_tokenizer(tokenizer, cfg, cfg.model)
    completion_only = {**SFT_DEFAULTS, **cfg.sft}.get("completion_only_loss") is not False
    sources = data_sources(cfg.data)
    for src in sources:  # the first row of each source, read alone: a wrong stop token fails before the data prep
        _, labels = supervised_example(tokenizer, first_pair(src.path), completion_only=completion_only)
        check_stop_token(tokenizer, labels, where=f"{kept_file(src.path)}: " if len(sources) > 1 else "")
    data = sft_dataset(cfg, tokenizer, max_length, args.data_seed if args.data_seed is not None else args.seed)
    rows = data.dataset
    if "dataset_num_proc" not in cfg.sft:  # TRL's tokenizing maps: the cores, for sets worth starting processes
        args.dataset_num_proc = data_procs(len(rows), cores())

    model = load_student(cfg, path, args)
    add_eos_to_generation_config(model, tokenizer.eos_token_id)
    announce(cfg, len(rows), resume_from)
    try:
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=rows,
            processing_class=tokenizer,
            peft_config=lora_config(cfg) if cfg.lora.lora_r else None,
        )
    except ValueError as e:
        raise DistillError(f"SFTTrainer refused the settings: {' '.join(str(e).split())}") from None
    checked = check_prepared(trainer, tokenizer, max_length)
    stats = {"lengths": data.lengths.summary(), "data_prep_seconds": round(data.seconds, 1)}
    if data.mixture:
        stats["mixture"] = data.mixture
    return Prepared(trainer, tokenizer, model, rows, path, out, resume_from, checked, stats)
