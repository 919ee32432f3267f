"""`distill plan`: will a student's SFT or logit-KD run fit in GPU memory, with which launcher, and how fast?

    distill plan --size 70b --gpus 8 --gpu-memory 80 --max-length 32768
    distill plan --size 7b --method logit-kd --max-length 32768

An analytic estimate, no GPU needed. For each launcher (ddp < zero2 < zero3/fsdp, cheapest first), with
and without activation checkpointing, and per-device batches 8, 4, 2, 1, it adds up the per-GPU peak:

  states      weights 2 B/param (QLoRA: ~0.52 B per quantised weight) + gradients 2 B and AdamW 12 B
              (fp32 master copy 4 B + two fp32 moments 8 B) per *trainable* param, divided by the GPU
              count where the launcher shards them (ZeRO-2: gradients + optimizer; ZeRO-3/FSDP: all).
  gathered    ZeRO-3/FSDP only: the full weights of the units being computed (embeddings, LM head and
              two decoder layers: the current one and the prefetched next one).
  activations what lives from the forward until the backward, per sequence of S tokens:
                without checkpointing  L x A x S, with A the bytes a decoder layer saves per token
                with checkpointing     L x 2h x S (each layer's bf16 input) -- the rest is recomputed
  backward    the working set of one layer's backward: its gradients in flight (A x S), plus its
              recomputed activations (another A x S) under checkpointing.
  logits      the LM head and loss: S x V x 12 B (fp32 log-probabilities kept for the backward, their
              gradient and the logits' gradient) without Liger; with Liger's fused linear cross-entropy
              only a chunk of rows at a time. Logits and the layer backward are never live together, so
              the peak counts the larger of the two.
              --method logit-kd (distill.training.kd_losses.chunked_kd_ce_loss; Liger is off for it): one
              chunk of C = kd_chunk_rows(V) positions at a time (its fp32 logits <= 256 MiB), C x V x 20 B
              (bf16 + fp32 logits, log-softmax, their gradients: 19.7 B measured), + the supervised rows'
              hidden states gathered and their gradient (2 x 2h B per token) + the head's weight gradient.
  targets     logit-kd only: the teacher's top-K per token in the batch (K int64 ids + K fp32 log-probs +
              a bool mask = 12 K + 1 B per token), twice (the batch, and the supervised rows the loss gathers).
  overhead    10 % of everything above (allocator fragmentation) + 2 GiB (CUDA context, NCCL, cuBLAS).

A, per token, for a decoder layer with RMSNorm, grouped-query attention (h_kv = KV heads x head dim),
a SwiGLU MLP of width f, FlashAttention (no S^2 score matrix) and bf16 activations:

  with Liger kernels     A = 12 h + 4 h_kv + 6 f   (norm inputs 2x2h, norm outputs 2x2h, q 2h, k and v
                                                    4 h_kv, attention output 2h, gate/up 4f, SwiGLU output 2f)
  without (HF eager ops) A = 20 h + 4 h_kv + 8 f   (+ each RMSNorm's fp32 copies 2x4h, + separate SiLU output 2f)

That is Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models"),
s·b·h·(34 + 5·a·s/h) bytes per layer, redone for SwiGLU/GQA/no dropout, with the 5·a·s/h attention term
gone because FlashAttention never materialises the scores.

Verdict: "fits" when the total (with overhead) is within --gpu-memory; "tight" when only the allowance for
fragmentation does not fit (try PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True); else "does not fit",
with what would: more nodes, Liger (sft only), LoRA, QLoRA (sft only: distill train refuses it for logit-kd)
or a shorter max length.

Throughput: tokens/s = GPUs x TFLOPS x MFU x 1e12 / FLOPs per token, with FLOPs per token
6 x P + 12 x L x h x S (PaLM's convention; P without the input-embedding lookup), 4 x P + 6 x P_lora under
LoRA (no weight gradients for frozen weights), plus one more forward (x4/3) under checkpointing, plus 2 x V x h
under logit-kd (its chunked loss computes the LM head again in the backward).

Known runs (open-r1 OpenR1-Distill-7B, OlympicCoder-32B, s1-32B) are checked in tests/training/test_plan.py and
tabled with their sources in docs/PLANNER.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from distill.common.config import load_yaml
from distill.common.errors import DistillError
from distill.common.resources import recipe_for
from distill.training.config import DEFAULT_LORA_RANK, LAUNCHERS, METHODS, PlanConfig

GIB = 1024**3
BATCHES = (8, 4, 2, 1)
FRAGMENTATION = 0.10  # share of the estimate added for allocator fragmentation
FIXED_OVERHEAD_GIB = 2.0  # CUDA context, NCCL buffers, cuBLAS workspaces
LOGIT_BYTES = 12  # per logit without Liger: fp32 log-probs saved + their gradient + the logits' gradient
# logit-kd's chunked loss (distill.training.kd_losses.chunked_kd_ce_loss). The chunk rule mirrors kd_losses'
# kd_chunk_rows (its 256 MiB budget for one chunk's fp32 logits; a test checks the two agree).
KD_CHUNK_BYTES = 256 * 2**20
# Per logit of a chunk: bf16 logits 2 + fp32 copy 4 + log-softmax 4, then in the backward the log-softmax's
# gradient 4 + the fp32 logits' gradient 4 + the bf16 one 2. Measured on CPU (2-layer model, vocab 151,936):
# 19.7 B (bf16), 17.6 B (fp32).
KD_LOGIT_BYTES = 20
KD_TARGET_BYTES = 12  # per listed teacher token and position: its id (int64) and log-probability (fp32)
QLORA_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # NF4 4 bits + double-quantised absmax (8 bit per 64, fp32 per 256 blocks)


# --------------------------------------------------------------------------------------------------
# Model architectures


@dataclass(frozen=True)
class Arch:
    """A decoder-only transformer (Llama/Qwen2 family: RMSNorm, GQA, SwiGLU), as in its config.json."""

    name: str
    size: str
    published_params: float  # total parameters as published (model card / safetensors metadata)
    layers: int  # num_hidden_layers
    hidden: int  # hidden_size
    intermediate: int  # intermediate_size
    heads: int  # num_attention_heads
    kv_heads: int  # num_key_value_heads
    vocab: int  # vocab_size (rows of the embedding, padded)
    tied: bool  # tie_word_embeddings
    qkv_bias: bool  # Qwen2 has biases on q, k and v
    max_positions: int  # max_position_embeddings

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def attn_linear_params(self) -> int:
        h, kv = self.hidden, self.kv_dim
        return 2 * h * h + 2 * h * kv  # q and o: h x h; k and v: h x h_kv

    @property
    def mlp_params(self) -> int:
        return 3 * self.hidden * self.intermediate  # gate, up, down

    @property
    def layer_params(self) -> int:
        bias = (self.hidden + 2 * self.kv_dim) if self.qkv_bias else 0
        return self.attn_linear_params + self.mlp_params + bias + 2 * self.hidden  # + two RMSNorm weights

    @property
    def linear_params(self) -> int:
        """Weights of the decoder layers' linear layers: what LoRA adapts and QLoRA quantises."""
        return self.layers * (self.attn_linear_params + self.mlp_params)

    @property
    def embed_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tied else self.vocab * self.hidden

    @property
    def params(self) -> int:
        return self.layers * self.layer_params + self.embed_params + self.lm_head_params + self.hidden

    @property
    def matmul_params(self) -> int:
        """Parameters that take part in a matmul per token (the input embedding is a lookup)."""
        return self.params - (0 if self.tied else self.embed_params)

    def lora_params(self, rank: int) -> int:
        """LoRA A (in x r) and B (r x out) on q, k, v, o, gate, up and down of every layer."""
        h, kv, f = self.hidden, self.kv_dim, self.intermediate
        per_layer = (h + h) + (h + kv) + (h + kv) + (h + h) + (h + f) + (h + f) + (f + h)
        return self.layers * rank * per_layer

    def act_bytes_per_token(self, liger: bool) -> int:
        """A: bytes one decoder layer saves for its backward per token (bf16, FlashAttention; see module doc)."""
        h, kv, f = self.hidden, self.kv_dim, self.intermediate
        return 12 * h + 4 * kv + 6 * f if liger else 20 * h + 4 * kv + 8 * f

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(params=self.params, head_dim=self.head_dim)
        return d


