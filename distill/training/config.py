"""`distill train` and `distill grpo` configurations."""

from __future__ import annotations

import importlib
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from distill.common.config import DEFAULT_PROMPT_TEMPLATE, group, load_yaml, option
from distill.common.errors import DistillError
from distill.common.resources import recipe_for

# SFTConfig values distill sets unless the recipe does: quiet, CPU-aware, saves once at the end.
SFT_DEFAULTS = {
    "report_to": "none",
    "save_strategy": "no",
    "logging_steps": 1,
    # auto: bf16 on GPUs and on CPUs with native bf16 (avx512_bf16 or AMX), else float32; on an AVX2-only EPYC a
    # bf16 matmul ran ~70x slower than float32 (emulated). A recipe's true or false is kept as written.
    "bf16": "auto",
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "num_train_epochs": 2,
    "learning_rate": 1e-4,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,
    "max_length": 2048,
    "seed": 0,
    # Batches of similar lengths: reasoning traces vary several-fold in length, and a random batch pads every
    # row to its longest one (bench/train.py measures the padding and the speed with and without it). Rows are
    # still shuffled: groups of up to 50 batches are drawn at random and sorted inside.
    "train_sampling_strategy": "group_by_length",
    # Rank 0 merges a LoRA adapter and pushes to the Hub at the end while the other ranks wait at a barrier: the
    # default 30-minute collective timeout would kill a 70B merge or a slow upload (seconds; 3 hours).
    "ddp_timeout": 10800,
}


@dataclass(frozen=True)
class Method:
    """One `distill train --method`: everything distill knows about it, in one row of METHODS."""

    name: str
    prepare: str  # "module:function" building its trainer (imported when it runs: this module stays light)
    card: str  # how the student learned, for the model card's first paragraph
    liger: bool  # distill plan: the method may use Liger's fused linear cross-entropy (no full logits)
    kd_targets: bool  # distill plan: the teacher's top-K per token rides in every batch
    qlora: bool  # distill train trains it on a 4-bit base (QLoRA)
    unsupported: tuple[str, ...] = ()  # SFTConfig keys the method's batches cannot honour (dropped, said aloud)
    why_unsupported: str = ""
    force: tuple[tuple[str, object], ...] = ()  # SFTConfig values the method needs, whatever the recipe says

    def prepare_fn(self) -> Callable[[TrainConfig], Any]:
        """The method's `prepare(cfg) -> base.Prepared`, its module imported now (torch, trl: not before)."""
        module, name = self.prepare.split(":")
        return getattr(importlib.import_module(module), name)


METHOD_TABLE = (
    Method("sft", "distill.training.sft:prepare", "by supervised fine-tuning (TRL's SFTTrainer) on", True, False, True),
    Method(
        "logit-kd",
        "distill.training.kd:prepare",
        "by logit distillation (the teacher's top-K next-token distribution at every token, mixed with "
        "cross-entropy) on",
        False,
        True,
        False,
        ("packing", "padding_free", "use_liger_kernel", "completion_only_loss", "assistant_only_loss"),
        "the per-token teacher targets are laid out per padded row, and Liger's fused loss is cross-entropy only",
        (("remove_unused_columns", False),),  # the KD columns reach the collator
    ),
    Method(
        "onpolicy",
        "distill.training.onpolicy:prepare",
        "by on-policy distillation (the student sampled its own answers and the teacher scored every token; "
        "reverse KL) on the prompts of",
        False,
        False,
        False,
        ("packing", "padding_free", "use_liger_kernel", "completion_only_loss", "assistant_only_loss"),
        "the batch is the student's own samples, built in training_step, scored against the teacher's log-probs",
        (("remove_unused_columns", False), ("train_sampling_strategy", "random")),  # raw rows, no lengths to group
    ),
)
METHODS = {m.name: m for m in METHOD_TABLE}
TRUNCATION = ("drop", "keep", "error")  # what happens to a row longer than max_length
LAUNCHERS = ("ddp", "zero2", "zero3", "fsdp")  # recipes/accelerate/<launcher>.yaml
DEFAULT_LORA_RANK = 16  # distill plan: the rank assumed for --qlora without --lora


