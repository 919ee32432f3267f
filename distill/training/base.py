"""What every `distill train` method shares: kept rows, the tokenizer and its stop token, TRL's
training arguments, loading the student, LoRA/QLoRA, resume, and saving (then the Hub push).

SFT (distill.training.sft), logit KD (distill.training.kd) and on-policy distillation
(distill.training.onpolicy) each build a `transformers.Trainer` from these pieces and hand it to
`train_and_save`; none of them saves, resumes or pushes on its own.

Stopping: a student trained from a BASE model never learns to stop when the token its chat template
ends a turn with is not the EOS token it is trained and served with (open-r1 #492, #603). Before any
weights are loaded, one example is tokenized the way TRL does it and the last supervised token must
be the EOS token; the saved generation_config lists it so vLLM stops there.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import LoraConfig, PeftModel
from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTConfig
from trl.data_utils import _tokenize, common_prefix_length  # TRL's own tokenization, so checks see what it trains on

from distill.common import config as config_mod
from distill.common.errors import DistillError
from distill.common.hub import check_repo_id
from distill.common.records import KEPT, read_jsonl, write_json
from distill.common.resources import resolve_chat_template
from distill.common.server import has_cuda, native_bf16
from distill.training.config import METHODS, SFT_DEFAULTS, TrainConfig
from distill.training.modelcard import push_model

CHECKPOINTS = "checkpoints"  # <output>/checkpoints: the Trainer's output_dir
ADAPTER = "adapter"  # <output>/adapter: the LoRA adapter when --merge-lora put a merged model in <output>


def kept_file(path: str | Path) -> Path:
    """A --data path as a file: a folder means the kept.jsonl in it."""
    p = Path(path)
    return p / KEPT if p.is_dir() else p


def sft_pair(row: dict, where: str) -> dict:
    """One kept row's messages as {prompt: [...], completion: [assistant turn]}, checked; errors start with `where`."""
    msgs = row.get("messages")
    if not isinstance(msgs, list) or len(msgs) < 2:
        raise DistillError(f"{where}: 'messages' must be a list of at least a prompt and an answer turn")
    for m in msgs:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or "role" not in m:
            raise DistillError(f"{where}: each message needs a 'role' and a text 'content'")
    if msgs[-1]["role"] != "assistant":
        raise DistillError(f"{where}: the last message must be the assistant's answer")
    return {"prompt": msgs[:-1], "completion": msgs[-1:]}


def without_system(prompt: list[dict]) -> list[dict]:
    """A prompt's turns without its system turn (--drop-system-prompt)."""
    return [m for m in prompt if m.get("role") != "system"]


def drop_system_turns(prompts: list[list[dict]]) -> dict:
    """Batched map over an Arrow Dataset's prompt column: every prompt without its system turn."""
    return {"prompt": [without_system(p) for p in prompts]}


def load_sft_rows(
    path: str | Path, max_examples: int = 0, keep: dict[str, str] | None = None, drop_system: bool = False
) -> list[dict]:
    """Kept rows -> [{prompt: [...], completion: [assistant turn]}] in memory, checking each row's messages
    (logit-kd and the rehearsal; SFT reads memory-mapped Arrow, `sft_dataset`); `drop_system` leaves the
    system turns out (--drop-system-prompt).

    `keep` maps further keys every row must have to the error's explanation when one lacks it; their
    values are carried into the result, with `where` ("FILE, row N") for later errors."""
    p = kept_file(path)
    rows = []
    for n, row in enumerate(read_jsonl(p), start=1):
        pair = sft_pair(row, f"{p}, row {n}")
        if drop_system:
            pair["prompt"] = without_system(pair["prompt"])
        extra = {}
        for key, why in (keep or {}).items():
            if key not in row:
                raise DistillError(f"{p}, row {n}: no {key!r}: {why}")
            extra[key] = row[key]
        rows.append({**pair, **({"where": f"{p}, row {n}", **extra} if keep else {})})
        if max_examples and len(rows) >= max_examples:
            break
    if not rows:
        raise DistillError(f"{p}: no training rows (did `distill filter` keep any trace?)")
    return rows


# --------------------------------------------------------------------------------------------------
# Resume