# Numbers from each model's config.json on the Hugging Face Hub (read through the `search` tool on the
# Hub pages and on copies of the configs in public repositories; URLs below). Parameter counts computed
# from them match the published ones to < 0.1 % (checked in tests/training/test_plan.py).
ARCHS: dict[str, Arch] = {
    # https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct/blob/main/config.json (LlamaForCausalLM):
    # 30 layers, hidden 576, intermediate 1536, 9 heads, 3 KV heads, vocab 49152, tied, 8192 positions;
    # 134,515,008 parameters. The embedded student of `distill train --size tiny`.
    "HuggingFaceTB/SmolLM2-135M-Instruct": Arch(
        "HuggingFaceTB/SmolLM2-135M-Instruct", "tiny", 134.5e6, 30, 576, 1536, 9, 3, 49152, True, False, 8192
    ),
    # https://huggingface.co/Qwen/Qwen2.5-Math-1.5B/blob/main/config.json (mirrored verbatim at
    # unsloth/Qwen2.5-Math-1.5B): 28 layers, hidden 1536, intermediate 8960, 12 heads, 2 KV heads,
    # vocab 151936, tied, 4096 positions; 1,543,714,304 parameters.
    "Qwen/Qwen2.5-Math-1.5B": Arch(
        "Qwen/Qwen2.5-Math-1.5B", "1.5b", 1.544e9, 28, 1536, 8960, 12, 2, 151936, True, True, 4096
    ),
    # https://huggingface.co/Qwen/Qwen2.5-Math-7B/blob/main/config.json (mirror: unsloth/Qwen2.5-Math-7B):
    # 28 layers, hidden 3584, intermediate 18944, 28 heads, 4 KV heads, vocab 152064, untied, 4096
    # positions; 7.62B parameters. open-r1's Qwen2.5-Math-7B-RoPE-300k only changes rope_theta/positions.
    "Qwen/Qwen2.5-Math-7B": Arch(
        "Qwen/Qwen2.5-Math-7B", "7b", 7.62e9, 28, 3584, 18944, 28, 4, 152064, False, True, 4096
    ),
    # https://huggingface.co/open-r1/Qwen2.5-Math-7B-RoPE-300k: Qwen2.5-Math-7B's weights with rope_theta
    # 300000 and 32768 positions, the base of open-r1's OpenR1-Distill-7B.
    "open-r1/Qwen2.5-Math-7B-RoPE-300k": Arch(
        "open-r1/Qwen2.5-Math-7B-RoPE-300k", "7b", 7.62e9, 28, 3584, 18944, 28, 4, 152064, False, True, 32768
    ),
    # https://huggingface.co/meta-llama/Llama-3.1-8B/blob/main/config.json: 32 layers, hidden 4096,
    # intermediate 14336, 32 heads, 8 KV heads, vocab 128256, untied, 131072 positions; 8.03B parameters.
    "meta-llama/Llama-3.1-8B": Arch(
        "meta-llama/Llama-3.1-8B", "8b", 8.03e9, 32, 4096, 14336, 32, 8, 128256, False, False, 131072
    ),
    # https://huggingface.co/Qwen/Qwen2.5-14B/blob/main/config.json: 48 layers, hidden 5120, intermediate
    # 13824, 40 heads, 8 KV heads, vocab 152064, untied, 131072 positions; 14.7B parameters.
    "Qwen/Qwen2.5-14B": Arch("Qwen/Qwen2.5-14B", "14b", 14.77e9, 48, 5120, 13824, 40, 8, 152064, False, True, 131072),
    # https://huggingface.co/Qwen/Qwen2.5-32B/blob/main/config.json: 64 layers, hidden 5120, intermediate
    # 27648, 40 heads, 8 KV heads, vocab 152064, untied, 131072 positions; 32.8B parameters.
    "Qwen/Qwen2.5-32B": Arch("Qwen/Qwen2.5-32B", "32b", 32.76e9, 64, 5120, 27648, 40, 8, 152064, False, True, 131072),
    # https://huggingface.co/meta-llama/Llama-3.3-70B-Instruct/blob/main/config.json: 80 layers, hidden
    # 8192, intermediate 28672, 64 heads, 8 KV heads, vocab 128256, untied, 131072 positions; 70.6B params.
    "meta-llama/Llama-3.3-70B-Instruct": Arch(
        "meta-llama/Llama-3.3-70B-Instruct", "70b", 70.55e9, 80, 8192, 28672, 64, 8, 128256, False, False, 131072
    ),
    # Same shapes as Qwen2.5-32B with 32768 positions: the bases of s1-32B and OlympicCoder-32B, for the
    # known-run checks. https://huggingface.co/Qwen/Qwen2.5-32B-Instruct/blob/main/config.json and
    # https://huggingface.co/Qwen/Qwen2.5-Coder-32B-Instruct/blob/main/config.json
    "Qwen/Qwen2.5-32B-Instruct": Arch(
        "Qwen/Qwen2.5-32B-Instruct", "32b", 32.76e9, 64, 5120, 27648, 40, 8, 152064, False, True, 32768
    ),
    "Qwen/Qwen2.5-Coder-32B-Instruct": Arch(
        "Qwen/Qwen2.5-Coder-32B-Instruct", "32b", 32.76e9, 64, 5120, 27648, 40, 8, 152064, False, True, 32768
    ),
}
# The student of each size when its recipe cannot be read or names a model outside the table.
SIZE_DEFAULTS = {
    "tiny": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "1.5b": "Qwen/Qwen2.5-Math-1.5B",
    "7b": "Qwen/Qwen2.5-Math-7B",
    "8b": "meta-llama/Llama-3.1-8B",
    "14b": "Qwen/Qwen2.5-14B",
    "32b": "Qwen/Qwen2.5-32B",
    "70b": "meta-llama/Llama-3.3-70B-Instruct",
}
ALIASES = {
    "embedded:student": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "HuggingFaceTB/SmolLM2-135M": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "Qwen/Qwen2.5-Math-7B-Instruct": "Qwen/Qwen2.5-Math-7B",
    "meta-llama/Llama-3.1-70B-Instruct": "meta-llama/Llama-3.3-70B-Instruct",
}