# --------------------------------------------------------------------------------------------------
# --data: one kept-traces source, or a mixture of several


@dataclass(frozen=True)
class DataSource:
    """One entry of --data: PATH (all its rows), PATH:COUNT (that many rows, drawn at random with the seed)
    or PATH:WEIGHT (its share of a mixture; a number with a decimal point or an exponent)."""

    spec: str  # the entry as given
    path: str
    count: int = 0  # rows to take; 0: by weight, or all
    weight: float = 0.0  # share of the mixture (normalized over the sources); 0: a count, or all


_COUNT = re.compile(r"\d+")


def parse_source(entry: str) -> DataSource:
    """One --data entry (module doc of DataSource); a DistillError naming the entry when its count or weight is bad.
    A path may hold ':' itself: only a numeric tail after the last ':' is read as a count or weight."""
    entry = str(entry).strip()
    path, sep, tail = entry.rpartition(":")
    if not entry or (sep and not path.strip()):
        raise DistillError(f"--data {entry!r}: no path (give PATH, PATH:COUNT or PATH:WEIGHT)")
    if not sep or not tail.strip():
        if sep:
            raise DistillError(
                f"--data {entry}: nothing after ':' (give PATH:COUNT, e.g. {path}:600000, or PATH:WEIGHT, e.g. {path}:0.7)"
            )
        return DataSource(entry, entry)
    tail = tail.strip()
    if _COUNT.fullmatch(tail):
        if int(tail) == 0:
            raise DistillError(f"--data {entry}: a count of 0 rows (give at least 1, or leave the source out)")
        return DataSource(entry, path, count=int(tail))
    try:
        weight = float(tail)
    except ValueError:
        return DataSource(entry, entry)  # not a number: ':' is part of the path
    if not math.isfinite(weight) or weight <= 0:
        raise DistillError(f"--data {entry}: a weight must be a number above 0 (e.g. {path}:0.7), got {tail}")
    return DataSource(entry, path, weight=weight)


def data_sources(data: str | list[str]) -> list[DataSource]:
    """--data as sources, checked as a whole: every source a count or every one a weight (a source without
    either takes all its rows, which only counts go with), no path twice. One-line errors naming the entry."""
    entries = [data] if isinstance(data, str) else list(data)
    if not entries:
        raise DistillError("--data: no source given (give the kept traces: a kept.jsonl or a folder holding one)")
    sources = [parse_source(e) for e in entries]
    seen: dict[str, str] = {}
    for s in sources:
        key = os.path.normpath(s.path)
        if key in seen:
            raise DistillError(f"--data {s.spec}: {s.path} is already a source ({seen[key]}); give each file once")
        seen[key] = s.spec
    weighted = [s for s in sources if s.weight]
    if weighted and len(sources) == 1:
        raise DistillError(
            f"--data {sources[0].spec}: a weight shares rows among several sources; give more sources "
            f"(e.g. {sources[0].path}:0.7 other:0.3), a count ({sources[0].path}:600000), or the path alone for all rows"
        )
    if weighted:
        other = next((s for s in sources if not s.weight), None)
        if other is not None:
            kind = "a count" if other.count else "no weight"
            raise DistillError(
                f"--data {other.spec}: {kind} among weighted sources ({weighted[0].spec}); give every source a weight "
                "(shares of the mixture) or every one a count of rows"
            )
    if len(sources) > 1 and any(s.path == "builtin" for s in sources):
        raise DistillError("--data builtin: the built-in prompts (--method onpolicy) do not mix with other sources")
    return sources


def is_mixture(data: str | list[str]) -> bool:
    """True when --data is more than one whole source: several sources, or a count."""
    sources = data_sources(data)
    return len(sources) > 1 or bool(sources[0].count or sources[0].weight)