def resume_checkpoint(cfg: TrainConfig) -> str | None:
    """The checkpoint to resume from: with --resume, the last one in <output>/checkpoints (an error when
    there is none); without it, None, and an error when checkpoints of an earlier run are there, since a
    new run would write its checkpoints among them and a later --resume could pick the old run's."""

    explicit = cfg.sft.get("resume_from_checkpoint")
    if explicit:
        if not Path(explicit).is_dir():
            raise DistillError(f"resume_from_checkpoint: {explicit} is not a checkpoint folder")
        return str(explicit)
    folder = Path(cfg.output) / CHECKPOINTS
    last = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    if not cfg.resume:
        if last:
            raise DistillError(
                f"{folder} holds checkpoints of an earlier run (last: {Path(last).name}): pass --resume true to "
                "continue it, or another --output (or delete that folder) to start over"
            )
        return None
    if not last:
        strategy = {**SFT_DEFAULTS, **cfg.sft}.get("save_strategy")
        raise DistillError(
            f"--resume: no checkpoint in {folder} to resume from (this recipe saves them with save_strategy "
            f"{strategy!r}); train without --resume to start from the beginning"
        )
    if not (Path(last) / "trainer_state.json").is_file():
        raise DistillError(
            f"--resume: the last checkpoint {last} is incomplete (no trainer_state.json; the run probably stopped "
            "while saving it): delete it to resume from the one before"
        )
    return last


# --------------------------------------------------------------------------------------------------
# Chat template and the token that ends an assistant turn