def find_arch(model: str) -> Arch | None:
    """The table entry for a Hub id (case-insensitive, aliases followed), or None."""
    lowered = {k.lower(): k for k in ARCHS}
    aliases = {k.lower(): v for k, v in ALIASES.items()}
    key = model.strip().rstrip("/").lower()
    key = aliases.get(key, key).lower()
    return ARCHS[lowered[key]] if key in lowered else None


# --------------------------------------------------------------------------------------------------
# Memory


@dataclass
class Estimate:
    """Per-GPU memory of one configuration, in GiB, and whether it fits."""

    launcher: str
    checkpointing: bool
    batch: int
    weights: float
    gradients: float
    optimizer: float
    gathered: float
    activations: float
    backward: float
    logits: float
    overhead: float
    total: float
    capacity: float
    targets: float = 0.0  # logit-kd: the teacher's top-K per token in the batch

    @property
    def states(self) -> float:
        return self.weights + self.gradients + self.optimizer

    @property
    def raw(self) -> float:
        """The estimate without the fragmentation allowance (CUDA context still counted)."""
        return self.total - self.overhead + FIXED_OVERHEAD_GIB

    @property
    def verdict(self) -> str:
        if self.total <= self.capacity:
            return "fits"
        return "tight" if self.raw <= self.capacity else "does not fit"

    def to_dict(self) -> dict:
        d = {k: round(v, 2) if isinstance(v, float) else v for k, v in dataclasses.asdict(self).items()}
        d.update(states=round(self.states, 2), raw=round(self.raw, 2), verdict=self.verdict)
        return d


