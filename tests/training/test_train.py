"""Training on the real embedded student: every parameter changes and the loss falls."""

import json

import pytest
import torch
from safetensors.torch import load_file

from distill.common.config import build
from distill.common.records import write_jsonl
from distill.training.config import TrainConfig
from distill.training.train import train

pytestmark = pytest.mark.model

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


def test_sft_changes_every_parameter_and_loss_falls(tmp_path, student_path):
    write_jsonl(tmp_path / "kept.jsonl", ROWS)
    cfg = TrainConfig(
        model=student_path,
        data=str(tmp_path),
        output=str(tmp_path / "student"),
        sft={"max_steps": 8, "per_device_train_batch_size": 4, "learning_rate": 3e-4, "bf16": False, "warmup_steps": 0},
    )
    metrics = train(cfg)
    losses = [h["loss"] for h in json.loads((tmp_path / "student" / "log_history.json").read_text()) if "loss" in h]
    assert len(losses) == 8 and metrics["steps"] == 8
    assert losses[-1] < 0.5 * losses[0], losses  # memorizing four rows: the loss must fall clearly

    before = load_file(f"{student_path}/model.safetensors")
    after = load_file(tmp_path / "student" / "model.safetensors")
    assert before.keys() == after.keys()
    unchanged = [k for k in before if torch.equal(before[k].float(), after[k].float())]
    assert not unchanged, f"parameters not updated: {unchanged[:5]}"
    # The output folder is a complete model: tokenizer with a real max length, chat template, config.
    tok = json.loads((tmp_path / "student" / "tokenizer_config.json").read_text())
    assert tok["model_max_length"] == 8192
    assert (tmp_path / "student" / "distill_config.yaml").is_file()
    assert (tmp_path / "student" / "chat_template.jinja").is_file()


def test_lora_trains_only_the_adapter_and_merges_into_a_plain_model(tmp_path, student_path):
    from transformers import AutoModelForCausalLM

    from distill.training.base import train_and_save
    from distill.training.sft import prepare

    write_jsonl(tmp_path / "kept.jsonl", ROWS)
    keys = dict(model=student_path, data=str(tmp_path), output=str(tmp_path / "student"), lora_r=16, merge_lora=True)
    sft = {"max_steps": 3, "per_device_train_batch_size": 4, "learning_rate": 1e-3, "bf16": False, "warmup_steps": 0}
    cfg = build(TrainConfig, {**keys, "sft": sft})
    prep = prepare(cfg)
    before = {k: v.detach().clone() for k, v in prep.trainer.model.named_parameters()}
    metrics = train_and_save(prep, cfg)
    after = dict(prep.trainer.model.named_parameters())
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    adapter = {k for k in before if "lora_" in k}
    assert adapter and changed == adapter  # every adapter weight moved, no base weight did
    assert metrics["method"] == "lora" and metrics["trainable_params"] == sum(before[k].numel() for k in adapter)
    assert metrics["last_loss"] < 0.5 * metrics["first_loss"], metrics

    out = tmp_path / "student"
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    base = load_file(f"{student_path}/model.safetensors")
    merged = load_file(out / "model.safetensors")
    assert base.keys() == merged.keys()  # a plain model: no lora_ or base_layer names
    differ = {k for k in base if not torch.equal(base[k].float(), merged[k].float())}
    assert any("q_proj" in k for k in differ) and not any("norm" in k for k in differ)
    model = AutoModelForCausalLM.from_pretrained(out)  # loads like any transformers model (and so in vLLM)
    assert model.generation_config.eos_token_id in (2, [2])
    assert json.loads((out / "tokenizer_config.json").read_text())["eos_token"] == "<|im_end|>"


def test_resume_continues_from_the_last_checkpoint(tmp_path, student_path):
    write_jsonl(tmp_path / "kept.jsonl", ROWS[:2])
    sft = {"per_device_train_batch_size": 2, "learning_rate": 1e-3, "bf16": False, "warmup_steps": 0}
    sft |= {"save_strategy": "steps", "save_steps": 1}
    out = tmp_path / "student"
    common = {"model": student_path, "data": str(tmp_path), "output": str(out), "lora_r": 8}
    first = train(build(TrainConfig, common | {"sft": sft | {"max_steps": 1}}))
    assert first["steps"] == 1 and (out / "checkpoints" / "checkpoint-1" / "trainer_state.json").is_file()

    cfg = build(TrainConfig, common | {"resume": True})
    cfg.sft = sft | {"max_steps": 2}
    second = train(cfg)
    assert second["steps"] == 2 and second["resumed_from"] == str(out / "checkpoints" / "checkpoint-1")
    steps = [h["step"] for h in json.loads((out / "log_history.json").read_text()) if "loss" in h]
    assert steps == [1, 2]  # step 1's log came back with the checkpoint; only step 2 ran again
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