def configure_tokenizer(tokenizer: Any, cfg: Any, model_name: str) -> None:
    """Apply --chat-template and --eos-token to the tokenizer (it is saved with the student, so vLLM uses
    the same template and stops at the same token), and give it a pad token when it has none.

    `cfg` is any config with `chat_template` and `eos_token` fields (TrainConfig; `distill grpo` shares it)."""
    if cfg.chat_template:
        tokenizer.chat_template = resolve_chat_template(cfg.chat_template).read_text(encoding="utf-8")
    elif not tokenizer.chat_template:
        raise DistillError(
            f"{model_name}'s tokenizer has no chat template: set chat_template (e.g. chatml-think with "
            "eos_token '<|im_end|>' for Qwen models, llama3-think with '<|eot_id|>' for Llama 3)"
        )
    if cfg.eos_token:
        if cfg.eos_token not in tokenizer.get_vocab():
            specials = ", ".join(str(t) for t in list(tokenizer.added_tokens_decoder.values())[:12])
            raise DistillError(
                f"eos_token {cfg.eos_token!r} is not a token of {model_name}'s tokenizer (its added tokens: {specials})"
            )
        tokenizer.eos_token = cfg.eos_token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def supervised_example(tokenizer: Any, row: dict, completion_only: bool = True) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one prompt/completion row, tokenized the way TRL's SFTTrainer does it:
    the prompt with the generation prompt, prompt + completion in full, the completion starting where the
    two diverge; labels are -100 on the prompt (when the loss is completion-only)."""

    kwargs = {"chat_template": None, "tools": None}
    prompt_ids = _tokenize(tokenizer, row["prompt"], add_generation_prompt=True, **kwargs)["input_ids"]
    input_ids = list(_tokenize(tokenizer, row["prompt"] + row["completion"], **kwargs)["input_ids"])
    start = common_prefix_length(prompt_ids, input_ids) if completion_only else 0
    return input_ids, [-100] * start + input_ids[start:]


def check_stop_token(tokenizer: Any, labels: list[int], where: str = "") -> None:
    """A DistillError unless the last supervised token (after any whitespace the template adds after the
    turn, like ChatML's newline) is the tokenizer's EOS token: otherwise the student is never trained to
    emit the token generation stops at, and it generates until max_tokens."""
    eos, eos_id = tokenizer.eos_token, tokenizer.eos_token_id
    supervised = [t for t in labels if t != -100]
    if not supervised:
        raise DistillError(
            f"{where}no token of the assistant's answer is trained on (every label is -100): check "
            "completion_only_loss and assistant_only_loss"
        )
    i = len(supervised) - 1
    while i > 0 and supervised[i] != eos_id and not tokenizer.decode([supervised[i]]).strip():
        i -= 1
    last = supervised[i]
    if last == eos_id:
        return
    ending = "…" + tokenizer.decode(supervised[max(0, i - 16) : i + 1])[-24:]
    if last in tokenizer.added_tokens_decoder:
        token = str(tokenizer.added_tokens_decoder[last])
        fix = (
            f"set eos_token: {token!r} (--eos-token '{token}') so the student is trained to emit the token the "
            "chat template ends a turn with"
        )
    else:
        fix = (
            "set chat_template to one that ends each assistant turn with a special token and eos_token to that "
            "token (e.g. chatml-think with '<|im_end|>')"
        )
    raise DistillError(
        f"{where}the chat template ends the assistant's answer with {ending!r}, not with the EOS token {eos!r} "
        f"(id {eos_id}): trained this way the student never learns to stop and generates until max_tokens; {fix}"
    )


def check_prepared(trainer: Any, tokenizer: Any, max_length: int | None, sample: int = 8) -> int:
    """Check the stop token on TRL's own tokenized training rows (the first `sample`, skipping rows cut at
    max_length, which end mid-answer). Returns how many rows were checked (0 when packed)."""
    ds = trainer.train_dataset
    names = getattr(ds, "column_names", None) or []
    if "labels" not in names or "seq_lengths" in names:  # packed rows hold several examples each
        return 0
    head = ds.select(range(min(sample, len(ds))))
    checked = 0
    for ids, labels in zip(head["input_ids"], head["labels"], strict=True):
        if max_length and len(ids) >= max_length:
            continue
        check_stop_token(tokenizer, labels, where="in TRL's tokenized training data, ")
        checked += 1
    return checked


# --------------------------------------------------------------------------------------------------
# LoRA / QLoRA


def lora_config(cfg: TrainConfig) -> Any:
    """peft.LoraConfig from the lora_* fields (alpha 0: twice the rank)."""
    targets = cfg.lora.lora_target_modules.strip()
    target_modules: str | list[str] = (
        targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
    )
    return LoraConfig(
        r=cfg.lora.lora_r,
        lora_alpha=cfg.lora.lora_alpha or 2 * cfg.lora.lora_r,
        lora_dropout=cfg.lora.lora_dropout,
        target_modules=target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )


def _quantization() -> dict:
    """from_pretrained kwargs that load the frozen base in 4-bit NF4 for QLoRA. Under ZeRO-3/FSDP the
    4-bit weights are stored as bf16 so they can be sharded; otherwise each process puts its copy on its GPU."""

    sharded = os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" or (
        os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"
    )
    kwargs: dict[str, Any] = {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_quant_storage=torch.bfloat16,
        )
    }
    if not sharded:
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    return kwargs


def check_hardware(cfg: TrainConfig, gpu: bool) -> None:
    if cfg.requires_gpu and not gpu:
        raise DistillError(
            f"the {cfg.size} recipe trains {cfg.model} and needs CUDA GPUs, and this machine has none; "
            f"run it on a GPU machine, rehearse it here with --rehearse, or use --size tiny"
        )
    gpu_only = gpu_only_keys(cfg)
    if gpu_only and not gpu:
        raise DistillError(
            f"{', '.join(gpu_only)}: these kernels run on CUDA GPUs only, and this machine has none; remove them to "
            "train on CPU (sdpa attention, no Liger), or rehearse the GPU run with --rehearse"
        )
    if cfg.lora.load_in_4bit:
        if not gpu:
            raise DistillError(
                "load_in_4bit (QLoRA) needs CUDA GPUs (bitsandbytes 4-bit kernels), and this machine has none; "
                "drop --load-in-4bit to train LoRA on full-precision weights"
            )
        if importlib.util.find_spec("bitsandbytes") is None:
            raise DistillError("load_in_4bit (QLoRA) needs bitsandbytes: pip install bitsandbytes")
    if cfg.lora.lora_r and importlib.util.find_spec("peft") is None:
        raise DistillError("lora_r needs peft: pip install 'peft>=0.17'")


# --------------------------------------------------------------------------------------------------
# Training


@dataclass
class Prepared:
    """A trainer ready to train, with what saving needs afterwards."""

    trainer: Any
    tokenizer: Any
    model: Any  # the transformers model (under the PEFT wrapper when LoRA)
    rows: Any  # the training rows: a list of dicts, or SFT's Arrow Dataset (len() and rows[0] work on both)
    path: str  # the resolved base model (folder or Hub id)
    out: Path
    resume_from: str | None
    checked_rows: int
    stats: dict = field(default_factory=dict)  # method-specific numbers for train_metrics.json
    finish: Callable[[], dict] | None = None  # more of them, known only after training (on-policy budgets)


def system_prompt_of(rows: Any) -> str:
    """The system turn the training rows open with ('' when none): `distill eval` asks the student with it."""
    first = rows[0]["prompt"] if len(rows) and rows[0].get("prompt") else []
    return str(first[0].get("content") or "") if first and first[0].get("role") == "system" else ""


def is_main() -> bool:
    return os.environ.get("RANK", "0") == "0"


def checks_before_loading(cfg: TrainConfig) -> str | None:
    """What fails fast, before any weights load: hardware, keys distill replaces, the Hub repo id, the
    checkpoint to resume from (returned)."""

    check_hardware(cfg, has_cuda())
    if "chat_template_path" in cfg.sft:
        raise DistillError("use chat_template instead of chat_template_path: distill checks the template's stop token")
    if cfg.push_to_hub:
        check_repo_id(cfg.push_to_hub)
    return resume_checkpoint(cfg)


def recipe_max_length(cfg: TrainConfig) -> int | None:
    """The longest training row in tokens, as the recipe sets it (SFT_DEFAULTS' otherwise; None: no limit).
    distill's data pipeline enforces it (truncation: drop/keep/error) before TRL sees a row."""
    value = {**SFT_DEFAULTS, **cfg.sft}.get("max_length")
    return int(value) if value else None


def resolve_bf16(cpu: bool) -> bool:
    """`bf16: auto`: bf16 where its arithmetic is native (GPUs; CPUs with avx512_bf16 or AMX), float32 elsewhere,
    said once on a CPU."""
    native, why = native_bf16(cuda=not cpu)
    if cpu and is_main():
        print(f"[distill] bf16: auto -> {'bf16' if native else 'float32'} ({why})", flush=True)
    return native


def gpu_only_keys(cfg: TrainConfig) -> list[str]:
    """The recipe's settings whose kernels run on CUDA GPUs only (what a CPU run cannot honour)."""
    keys = [f"attn_implementation: {cfg.attn_implementation}"] if "flash" in cfg.attn_implementation else []
    return keys + (["use_liger_kernel: true"] if cfg.sft.get("use_liger_kernel") else [])


POSITIVE_INTS = ("per_device_train_batch_size", "gradient_accumulation_steps")


def check_numbers(kwargs: dict) -> None:
    """Values TRL accepts and then fails on after the model loads (or trains on silently): a batch of 0 rows, a
    negative or infinite learning rate. One line each, before any weights load."""
    for key in POSITIVE_INTS:
        value = kwargs.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise DistillError(f"train: key '{key}' must be a whole number of at least 1, got {value!r}")
    lr = kwargs.get("learning_rate")
    if lr is not None and not (isinstance(lr, int | float) and not isinstance(lr, bool) and 0 < lr < math.inf):
        raise DistillError(f"train: key 'learning_rate' must be a finite number > 0, got {lr!r}")


def training_args(
    cfg: TrainConfig, out: Path, drop: tuple[str, ...] = (), force: dict | None = None, cpu: bool | None = None
) -> Any:
    """trl.SFTConfig from distill's defaults and the recipe, without the keys in `drop` and with the values in
    `force` (a method's requirements); `use_cpu` where there is no CUDA GPU (`cpu`: None asks torch).

    Every other recipe key reaches TRL as written, so TRL's and transformers' own validation sees what the GPU
    run uses. One translation: padding-free batches without packing take `max_length: None`, because TRL cuts
    no padding-free row and refuses a max_length it would not enforce; distill's data pipeline enforces the
    recipe's max_length before TRL (recipe_max_length), which `truncation: keep` (train rows cut) cannot."""
    kwargs = {**SFT_DEFAULTS, **cfg.sft}
    for key in drop:
        kwargs.pop(key, None)
    kwargs.update(force or {})
    check_numbers(kwargs)
    if cfg.eos_token:
        kwargs["eos_token"] = cfg.eos_token  # TRL mirrors it into the model's config and generation_config
    if kwargs.get("padding_free") and not kwargs.get("packing") and kwargs.get("max_length"):
        if cfg.truncation == "keep":
            raise DistillError(
                "padding_free without packing trains every row whole, so truncation 'keep' (rows cut at max_length) "
                "cannot apply: set truncation: drop (the default) or error"
            )
        kwargs["max_length"] = None
    cpu = cpu if cpu is not None else not torch.cuda.is_available()
    if cpu:
        kwargs["use_cpu"] = True
    if kwargs.get("bf16") == "auto":
        kwargs["bf16"] = resolve_bf16(cpu)
    try:
        return SFTConfig(output_dir=str(out / CHECKPOINTS), **kwargs)
    except (TypeError, ValueError) as e:
        raise DistillError(f"invalid training settings: {' '.join(str(e).split())}") from None


def method_args(cfg: TrainConfig, out: Path, cpu: bool | None = None, quiet: bool = False) -> Any:
    """training_args for cfg.method: without the SFTConfig keys its batches cannot honour (each dropped key
    said once) and with the values it needs (its row of METHODS)."""
    method = METHODS[cfg.method]
    given = [k for k in method.unsupported if cfg.sft.get(k)]
    if given and not quiet and is_main():
        print(f"[distill] {cfg.method}: {', '.join(given)} off ({method.why_unsupported})", flush=True)
    return training_args(cfg, out, drop=method.unsupported, force=dict(method.force), cpu=cpu)


def load_student(cfg: TrainConfig, path: str, args: Any) -> Any:
    """The student's weights: dtype from the args, the recipe's attention kernel on GPU, 4-bit for QLoRA;
    its generation config lists the tokenizer's EOS (set by configure_tokenizer) as a stop token."""
    model_kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if args.bf16 else torch.float32}
    if cfg.attn_implementation:
        model_kwargs["attn_implementation"] = cfg.attn_implementation
    if cfg.lora.load_in_4bit:
        model_kwargs.update(_quantization())
    return AutoModelForCausalLM.from_pretrained(path, **model_kwargs, **cfg.model_config)