@dataclass
class LoraOptions:
    """LoRA / QLoRA adapters instead of full fine-tuning."""

    lora_r: int = option(0, "LoRA rank (0: full fine-tuning)")
    lora_alpha: int = option(0, "LoRA scaling alpha (0: twice lora_r)")
    lora_dropout: float = option(0.05, "dropout on the LoRA branch")
    lora_target_modules: str = option(
        "all-linear", "modules that get adapters: all-linear, or comma-separated names such as q_proj,v_proj"
    )
    load_in_4bit: bool = option(
        False, "QLoRA: load the frozen base in 4-bit NF4 (bitsandbytes, CUDA only; needs lora_r)"
    )
    merge_lora: bool = option(
        False, "after LoRA training, merge the adapter into the base weights and save a plain model (vLLM-ready)"
    )

    def __post_init__(self) -> None:
        for key in ("lora_r", "lora_alpha"):
            if getattr(self, key) < 0:
                raise DistillError(f"train: key '{key}' must be 0 or more, got {getattr(self, key)}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise DistillError(f"train: key 'lora_dropout' must lie in [0, 1), got {self.lora_dropout}")
        if (self.load_in_4bit or self.merge_lora) and not self.lora_r:
            key = "load_in_4bit" if self.load_in_4bit else "merge_lora"
            raise DistillError(f"train: key '{key}' needs LoRA: set lora_r (e.g. 16)")


@dataclass
class LaunchOptions:
    """How the training processes start: this process, or `accelerate launch` over GPUs and nodes."""

    launcher: str = option(
        "", "'' (this process) or ddp|zero2|zero3|fsdp: run under `accelerate launch` with recipes/accelerate/<it>.yaml"
    )
    num_gpus: int = option(0, "with --launcher: GPUs per node (0: all this node has)")
    num_nodes: int = option(1, "with --launcher: machines taking part")
    machine_rank: int = option(0, "with --launcher: this machine's rank among --num-nodes (0 on the head node)")
    main_process_ip: str = option("", "with --launcher on several nodes: address of the rank-0 machine")
    main_process_port: int = option(29500, "with --launcher: rendezvous port on the rank-0 machine")
    print_launch: bool = option(
        False, "with --launcher: print the `accelerate launch` command and exit without running it"
    )

    def __post_init__(self) -> None:
        self.launcher = self.launcher.strip().lower()
        if self.launcher not in ("", *LAUNCHERS):
            raise DistillError(
                f"train: key 'launcher' must be one of {', '.join(LAUNCHERS)} (or '' for none), got {self.launcher!r}"
            )
        if self.num_gpus < 0:
            raise DistillError(f"train: key 'num_gpus' must be 0 or more, got {self.num_gpus}")
        if self.num_nodes < 1:
            raise DistillError(f"train: key 'num_nodes' must be at least 1, got {self.num_nodes}")
        if not 0 <= self.machine_rank < self.num_nodes:
            raise DistillError(
                f"train: key 'machine_rank' must lie in [0, {self.num_nodes - 1}] (num_nodes is {self.num_nodes}), "
                f"got {self.machine_rank}"
            )


@dataclass
class KDOptions:
    """--method logit-kd: the teacher's top-K per token mixed with cross-entropy."""

    kd_alpha: float = option(
        0.5, "logit-kd: weight of the KD term; 1 - kd_alpha weighs cross-entropy on the sampled tokens"
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.kd_alpha <= 1.0:
            raise DistillError(f"train: key 'kd_alpha' must lie in [0, 1], got {self.kd_alpha}")


@dataclass
class OnPolicyOptions:
    """--method onpolicy: the student samples, the teacher's server scores its tokens."""

    teacher_url: str = option(
        "", "onpolicy: the teacher's running vLLM server (…/v1), which scores the student's samples"
    )
    onpolicy_loss: str = option(
        "reverse-kl", "onpolicy: reverse-kl (sampled, per token or byte span) | jsd (generalized JSD on the top-K)"
    )
    onpolicy_beta: float = option(0.5, "onpolicy jsd: GKD's beta (0: forward KL, 1: reverse KL)")
    onpolicy_lambda: float = option(
        1.0, "onpolicy: share of sequences the student samples (GKD's lambda); the rest are --data's traces"
    )
    onpolicy_top_k: int = option(
        0, "onpolicy: the teacher's top-K per token to request (needed by jsd; 0: only the sampled token)"
    )
    onpolicy_temperature: float = option(1.0, "onpolicy: the student's sampling temperature")
    onpolicy_max_new_tokens: int = option(256, "onpolicy: longest completion the student samples")

    def __post_init__(self) -> None:
        if not 0.0 <= self.onpolicy_lambda <= 1.0 or not 0.0 <= self.onpolicy_beta <= 1.0:
            raise DistillError("train: keys 'onpolicy_lambda' and 'onpolicy_beta' must lie in [0, 1]")
        self.onpolicy_loss = self.onpolicy_loss.strip().lower()
        if self.onpolicy_loss not in ("reverse-kl", "jsd"):
            raise DistillError(f"train: key 'onpolicy_loss' must be reverse-kl or jsd, got {self.onpolicy_loss!r}")
        if self.onpolicy_top_k < 0 or self.onpolicy_max_new_tokens < 1:
            raise DistillError("train: key 'onpolicy_top_k' must be 0 or more and 'onpolicy_max_new_tokens' at least 1")


@dataclass
class TrainConfig:
    """Train a student on verified traces: SFT (TRL SFTTrainer, the default), logit KD on the teacher's
    top-K log-probabilities (--method logit-kd) or on-policy distillation from the teacher's server
    (--method onpolicy; docs/DISTILLATION.md).

    Full fine-tuning or LoRA/QLoRA, in this process or over several GPUs and nodes (`--launcher` starts
    `accelerate launch` with recipes/accelerate/<launcher>.yaml), resumable from checkpoints, and
    optionally pushed to the Hugging Face Hub with a model card."""

    size: str = option("tiny", "student size: tiny|1.5b|7b|8b|14b|32b|70b (picks recipes/<method>/*-<size>.yaml)")
    model: str = option("embedded:student", "student model spec")
    # A list for the command line's `--data A B`; one whole source is kept as a plain string (see __post_init__).
    data: list[str] = option(
        "runs/filtered/kept.jsonl",
        "kept traces (JSONL with a messages column) or a folder holding kept.jsonl; several make a mixture (sft): "
        "PATH:WEIGHT each (shares, e.g. runs/math:0.7 runs/general:0.3) or PATH:COUNT each (rows, e.g. "
        "runs/math:600000 runs/general:200000; PATH alone: all its rows), drawn and shuffled with the seed",
    )
    dataset_cache: str = option(
        "",
        "sft: folder for the Arrow copy of --data and its token lengths and tokenized forms, reused by a resume or "
        "a later run on the same files ('' = $DISTILL_HOME/datasets; on several nodes, a shared folder is read once)",
    )
    output: str = option("runs/student", "folder the trained model, tokenizer and config are saved to")
    requires_gpu: bool = option(False, "stop with a clear message when no CUDA GPU is present")
    attn_implementation: str = option(
        "", "attention kernel on GPU, e.g. flash_attention_2 ('' = transformers' default)"
    )
    max_examples: int = option(0, "use at most this many training rows (0: all)")
    drop_system_prompt: bool = option(
        False,
        "train on each row without its system turn: an instruction the teacher needed to write the traces (e.g. "
        "'be brief') that the student should follow by default; `distill eval` then asks the student without one",
    )
    # Chat template and the token that ends an assistant turn
    chat_template: str = option(
        "",
        "chat template: '' = the tokenizer's own, a .jinja file, or a name under recipes/chat_templates/ "
        "(e.g. chatml-think for base Qwen students)",
    )
    eos_token: str = option(
        "",
        "token that ends an assistant turn and generation ('' = the tokenizer's eos); base students need the "
        "chat template's end-of-turn token here, e.g. <|im_end|>, or they never learn to stop",
    )
    method: str = option(
        "sft",
        "sft (cross-entropy on the teacher's traces) | logit-kd (the teacher's top-K per token, from `distill "
        "generate --logprobs K`, mixed with cross-entropy) | onpolicy (the student samples, the teacher's server "
        "scores its tokens, reverse KL)",
    )
    teacher: str = option(
        "embedded:teacher",
        "logit-kd and onpolicy: the teacher model (its tokenizer reads the stored token ids / the scores)",
    )
    model_config: dict = option(
        {},
        "config.json fields set on the student before training and saved with it, e.g. an extended RoPE: "
        "{max_position_embeddings: 32768, rope_parameters: {rope_type: default, rope_theta: 300000.0}}",
    )
    truncation: str = option(
        "drop",
        "rows longer than max_length: drop (counted, reported and left out; a cut row loses its final answer "
        "and its stop token), keep (trained cut, with a warning), error (stop before training)",
    )
    resume: bool = option(False, "resume from the last checkpoint in <output>/checkpoints")
    rehearse: bool = option(
        False,
        "rehearse the GPU run on this CPU: the recipe resolved as the GPU run would, a random miniature of the "
        "model (same class, vocabulary, special tokens, RoPE), two optimizer steps on --data, and a preflight "
        "report (lengths, stop tokens, batch, schedule, launch command, memory plan); exit 1 when a check fails",
    )
    # Hub
    push_to_hub: str = option(
        "", "after training, upload the saved student with a model card to this Hub model repo id"
    )
    hub_private: bool = option(False, "create the --push-to-hub repo as private")
    eval_results: str = option(
        "", "results.json of `distill eval` for the card ('' = look for one of this model next to --output)"
    )
    # Settings by concern (flat keys: --lora-r, --launcher, --kd-alpha, --onpolicy-loss, ...)
    sft: dict = option({}, "TRL SFTConfig fields (any key of trl.SFTConfig may also be given at the top level)")
    lora: LoraOptions = group(LoraOptions, "LoRA / QLoRA")
    launch: LaunchOptions = group(LaunchOptions, "multi-GPU / multi-node launch")
    kd: KDOptions = group(KDOptions, "logit distillation")
    onpolicy: OnPolicyOptions = group(OnPolicyOptions, "on-policy distillation")

    def __post_init__(self) -> None:
        self.method = self.method.strip().lower()
        if self.method not in METHODS:
            raise DistillError(f"train: key 'method' must be one of {', '.join(METHODS)}, got {self.method!r}")
        # One whole source stays a plain string (what logit-kd, onpolicy, --rehearse and the launcher read, and how
        # a saved config spells it); a mixture is the list of its entries, which only SFT trains on so far.
        entries = [self.data] if isinstance(self.data, str) else [str(e).strip() for e in self.data]
        mixture = is_mixture(entries)
        self.data = entries if mixture else data_sources(entries)[0].path
        if mixture:
            spec = " ".join(entries)
            if self.method != "sft":
                raise DistillError(
                    f"--data {spec}: a mixture trains with --method sft; {self.method} takes one source (one path)"
                )
            if self.rehearse:
                raise DistillError(f"--data {spec}: --rehearse takes one source; rehearse on the largest one")
        if self.max_examples < 0:
            raise DistillError(f"train: key 'max_examples' must be 0 or more, got {self.max_examples}")
        self.truncation = self.truncation.strip().lower()
        if self.truncation not in TRUNCATION:
            raise DistillError(
                f"train: key 'truncation' must be one of {', '.join(TRUNCATION)}, got {self.truncation!r}"
            )
        if self.push_to_hub.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
            raise DistillError(
                "train: key 'push_to_hub' takes a Hub model repo id (e.g. alice/qwen-7b-distill), "
                f"got {self.push_to_hub!r}"
            )


def recipe_layer(given: dict) -> tuple[dict, str]:
    """The base layer of `distill train`: recipes/<method>/*-<size>.yaml for the size and method the user gave
    (flags, --set or --config; else the defaults), and its path (named in errors about its keys)."""
    size = str(given.get("size") or TrainConfig.size)
    method = str(given.get("method") or TrainConfig.method).strip().lower()
    path = recipe_for(size, method)
    return {**load_yaml(path), "size": size}, str(path)


@dataclass
class GrpoConfig:
    """Reinforcement learning with verifiable rewards (GRPO, TRL GRPOTrainer) on problems with known answers.

    A recipe's keys are these fields or any field of trl.GRPOConfig (num_generations, max_completion_length,
    beta, loss_type, use_vllm, vllm_mode, ...), which go to GRPOConfig unchanged."""

    model: str = option(
        "embedded:teacher", "policy model spec: embedded:teacher|embedded:student, a folder or a Hub id"
    )
    output: str = option(
        "runs/grpo", "folder the trained model, tokenizer, config, log_history.json and rewards.json go to"
    )
    requires_gpu: bool = option(False, "stop with a clear message when no CUDA GPU is present")
    attn_implementation: str = option(
        "", "attention kernel on GPU, e.g. flash_attention_2 ('' = transformers' default)"
    )
    chat_template: str = option(
        "", "chat template: '' = the tokenizer's own, a .jinja file, or a name under recipes/chat_templates/"
    )
    eos_token: str = option(
        "", "token that ends a completion ('' = the tokenizer's eos); base models with chatml-think: <|im_end|>"
    )
    # prompts
    dataset: str = option("builtin", "prompts: 'builtin', a local .jsonl/.parquet file, or a Hugging Face dataset id")
    split: str = option("train", "split of the dataset (builtin: train|test)")
    problem_column: str = option("problem", "column holding the problem text")
    answer_column: str = option("answer", "column holding the gold answer (a \\boxed{} solution works too)")
    id_column: str = option("", "column holding a stable prompt id ('' to use the row index)")
    answer_regex: str = option(
        "", "regex whose group is the gold inside a longer answer text (GSM8K: '####\\s*(.+?)\\s*$')"
    )
    num_prompts: int = option(256, "how many prompts to use (0: all; builtin: how many to generate)")
    levels: list[int] = option([1, 2], "builtin only: difficulty levels to draw from")
    seed: int = option(0, "seed of the built-in problems and of training (shuffling, sampling)")
    prompt_template: str = option(DEFAULT_PROMPT_TEMPLATE, "user message; {problem} is replaced by the problem")
    system_prompt: str = option("", "system message ('' for none)")
    # rewards
    reward_funcs: list[str] = option(
        ["accuracy", "boxed_format"], "rewards by name: accuracy, format, boxed_format, length, repetition"
    )
    reward_weights: list[float] = option([], "one weight per reward (empty: all 1.0); the reward is their weighted sum")
    format_tags: list[str] = option(["think"], "format reward: tag blocks required in this order, e.g. [think, answer]")
    overlong_buffer: int = option(
        0, "length reward: tokens before max_completion_length where the penalty starts (0: 1/5)"
    )
    verify_timeout: float = option(5.0, "accuracy reward: hard wall-clock bound per sample for math verification, s")
    verify_workers: int = option(0, "accuracy reward: verification worker processes (0: one per core)")
    max_minutes: float = option(0.0, "end training cleanly after this many minutes and save the model (0: no limit)")
    truncation: str = option(
        "drop",
        "prompts whose tokens plus max_completion_length exceed the model's positions (or vllm_max_model_length): "
        "drop (counted and reported), keep (with a warning), error",
    )
    grpo: dict = option({}, "TRL GRPOConfig fields (any key of trl.GRPOConfig may also be given at the top level)")

    def __post_init__(self) -> None:
        if self.reward_weights and len(self.reward_weights) != len(self.reward_funcs):
            raise DistillError(
                f"grpo: key 'reward_weights' has {len(self.reward_weights)} weights for "
                f"{len(self.reward_funcs)} reward_funcs {self.reward_funcs}"
            )
        for key in ("overlong_buffer", "verify_workers", "num_prompts"):
            if getattr(self, key) < 0:
                raise DistillError(f"grpo: key '{key}' must be 0 or more, got {getattr(self, key)}")
        if self.max_minutes < 0:
            raise DistillError(f"grpo: key 'max_minutes' must be 0 or more, got {self.max_minutes}")
        self.truncation = self.truncation.strip().lower()
        if self.truncation not in TRUNCATION:
            raise DistillError(
                f"grpo: key 'truncation' must be one of {', '.join(TRUNCATION)}, got {self.truncation!r}"
            )
        if not self.verify_timeout > 0:
            raise DistillError(f"grpo: key 'verify_timeout' must be > 0 seconds, got {self.verify_timeout}")

    # `build` puts pass-through keys (trl.GRPOConfig fields) into `.sft`; here they belong in `grpo`.
    @property
    def sft(self) -> dict:
        return self.grpo

    @sft.setter
    def sft(self, value: dict) -> None:
        self.grpo = value


@dataclass
class PlanConfig:
    """Estimate per-GPU memory and throughput of an SFT or logit-KD run, and pick the cheapest launcher that fits."""

    size: str = option(
        "7b", "student size: tiny|1.5b|7b|8b|14b|32b|70b (the model comes from recipes/<method>/*-<size>.yaml)"
    )
    method: str = option(
        "sft",
        "sft | logit-kd (no Liger kernels, the loss chunked over positions, the teacher's top-K per token in every "
        "batch; no QLoRA) | onpolicy (no Liger kernels: the full logits of the student's samples)",
    )
    kd_top_k: int = option(20, "logit-kd: the teacher's top-K per token in the traces (distill generate --logprobs K)")
    model: str = option("", "Hub id of the student instead of the recipe's (must be in the planner's table)")
    gpus: int = option(8, "GPUs per node")
    nodes: int = option(1, "nodes")
    gpu_memory: float = option(80.0, "memory of one GPU in GiB (H100/A100 80GB: 80, H200: 141)")
    max_length: int = option(
        0, "tokens per sequence planned for: the longest packed sequence (0: the recipe's max_length)"
    )
    launcher: str = option("auto", "auto|ddp|zero2|zero3|fsdp (auto: the cheapest that fits, ddp < zero2 < zero3)")
    lora: int = option(0, "LoRA rank on all linear layers (0: full fine-tuning)")
    qlora: bool = option(False, f"4-bit NF4 base weights with LoRA (rank --lora, or {DEFAULT_LORA_RANK})")
    batch: int = option(0, "per-device batch in sequences (0: the largest of 8, 4, 2, 1 that fits)")
    gradient_checkpointing: str = option("auto", "auto|on|off (auto: on only when needed to fit)")
    liger: bool = option(True, "Liger kernels incl. fused linear cross-entropy, as the recipes set (no full logits)")
    global_batch: int = option(128, "target sequences per optimizer step (open-r1 7B: 8 GPUs x 2 x 8 = 128)")
    gpu_tflops: float = option(989.0, "peak dense bf16 TFLOPS of one GPU (H100 SXM: 989, A100: 312, H200: 989)")
    mfu: float = option(0.4, "model FLOPs utilisation assumed for the throughput estimate")
    json: bool = option(False, "print the plan as JSON instead of a table")

    def __post_init__(self) -> None:
        for key in ("gpus", "nodes", "global_batch"):
            if getattr(self, key) < 1:
                raise DistillError(f"plan: key '{key}' must be at least 1, got {getattr(self, key)}")
        for key in ("max_length", "lora", "batch"):
            if getattr(self, key) < 0:
                raise DistillError(f"plan: key '{key}' must be 0 or more, got {getattr(self, key)}")
        self.method = self.method.strip().lower()
        if self.method not in METHODS:
            raise DistillError(f"plan: key 'method' must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.kd_top_k < 1:
            raise DistillError(f"plan: key 'kd_top_k' must be at least 1, got {self.kd_top_k}")
        if self.qlora and not METHODS[self.method].qlora:
            raise DistillError(
                f"plan: --method {self.method} does not train QLoRA students (distill train refuses --load-in-4bit "
                "for it): drop --qlora, or plan LoRA with --lora R"
            )
        for key in ("gpu_memory", "gpu_tflops"):
            if not getattr(self, key) > 0:
                raise DistillError(f"plan: key '{key}' must be positive, got {getattr(self, key)}")
        if not 0 < self.mfu <= 1:
            raise DistillError(f"plan: key 'mfu' must lie in (0, 1], got {self.mfu}")
        self.launcher = self.launcher.lower()
        if self.launcher not in ("auto", *LAUNCHERS):
            raise DistillError(f"plan: key 'launcher' must be auto, {', '.join(LAUNCHERS)}; got {self.launcher!r}")
        self.gradient_checkpointing = str(self.gradient_checkpointing).lower()
        aliases = {"true": "on", "yes": "on", "1": "on", "false": "off", "no": "off", "0": "off"}
        self.gradient_checkpointing = aliases.get(self.gradient_checkpointing, self.gradient_checkpointing)
        if self.gradient_checkpointing not in ("auto", "on", "off"):
            raise DistillError(
                f"plan: key 'gradient_checkpointing' must be auto, on or off; got {self.gradient_checkpointing!r}"
            )
