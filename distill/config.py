"""Typed configuration for every stage.

Each stage has a dataclass whose fields all have defaults and a help text. A YAML recipe maps 1:1 onto
the fields; precedence is default < `--config FILE` < command-line flags. An unknown key is an error
that names the key and the file. The resolved config is written next to every output
(`distill_config.yaml`), so any output folder says exactly what produced it.

`distill train` recipes may also carry any field of TRL's SFTConfig (validated against it); those
land in `TrainConfig.sft` and go to SFTConfig unchanged.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distill.errors import DistillError

DEFAULT_PROMPT_TEMPLATE = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
CONFIG_FILENAME = "distill_config.yaml"
_FLOAT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


# --------------------------------------------------------------------------------------------------
# Stage configs


@dataclass
class ServeConfig:
    """Start vLLM's OpenAI-compatible server for a model and wait until it answers.

    Any other vLLM server flag goes after `--`: `distill serve --model M -- --enable-prefix-caching`."""

    model: str = _f("embedded:teacher", "model spec: embedded:teacher|embedded:student, a folder or a Hub id")
    host: str = _f("127.0.0.1", "address to bind")
    port: int = _f(0, "port to bind (0: pick a free one)")
    served_model_name: str = _f("", "name clients request the model by ('' = a short name derived from --model)")
    max_model_len: int = _f(4096, "longest prompt + completion in tokens (vLLM --max-model-len)")
    dtype: str = _f("bfloat16", "weights dtype for vLLM (--dtype)")
    tensor_parallel_size: int = _f(1, "GPUs one model replica is split across, layer by layer (vLLM -tp)")
    pipeline_parallel_size: int = _f(1, "pipeline stages (vLLM -pp); with Ray, stages may sit on different nodes")
    data_parallel_size: int = _f(1, "independent model replicas behind this one server (vLLM -dp)")
    gpu_memory_utilization: float = _f(0.0, "GPU only: share of GPU memory vLLM may take (0: vLLM's default, 0.9)")
    distributed_executor_backend: str = _f("", "'' (vLLM picks), mp or ray (ray for a model spanning nodes)")
    startup_timeout: float = _f(900.0, "seconds to wait for the server to answer before giving up")
    cpu_kvcache_gb: float = _f(4.0, "CPU only: KV-cache size in GiB (VLLM_CPU_KVCACHE_SPACE)")
    extra_args: list[str] = _f(
        [], "further vLLM server flags, passed through unchanged (on the command line: after --)"
    )

    def __post_init__(self) -> None:
        for key in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"):
            if getattr(self, key) < 1:
                raise DistillError(f"serve: key '{key}' must be at least 1, got {getattr(self, key)}")
        if not 0.0 <= self.gpu_memory_utilization <= 1.0:
            raise DistillError(
                f"serve: key 'gpu_memory_utilization' must lie in [0, 1], got {self.gpu_memory_utilization}"
            )


@dataclass
class GenerateConfig:
    """Sample reasoning traces from a teacher behind an OpenAI-compatible server."""

    output: str = _f("runs/traces.jsonl", "JSONL file the trace rows are appended to")
    teacher: str = _f("embedded:teacher", "model spec served when no --server-url is given")
    server_url: list[str] = _f(
        [],
        "running OpenAI-compatible server(s) (…/v1) to use instead of starting vLLM; with several, each "
        "request goes to the one with the fewest requests in flight",
    )
    served_model_name: str = _f("", "model name to request from --server-url (default: the server's first model)")
    dataset: str = _f("builtin", "prompts: 'builtin', a local .jsonl/.parquet file, or a Hugging Face dataset id")
    split: str = _f("train", "split of the dataset (builtin: train|test)")
    problem_column: str = _f("problem", "column holding the problem text")
    answer_column: str = _f("answer", "column holding the gold answer ('' if none)")
    id_column: str = _f("", "column holding a stable prompt id ('' to use the row index)")
    num_prompts: int = _f(64, "how many prompts to use (0: all; builtin: how many to generate)")
    levels: list[int] = _f([1, 2, 3, 4, 5], "builtin only: difficulty levels to draw from")
    seed: int = _f(0, "seed for built-in problems and per-sample sampling seeds")
    num_samples: int = _f(4, "samples per prompt")
    temperature: float = _f(0.6, "sampling temperature (R1 uses 0.6)")
    top_p: float = _f(
        1.0,
        "nucleus sampling; 1.0 by default because on CPU vLLM sorts the whole vocabulary per token "
        "for top_p < 1 (≈3x slower for a 152k vocabulary); R1 uses 0.95 on GPUs",
    )
    max_tokens: int = _f(1024, "max new tokens per sample")
    logprobs: int = _f(
        0,
        "store the teacher's top-K log-probabilities of every generated token in each row, for "
        "`distill train --method logit-kd` (0: none; vLLM serves at most 20 unless started with --max-logprobs)",
    )
    prompt_template: str = _f(DEFAULT_PROMPT_TEMPLATE, "user message; {problem} is replaced by the problem")
    system_prompt: str = _f("", "system message ('' for none)")
    per_request_seed: bool = _f(
        False,
        "send a stable per-sample seed with each request (reproducible sampling on GPU vLLM); off by "
        "default because vLLM's CPU build crashes its engine on seeded requests whose prefill is chunked",
    )
    concurrency: int = _f(0, "requests in flight at once, over all servers (0: 64 per server)")
    request_timeout: float = _f(600.0, "seconds before one attempt of a request is abandoned (then retried)")
    max_retries: int = _f(4, "retries per sample after a 5xx, 429, timeout or dropped connection (with backoff)")
    retry_backoff: float = _f(1.0, "seconds of the first retry's backoff; doubles per retry (up to 30 s), with jitter")
    overwrite: bool = _f(
        False, "start a new run in --output, deleting its earlier traces (needed when a sampling setting changed)"
    )
    push_to_hub: str = _f("", "after the run, upload the output folder as a Hub dataset with this repo id")
    serve: ServeConfig = _f(None, "server settings when generate starts vLLM itself")  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.serve is None or isinstance(self.serve, dict):
            self.serve = build(ServeConfig, self.serve or {}, source="serve")
        if isinstance(self.server_url, str):  # one URL given as text in Python code
            self.server_url = [self.server_url] if self.server_url else []


@dataclass
class FilterConfig:
    """Keep only verified-correct traces."""

    output: str = _f("runs/filtered", "folder for kept.jsonl, rejected.jsonl and report.json")
    # verification
    timeout: float = _f(5.0, "hard wall-clock bound per sample for math verification, seconds")
    workers: int = _f(0, "verification worker processes (0: one per core)")
    code_timeout: float = _f(5.0, "code rows: CPU seconds per test run in the sandbox (wall bound: twice this)")
    code_memory_mb: int = _f(1024, "code rows: memory limit of the sandboxed process, MiB")
    judge_url: list[str] = _f([], "OpenAI-compatible server(s) of an LLM judge for answers no rule can check")
    judge_model: str = _f("", "model name to request from --judge-url ('' = the server's first)")
    # format and quality
    require_think: bool = _f(False, "reject traces without a <think> block (for R1-style teachers)")
    min_tokens: int = _f(0, "reject traces with fewer completion tokens (0: no bound)")
    max_tokens: int = _f(0, "reject traces with more completion tokens (0: no bound)")
    check_language: bool = _f(True, "reject traces whose language (script) differs from the prompt's or mixes")
    max_foreign_share: float = _f(0.1, "share of letters in another script that makes a trace 'mixed'")
    max_repetition: float = _f(0.5, "reject looping text: share of repeated 8-grams in the worst window (1: off)")
    # safety
    safety: bool = _f(True, "screen prompt and trace against the safety keyword list")
    safety_keywords: str = _f("", "keyword list file ('' = data/safety_keywords.txt)")
    review_url: list[str] = _f([], "OpenAI-compatible server(s) of an LLM that reviews keyword-flagged rows")
    review_model: str = _f("", "model name to request from --review-url")
    # dedup and decontamination
    dedup: str = _f("near", "duplicate prompts across ids: none | exact | near (MinHash)")
    dedup_threshold: float = _f(0.8, "near-duplicate Jaccard similarity threshold")
    decontaminate: list[str] = _f(
        ["all"],
        "benchmarks under eval/ whose problems must not appear in the data ('all': every one that can be loaded; "
        "an empty list turns it off)",
    )
    decontam_ngram: int = _f(8, "n-gram length (words) for decontamination")
    # selection
    max_per_prompt: int = _f(0, "keep at most this many verified samples per prompt (0: all)")
    selection: str = _f("shortest", "which samples --max-per-prompt keeps: shortest | random")
    min_pass_rate: float = _f(0.0, "keep only prompts whose pass rate is at least this (e.g. 0.1 for GRPO data)")
    max_pass_rate: float = _f(1.0, "keep only prompts whose pass rate is at most this (e.g. 0.9 for GRPO data)")
    seed: int = _f(0, "seed for random selection")
    push_to_hub: str = _f("", "after filtering, upload the output folder as a Hub dataset with this repo id")


@dataclass
class TrainConfig:
    """Train a student on verified traces: SFT (TRL SFTTrainer, the default), logit KD on the teacher's
    top-K log-probabilities (--method logit-kd) or on-policy distillation from the teacher's server
    (--method onpolicy; docs/DISTILLATION.md).

    Full fine-tuning or LoRA/QLoRA, in this process or over several GPUs and nodes (`--launcher` starts
    `accelerate launch` with recipes/accelerate/<launcher>.yaml), resumable from checkpoints, and
    optionally pushed to the Hugging Face Hub with a model card."""

    size: str = _f("tiny", "student size: tiny|1.5b|7b|8b|14b|32b|70b (picks recipes/<method>/*-<size>.yaml)")
    model: str = _f("embedded:student", "student model spec")
    data: str = _f(
        "runs/filtered/kept.jsonl", "kept traces (JSONL with a messages column) or a folder holding kept.jsonl"
    )
    output: str = _f("runs/student", "folder the trained model, tokenizer and config are saved to")
    requires_gpu: bool = _f(False, "stop with a clear message when no CUDA GPU is present")
    attn_implementation: str = _f("", "attention kernel on GPU, e.g. flash_attention_2 ('' = transformers' default)")
    max_examples: int = _f(0, "use at most this many training rows (0: all)")
    # Chat template and the token that ends an assistant turn
    chat_template: str = _f(
        "",
        "chat template: '' = the tokenizer's own, a .jinja file, or a name under recipes/chat_templates/ "
        "(e.g. chatml-think for base Qwen students)",
    )
    eos_token: str = _f(
        "",
        "token that ends an assistant turn and generation ('' = the tokenizer's eos); base students need the "
        "chat template's end-of-turn token here, e.g. <|im_end|>, or they never learn to stop",
    )
    # Method
    method: str = _f(
        "sft",
        "sft (cross-entropy on the teacher's traces) | logit-kd (the teacher's top-K per token, from `distill "
        "generate --logprobs K`, mixed with cross-entropy) | onpolicy (the student samples, the teacher's server "
        "scores its tokens, reverse KL)",
    )
    teacher: str = _f(
        "embedded:teacher", "logit-kd: the model that generated the traces (its tokenizer reads the stored token ids)"
    )
    kd_alpha: float = _f(
        0.5, "logit-kd: weight of the KD term; 1 - kd_alpha weighs cross-entropy on the sampled tokens"
    )
    teacher_url: str = _f("", "onpolicy: the teacher's running vLLM server (…/v1), which scores the student's samples")
    onpolicy_loss: str = _f(
        "reverse-kl", "onpolicy: reverse-kl (sampled, per token or byte span) | jsd (generalized JSD on the top-K)"
    )
    onpolicy_beta: float = _f(0.5, "onpolicy jsd: GKD's beta (0: forward KL, 1: reverse KL)")
    onpolicy_lambda: float = _f(
        1.0, "onpolicy: share of sequences the student samples (GKD's lambda); the rest are --data's traces"
    )
    onpolicy_top_k: int = _f(
        0, "onpolicy: the teacher's top-K per token to request (needed by jsd; 0: only the sampled token)"
    )
    onpolicy_temperature: float = _f(1.0, "onpolicy: the student's sampling temperature")
    onpolicy_max_new_tokens: int = _f(256, "onpolicy: longest completion the student samples")
    # LoRA / QLoRA
    lora_r: int = _f(0, "LoRA rank (0: full fine-tuning)")
    lora_alpha: int = _f(0, "LoRA scaling alpha (0: twice lora_r)")
    lora_dropout: float = _f(0.05, "dropout on the LoRA branch")
    lora_target_modules: str = _f(
        "all-linear", "modules that get adapters: all-linear, or comma-separated names such as q_proj,v_proj"
    )
    load_in_4bit: bool = _f(False, "QLoRA: load the frozen base in 4-bit NF4 (bitsandbytes, CUDA only; needs lora_r)")
    merge_lora: bool = _f(
        False, "after LoRA training, merge the adapter into the base weights and save a plain model (vLLM-ready)"
    )
    # Checkpoints
    resume: bool = _f(False, "resume from the last checkpoint in <output>/checkpoints")
    # Multi-GPU / multi-node launch
    launcher: str = _f(
        "", "'' (this process) or ddp|zero2|zero3|fsdp: run under `accelerate launch` with recipes/accelerate/<it>.yaml"
    )
    num_gpus: int = _f(0, "with --launcher: GPUs per node (0: all this node has)")
    num_nodes: int = _f(1, "with --launcher: machines taking part")
    machine_rank: int = _f(0, "with --launcher: this machine's rank among --num-nodes (0 on the head node)")
    main_process_ip: str = _f("", "with --launcher on several nodes: address of the rank-0 machine")
    main_process_port: int = _f(29500, "with --launcher: rendezvous port on the rank-0 machine")
    print_launch: bool = _f(False, "with --launcher: print the `accelerate launch` command and exit without running it")
    # Hub
    push_to_hub: str = _f("", "after training, upload the saved student with a model card to this Hub model repo id")
    hub_private: bool = _f(False, "create the --push-to-hub repo as private")
    eval_results: str = _f(
        "", "results.json of `distill eval` for the card ('' = look for one of this model next to --output)"
    )
    sft: dict = _f({}, "TRL SFTConfig fields (any key of trl.SFTConfig may also be given at the top level)")

    def __post_init__(self) -> None:
        launchers = ("ddp", "zero2", "zero3", "fsdp")  # recipes/accelerate/<launcher>.yaml
        self.method = self.method.strip().lower()
        if self.method not in ("sft", "logit-kd", "onpolicy"):
            raise DistillError(f"train: key 'method' must be sft, logit-kd or onpolicy, got {self.method!r}")
        if not 0.0 <= self.onpolicy_lambda <= 1.0 or not 0.0 <= self.onpolicy_beta <= 1.0:
            raise DistillError("train: keys 'onpolicy_lambda' and 'onpolicy_beta' must lie in [0, 1]")
        if not 0.0 <= self.kd_alpha <= 1.0:
            raise DistillError(f"train: key 'kd_alpha' must lie in [0, 1], got {self.kd_alpha}")
        self.launcher = self.launcher.strip().lower()
        if self.launcher not in ("", *launchers):
            raise DistillError(
                f"train: key 'launcher' must be one of {', '.join(launchers)} (or '' for none), got {self.launcher!r}"
            )
        for key in ("lora_r", "lora_alpha", "num_gpus", "max_examples"):
            if getattr(self, key) < 0:
                raise DistillError(f"train: key '{key}' must be 0 or more, got {getattr(self, key)}")
        if self.num_nodes < 1:
            raise DistillError(f"train: key 'num_nodes' must be at least 1, got {self.num_nodes}")
        if not 0 <= self.machine_rank < self.num_nodes:
            raise DistillError(
                f"train: key 'machine_rank' must lie in [0, {self.num_nodes - 1}] (num_nodes is {self.num_nodes}), "
                f"got {self.machine_rank}"
            )
        if not 0.0 <= self.lora_dropout < 1.0:
            raise DistillError(f"train: key 'lora_dropout' must lie in [0, 1), got {self.lora_dropout}")
        if (self.load_in_4bit or self.merge_lora) and not self.lora_r:
            key = "load_in_4bit" if self.load_in_4bit else "merge_lora"
            raise DistillError(f"train: key '{key}' needs LoRA: set lora_r (e.g. 16)")
        if self.push_to_hub.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
            raise DistillError(
                "train: key 'push_to_hub' takes a Hub model repo id (e.g. alice/qwen-7b-distill), "
                f"got {self.push_to_hub!r}"
            )


@dataclass
class EvalConfig:
    """pass@1 of a model on a benchmark (eval/<name>.yaml), served with vLLM."""

    model: list[str] = _f(
        ["embedded:student"],
        "model spec(s) to evaluate; several are evaluated one after another into <output>/<name>/ and "
        "compared in <output>/comparison.md",
    )
    tasks: str = _f("builtin", "benchmark: a name under eval/ (builtin, sample) or the path of a definition YAML")
    output: str = _f("runs/eval", "folder for results.json and samples.jsonl")
    server_url: list[str] = _f([], "running OpenAI-compatible server(s) to use instead of starting vLLM")
    served_model_name: str = _f("", "model name to request from --server-url")
    num_prompts: int = _f(
        150, "problems to evaluate (0: all of a file or Hub benchmark; builtin: how many to generate)"
    )
    levels: list[int] = _f([1, 2, 3, 4, 5], "builtin only: difficulty levels")
    seed: int = _f(0, "seed of the built-in problems (must match the one used for generate)")
    # Unset (None / ''): the benchmark definition's protocol, else the value in brackets.
    num_samples: int | None = _f(
        None,
        "samples per problem (k): pass@1 is averaged over them, pass@k reported up to k (unset: the benchmark's, else 1)",
    )
    temperature: float | None = _f(
        None, "sampling temperature (unset: the benchmark's, else 0 = greedy; R1's protocol: 0.6 with several samples)"
    )
    top_p: float | None = _f(
        None, "nucleus sampling (unset: the benchmark's, else 1.0; R1 uses 0.95, on CPU keep 1.0, see generate)"
    )
    max_tokens: int | None = _f(None, "max new tokens per answer (unset: the benchmark's, else 1024)")
    prompt_template: str = _f(
        "",
        "user message; {problem} is replaced by the problem ('': the benchmark's, else step-by-step with a "
        "\\boxed{} answer, or a python code block for code benchmarks)",
    )
    concurrency: int = _f(0, "requests in flight at once (0: 64 per server)")
    timeout: float = _f(5.0, "verification time bound per sample, seconds")
    serve: ServeConfig = _f(None, "server settings when eval starts vLLM itself")  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.serve is None or isinstance(self.serve, dict):
            self.serve = build(ServeConfig, self.serve or {}, source="serve")
        if isinstance(self.server_url, str):  # one URL given as text in Python code
            self.server_url = [self.server_url] if self.server_url else []
        if isinstance(self.model, str):  # one model given as text in Python code
            self.model = [self.model]
        if not self.model:
            raise DistillError("eval: give at least one --model")


@dataclass
class GrpoConfig:
    """Reinforcement learning with verifiable rewards (GRPO, TRL GRPOTrainer) on problems with known answers.

    A recipe's keys are these fields or any field of trl.GRPOConfig (num_generations, max_completion_length,
    beta, loss_type, use_vllm, vllm_mode, ...), which go to GRPOConfig unchanged."""

    model: str = _f("embedded:teacher", "policy model spec: embedded:teacher|embedded:student, a folder or a Hub id")
    output: str = _f(
        "runs/grpo", "folder the trained model, tokenizer, config, log_history.json and rewards.json go to"
    )
    requires_gpu: bool = _f(False, "stop with a clear message when no CUDA GPU is present")
    attn_implementation: str = _f("", "attention kernel on GPU, e.g. flash_attention_2 ('' = transformers' default)")
    chat_template: str = _f(
        "", "chat template: '' = the tokenizer's own, a .jinja file, or a name under recipes/chat_templates/"
    )
    eos_token: str = _f(
        "", "token that ends a completion ('' = the tokenizer's eos); base models with chatml-think: <|im_end|>"
    )
    # prompts
    dataset: str = _f("builtin", "prompts: 'builtin', a local .jsonl/.parquet file, or a Hugging Face dataset id")
    split: str = _f("train", "split of the dataset (builtin: train|test)")
    problem_column: str = _f("problem", "column holding the problem text")
    answer_column: str = _f("answer", "column holding the gold answer (a \\boxed{} solution works too)")
    id_column: str = _f("", "column holding a stable prompt id ('' to use the row index)")
    num_prompts: int = _f(256, "how many prompts to use (0: all; builtin: how many to generate)")
    levels: list[int] = _f([1, 2], "builtin only: difficulty levels to draw from")
    seed: int = _f(0, "seed of the built-in problems and of training (shuffling, sampling)")
    prompt_template: str = _f(DEFAULT_PROMPT_TEMPLATE, "user message; {problem} is replaced by the problem")
    system_prompt: str = _f("", "system message ('' for none)")
    # rewards
    reward_funcs: list[str] = _f(
        ["accuracy", "boxed_format"], "rewards by name: accuracy, format, boxed_format, length, repetition"
    )
    reward_weights: list[float] = _f([], "one weight per reward (empty: all 1.0); the reward is their weighted sum")
    format_tags: list[str] = _f(["think"], "format reward: tag blocks required in this order, e.g. [think, answer]")
    overlong_buffer: int = _f(0, "length reward: tokens before max_completion_length where the penalty starts (0: 1/5)")
    verify_timeout: float = _f(5.0, "accuracy reward: hard wall-clock bound per sample for math verification, s")
    verify_workers: int = _f(0, "accuracy reward: verification worker processes (0: one per core)")
    max_minutes: float = _f(0.0, "end training cleanly after this many minutes and save the model (0: no limit)")
    grpo: dict = _f({}, "TRL GRPOConfig fields (any key of trl.GRPOConfig may also be given at the top level)")

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
        if not self.verify_timeout > 0:
            raise DistillError(f"grpo: key 'verify_timeout' must be > 0 seconds, got {self.verify_timeout}")

    # `build` puts pass-through keys (trl.GRPOConfig fields) into `.sft`; here they belong in `grpo`.
    @property
    def sft(self) -> dict:
        return self.grpo

    @sft.setter
    def sft(self, value: dict) -> None:
        self.grpo = value


# --------------------------------------------------------------------------------------------------
# Building configs from YAML and flags


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a YAML or flag value to a field's type; raise a DistillError naming `where`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        tp = args[0]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise DistillError(f"{where}: expected a mapping, got {value!r}")
        return build(tp, value, source=where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise DistillError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise DistillError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise DistillError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise DistillError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except ValueError:
            raise DistillError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise DistillError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if tp is list or origin is list:
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise DistillError(f"{where}: expected a list, got {value!r}")
        item_type = (typing.get_args(tp) or [None])[0]
        return [_coerce(v, item_type, f"{where}[{i}]") if item_type else v for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise DistillError(f"{where}: expected a mapping, got {value!r}")
        return value
    return value


def build(cls: type, values: dict, source: str = "config", extra: set[str] | None = None) -> Any:
    """Make a `cls` from a dict, rejecting unknown keys (unless in `extra`, returned in `.sft`)."""
    types_ = _field_types(cls)
    known: dict[str, Any] = {}
    passthrough: dict[str, Any] = {}
    for key, value in values.items():
        if key in types_:
            known[key] = _coerce(value, types_[key], f"{source}: key '{key}'")
        elif extra is not None and key in extra:
            passthrough[key] = value
        else:
            hint = ", ".join(sorted(types_))
            raise DistillError(f"{source}: unknown key '{key}' (valid keys: {hint})")
    obj = cls(**known)
    if passthrough:
        obj.sft = {**passthrough, **getattr(obj, "sft", {})}
    return obj


def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise DistillError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise DistillError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DistillError(f"{p}: expected a mapping of keys to values at the top level")
    return _numbers(data)


def _numbers(value: Any) -> Any:
    """YAML 1.1 reads `1e-5` (no dot) as text; every recipe that writes it means a number."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)
    return value