def check_positions(cfg: Any, path: str, max_length: int | None) -> int | None:
    """The positions the student will hold (its config.json with the recipe's model_config on top); an error
    when max_length asks for more. None when the config cannot be read here (a Hub id offline): the check
    then happens on the GPU machine, where the weights load."""
    try:
        config = AutoConfig.from_pretrained(path, **getattr(cfg, "model_config", {}))
    except (OSError, ValueError):
        return None
    text = config.get_text_config()
    positions = getattr(text, "max_position_embeddings", None)
    if positions and max_length and max_length > positions:
        raise DistillError(
            f"max_length {max_length} is longer than the {positions} positions of {cfg.model}: extend its RoPE with "
            "model_config (e.g. {max_position_embeddings: 32768, rope_parameters: {rope_type: default, rope_theta: "
            "300000.0}}, as open-r1 did for Qwen2.5-Math-7B) or lower max_length"
        )
    return positions


@dataclass
class LengthReport:
    """What a max_length does to the training rows: their token lengths and the rows over it."""

    max_length: int
    policy: str
    lengths: Any  # tokens of every row (prompt + answer, as TRL tokenizes it): a list or a numpy array
    over: Any  # indices of the rows longer than max_length
    kept: int  # rows left after the policy

    def summary(self) -> dict:
        q = np.sort(np.asarray(self.lengths, dtype=np.int64))

        def pct(p: float) -> int:
            return int(q[min(len(q) - 1, int(p * (len(q) - 1) + 0.5))]) if len(q) else 0

        return {
            "max_length": self.max_length,
            "policy": self.policy,
            "rows": len(q),
            "rows_over_max_length": len(self.over),
            "share_over_max_length": round(len(self.over) / max(1, len(q)), 4),
            "rows_kept": self.kept,
            "tokens": {"min": pct(0), "median": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": pct(1)},
        }


def check_over_length(over: int, rows: int, longest: int, limit: int, policy: str, what: str) -> None:
    """What the policy says about `over` of `rows` rows longer than max_length `limit`: stop (error), or say
    what happens to them; and stop when nothing would be left."""
    if over and policy == "error":
        raise DistillError(
            f"{over} of {rows} {what} are longer than max_length {limit} tokens (longest {longest}): "
            "raise max_length (with an extended RoPE if the model needs it), or set truncation: drop"
        )
    if over and is_main():
        verb = "cut at max_length and trained WITHOUT their end" if policy == "keep" else "dropped"
        print(
            f"[distill] {over} of {rows} {what} ({over / rows:.1%}) are longer than max_length "
            f"{limit} (longest {longest} tokens): {verb} (truncation: {policy})",
            flush=True,
        )
    if policy != "keep" and over == rows:
        raise DistillError(f"every one of the {rows} {what} is longer than max_length {limit}: nothing to train on")


def apply_length_policy(
    rows: list[dict], lengths: list[int], max_length: int | None, policy: str, what: str = "rows"
) -> tuple[list[dict], LengthReport]:
    """Rows longer than max_length, by `policy` (TrainConfig.truncation): drop them (the default: a row cut
    at max_length loses its final answer and its stop token, and a student trained on such rows learns to
    never stop), keep them with a warning, or stop. Returns the rows to train on and the report."""
    limit = int(max_length or 0)
    over = [i for i, n in enumerate(lengths) if limit and n > limit]
    check_over_length(len(over), len(rows), max(lengths, default=0), limit, policy, what)
    drop = set(over)
    keep = rows if policy == "keep" else [r for i, r in enumerate(rows) if i not in drop]
    return keep, LengthReport(limit, policy, lengths, over, len(keep))


def prompt_length(tokenizer: Any, messages: list[dict]) -> int:
    """Tokens of a chat prompt with the generation prompt (what the model sees before it answers)."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return len(ids["input_ids"] if hasattr(ids, "keys") else ids)


def row_lengths(tokenizer: Any, rows: list[dict]) -> list[int]:
    """Tokens of each prompt/completion row as TRL tokenizes it (the prompt with the chat template)."""
    return [len(supervised_example(tokenizer, r)[0]) for r in rows]


def announce(cfg: TrainConfig, rows: int, resume_from: str | None) -> None:
    if not is_main():
        return

    method = "full fine-tuning"
    if cfg.lora.lora_r:
        method = f"{'QLoRA' if cfg.lora.load_in_4bit else 'LoRA'} r={cfg.lora.lora_r}"
    where = "GPU" if torch.cuda.is_available() else "CPU"
    data = cfg.data if isinstance(cfg.data, str) else " ".join(cfg.data)
    print(
        f"[distill] training {cfg.model} ({cfg.method}, {method}) on {rows} rows from {data} ({where})"
        + (f", resuming from {resume_from}" if resume_from else ""),
        flush=True,
    )


def add_eos_to_generation_config(model: Any, eos_id: int) -> None:
    """List the EOS token first among the generation config's stop tokens (vLLM stops at any of them)."""
    ids = model.generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if eos_id not in ids:
        model.generation_config.eos_token_id = [eos_id, *ids] if ids else eos_id


def replace_files(src: Path, dest: Path) -> list[str]:
    """Move every file of `src` into `dest` (replacing), drop weights `dest` holds from an earlier run
    that `src` does not (a stale full model next to a new adapter, say), remove `src`."""
    dest.mkdir(parents=True, exist_ok=True)
    names = sorted(f.name for f in src.iterdir() if f.is_file())
    weights = ("model", "adapter_model", "pytorch_model", "adapter_config", "config")
    for old in dest.iterdir():
        if old.is_file() and old.name not in names and old.name.startswith(weights) and old.suffix != ".yaml":
            old.unlink()
    for name in names:
        (src / name).replace(dest / name)
    shutil.rmtree(src, ignore_errors=True)
    return names


def merge_adapter(base: str, adapter: Path, dest: Path, dtype: Any, generation_config: Any, tokenizer: Any) -> None:
    """Load the base in full precision (never the 4-bit copy QLoRA trained on), add the adapter, fold it
    into the weights and save a plain transformers model with the student's tokenizer and stop tokens."""
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.generation_config = generation_config
    eos = generation_config.eos_token_id
    merged.config.get_text_config().eos_token_id = eos[0] if isinstance(eos, list) else eos
    merged.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))


