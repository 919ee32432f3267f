"""Training features that only run on CUDA GPUs, each on the embedded student (SmolLM2-135M: seconds per
test on one GPU): QLoRA, FlashAttention 2, Liger kernels, and `distill train --launcher zero3|fsdp`.

Marked `gpu`: tests/conftest.py skips them, with the reason, where torch.cuda.is_available() is False.
Each needs its package from the `gpu` extra (pip install -e '.[gpu]') and says so in its skip reason
when that package is missing. On CPU, distill refuses QLoRA and drops FlashAttention and Liger (see
test_train_launch.py), so these are the only tests that run the features themselves."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distill.common.config import build
from distill.common.records import write_jsonl
from distill.training.config import TrainConfig

pytestmark = pytest.mark.gpu

ROOT = Path(__file__).resolve().parents[2]
ROWS = [
    {
        "messages": [
            {
                "role": "user",
                "content": f"What is {a} + {b}?\nPlease reason step by step, and put your final answer within \\boxed{{}}.",
            },
            {
                "role": "assistant",
                "content": f"We add {a} and {b}: {a} + {b} = {a + b}.\n\nThe answer is \\boxed{{{a + b}}}.",
            },
        ]
    }
    for a, b in [(12, 30), (7, 8), (41, 19), (100, 23)]
]


def needs(module: str) -> None:
    pytest.importorskip(module, reason=f"{module} is not installed (pip install -e '.[gpu]')")


def kept(tmp_path: Path) -> Path:
    """A `distill filter` output folder holding the four rows."""
    write_jsonl(tmp_path / "filtered" / "kept.jsonl", ROWS)
    return tmp_path / "filtered"


def config(tmp_path: Path, student_path: str, **keys) -> TrainConfig:
    """The config `distill train` builds from these keys (TrainConfig fields or trl.SFTConfig fields),
    on top of a short bf16 run over the four rows."""
    from distill.training.train import sft_fields

    values = {
        "model": student_path,
        "data": str(kept(tmp_path)),
        "output": str(tmp_path / "student"),
        "max_steps": 4,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-3,
        "warmup_steps": 0,
        "bf16": True,
    }
    return build(TrainConfig, {**values, **keys}, source="test", extra=sft_fields())


def losses(out: Path) -> list[float]:
    return [h["loss"] for h in json.loads((out / "log_history.json").read_text()) if "loss" in h]


def test_qlora_trains_only_the_adapters_on_a_4bit_base(tmp_path, student_path):
    needs("bitsandbytes")
    import bitsandbytes as bnb
    import torch

    from distill.training.base import train_and_save
    from distill.training.sft import prepare

    cfg = config(tmp_path, student_path, lora_r=16, load_in_4bit=True)
    prep = prepare(cfg)
    model = prep.trainer.model
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()), "the base was not loaded in 4-bit"
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    metrics = train_and_save(prep, cfg)

    after = dict(prep.trainer.model.named_parameters())
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    adapter = {k for k in before if "lora_" in k}
    assert adapter and changed == adapter  # every adapter weight moved, no (4-bit or other) base weight did
    assert metrics["method"] == "qlora" and metrics["steps"] == 4
    assert metrics["trainable_params"] == sum(before[k].numel() for k in adapter)
    assert metrics["last_loss"] < metrics["first_loss"], losses(tmp_path / "student")
    out = tmp_path / "student"
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    assert not (out / "model.safetensors").exists()  # an adapter, not a (4-bit) model


def test_flash_attention_2_loads_and_trains(tmp_path, student_path):
    needs("flash_attn")
    from distill.training.base import train_and_save
    from distill.training.sft import prepare

    cfg = config(tmp_path, student_path, attn_implementation="flash_attention_2", max_steps=2)
    prep = prepare(cfg)
    assert prep.model.config._attn_implementation == "flash_attention_2"
    assert next(prep.model.parameters()).is_cuda
    metrics = train_and_save(prep, cfg)
    assert metrics["steps"] == 2 and all(math.isfinite(x) for x in losses(tmp_path / "student"))
    assert (tmp_path / "student" / "model.safetensors").is_file()


def liger_modules(model) -> list[str]:
    """Modules whose forward Liger replaced with one of its kernels (RMSNorm, SwiGLU MLP, ...)."""
    names = []
    for name, module in model.named_modules():
        forward = getattr(module.forward, "__func__", module.forward)
        if getattr(forward, "__module__", "").startswith("liger_kernel"):
            names.append(name)
    return names


def test_liger_kernels_patch_the_student_and_train(tmp_path, student_path):
    needs("liger_kernel")
    from distill.training.base import train_and_save
    from distill.training.sft import prepare

    cfg = config(tmp_path, student_path, use_liger_kernel=True, max_steps=2)
    assert cfg.sft["use_liger_kernel"] is True  # an SFTConfig key, passed through as a recipe would
    prep = prepare(cfg)
    assert prep.trainer.args.use_liger_kernel  # kept on GPU (dropped on CPU)
    metrics = train_and_save(prep, cfg)
    patched = liger_modules(prep.trainer.model)  # the Trainer applies the kernels when training starts
    assert any("norm" in name for name in patched), patched
    assert metrics["steps"] == 2 and all(math.isfinite(x) for x in losses(tmp_path / "student"))


@pytest.mark.parametrize(("launcher", "distributed_type"), [("zero3", "DEEPSPEED"), ("fsdp", "FSDP")])
def test_launcher_trains_on_one_gpu_and_saves_a_full_model(tmp_path, student_path, launcher, distributed_type):
    """`distill train --launcher ... --num-gpus 1`: `accelerate launch` with the shipped config, the model
    built sharded, trained, and gathered back into one ordinary safetensors file at the end."""
    if launcher == "zero3":
        needs("deepspeed")
    import torch
    from safetensors.torch import load_file

    data = kept(tmp_path)
    out = tmp_path / "student"
    argv = [sys.executable, "-m", "distill.cli", "train", "--launcher", launcher, "--num-gpus", "1",
            "--model", student_path, "--data", str(data), "--output", str(out)]  # fmt: skip
    for kv in ("max_steps=2", "per_device_train_batch_size=2", "learning_rate=1e-3", "warmup_steps=0"):
        argv += ["--set", kv]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        "PATH": os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", ""))),  # `accelerate`
    }
    r = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout[-4000:], r.stderr[-4000:])

    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["world_size"] == 1
    assert metrics["distributed_type"] == distributed_type
    base = load_file(Path(student_path) / "model.safetensors")
    saved = load_file(out / "model.safetensors")  # full weights, not shards
    assert set(base) <= set(saved) and all(saved[k].shape == base[k].shape for k in base)
    assert any(not torch.equal(base[k].float(), saved[k].float()) for k in base), "no weight changed"
    assert (out / "config.json").is_file() and (out / "tokenizer_config.json").is_file()