def merge(base: dict, override: dict) -> dict:
    """Recursive dict merge: `override` wins, nested mappings merge key by key."""
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def add_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One `--flag` per scalar/list field; defaults are suppressed so only given flags override."""
    for f in dataclasses.fields(cls):
        tp = _field_types(cls)[f.name]
        if f.name in skip or dataclasses.is_dataclass(tp) or tp is dict:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_ = f"{f.metadata.get('help', '')} (default: {default!r})".replace("%", "%%")
        if tp is list or typing.get_origin(tp) is list:
            parser.add_argument(flag, dest=f.name, nargs="+", default=argparse.SUPPRESS, help=help_)
        else:
            parser.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, help=help_, metavar=f.name.upper())
    parser.add_argument("--config", help="YAML recipe; its keys are the fields above")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any key, nested with dots (e.g. serve.max_model_len=8192, learning_rate=1e-4)",
    )


def parse_overrides(items: list[str]) -> dict:
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise DistillError(f"--set {item!r}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" as text; a number was meant
            try:
                value = float(value) if _FLOAT.fullmatch(value.strip()) else value
            except ValueError:
                pass
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


# Keys that `save` adds to a resolved config to record what ran; a saved config given back with
# --config is accepted (its stage must match the command), and these keys are not settings.
RECORD_KEYS = ("stage", "input", "resolved_model")


def _without_record_keys(cls: type, values: dict, source: str) -> dict:
    stage = cls.__name__.removesuffix("Config").lower()
    if "stage" in values and values["stage"] != stage:
        raise DistillError(f"{source}: this config is for `distill {values['stage']}`, not `distill {stage}`")
    return {k: v for k, v in values.items() if k not in RECORD_KEYS}


def _check_keys(cls: type, values: dict, source: str, extra: set[str] | None) -> None:
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names and (extra is None or key not in extra):
            raise DistillError(f"{source}: unknown key '{key}' (valid keys: {', '.join(sorted(names))})")


def from_args(
    cls: type,
    args: argparse.Namespace,
    base: dict | None = None,
    base_source: str = "recipe",
    extra: set[str] | None = None,
) -> Any:
    """default < `base` (e.g. a size recipe) < --config FILE < --set < flags; each layer's keys checked."""
    layers = [(base_source, dict(base or {}))]
    if getattr(args, "config", None):
        layers.append((str(args.config), _without_record_keys(cls, load_yaml(args.config), str(args.config))))
    layers.append(("--set", parse_overrides(getattr(args, "overrides", []))))
    names = {f.name for f in dataclasses.fields(cls)}
    layers.append(("command line", {k: v for k, v in vars(args).items() if k in names}))
    values: dict = {}
    for source, layer in layers:
        _check_keys(cls, layer, source, extra)
        values = merge(values, layer)
    source = next((s for s, layer in reversed(layers) if layer), "config")
    return build(cls, values, source=source, extra=extra)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def save(cfg: Any, folder: str | Path, extra: dict | None = None) -> Path:
    """Write the resolved config next to an output (atomically)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = {"stage": type(cfg).__name__.removesuffix("Config").lower(), **to_dict(cfg), **(extra or {})}
    path = folder / CONFIG_FILENAME
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    tmp.replace(path)
    return path
