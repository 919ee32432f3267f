"""Training on the real embedded student: every parameter changes and the loss falls."""

import json

import torch
from safetensors.torch import load_file

from distill.config import TrainConfig
from distill.records import write_jsonl
from distill.train import SFT_DEFAULTS, run

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
    metrics = run(cfg)
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


def test_defaults_spell_current_trl_keys():
    import dataclasses

    from trl import SFTConfig

    names = {f.name for f in dataclasses.fields(SFTConfig)}
    assert set(SFT_DEFAULTS) <= names
