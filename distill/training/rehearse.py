"""`distill train --rehearse true`: the GPU run, rehearsed on this CPU before renting GPUs.

    distill train --size 7b --rehearse true --data runs/filtered --num-gpus 8
    distill train --size 70b --method logit-kd --rehearse true --data runs/filtered-logprobs

The recipe is resolved exactly as the GPU run resolves it (recipe, flags, chat template, stop token,
max_length, model_config such as an extended RoPE, batch x accumulation x GPUs, learning-rate schedule).
Then a random-initialised miniature of the recipe's model is built: the same architecture class,
vocabulary size, special tokens and RoPE configuration, with two small layers. It gets the real tokenizer
of its family where one is here offline (the embedded teacher's is Qwen2.5's, which Qwen2.5-Math shares),
otherwise a stated substitute with the family's chat-template tokens added. Two optimizer steps of the
method's real trainer run on the given kept traces, and a preflight report says what the GPU run would
meet: rows over max_length (count, share, what happens to them), the token-length distribution, the share
of rows whose labels end with the stop token, the share of label tokens masked, the effective batch,
warmup and total steps, peak and final learning rate, the `accelerate launch` command and `distill plan`'s
memory verdict for the given GPUs. Exit status 1 when a check fails.

What it cannot rehearse on a CPU is said in the report: FlashAttention (sdpa runs instead), 4-bit QLoRA
(the miniature trains LoRA in full precision), Liger kernels and padding-free packing (GPU-only), and the
multi-GPU launch itself (its command is printed and checked, not run).
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from distill.common.config import build
from distill.common.errors import DistillError
from distill.common.models import EMBEDDED, ensure_embedded, resolve_model
from distill.common.records import KEPT, read_jsonl, write_json, write_jsonl
from distill.training.base import (
    configure_tokenizer,
    load_sft_rows,
    method_args,
    recipe_max_length,
    row_lengths,
    supervised_example,
    train_and_save,
)
from distill.training.config import METHODS, SFT_DEFAULTS, PlanConfig, TrainConfig
from distill.training.launch import child_argv, launch_command
from distill.training.plan import find_arch, plan

# Per model family: the transformers config class, the tokenizer distill has offline for it, the special
# tokens its chat template uses, and the RoPE of each model (config.json's rope_theta / rope_scaling,
# read from the Hub pages named in distill.training.plan.ARCHS).
FAMILIES = {
    "qwen2": {"model_type": "qwen2", "tokenizer": "embedded:teacher", "tokens": []},
    "llama": {"model_type": "llama", "tokenizer": "embedded:student", "tokens": []},
    "llama3": {
        "model_type": "llama",
        "tokenizer": "",  # not here offline: the Qwen2.5 tokenizer stands in, with Llama 3's turn tokens added
        "tokens": ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|end_of_text|>"],
    },
}
MODELS = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("llama", {"rope_type": "default", "rope_theta": 100000.0}),
    "Qwen/Qwen2.5-Math-1.5B": ("qwen2", {"rope_type": "default", "rope_theta": 10000.0}),
    "Qwen/Qwen2.5-Math-7B": ("qwen2", {"rope_type": "default", "rope_theta": 10000.0}),
    "open-r1/Qwen2.5-Math-7B-RoPE-300k": ("qwen2", {"rope_type": "default", "rope_theta": 300000.0}),
    "Qwen/Qwen2.5-14B": ("qwen2", {"rope_type": "default", "rope_theta": 1000000.0}),
    "Qwen/Qwen2.5-32B": ("qwen2", {"rope_type": "default", "rope_theta": 1000000.0}),
    "meta-llama/Llama-3.1-8B": (
        "llama3",
        {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    ),  # fmt: skip
    "meta-llama/Llama-3.3-70B-Instruct": (
        "llama3",
        {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    ),  # fmt: skip
}
DEFAULT_GPUS = 8  # the rehearsal's GPU count when --num-gpus is not given (one node of 8)
STEP_ROWS = 4  # rows the two rehearsal steps train on: the shortest of --data
GPU_MEMORY_GIB = 80.0  # memory of one GPU for the plan (H100/A100 80 GB)


# --------------------------------------------------------------------------------------------------
# The miniature


@dataclasses.dataclass
class Miniature:
    folder: Path
    model_id: str
    family: str
    tokenizer_source: str  # where the tokenizer came from, or what stood in for it
    positions: int
    rope: dict
    substitutions: list[str]


def model_id(spec: str) -> str:
    """The Hub id a recipe's model stands for (an embedded model by its upstream id)."""
    role = spec.split(":", 1)[1] if spec.startswith("embedded:") else ""
    return EMBEDDED[role].hf_id if role in EMBEDDED else spec


