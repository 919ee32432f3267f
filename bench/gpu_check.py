"""The GPU check: distill's training path on real CUDA kernels, one H100, a few minutes, no internet.

    python bench/gpu_check.py --tokenizer .gpucheck/tokenizer          # on the GPU machine
    .venv/bin/python bench/gpu_check.py --tiny                         # the same code, miniature shapes, on CPU

Each section runs alone (a failure is a row of the table, not the end of the run) and prints one table row:

  sft-1.5b        `distill train` with the 1.5b SFT recipe's keys as written (padding-free, bf16, checkpointing,
                  Liger and FlashAttention where installed) on a random-initialised model of Qwen2.5-Math-1.5B's
                  architecture, two optimizer steps on rows of --seq tokens: tokens/s, MFU, peak memory
  sft-7b-lora     the same with the 7b recipe's keys and LoRA r=16 on Qwen2.5-Math-7B's architecture
  padding-free    a padded batch and the same rows padding-free: the two losses (sdpa, and flash_attention_2 when
                  flash-attn is installed)
  kd-32k          distill's chunked logit-KD loss at 32k positions with a 152k vocabulary: forward + backward,
                  peak memory (the full fp32 logits alone would take 18.6 GiB)
  onpolicy-4k     on-policy's sampled-token log-probabilities, LM head chunked, at the 1.5b recipe's 16 x 4k
  plan            `distill plan`'s per-GPU estimate for sft-1.5b's run against its measured peak

Random weights, no downloads: only a tokenizer folder is needed (the embedded teacher's Qwen2.5 tokenizer files,
carried with the call). What is not installed on the machine (flash-attn, liger-kernel, deepspeed) is named in
the row's note, never silently skipped. With --tiny every shape is a miniature and the device is the CPU: the
table then checks the script, not the GPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from distill.common.config import build, load_yaml  # noqa: E402
from distill.common.records import write_jsonl  # noqa: E402
from distill.common.resources import recipe_for  # noqa: E402
from distill.common.server import native_bf16  # noqa: E402
from distill.training.config import TrainConfig  # noqa: E402
from distill.training.plan import find_arch  # noqa: E402

H100_BF16_TFLOPS = 989.0
ROWS: list[dict] = []


def row(section: str, status: str, numbers: str, note: str = "") -> None:
    ROWS.append({"section": section, "status": status, "numbers": numbers, "note": note})
    print(f"[gpu_check] {section}: {status} {numbers} {note}", flush=True)


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def random_model(name: str, dest: Path, tokenizer: Path, tiny: bool) -> int:
    """A random-initialised model of `name`'s architecture (distill.training.plan.ARCHS), saved with the tokenizer;
    returns its parameter count."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    arch = find_arch(name)
    tok = AutoTokenizer.from_pretrained(str(tokenizer))
    shape = dict(hidden_size=arch.hidden, intermediate_size=arch.intermediate, num_hidden_layers=arch.layers,
                 num_attention_heads=arch.heads, num_key_value_heads=arch.kv_heads)  # fmt: skip
    if tiny:
        shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2)  # fmt: skip
    config = AutoConfig.for_model(
        "qwen2", vocab_size=max(arch.vocab, len(tok)), max_position_embeddings=32768, tie_word_embeddings=arch.tied,
        rope_parameters={"rope_type": "default", "rope_theta": 300000.0}, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **shape,
    )  # fmt: skip
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(str(dest))
    tok.save_pretrained(str(dest))
    del model
    return n


