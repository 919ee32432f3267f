"""Padding-free batches (the GPU recipes' `padding_free: true`) train on the same loss as padded ones.

TRL's collator flattens a padding-free batch into one row with position ids restarting at each sequence; the
attention must then keep the sequences apart. FlashAttention does it on a GPU (bench/gpu_check.py); on a CPU,
transformers' sdpa path reads the same position ids as packed sequences (masking_utils), so the equality is
checked here on the real collator and a random model of the recipes' architecture (Qwen2), in float32."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from distill.common.config import build, load_yaml
from distill.common.resources import recipe_for
from distill.training.base import training_args
from distill.training.config import TrainConfig
from distill.training.train import sft_fields


def tiny_qwen2(attn: str = "sdpa"):
    config = AutoConfig.for_model(
        "qwen2", vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
    )  # fmt: skip
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn).eval()


def examples():
    g = torch.Generator().manual_seed(1)
    out = []
    for n, prompt in ((9, 3), (23, 5), (14, 4)):  # rows of different lengths, each with a prompt to mask
        ids = torch.randint(1, 512, (n,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})  # as TRL's prepared rows
    return out


def loss(model, batch):
    """The model's loss on a collated batch, called as SFTTrainer.compute_loss calls it (use_cache=False: with a
    cache, transformers does not read position ids as packed sequences)."""
    with torch.no_grad():
        return model(**batch, use_cache=False).loss.item()


def test_a_padding_free_batch_has_the_padded_batchs_loss():
    model = tiny_qwen2()
    padded = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=False)
    free = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)
    a, b = padded(examples()), free(examples())
    assert "attention_mask" in a and "attention_mask" not in b and b["input_ids"].shape[0] == 1
    assert loss(model, a) == pytest.approx(loss(model, b), rel=1e-5, abs=1e-6)
    # the check can fail: without its position ids the flattened row attends across sequences
    b.pop("position_ids")
    for key in ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "seq_idx"):
        b.pop(key, None)
    assert abs(loss(model, a) - loss(model, b)) > 1e-3


@pytest.mark.parametrize("size", ["1.5b", "7b", "8b", "14b", "32b", "70b"])
def test_every_gpu_recipe_builds_its_padding_free_trainer_args_with_the_recipes_keys(tmp_path, size):
    """The arguments the GPU run builds keep padding_free, Liger, bf16 and checkpointing as the recipe sets them;
    TRL would refuse padding_free with a max_length it does not enforce, so distill enforces it before TRL."""
    recipe = load_yaml(recipe_for(size))
    cfg = build(TrainConfig, {**recipe, "size": size}, source="recipe", extra=sft_fields())
    args = training_args(cfg, tmp_path, cpu=True)
    for key in ("padding_free", "use_liger_kernel", "bf16", "gradient_checkpointing"):
        assert getattr(args, key) == recipe[key], key
    assert args.max_length is None and not args.packing


def test_padding_free_with_truncation_keep_is_refused_in_one_line(tmp_path):
    from distill.common.errors import DistillError

    cfg = build(TrainConfig, {**load_yaml(recipe_for("7b")), "size": "7b", "truncation": "keep"}, extra=sft_fields())
    with pytest.raises(DistillError, match="truncation 'keep'"):
        training_args(cfg, tmp_path, cpu=True)