def build_miniature(cfg: TrainConfig, dest: Path) -> Miniature:
    """A random-initialised two-layer model of the recipe's class, vocabulary, special tokens and RoPE
    (the recipe's model_config applied on top, as the GPU run applies it), saved with its tokenizer."""
    mid = model_id(cfg.model)
    arch = find_arch(mid)
    local = Path(cfg.model).expanduser()
    substitutions = []
    if local.is_dir() or cfg.model.startswith("embedded:"):  # the real config is here: keep it, shrink it
        path = resolve_model(cfg.model)
        base = AutoConfig.from_pretrained(path).to_dict()
        family = "llama" if base.get("model_type") == "llama" else "qwen2"
        tok_source, tok_path = f"the model's own ({cfg.model})", path
        rope = base.get("rope_parameters") or {"rope_type": "default", "rope_theta": base.get("rope_theta", 10000.0)}
        positions, vocab, tied = base["max_position_embeddings"], base["vocab_size"], base["tie_word_embeddings"]
        heads, kv_heads = base["num_attention_heads"], base["num_key_value_heads"]
    elif arch is not None and mid in MODELS:
        family, rope = MODELS[mid]
        fam = FAMILIES[family]
        tok_spec = fam["tokenizer"] or "embedded:teacher"
        tok_path = str(ensure_embedded(tok_spec.split(":")[1]))
        tok_source = (
            f"the Qwen2.5 tokenizer (the embedded teacher's), which {mid} shares"
            if fam["tokenizer"]
            else f"a stand-in: the Qwen2.5 tokenizer with {mid}'s chat-template tokens added "
            f"({', '.join(fam['tokens'])}); {mid}'s own tokenizer is not available offline"
        )
        if not fam["tokenizer"]:
            substitutions.append(tok_source)
        positions, vocab, tied = arch.max_positions, arch.vocab, arch.tied
        heads, kv_heads = arch.heads, arch.kv_heads
    else:
        raise DistillError(
            f"cannot rehearse {cfg.model}: its architecture is not in distill's table (distill.training.plan.ARCHS) "
            "and no local copy of its config is here; rehearse with a local folder of the model (config.json and "
            "tokenizer suffice), or add it to the table"
        )
    tokenizer = AutoTokenizer.from_pretrained(tok_path)
    extra = [t for t in FAMILIES.get(family, {}).get("tokens", []) if t not in tokenizer.get_vocab()]
    if extra:
        tokenizer.add_special_tokens({"additional_special_tokens": extra})
    vocab = max(vocab, len(tokenizer))
    g = max(1, heads // max(1, kv_heads))  # keep the grouped-query ratio: heads per key/value head
    mini_heads = g if g >= 4 else g * (4 // g)
    values: dict[str, Any] = {
        "vocab_size": vocab, "hidden_size": 16 * mini_heads, "head_dim": 16, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": mini_heads, "num_key_value_heads": mini_heads // g,
        "max_position_embeddings": positions, "tie_word_embeddings": tied, "rope_parameters": dict(rope),
        "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }  # fmt: skip
    if family == "llama":
        values["attention_bias"] = False
    config = AutoConfig.for_model(FAMILIES.get(family, {"model_type": family})["model_type"], **values)
    for key, value in cfg.model_config.items():  # what the GPU run does to the real config
        setattr(config, key, value)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))
    text = config.get_text_config()
    return Miniature(dest, mid, family, tok_source, text.max_position_embeddings, dict(text.rope_parameters or {}),
                     substitutions)  # fmt: skip


# --------------------------------------------------------------------------------------------------
# The preflight report


def schedule(cfg: TrainConfig, rows: int, gpus: int) -> dict:
    """Effective batch, steps and the learning rate's peak and end, as the Trainer will compute them."""
    s = {**SFT_DEFAULTS, **cfg.sft}
    per_device, accum = int(s["per_device_train_batch_size"]), int(s.get("gradient_accumulation_steps", 1))
    effective = per_device * accum * gpus * cfg.launch.num_nodes
    per_epoch = max(1, math.ceil(rows / effective))
    total = int(s.get("max_steps") or 0) or math.ceil(per_epoch * float(s.get("num_train_epochs", 1)))
    warm = float(s.get("warmup_steps", 0) or 0)
    warmup = math.ceil(warm * total) if 0 < warm < 1 else int(warm)
    lr = float(s["learning_rate"])
    kind = str(s.get("lr_scheduler_type", "linear"))
    end = {"constant": lr, "constant_with_warmup": lr}.get(kind, 0.0)
    if kind == "cosine_with_min_lr":
        kw = s.get("lr_scheduler_kwargs") or {}
        end = float(kw.get("min_lr", lr * float(kw.get("min_lr_rate", 0.0))))
    return {
        "per_device_batch": per_device, "gradient_accumulation": accum, "gpus": gpus, "nodes": cfg.launch.num_nodes,
        "effective_batch": effective, "steps_per_epoch": per_epoch, "total_steps": total, "warmup_steps": warmup,
        "scheduler": kind, "peak_lr": lr, "final_lr": end,
    }  # fmt: skip


def label_checks(tokenizer: Any, rows: list[dict], max_length: int) -> dict:
    """Share of rows whose supervised labels end with the EOS token (after any template whitespace), and the
    share of label tokens masked (-100), over the rows that fit max_length."""
    ends, masked, total = 0, 0, 0
    for row in rows:
        ids, labels = supervised_example(tokenizer, row)
        if max_length and len(ids) > max_length:
            continue
        sup = [t for t in labels if t != -100]
        masked += len(labels) - len(sup)
        total += len(labels)
        i = len(sup) - 1
        while i > 0 and sup[i] != tokenizer.eos_token_id and not tokenizer.decode([sup[i]]).strip():
            i -= 1
        ends += bool(sup) and sup[i] == tokenizer.eos_token_id
    fit = sum(1 for r in rows if not max_length or len(supervised_example(tokenizer, r)[0]) <= max_length)
    return {
        "rows_checked": fit,
        "share_ending_with_stop_token": round(ends / max(1, fit), 4),
        "share_of_label_tokens_masked": round(masked / max(1, total), 4),
    }


def kept_file(data: str) -> Path:
    p = Path(data)
    return p / KEPT if p.is_dir() else p


def rows_for_checks(cfg: TrainConfig) -> list[dict]:
    """The kept traces as prompt/completion rows, for the length and label checks (none for on-policy prompts
    without answers, e.g. --data builtin)."""
    if cfg.data == "builtin":
        return []
    return load_sft_rows(cfg.data, cfg.max_examples, drop_system=cfg.drop_system_prompt)


# Keys of the trainer arguments that the rehearsal changes, each for one of its substitutions; any other
# difference between trainer_args.json (the GPU run's) and the trainer the rehearsal built fails the rehearsal.
SUBSTITUTED_ARGS = {
    "use_cpu": "CPU instead of CUDA",
    "max_steps": "two optimizer steps",
    "logging_steps": "two optimizer steps (each one's loss logged)",
    "num_train_epochs": "two optimizer steps",
    "output_dir": "a temporary folder",
    "use_liger_kernel": "Liger's Triton kernels need a CUDA GPU",
    "report_to": "no experiment tracker from a rehearsal",
    "push_to_hub": "no upload from a rehearsal",
    "hub_model_id": "no upload from a rehearsal",
    "dataset_num_proc": "set from this machine's cores and the rows prepared",
}
ONPOLICY_SAMPLE_TOKENS = 16  # what the miniature samples per prompt (its random tokens say nothing past a few)
TRAINER_ARGS = "trainer_args.json"


def gpu_trainer_args(cfg: TrainConfig) -> dict:
    """The trainer arguments the GPU run builds (TRL's to_dict()), here: the same function with the recipe's keys.
    transformers refuses bf16 without a GPU unless use_cpu is set, so the object is built with use_cpu and the
    dict says False, as on the GPU."""
    args = method_args(cfg, Path(cfg.output), cpu=True, quiet=True).to_dict()
    return {**args, "use_cpu": False}


def stand_in(cfg: TrainConfig, mini: Miniature, data: str, tmp: Path) -> tuple[TrainConfig, list[str]]:
    """`cfg` as the rehearsal runs it: the miniature, the CPU, two steps, and each kernel that cannot run on a
    CPU replaced. Returns it with one line per substitution; every other key is the GPU run's."""
    subs = [f"model: {cfg.model} -> a random two-layer miniature of its architecture ({mini.family})",
            "device: CUDA -> CPU (use_cpu: true)", "steps: the recipe's -> max_steps 2, logging_steps 1"]  # fmt: skip
    sft = {**cfg.sft, "max_steps": 2, "logging_steps": 1}
    if cfg.sft.get("report_to") not in (None, "none", []):
        sft["report_to"] = "none"
        subs.append(f"report_to: {cfg.sft['report_to']} -> none (no experiment tracker from a rehearsal)")
    attn = cfg.attn_implementation
    if "flash" in attn:
        attn = "sdpa"
        subs.append(f"attn_implementation: {cfg.attn_implementation} -> sdpa (FlashAttention needs a CUDA GPU; "
                    "padding-free batches still run, as packed sequences of position ids)")  # fmt: skip
    if cfg.sft.get("use_liger_kernel") and METHODS[cfg.method].liger:
        sft["use_liger_kernel"] = False
        subs.append("use_liger_kernel: true -> false (Triton kernels need a CUDA GPU; validated in trainer_args.json)")
    lora = cfg.lora
    if lora.load_in_4bit:
        lora = dataclasses.replace(lora, load_in_4bit=False)
        subs.append("load_in_4bit: true -> false (bitsandbytes' 4-bit kernels need a CUDA GPU): LoRA on full weights")
    if cfg.push_to_hub:
        subs.append(f"push_to_hub: {cfg.push_to_hub} -> none (no upload from a rehearsal)")
    if cfg.launch.launcher:
        subs.append(f"launcher: {cfg.launch.launcher} -> this process (the launch command is printed and checked)")
    if data != cfg.data:
        subs.append(f"data: the {STEP_ROWS} shortest rows of {cfg.data} for the steps (the checks read every row)")
    if cfg.method == "onpolicy":
        subs.append(f"onpolicy sampling: up to {ONPOLICY_SAMPLE_TOKENS} new tokens per sample (the length checks use "
                    f"onpolicy_max_new_tokens {cfg.onpolicy.onpolicy_max_new_tokens})")  # fmt: skip
    run_cfg = dataclasses.replace(
        cfg, model=str(mini.folder), output=str(tmp / "out"), requires_gpu=False, attn_implementation=attn,
        rehearse=False, push_to_hub="", lora=lora, data=data, max_examples=0, sft=sft,
        launch=dataclasses.replace(cfg.launch, launcher="", print_launch=False),
    )  # fmt: skip
    return run_cfg, subs


def args_diff(gpu: dict, ran: dict) -> dict:
    """The trainer-argument keys whose values differ between the GPU run's and the rehearsal's: {key: [gpu, ran]}."""
    return {k: [gpu.get(k), ran.get(k)] for k in sorted(set(gpu) | set(ran)) if gpu.get(k) != ran.get(k)}


def two_steps(run_cfg: TrainConfig) -> tuple[dict, dict]:
    """Two optimizer steps of the method's real trainer (its row of METHODS) on the miniature, saved as the GPU
    run saves; returns the metrics and the trainer's arguments as built."""
    prep = METHODS[run_cfg.method].prepare_fn()(run_cfg)
    if run_cfg.method == "onpolicy":
        prep.trainer.opts = dataclasses.replace(prep.trainer.opts, onpolicy_max_new_tokens=ONPOLICY_SAMPLE_TOKENS)
    ran = prep.trainer.args.to_dict()
    return train_and_save(prep, run_cfg), ran


def run(cfg: TrainConfig) -> int:
    """Rehearse `cfg` (see the module docstring): print the report, write it and the GPU run's trainer arguments
    next to --output, and return the exit status (0: every check passed)."""
    gpus = cfg.launch.num_gpus or DEFAULT_GPUS
    max_length = recipe_max_length(cfg) or 0
    problems: list[str] = []
    notes: list[str] = []
    gpu_args: dict = {}
    with tempfile.TemporaryDirectory(prefix="distill-rehearse-") as tmp:
        mini = build_miniature(cfg, Path(tmp) / "model")
        if max_length > mini.positions:
            problems.append(
                f"max_length {max_length} > the model's {mini.positions} positions: extend its RoPE (model_config) "
                "or lower max_length"
            )
        # The GPU run's trainer arguments, built by the same function from the recipe's keys: TRL's and
        # transformers' own validation runs on them here.
        try:
            gpu_args = gpu_trainer_args(cfg)
        except DistillError as e:
            problems.append(f"the GPU run's trainer arguments: {e}")
        # The teacher's tokenizer (logit-kd reads the stored token ids with it, on-policy scores with it)
        teacher = cfg.teacher
        if cfg.method != "sft":
            try:
                AutoTokenizer.from_pretrained(resolve_model(cfg.teacher))
            except (OSError, ValueError, DistillError):
                teacher = "embedded:teacher"
                mini.substitutions.append(
                    f"the teacher's tokenizer ({cfg.teacher}) is not here offline: the embedded teacher's (Qwen2.5) "
                    "stands in; pass --teacher with a local copy to rehearse with the real one"
                )
        # Tokenizer, data and the label checks, as the real run tokenizes them
        tokenizer = AutoTokenizer.from_pretrained(str(mini.folder))
        configure_tokenizer(tokenizer, cfg, cfg.model)
        from_data = rows_for_checks(cfg)
        lengths = row_lengths(tokenizer, from_data)
        # The two steps run on the shortest rows (a 32k-token trace's logits alone take ~20 GB on a CPU); the
        # checks above and below cover every row.
        data = cfg.data
        if from_data:
            data = str(Path(tmp) / "steps.jsonl")
            raw = list(read_jsonl(kept_file(cfg.data)))
            shortest = sorted(range(len(lengths)), key=lengths.__getitem__)[:STEP_ROWS]
            write_jsonl(data, [raw[i] for i in shortest])
        run_cfg, substituted = stand_in(dataclasses.replace(cfg, teacher=teacher), mini, data, Path(tmp))
        over = [n for n in lengths if max_length and n > max_length]
        length_report = {
            "rows": len(lengths), "max_length": max_length, "rows_over_max_length": len(over),
            "share_over_max_length": round(len(over) / max(1, len(lengths)), 4), "policy": cfg.truncation,
            "what_happens": {"drop": "left out of training (counted in train_metrics.json)",
                             "keep": "trained cut at max_length, without their final answer and stop token",
                             "error": "the run stops before training"}[cfg.truncation],
            "tokens": _quantiles(lengths),
        }  # fmt: skip
        if over and cfg.truncation == "error":
            problems.append(f"{len(over)} rows are longer than max_length {max_length} and truncation is 'error'")
        if over and cfg.truncation == "keep":
            problems.append(f"{len(over)} rows would be trained cut, without their answer and stop token")
        labels = label_checks(tokenizer, from_data, max_length)
        if not from_data:
            notes.append("no kept traces in --data: the length and stop-token checks cover traces only")
        if labels["rows_checked"] and labels["share_ending_with_stop_token"] < 1.0:
            problems.append(
                f"only {labels['share_ending_with_stop_token']:.0%} of the rows end their labels with the stop token "
                f"{tokenizer.eos_token!r}: the student would not learn to stop"
            )
        kept = len(from_data) - (len(over) if cfg.truncation == "drop" else 0)
        sched = schedule(cfg, kept, gpus)
        if sched["warmup_steps"] >= sched["total_steps"]:
            problems.append(f"warmup ({sched['warmup_steps']} steps) is as long as the run ({sched['total_steps']})")
        # The memory plan for the GPUs, and the launch command with the launcher it picks (or --launcher's)
        memory = _plan(cfg, mini, gpus, max_length, cfg.launch.launcher)
        nodes = cfg.launch.num_nodes
        if memory and not memory.get("fits", True):
            problems.append(
                f"distill plan: does not fit on {nodes} node(s) x {gpus} GPUs of {GPU_MEMORY_GIB:g} GB "
                f"({memory.get('why', '')})"
            )
        launcher = cfg.launch.launcher or ((memory.get("launcher") or "zero3") if cfg.requires_gpu else "")
        command = ""
        if launcher:
            head = cfg.launch.main_process_ip or ("HEAD_NODE_IP" if nodes > 1 else "")
            launch = dataclasses.replace(cfg.launch, launcher=launcher, num_gpus=gpus, main_process_ip=head)
            command = " ".join(launch_command(dataclasses.replace(cfg, launch=launch), child_argv(cfg, write=False)))
        # Two optimizer steps of the method's real trainer on the miniature, with the substitutions above only
        metrics: dict = {}
        try:
            metrics, ran_args = two_steps(run_cfg)
        except DistillError as e:  # a check of the real training path: part of the report, not a crash
            problems.append(f"the training path stopped before its first step: {e}")
            ran_args = {}
        except (ValueError, TypeError, RuntimeError, ImportError) as e:  # TRL's, transformers' or torch's refusal
            problems.append(f"the trainer refused the recipe: {type(e).__name__}: {' '.join(str(e).split())[:400]}")
            ran_args = {}
        steps = {k: metrics.get(k) for k in ("steps", "first_loss", "last_loss", "train_rows")}
        losses = [float(v) for v in (steps["first_loss"], steps["last_loss"]) if v is not None]
        if metrics and (steps["steps"] != 2 or not losses or not all(map(math.isfinite, losses))):
            problems.append(f"the two rehearsal steps did not train: {steps}")
        differ = args_diff(gpu_args, ran_args) if gpu_args and ran_args else {}
        undeclared = {k: v for k, v in differ.items() if k not in SUBSTITUTED_ARGS}
        if undeclared:
            problems.append(
                f"the rehearsal's trainer differs from the GPU run's beyond its substitutions: {undeclared}"
            )
    report = {
        "recipe": {"size": cfg.size, "method": cfg.method, "model": cfg.model, "chat_template": cfg.chat_template or "the tokenizer's own",
                   "eos_token": tokenizer.eos_token, "model_config": cfg.model_config},
        "miniature": {"family": mini.family, "positions": mini.positions, "rope": mini.rope, "tokenizer": mini.tokenizer_source},
        "lengths": length_report, "labels": labels, "schedule": sched, "launch": command or "this process (no launcher)",
        "memory": memory, "steps": steps, "not_rehearsed": notes, "substitutions": substituted + mini.substitutions,
        "trainer_args_differ": differ, "checks_failed": problems,
    }  # fmt: skip
    print(format_report(report), flush=True)
    out = Path(cfg.output)
    if cfg.output and out.parent.is_dir():
        write_json(out.with_name(out.name + "-rehearsal.json"), report)
        if gpu_args:
            write_json(out.with_name(out.name + "-" + TRAINER_ARGS), gpu_args)
            print(f"[distill] the GPU run's trainer arguments: {out.with_name(out.name + '-' + TRAINER_ARGS)}")
    return 1 if problems else 0


def _quantiles(values: list[int]) -> dict:
    q = sorted(values)
    if not q:
        return {}
    pick = lambda p: q[min(len(q) - 1, int(p * (len(q) - 1) + 0.5))]  # noqa: E731
    return {"min": q[0], "median": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": q[-1]}


def _plan(cfg: TrainConfig, mini: Miniature, gpus: int, max_length: int, launcher: str) -> dict:
    """distill plan's verdict for the recipe's model on `gpus` 80 GB GPUs, or {} when the model is not in its table."""
    if find_arch(mini.model_id) is None:
        return {}
    pcfg = build(
        PlanConfig,
        {"size": cfg.size, "model": mini.model_id, "gpus": gpus, "nodes": cfg.launch.num_nodes,
         "gpu_memory": GPU_MEMORY_GIB, "max_length": max_length or 0, "lora": cfg.lora.lora_r,
         "qlora": cfg.lora.load_in_4bit and cfg.method != "logit-kd", "launcher": launcher or "auto",
         "method": cfg.method},
        source="rehearsal",
    )  # fmt: skip
    result = plan(pcfg)
    memory = result.get("memory_gib") or {}
    why = "; ".join(str(x.get("text", x)) for x in result.get("suggestions", [])[:2]) or result.get("verdict", "")
    return {
        "fits": bool(result.get("fits")), "launcher": memory.get("launcher"), "per_gpu_gib": memory.get("total"),
        "verdict": result.get("verdict"), "why": why,
    }  # fmt: skip


def format_report(r: dict) -> str:
    lines = [f"=== distill train --rehearse: {r['recipe']['size']} ({r['recipe']['method']}) ==="]
    rec, mini = r["recipe"], r["miniature"]
    lines.append(
        f"model        {rec['model']}  (miniature: {mini['family']}, {mini['positions']:,} positions, RoPE {json.dumps(mini['rope'])})"
    )
    lines.append(
        f"tokenizer    {mini['tokenizer']}; chat template {rec['chat_template']}, stop token {rec['eos_token']!r}"
    )
    if rec["model_config"]:
        lines.append(f"model_config {json.dumps(rec['model_config'])}")
    ln = r["lengths"]
    t = ln["tokens"]
    lines.append(
        f"lengths      {ln['rows']} rows; tokens min {t.get('min')} / median {t.get('median')} / p90 {t.get('p90')} / "
        f"p99 {t.get('p99')} / max {t.get('max')}; max_length {ln['max_length']}"
    )
    lines.append(
        f"             over max_length: {ln['rows_over_max_length']} ({ln['share_over_max_length']:.1%}) -> "
        f"{ln['policy']}: {ln['what_happens']}"
    )
    lb = r["labels"]
    lines.append(
        f"labels       {lb['share_ending_with_stop_token']:.0%} of rows end with the stop token; "
        f"{lb['share_of_label_tokens_masked']:.0%} of label tokens masked (the prompt)"
    )
    sc = r["schedule"]
    lines.append(
        f"batch        {sc['per_device_batch']} per GPU x {sc['gradient_accumulation']} accumulation x {sc['gpus']} GPUs x "
        f"{sc['nodes']} node(s) = {sc['effective_batch']} rows per step; {sc['steps_per_epoch']} steps per epoch, "
        f"{sc['total_steps']} in all"
    )
    lines.append(
        f"schedule     {sc['scheduler']}: warmup {sc['warmup_steps']} steps, peak lr {sc['peak_lr']:g}, final lr {sc['final_lr']:g}"
    )
    lines.append(f"launch       {r['launch']}")
    m = r["memory"]
    if m:
        lines.append(
            f"memory       distill plan: {'fits' if m['fits'] else 'does NOT fit'} ({m.get('launcher')}, "
            f"{m.get('per_gpu_gib')} GiB per GPU)"
        )
    st = r["steps"]
    lines.append(
        f"2 steps      on the miniature: loss {st['first_loss']} -> {st['last_loss']} ({st['train_rows']} rows)"
    )
    for n in r["substitutions"]:
        lines.append(f"substituted  {n}")
    for n in r["not_rehearsed"]:
        lines.append(f"note         {n}")
    if r["checks_failed"]:
        lines += [f"FAILED       {p}" for p in r["checks_failed"]]
    else:
        lines.append("all checks passed")
    return "\n".join(lines)