def kept_rows(path: Path, n: int, tokens: int) -> None:
    """R1-style kept rows of about `tokens` tokens each (a think block, then a boxed answer)."""
    step = "Wait, let me verify this step again: 12 + 30 = 42. "  # ~16 tokens
    body = step * max(1, tokens // 16)
    rows = [{"messages": [{"role": "user", "content": f"What is {i} + 30?"},
                          {"role": "assistant", "content": f"<think>\n{body}\n</think>\n\nThe answer is \\boxed{{{i + 30}}}."}]}
            for i in range(n)]  # fmt: skip
    write_jsonl(path, rows)


def sft_section(name: str, size: str, args: argparse.Namespace, work: Path, **extra) -> dict:
    """`distill train` on the recipe's keys, two steps; the substitutions are the model (random weights), the steps
    and the kernels this machine lacks (named in the note)."""
    from distill.training.train import sft_fields, train

    recipe = load_yaml(recipe_for(size))
    model_dir = work / f"model-{size}"
    params = random_model(recipe["model"], model_dir, args.tokenizer, args.tiny)
    seq = 256 if args.tiny else args.seq
    data = work / f"kept-{size}.jsonl"
    per_device = int(recipe["per_device_train_batch_size"])
    kept_rows(data, per_device * 2, seq)
    notes = []
    values = {**recipe, "size": size, "model": str(model_dir), "data": str(data), "output": str(work / f"out-{size}"),
              "max_steps": 2, "gradient_accumulation_steps": 1, "logging_steps": 1, "save_strategy": "no",
              "max_length": max(seq * 2, 1024), **extra}  # fmt: skip
    values.pop("model_config", None)  # the random model already holds 32,768 positions and the extended RoPE
    if importlib.util.find_spec("flash_attn") is None:
        values["attn_implementation"] = "sdpa"
        notes.append("flash-attn not installed: sdpa")
    if values.get("use_liger_kernel") and (
        importlib.util.find_spec("liger_kernel") is None or not torch.cuda.is_available()
    ):
        values["use_liger_kernel"] = False
        notes.append("liger-kernel not installed: off")
    if not torch.cuda.is_available():
        values["requires_gpu"] = False
        notes.append("CPU (--tiny)")
        if not native_bf16(cuda=False)[0]:  # emulated bf16 is ~78x slower (bench/cpu_dtype.py): the script's check
            values["bf16"] = False
            notes.append("float32: this CPU has no native bf16")
    cfg = build(TrainConfig, values, source=f"gpu_check {size}", extra=sft_fields())
    reset_peak()
    start = time.monotonic()
    metrics = train(cfg)
    seconds = time.monotonic() - start
    tokens = per_device * 2 * seq
    train_s = float(metrics.get("seconds") or seconds)
    tps = tokens / train_s
    trainable = metrics.get("trainable_params") or params
    mfu = (6 * params * tps) / (H100_BF16_TFLOPS * 1e12) if torch.cuda.is_available() else float("nan")
    row(f"sft-{size}" + ("-lora" if extra.get("lora_r") else ""), "ok",
        f"loss {metrics.get('first_loss'):.3f} -> {metrics.get('last_loss'):.3f}; {tps:,.0f} tokens/s; MFU {mfu:.1%}; "
        f"peak {peak_gib():.1f} GiB; {params / 1e9:.2f}B params ({trainable / 1e9:.3f}B trained)", "; ".join(notes))  # fmt: skip
    return {"peak_gib": peak_gib(), "seq": seq, "batch": per_device, "tokens_per_s": tps}


def padding_free_section(args: argparse.Namespace) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    device = "cuda" if torch.cuda.is_available() else "cpu"
    kernels = ["sdpa"] + (["flash_attention_2"] if importlib.util.find_spec("flash_attn") and device == "cuda" else [])
    g = torch.Generator().manual_seed(1)
    examples = []
    for n in (300, 1200, 700):
        ids = torch.randint(1, 30000, (n,), generator=g).tolist()
        examples.append({"input_ids": ids, "labels": [-100] * 20 + ids[20:]})
    parts = []
    for attn in kernels:
        config = AutoConfig.for_model("qwen2", vocab_size=32000, hidden_size=256, intermediate_size=512,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
        torch.manual_seed(0)
        model = (
            AutoModelForCausalLM.from_config(config, attn_implementation=attn, dtype=torch.bfloat16).to(device).eval()
        )
        losses = []
        for free in (False, True):
            batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=free)(examples)
            batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
            with torch.no_grad():
                losses.append(model(**batch, use_cache=False).loss.float().item())
        parts.append(
            f"{attn}: padded {losses[0]:.5f} / padding-free {losses[1]:.5f} (diff {abs(losses[0] - losses[1]):.1e})"
        )
        ok = abs(losses[0] - losses[1]) < 2e-2  # bf16 kernels: the same sums in another order
        if not ok:
            row("padding-free", "FAIL", "; ".join(parts))
            return
    row("padding-free", "ok", "; ".join(parts), "" if len(kernels) > 1 else "flash-attn not installed: sdpa only")


def kd_section(args: argparse.Namespace) -> None:
    from distill.training.kd_losses import chunked_kd_ce_loss

    device = "cuda" if torch.cuda.is_available() else "cpu"
    n, hidden, vocab, k = (512, 64, 1000, 20) if args.tiny else (32768, 1536, 151936, 20)
    head = torch.nn.Linear(hidden, vocab, bias=False, device=device, dtype=torch.bfloat16)
    h = torch.randn(1, n, hidden, device=device, dtype=torch.bfloat16, requires_grad=True)
    labels = torch.randint(0, vocab, (1, n), device=device)
    base = torch.randint(0, vocab, (1, n, 1), device=device)
    ids = (base + torch.arange(k, device=device)) % vocab  # k distinct ids per position, as a top-K is
    lps = torch.log_softmax(torch.randn(1, n, k, device=device), -1)
    valid = torch.ones(1, n, dtype=torch.bool, device=device)
    reset_peak()
    start = time.monotonic()
    loss, kd, ce = chunked_kd_ce_loss(h, head, labels, ids, lps, valid, 0.5)
    loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()
    full = n * vocab * 4 / 2**30
    row("kd-32k", "ok" if math.isfinite(float(loss)) else "FAIL",
        f"{n:,} positions x {vocab:,} vocab: loss {float(loss):.3f} in {time.monotonic() - start:.2f} s; peak "
        f"{peak_gib():.2f} GiB (full fp32 logits alone: {full:.1f} GiB)")  # fmt: skip


def onpolicy_section(args: argparse.Namespace) -> None:
    from distill.training.kd_losses import chunked_token_logprobs, sampled_reverse_kl_loss

    device = "cuda" if torch.cuda.is_available() else "cpu"
    b, t, hidden, vocab = (2, 128, 64, 1000) if args.tiny else (16, 4096, 1536, 151936)
    head = torch.nn.Linear(hidden, vocab, bias=False, device=device, dtype=torch.bfloat16)
    h = torch.randn(b, t, hidden, device=device, dtype=torch.bfloat16, requires_grad=True)
    ids = torch.randint(0, vocab, (b, t), device=device)
    reset_peak()
    start = time.monotonic()
    student = chunked_token_logprobs(h, head, ids)
    loss, metrics = sampled_reverse_kl_loss(student, student.detach() - 0.1)
    loss.backward()
    full = b * t * vocab * 6 / 2**30  # the bf16 logits and their fp32 log-softmax, as before the chunking
    row("onpolicy-4k", "ok", f"{b} x {t:,} tokens: reverse KL {metrics['reverse_kl']:.3f} in "
        f"{time.monotonic() - start:.2f} s; peak {peak_gib():.2f} GiB (unchunked logits: ~{full:.0f} GiB)")  # fmt: skip


def plan_section(measured: dict) -> None:
    from distill.training.config import PlanConfig
    from distill.training.plan import plan

    result = plan(PlanConfig(size="1.5b", gpus=1, max_length=measured["seq"], batch=measured["batch"], launcher="ddp",
                             gradient_checkpointing="on", liger=importlib.util.find_spec("liger_kernel") is not None))  # fmt: skip
    est = result["memory_gib"]["total"]
    row("plan", "ok", f"distill plan {est:.1f} GiB per GPU vs measured peak {measured['peak_gib']:.1f} GiB "
        f"(1.5b, ddp, batch {measured['batch']} x {measured['seq']:,} tokens)")  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--tokenizer", type=Path, default=None, help="a Qwen2.5 tokenizer folder (default: the embedded teacher's)"
    )
    p.add_argument("--seq", type=int, default=16384, help="tokens per training row for the SFT sections")
    p.add_argument("--tiny", action="store_true", help="miniature shapes on this CPU: checks the script, not a GPU")
    p.add_argument("--only", nargs="*", default=[], help="sections to run (default: all)")
    p.add_argument("--out", type=Path, default=None, help="also write the table as JSON here")
    args = p.parse_args()
    if args.tokenizer is None:
        from distill.common.models import ensure_embedded

        args.tokenizer = ensure_embedded("teacher")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    print(f"[gpu_check] {device}; torch {torch.__version__}; flash-attn {bool(importlib.util.find_spec('flash_attn'))}, "
          f"liger {bool(importlib.util.find_spec('liger_kernel'))}", flush=True)  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="distill-gpu-check-"))
    measured: dict = {}
    sections = {
        "padding-free": lambda: padding_free_section(args),
        "kd-32k": lambda: kd_section(args),
        "onpolicy-4k": lambda: onpolicy_section(args),
        "sft-1.5b": lambda: measured.update(sft_section("1.5b", "1.5b", args, work)),
        "sft-7b-lora": lambda: sft_section("7b", "7b", args, work, lora_r=16),
        "plan": lambda: plan_section(measured) if measured else row("plan", "skipped", "", "sft-1.5b did not run"),
    }
    try:
        for name, fn in sections.items():
            if args.only and name not in args.only:
                continue
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - a failed section is a row of the table; the next one runs
                traceback.print_exc()
                row(name, "FAIL", f"{type(e).__name__}: {' '.join(str(e).split())[:300]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n| section | status | measured | note |\n| --- | --- | --- | --- |  ({device})")
    for r in ROWS:
        print(f"| {r['section']} | {r['status']} | {r['numbers']} | {r['note']} |")
    if args.out:
        args.out.write_text(json.dumps({"device": device, "rows": ROWS}, indent=1))
    return 1 if any(r["status"] == "FAIL" for r in ROWS) else 0


if __name__ == "__main__":
    sys.exit(main())