def _next_pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, n))))


def logit_kd_chunk(vocab: int) -> int:
    """Positions per chunk of logit-kd's loss: distill.training.kd_losses.kd_chunk_rows (one chunk's fp32
    logits within 256 MiB, a multiple of 64), restated here so the planner needs no torch."""
    rows = max(1, KD_CHUNK_BYTES // (4 * vocab))
    return rows // 64 * 64 if rows >= 64 else rows


def estimate(
    arch: Arch,
    *,
    seq_len: int,
    batch: int = 1,
    gpus: int = 8,
    launcher: str = "zero3",
    checkpointing: bool = True,
    liger: bool = True,
    lora_rank: int = 0,
    qlora: bool = False,
    gpu_memory: float = 80.0,
    kd_top_k: int = 0,
) -> Estimate:
    """Per-GPU peak memory of SFT with `gpus` GPUs in total (all nodes), `batch` sequences of `seq_len`
    tokens per GPU; with `kd_top_k` > 0, of logit KD on the teacher's top-K (no Liger then, whatever
    `liger` says: distill.training.kd drops it). Formulas in the module docstring."""
    if gpus < 1 or batch < 1 or seq_len < 1:
        raise DistillError(f"plan: gpus, batch and max length must be at least 1 (got {gpus}, {batch}, {seq_len})")
    if launcher not in LAUNCHERS:
        raise DistillError(f"plan: unknown launcher {launcher!r} (one of {', '.join(LAUNCHERS)})")
    if qlora and not lora_rank:
        lora_rank = DEFAULT_LORA_RANK
    if kd_top_k < 0:
        raise DistillError(f"plan: the teacher's top-K must be 0 (sft) or more, got {kd_top_k}")
    if kd_top_k:
        liger = False
    tokens = seq_len * batch
    h, n_layers, vocab = arch.hidden, arch.layers, arch.vocab

    # Weights: bf16, or NF4 for the decoder's linear layers under QLoRA (embeddings, head, norms stay bf16).
    other = arch.params - arch.linear_params
    weight_bytes = arch.linear_params * QLORA_BYTES + other * 2 if qlora else arch.params * 2
    trainable = arch.lora_params(lora_rank) if lora_rank else arch.params
    grad_bytes, optim_bytes = trainable * 2, trainable * 12
    shard_weights = launcher in ("zero3", "fsdp")
    shard_states = launcher != "ddp"
    weights = weight_bytes / gpus if shard_weights else weight_bytes
    gradients = grad_bytes / gpus if shard_states else grad_bytes
    optimizer = optim_bytes / gpus if shard_states else optim_bytes

    # Full weights of the units being computed under full sharding: embeddings, head, two decoder layers.
    gathered = 0.0
    if shard_weights:
        per_param = weight_bytes / arch.params
        gathered = per_param * (arch.embed_params + arch.lm_head_params + 2 * arch.layer_params)

    layer_act = arch.act_bytes_per_token(liger) * tokens  # A x S x b
    if checkpointing:
        activations = n_layers * 2 * h * tokens  # each layer's bf16 input
        backward = 2 * layer_act  # recomputed activations + gradients in flight
    else:
        activations = n_layers * layer_act
        backward = layer_act

    head_trainable = not lora_rank  # LoRA leaves the LM head frozen: no weight gradient for it
    targets = 0.0
    if kd_top_k:
        # Chunked KD + CE: one chunk's working set, the supervised rows' hidden states gathered (bf16) and
        # their gradient, the head's weight gradient (fp32, as for Liger).
        chunk = min(tokens, logit_kd_chunk(vocab))
        logits = chunk * vocab * KD_LOGIT_BYTES + tokens * h * 2 * 2 + (vocab * h * 4 if head_trainable else 0)
        # The teacher's top-K (ids, log-probs) and mask per token: in the batch, and gathered for the loss.
        targets = tokens * (kd_top_k * KD_TARGET_BYTES + 1) * 2
    elif liger:
        # Fused linear cross-entropy: rows in chunks of next_pow2(tokens / ceil(V / h)), logits of a
        # chunk in bf16 + fp32, the input gradient, and the head's weight gradient accumulated in fp32.
        chunk = min(tokens, _next_pow2(math.ceil(tokens / math.ceil(vocab / h))))
        logits = chunk * vocab * 6 + tokens * h * 2 + (vocab * h * 4 if head_trainable else 0)
    else:
        # The head's weight gradient comes after the log-prob tensors are freed: not part of this peak.
        logits = tokens * vocab * LOGIT_BYTES

    peak = weights + gradients + optimizer + gathered + activations + targets + max(backward, logits)
    overhead = FRAGMENTATION * peak + FIXED_OVERHEAD_GIB * GIB
    g = 1 / GIB
    return Estimate(
        launcher=launcher,
        checkpointing=checkpointing,
        batch=batch,
        weights=weights * g,
        gradients=gradients * g,
        optimizer=optimizer * g,
        gathered=gathered * g,
        activations=activations * g,
        backward=backward * g,
        logits=logits * g,
        overhead=overhead * g,
        total=(peak + overhead) * g,
        capacity=float(gpu_memory),
        targets=targets * g,
    )


def throughput(
    arch: Arch,
    *,
    seq_len: int,
    gpus: int,
    checkpointing: bool,
    lora_rank: int = 0,
    qlora: bool = False,
    gpu_tflops: float = 989.0,
    mfu: float = 0.4,
    logit_kd: bool = False,
) -> dict:
    """Training tokens per second from FLOPs per token (module docstring) at the given MFU; logit-kd's
    chunked loss computes the LM head once more in the backward (+2 V h per token)."""
    if qlora and not lora_rank:
        lora_rank = DEFAULT_LORA_RANK
    p = arch.matmul_params
    attn = 12 * arch.layers * arch.hidden * seq_len  # QK^T and AV, forward 4 L h S + backward 8 L h S
    if lora_rank:
        p_lora = arch.lora_params(lora_rank)
        flops = 4 * p + 6 * p_lora + attn
        forward = 2 * p + 2 * p_lora + attn / 3
    else:
        flops = 6 * p + attn
        forward = 2 * p + attn / 3
    if checkpointing:
        flops += forward
    if logit_kd:
        flops += 2 * arch.vocab * arch.hidden
    tokens_per_s = gpus * gpu_tflops * 1e12 * mfu / flops
    return {"flops_per_token": flops, "tokens_per_s": tokens_per_s, "tokens_per_s_per_gpu": tokens_per_s / gpus}


# --------------------------------------------------------------------------------------------------
# Planning


def resolve_model(cfg: PlanConfig) -> tuple[Arch, dict]:
    """The student: --model, else the `model:` of recipes/<method>/*-<size>.yaml, else the table's model for
    the size. Returns the architecture and what the recipe said (model, max_length, path) for the notes."""

    info: dict[str, Any] = {"recipe": None, "recipe_model": None, "recipe_max_length": None, "notes": []}
    size = cfg.size.lower()
    try:
        path = recipe_for(size, cfg.method)
        data = load_yaml(path)
        shown = path.relative_to(path.parents[2]) if len(path.parents) > 2 else path  # recipes/<method>/<name>.yaml
        info.update(recipe=str(shown), recipe_model=data.get("model"), recipe_max_length=data.get("max_length"))
        extended = (data.get("model_config") or {}).get("max_position_embeddings")
        info["recipe_positions"] = int(extended) if extended else None  # the recipe's extended RoPE
    except DistillError as e:
        if size not in SIZE_DEFAULTS and not cfg.model:
            raise DistillError(f"plan: unknown size {cfg.size!r} ({e}; known: {', '.join(SIZE_DEFAULTS)})") from None
        if not cfg.model:
            info["notes"].append(f"no recipe for size {size}: using the planner's {SIZE_DEFAULTS[size]}")
    wanted = cfg.model or info["recipe_model"] or SIZE_DEFAULTS.get(size, "")
    arch = find_arch(wanted)
    if arch is None and cfg.model:
        known = ", ".join(sorted(ARCHS))
        raise DistillError(f"plan: no architecture for model {cfg.model!r} in the planner's table (known: {known})")
    if arch is None:
        if size not in SIZE_DEFAULTS:
            raise DistillError(f"plan: model {wanted!r} of size {size!r} is not in the planner's table")
        arch = ARCHS[SIZE_DEFAULTS[size]]
        info["notes"].append(f"recipe model {wanted!r} is not in the planner's table: using {arch.name}")
    return arch, info


def _search(arch: Arch, cfg: PlanConfig, seq_len: int, gpus: int, lora: int, qlora: bool) -> list[Estimate]:
    """Every (launcher, checkpointing) candidate in order of preference, each at its largest fitting batch
    (or the smallest batch tried when none fits)."""
    launchers = ["ddp", "zero2", "zero3"] if cfg.launcher == "auto" else [cfg.launcher]
    ckpts = {"auto": [False, True], "on": [True], "off": [False]}[cfg.gradient_checkpointing]
    if cfg.batch:
        batches = [cfg.batch]
    else:  # no point in more sequences per step than the target global batch
        cap = max(1, cfg.global_batch // gpus)
        batches = [b for b in BATCHES if b <= cap] or [1]
    out = []
    for launcher in launchers:
        for ckpt in ckpts:
            tried = [
                estimate(
                    arch,
                    seq_len=seq_len,
                    batch=b,
                    gpus=gpus,
                    launcher=launcher,
                    checkpointing=ckpt,
                    lora_rank=lora,
                    qlora=qlora,
                    gpu_memory=cfg.gpu_memory,
                    **_loss_settings(cfg),
                )
                for b in batches
            ]
            best = next((e for e in tried if e.verdict == "fits"), None)
            best = best or next((e for e in tried if e.verdict == "tight"), None) or tried[-1]
            out.append(best)
    return out


def _loss_settings(cfg: PlanConfig) -> dict:
    """estimate()'s liger and kd_top_k for the method: logit-kd runs without Liger."""
    method = METHODS[cfg.method]
    return {"liger": cfg.liger and method.liger, "kd_top_k": cfg.kd_top_k if method.kd_targets else 0}


def _choose(candidates: list[Estimate]) -> Estimate:
    """The first candidate that fits (cheapest launcher, no checkpointing before checkpointing); else the
    first that is tight; else the one that comes closest."""
    for verdict in ("fits", "tight"):
        for e in candidates:
            if e.verdict == verdict:
                return e
    return min(candidates, key=lambda e: e.total)


def _fits_with(arch: Arch, cfg: PlanConfig, **kw: Any) -> Estimate:
    """Best full-sharding, checkpointed, batch-1 estimate under changed settings (for suggestions)."""
    args = {
        "seq_len": kw.pop("seq_len"),
        "batch": 1,
        "gpus": kw.pop("gpus"),
        "launcher": cfg.launcher if cfg.launcher in ("zero3", "fsdp") else "zero3",
        "checkpointing": cfg.gradient_checkpointing != "off",
        "gpu_memory": cfg.gpu_memory,
        **_loss_settings(cfg),
    }
    args.update(kw)
    return estimate(arch, **args)


def _suggestions(arch: Arch, cfg: PlanConfig, seq_len: int, lora: int, qlora: bool) -> list[dict]:
    """What would fit when nothing does: more nodes, Liger (sft), LoRA, QLoRA (sft), a shorter max length."""
    out: list[dict] = []
    gpus = cfg.gpus * cfg.nodes
    adapters = {"lora_rank": lora, "qlora": qlora}
    for nodes in range(cfg.nodes + 1, 129):
        e = _fits_with(arch, cfg, seq_len=seq_len, gpus=cfg.gpus * nodes, **adapters)
        if e.verdict == "fits":
            out.append(
                {
                    "change": "nodes",
                    "nodes": nodes,
                    "gpus": cfg.gpus * nodes,
                    "total_gib": round(e.total, 1),
                    "text": f"{nodes} nodes ({cfg.gpus * nodes} GPUs) with {e.launcher} + checkpointing, batch 1: "
                    f"{e.total:.1f} GiB",
                }
            )
            break
    else:
        out.append(
            {
                "change": "nodes",
                "nodes": None,
                "text": "more nodes alone do not help: one sequence's activations and logits do not shard",
            }
        )
    if not cfg.liger and METHODS[cfg.method].liger:  # the fp32 loss over S x V logits is often the single biggest term
        for nodes in range(cfg.nodes, 129):
            e = _fits_with(arch, cfg, seq_len=seq_len, gpus=cfg.gpus * nodes, liger=True, **adapters)
            if e.verdict == "fits":
                where = "" if nodes == cfg.nodes else f" on {nodes} nodes ({cfg.gpus * nodes} GPUs)"
                out.append(
                    {
                        "change": "liger",
                        "nodes": nodes,
                        "total_gib": round(e.total, 1),
                        "text": f"Liger's fused linear cross-entropy (use_liger_kernel: true){where} with "
                        f"{e.launcher} + checkpointing, batch 1: {e.total:.1f} GiB",
                    }
                )
                break
    if not lora and not qlora:
        e = _fits_with(arch, cfg, seq_len=seq_len, gpus=gpus, lora_rank=DEFAULT_LORA_RANK)
        if e.verdict == "fits":
            out.append(
                {
                    "change": "lora",
                    "lora": DEFAULT_LORA_RANK,
                    "total_gib": round(e.total, 1),
                    "text": f"LoRA r={DEFAULT_LORA_RANK} with {e.launcher} + checkpointing, batch 1: {e.total:.1f} GiB",
                }
            )
    if not qlora and METHODS[cfg.method].qlora:  # distill train refuses QLoRA for the others
        e = _fits_with(arch, cfg, seq_len=seq_len, gpus=gpus, lora_rank=lora or DEFAULT_LORA_RANK, qlora=True)
        if e.verdict == "fits":
            out.append(
                {
                    "change": "qlora",
                    "lora": lora or DEFAULT_LORA_RANK,
                    "total_gib": round(e.total, 1),
                    "text": f"QLoRA (4-bit base, r={lora or DEFAULT_LORA_RANK}) with {e.launcher} + checkpointing, "
                    f"batch 1: {e.total:.1f} GiB",
                }
            )
    # The longest max length (a multiple of 1024) that fits on these GPUs.
    lo, hi = 0, seq_len // 1024
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _fits_with(arch, cfg, seq_len=mid * 1024, gpus=gpus, **adapters).verdict == "fits":
            lo = mid
        else:
            hi = mid - 1
    if lo:
        e = _fits_with(arch, cfg, seq_len=lo * 1024, gpus=gpus, **adapters)
        out.append(
            {
                "change": "max_length",
                "max_length": lo * 1024,
                "total_gib": round(e.total, 1),
                "text": f"max length {lo * 1024} with {e.launcher} + checkpointing, batch 1: {e.total:.1f} GiB",
            }
        )
    else:
        out.append(
            {
                "change": "max_length",
                "max_length": None,
                "text": f"no max length fits on {gpus} GPUs: the sharded weights and optimizer states alone are too big",
            }
        )
    return out


def _command(arch: Arch, cfg: PlanConfig, choice: Estimate, seq_len: int, accum: int, lora: int) -> str:
    """The `accelerate launch` line that runs the plan with distill train."""
    gpus = cfg.gpus * cfg.nodes
    parts = [f"accelerate launch --config_file recipes/accelerate/{choice.launcher}.yaml"]
    if cfg.nodes > 1:
        parts.append(f"--num_machines {cfg.nodes} --machine_rank $RANK --main_process_ip $HEAD_NODE")
    parts.append(
        f"--num_processes {gpus} -m distill.cli train" + (f" --method {cfg.method}" if cfg.method != "sft" else "")
    )
    parts.append(f"--size {cfg.size.lower()}" + (f" --model {arch.name}" if cfg.model else ""))
    if lora:
        parts.append(f"--lora-r {lora}" + (" --load-in-4bit true" if cfg.qlora else ""))
    parts += [
        f"--set max_length={seq_len}",
        f"--set per_device_train_batch_size={choice.batch}",
        f"--set gradient_accumulation_steps={accum}",
        f"--set gradient_checkpointing={str(choice.checkpointing).lower()}",
    ]
    if METHODS[cfg.method].liger:  # the other methods drop use_liger_kernel whatever it is set to
        parts.append(f"--set use_liger_kernel={str(cfg.liger).lower()}")
    return " ".join(parts)


def plan(cfg: PlanConfig) -> dict:
    """The whole plan as a JSON-able dict: model, hardware, the chosen configuration and its memory
    breakdown, gradient accumulation, throughput, every candidate tried, and suggestions if nothing fits."""
    arch, info = resolve_model(cfg)
    notes: list[str] = list(info["notes"])
    seq_len = cfg.max_length or int(info["recipe_max_length"] or 0) or 4096
    if not cfg.max_length:
        notes.append(f"max length {seq_len} from {'the recipe' if info['recipe_max_length'] else 'the default'}")
    own_model = not cfg.model or cfg.model == info["recipe_model"]
    positions = (info.get("recipe_positions") if own_model else None) or arch.max_positions
    if seq_len > positions:
        notes.append(
            f"max length {seq_len} exceeds {arch.name}'s {positions} positions: raise rope_theta first "
            "(as open-r1 did with Qwen2.5-Math-7B-RoPE-300k)"
        )
    elif positions != arch.max_positions:
        notes.append(
            f"{positions} positions from the recipe's model_config (extended RoPE; the model has {arch.max_positions})"
        )
    lora = cfg.lora or (DEFAULT_LORA_RANK if cfg.qlora else 0)
    gpus = cfg.gpus * cfg.nodes
    candidates = _search(arch, cfg, seq_len, gpus, lora, cfg.qlora)
    choice = _choose(candidates)
    verdict = choice.verdict
    accum = max(1, math.ceil(cfg.global_batch / (gpus * choice.batch)))
    effective = gpus * choice.batch * accum
    if effective != cfg.global_batch:
        notes.append(
            f"global batch {effective} sequences (target {cfg.global_batch} is not a multiple of {gpus} x {choice.batch})"
        )
    kd = METHODS[cfg.method].kd_targets
    tput = throughput(
        arch,
        seq_len=seq_len,
        gpus=gpus,
        checkpointing=choice.checkpointing,
        lora_rank=lora,
        qlora=cfg.qlora,
        gpu_tflops=cfg.gpu_tflops,
        mfu=cfg.mfu,
        logit_kd=kd,
    )
    step_s = effective * seq_len / tput["tokens_per_s"]
    if choice.launcher == "zero3" and cfg.launcher == "auto":
        notes.append("zero3 and fsdp shard the same way: recipes/accelerate/fsdp.yaml needs no DeepSpeed")
    if verdict == "tight":
        notes.append(
            "tight: fits only without the 10% fragmentation allowance; set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"
        )
    if lora or cfg.qlora:
        notes.append(
            "the estimate is for PEFT LoRA on all linear layers (distill train's lora_target_modules: all-linear)"
        )
    if kd:
        notes.append(
            f"logit-kd: no Liger kernels (distill train drops use_liger_kernel for it); the loss takes "
            f"{logit_kd_chunk(arch.vocab)} positions at a time, never the {seq_len * choice.batch} x {arch.vocab} "
            f"logits; the teacher's top-{cfg.kd_top_k} per token rides in every batch"
        )
    result = {
        "model": arch.name,
        "size": cfg.size.lower(),
        "recipe": info["recipe"],
        "model_from": "--model" if cfg.model else ("recipe" if info["recipe_model"] else "table"),
        "arch": arch.to_dict(),
        "hardware": {
            "gpus_per_node": cfg.gpus,
            "nodes": cfg.nodes,
            "gpus": gpus,
            "gpu_memory_gib": cfg.gpu_memory,
            "gpu_tflops": cfg.gpu_tflops,
            "mfu": cfg.mfu,
        },
        "settings": {
            "method": cfg.method,
            "kd_top_k": cfg.kd_top_k if kd else 0,
            "max_length": seq_len,
            "launcher": cfg.launcher,
            "gradient_checkpointing": cfg.gradient_checkpointing,
            "batch": cfg.batch,
            "lora": lora,
            "qlora": cfg.qlora,
            "liger": cfg.liger and METHODS[cfg.method].liger,
            "global_batch": cfg.global_batch,
        },
        "fits": verdict != "does not fit",
        "verdict": verdict,
        "recommendation": {
            "launcher": choice.launcher,
            "accelerate_config": f"recipes/accelerate/{choice.launcher}.yaml",
            "gradient_checkpointing": choice.checkpointing,
            "per_device_batch": choice.batch,
            "gradient_accumulation": accum,
            "global_batch": effective,
            "command": _command(arch, cfg, choice, seq_len, accum, lora),
        },
        "memory_gib": choice.to_dict(),
        "throughput": {
            "tokens_per_s": round(tput["tokens_per_s"]),
            "tokens_per_s_per_gpu": round(tput["tokens_per_s_per_gpu"]),
            "flops_per_token": tput["flops_per_token"],
            "seconds_per_step": round(step_s, 1),
            "tokens_per_step": effective * seq_len,
        },
        "candidates": [e.to_dict() for e in candidates],
        "suggestions": _suggestions(arch, cfg, seq_len, lora, cfg.qlora) if verdict == "does not fit" else [],
        "notes": notes,
    }
    return result


# --------------------------------------------------------------------------------------------------
# Output


def _params_text(n: float) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def format_plan(result: dict) -> str:
    """A readable text report of `plan()`'s result."""
    hw, st, rec, mem = result["hardware"], result["settings"], result["recommendation"], result["memory_gib"]
    tune = "full fine-tuning"
    if st["qlora"]:
        tune = f"QLoRA r={st['lora']}"
    elif st["lora"]:
        tune = f"LoRA r={st['lora']}"
    kd = bool(st.get("kd_top_k"))
    method = f"{st['method']} on the teacher's top-{st['kd_top_k']}" if kd else st.get("method", "sft")
    lines = [
        f"distill plan: {result['model']} ({_params_text(result['arch']['params'])} params"
        + (f", from {result['recipe']}" if result["model_from"] == "recipe" else f", from {result['model_from']}")
        + ")",
        f"  {hw['nodes']} node(s) x {hw['gpus_per_node']} GPUs = {hw['gpus']} GPUs of {hw['gpu_memory_gib']:g} GiB; "
        f"max length {st['max_length']}; {method}; {tune}; Liger {'on' if st['liger'] else 'off'}",
        "",
        "  per-GPU memory in GiB (> marks the choice):",
        "    launcher  ckpt  batch  states  gathered  activ  backward  logits  "
        + ("targets  " if kd else "")
        + "overhead   total  verdict",
    ]
    for c in result["candidates"]:
        mark = (
            ">"
            if (c["launcher"], c["checkpointing"], c["batch"])
            == (
                rec["launcher"],
                rec["gradient_checkpointing"],
                rec["per_device_batch"],
            )
            else " "
        )
        lines.append(
            f"  {mark} {c['launcher']:<9} {'on' if c['checkpointing'] else 'off':<5} {c['batch']:>5}  "
            f"{c['states']:>6.1f}  {c['gathered']:>8.1f}  {c['activations']:>5.1f}  {c['backward']:>8.1f}  "
            f"{c['logits']:>6.1f}  "
            + (f"{c['targets']:>7.2f}  " if kd else "")
            + f"{c['overhead']:>8.1f}  {c['total']:>6.1f}  {c['verdict']}"
        )
    lines.append("")
    if result["verdict"] == "does not fit":
        lines.append(f"  DOES NOT FIT: the closest option needs {mem['total']:.1f} GiB of {hw['gpu_memory_gib']:g}.")
        lines.append("  What would fit:")
        lines += [f"    - {s['text']}" for s in result["suggestions"]]
    else:
        head = "FITS" if result["verdict"] == "fits" else "TIGHT"
        lines += [
            f"  {head}: {rec['launcher']} ({rec['accelerate_config']}), gradient checkpointing "
            f"{'on' if rec['gradient_checkpointing'] else 'off'}, {rec['per_device_batch']} sequence(s) per GPU x "
            f"{rec['gradient_accumulation']} accumulation steps x {hw['gpus']} GPUs = {rec['global_batch']} per step",
            f"  memory: weights {mem['weights']:.1f} + gradients {mem['gradients']:.1f} + optimizer {mem['optimizer']:.1f}"
            f" + gathered {mem['gathered']:.1f} + activations {mem['activations']:.1f}"
            + (f" + teacher targets {mem['targets']:.2f}" if kd else "")
            + f" + max(backward {mem['backward']:.1f}, logits {mem['logits']:.1f}) + overhead {mem['overhead']:.1f}"
            f" = {mem['total']:.1f} GiB",
        ]
        tp = result["throughput"]
        lines.append(
            f"  throughput: ~{tp['tokens_per_s']:,} tokens/s ({tp['tokens_per_s_per_gpu']:,} per GPU at "
            f"{hw['mfu']:.0%} MFU of {hw['gpu_tflops']:g} TFLOPS); ~{tp['seconds_per_step']:g} s per optimizer step "
            f"of {tp['tokens_per_step']:,} tokens"
        )
        lines.append(f"  run: {rec['command']}")
    if result["notes"]:
        lines.append("  notes:")
        lines += [f"    - {n}" for n in result["notes"]]
    return "\n".join(lines)


def run(cfg: PlanConfig) -> dict:
    """Plan, print (a table, or JSON with cfg.json) and return the plan dict."""
    result = plan(cfg)
    print(json.dumps(result, indent=2) if cfg.json else format_plan(result), flush=True)
    return result