def train_and_save(prep: Prepared, cfg: TrainConfig) -> dict:
    """Train, then save the student into --output (whole files moved in from a staging folder, so a crash
    never leaves a half-written model), merge the LoRA adapter when asked, write metrics and config, push."""
    trainer, tokenizer, out = prep.trainer, prep.tokenizer, prep.out
    start = time.monotonic()
    result = trainer.train(resume_from_checkpoint=prep.resume_from)
    seconds = time.monotonic() - start
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]

    main = trainer.is_world_process_zero()
    tmp = out / ".saving"
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    if getattr(trainer, "is_fsdp_enabled", False):
        # Checkpoints stay sharded (fast to write, resumable); under SHARDED_STATE_DICT save_model writes
        # nothing at all, so the final save gathers one full state dict into ordinary safetensors.
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(tmp))  # every rank: ZeRO-3/FSDP gather the shards here
    metrics: dict[str, Any] = {}
    if main:
        tokenizer.save_pretrained(str(tmp))
        prep.model.generation_config.save_pretrained(str(tmp))  # with the EOS token: vLLM stops there
        (tmp / "README.md").unlink(missing_ok=True)  # peft's template card; push writes distill's
        (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle; the config says the same in YAML
        if cfg.lora.lora_r and cfg.lora.merge_lora:
            replace_files(tmp, out / ADAPTER)
            merged = out / ".merging"
            shutil.rmtree(merged, ignore_errors=True)
            dtype = torch.bfloat16 if trainer.args.bf16 else torch.float32
            merge_adapter(prep.path, out / ADAPTER, merged, dtype, prep.model.generation_config, tokenizer)
            replace_files(merged, out)
        else:
            replace_files(tmp, out)
        trainable = sum(getattr(p, "ds_numel", p.numel()) for p in trainer.model.parameters() if p.requires_grad)
        metrics = {
            "train_rows": len(prep.rows),
            "steps": trainer.state.global_step,
            "seconds": round(seconds, 1),
            "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "train_loss": result.training_loss,
            "method": ("qlora" if cfg.lora.load_in_4bit else "lora") if cfg.lora.lora_r else "full",
            "trainable_params": trainable,
            "merged": bool(cfg.lora.lora_r and cfg.lora.merge_lora),
            "resumed_from": prep.resume_from,
            "world_size": trainer.args.world_size,
            "distributed_type": str(getattr(trainer.args.distributed_state.distributed_type, "value", "")),
            "eos_token": tokenizer.eos_token,
            "eos_token_ids": prep.model.generation_config.eos_token_id,
            "stop_token_checked_rows": prep.checked_rows,
            **prep.stats,
            **(prep.finish() if prep.finish else {}),
        }
        (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
        config_mod.save(
            cfg, out, extra={"resolved_model": prep.path, "data_system_prompt": system_prompt_of(prep.rows)}
        )
        write_json(out / "train_metrics.json", metrics)  # last: its presence says the run finished
        print(
            f"[distill] train: {metrics['steps']} steps in {seconds:.0f} s, loss {metrics['first_loss']} -> "
            f"{metrics['last_loss']}; {_saved_what(cfg, out, prep.path)}",
            flush=True,
        )
        if cfg.push_to_hub:
            url = push_model(out, cfg.push_to_hub, private=cfg.hub_private, eval_results=cfg.eval_results)
            metrics["hub_url"] = url
            write_json(out / "train_metrics.json", metrics)
            print(f"[distill] pushed {out} to {url}", flush=True)
    trainer.accelerator.wait_for_everyone()
    return metrics


def _saved_what(cfg: TrainConfig, out: Path, base: str) -> str:
    """Where the student went and how to serve it."""
    if not cfg.lora.lora_r:
        return f"model saved to {out} (serve: vllm serve {out})"
    if cfg.lora.merge_lora:
        return f"adapter merged into the base weights and saved to {out}, adapter in {out / ADAPTER}"
    return (
        f"LoRA adapter saved to {out}; serve it with `vllm serve {base} --enable-lora --max-lora-rank {cfg.lora.lora_r} "
        f"--lora-modules student={out} --chat-template {out}/chat_template.jinja --generation-config {out}`, "
        "or train with --merge-lora true for a plain model"
    )
