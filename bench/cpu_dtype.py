"""bf16 against float32 on this CPU: what `bf16: auto` (training) and `dtype: auto` (the embedded server) decide on.

    .venv/bin/python bench/cpu_dtype.py             # matmuls at the students' shapes, then training steps
    .venv/bin/python bench/cpu_dtype.py --steps 0   # matmuls only (seconds)

Both sides run the same work in the same process, one after the other: a [512 x 576] @ [576 x 1536] matmul
(SmolLM2-135M's MLP at 512 tokens) and, with --steps, forward + backward + optimizer steps of the embedded student
on the same random batch of 8 x 256 tokens. It prints each side's time and the ratio bf16 / float32, and the CPU
flags that decide: bf16 is native only with avx512_bf16 or amx_bf16 (distill.common.server.NATIVE_BF16_FLAGS).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from distill.common.models import ensure_embedded  # noqa: E402
from distill.common.server import NATIVE_BF16_FLAGS, cpu_flags, native_bf16  # noqa: E402


def matmul_ms(dtype: torch.dtype, repeats: int = 10) -> float:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(512, 576, generator=g).to(dtype)
    w = torch.randn(576, 1536, generator=g).to(dtype)
    a @ w  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        a @ w
    return (time.perf_counter() - start) / repeats * 1000


def step_s(dtype: torch.dtype, steps: int) -> float:
    """Seconds per training step of the embedded student in `dtype` (weights and arithmetic)."""
    model = AutoModelForCausalLM.from_pretrained(str(ensure_embedded("student")), dtype=dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(0, model.config.vocab_size, (8, 256), generator=torch.Generator().manual_seed(0))
    model(input_ids=ids, labels=ids).loss.backward()  # warm-up
    opt.zero_grad()
    start = time.perf_counter()
    for _ in range(steps):
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    return (time.perf_counter() - start) / steps


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=2, help="training steps per dtype (0: matmuls only)")
    args = p.parse_args()
    flags = cpu_flags()
    native, why = native_bf16(cuda=False, flags=flags)
    print(f"CPU flags deciding bf16: {', '.join(sorted(flags & set(NATIVE_BF16_FLAGS))) or 'none'} "
          f"(avx2: {'avx2' in flags}, avx512f: {'avx512f' in flags}); auto -> {'bf16' if native else 'float32'} ({why})")  # fmt: skip
    print(f"threads: {torch.get_num_threads()}")
    f32, b16 = matmul_ms(torch.float32), matmul_ms(torch.bfloat16)
    print(f"matmul 512x576 @ 576x1536: float32 {f32:.2f} ms, bf16 {b16:.2f} ms; bf16 / float32 = {b16 / f32:.1f}x")
    if args.steps:
        f32, b16 = step_s(torch.float32, args.steps), step_s(torch.bfloat16, args.steps)
        print(f"SmolLM2-135M training step (8 x 256 tokens): float32 {f32:.2f} s, bf16 {b16:.2f} s; "
              f"bf16 / float32 = {b16 / f32:.1f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
