"""On-policy distillation with the real embedded student sampling and a fake teacher server scoring its
tokens (the real vLLM teacher is in the e2e tests): spans across tokenizers, scoring, and the Trainer's
own machinery (steps, LoRA, gradient accumulation, checkpoints and resume)."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from distill.common.config import build
from distill.common.errors import DistillError
from distill.common.models import ensure_embedded
from distill.common.records import write_jsonl
from distill.training.align import spans
from distill.training.config import TrainConfig
from distill.training.train import sft_fields, train
from tests.fakes import FakeScorer


def test_spans_group_tokens_both_tokenizers_cut_alike():
    t = [b"The", b" boxed", b"{", b"12", b"}", b"\x00EOT"]
    s = [b"The", b" box", b"ed", b"{", b"1", b"2", b"}", b"\x00EOT"]
    t_span, s_span, n = spans(t, s)
    assert n == 6 and t_span.tolist() == [0, 1, 2, 3, 4, 5]  # the end-of-turn marker is a span of its own
    # " boxed" = " box" + "ed"; "12" = "1" + "2"
    assert s_span[1] == s_span[2] == t_span[1] and s_span[4] == s_span[5] == t_span[3]
    assert spans([b"ab"], [b"ac"])[2] == 0  # different text: nothing to compare


def rows(n=4):
    return [
        {
            "messages": [
                {"role": "user", "content": f"What is {i} + {i + 2}? Answer in one line."},
                {"role": "assistant", "content": f"{i} + {i + 2} = {2 * i + 2}. The answer is \\boxed{{{2 * i + 2}}}."},
            ]
        }
        for i in range(n)
    ]


def config(tmp_path, student_path, url, **keys):
    """A TrainConfig as the CLI builds it: flat keys, trl.SFTConfig keys passed through into .sft."""
    values = {
        "model": student_path, "method": "onpolicy", "teacher": str(ensure_embedded("teacher")), "teacher_url": url,
        "data": str(tmp_path), "output": str(tmp_path / "op"), "onpolicy_max_new_tokens": 12,
        "max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-4, "bf16": False, **keys,
    }  # fmt: skip
    return build(TrainConfig, values, extra=sft_fields())


def logged_steps(folder):
    return [h for h in json.loads((folder / "log_history.json").read_text()) if "loss" in h]


pytestmark = pytest.mark.model


@pytest.mark.parametrize("loss", ["reverse-kl", "jsd"])
def test_onpolicy_steps_score_the_students_samples_and_train(tmp_path, student_path, loss):
    write_jsonl(tmp_path / "kept.jsonl", rows())
    before = load_file(f"{student_path}/model.safetensors")
    with FakeScorer() as teacher:
        keys = {"onpolicy_loss": loss}
        if loss == "jsd":
            keys.update(onpolicy_top_k=3, onpolicy_lambda=0.5)
        metrics = train(config(tmp_path, student_path, teacher.url, **keys))
        scored = teacher.scored
    out = tmp_path / "op"
    assert metrics["steps"] == 2 and metrics["same_tokenizer"] is False
    assert metrics["teacher_tokens"] == scored > 0 and metrics["student_tokens"] > 0
    history = logged_steps(out)
    assert len(history) == 2 and all(np.isfinite(h["divergence"]) and h["grad_norm"] > 0 for h in history)
    assert metrics["first_divergence"] == history[0]["divergence"] and metrics["last_divergence"] is not None
    after = load_file(out / "model.safetensors")
    changed = [k for k in before if k in after and not torch.equal(before[k].float(), after[k].float())]
    assert len(changed) > len(before) // 2  # a full fine-tuning step moves (nearly) every tensor
    assert (out / "distill_config.yaml").is_file() and (out / "train_metrics.json").is_file()


def test_onpolicy_trains_lora_adapters_with_gradient_accumulation(tmp_path, student_path):
    write_jsonl(tmp_path / "kept.jsonl", rows())
    with FakeScorer() as teacher:
        cfg = config(
            tmp_path, student_path, teacher.url, lora_r=4, max_steps=1, gradient_accumulation_steps=2, warmup_steps=0
        )
        metrics = train(cfg)
        requests = teacher.requests
    out = tmp_path / "op"
    assert metrics["method"] == "lora" and metrics["steps"] == 1
    assert requests == 4  # one optimizer step = 2 accumulated batches of 2 prompts, each sequence scored once
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    adapter = load_file(out / "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)
    assert any(float(v.abs().sum()) > 0 for k, v in adapter.items() if "lora_B" in k)  # B starts at 0: it moved


def test_onpolicy_resumes_from_its_checkpoint_with_its_budget(tmp_path, student_path):
    write_jsonl(tmp_path / "kept.jsonl", rows())
    with FakeScorer() as teacher:
        first = train(config(tmp_path, student_path, teacher.url, max_steps=2, save_strategy="steps", save_steps=1))
        assert (tmp_path / "op" / "checkpoints" / "checkpoint-2").is_dir()
        resumed = train(
            config(tmp_path, student_path, teacher.url, max_steps=3, save_strategy="steps", save_steps=1, resume=True)
        )
    assert resumed["resumed_from"].endswith("checkpoint-2") and resumed["steps"] == 3
    assert resumed["teacher_tokens"] > first["teacher_tokens"]  # the budget counts on from the checkpoint
    assert [h["step"] for h in logged_steps(tmp_path / "op")] == [1, 2, 3]


def test_onpolicy_checks_come_before_anything_is_loaded_or_written(tmp_path, student_path):
    write_jsonl(tmp_path / "kept.jsonl", rows(1))
    with pytest.raises(DistillError, match="--teacher-url"):
        train(config(tmp_path, student_path, ""))
    with FakeScorer() as teacher:
        with pytest.raises(DistillError, match="jsd"):
            train(config(tmp_path, student_path, teacher.url, onpolicy_lambda=0.5))
        # a run that fails while loading (here: the teacher's tokenizer) leaves no output folder behind
        missing = str(tmp_path / "no-teacher")
        with pytest.raises(DistillError, match="no-teacher does not exist"):
            train(config(tmp_path, student_path, teacher.url, teacher=missing))
    assert not (tmp_path / "op").exists()


def test_a_teacher_server_too_short_for_prompt_and_sample_is_one_clear_error(tmp_path, student_path):
    """The teacher scores the prompt and the whole sample: a server whose max_model_len is shorter would answer
    HTTP 400 at the first long sample; the run stops before loading the student, naming the length to use."""
    write_jsonl(tmp_path / "kept.jsonl", rows(2))
    with FakeScorer(max_model_len=64) as teacher:
        with pytest.raises(DistillError, match=r"holds 64 tokens \(max_model_len\).*--max-model-len \d+"):
            train(config(tmp_path, student_path, teacher.url, onpolicy_max_new_tokens=128, max_length=1024))
    assert not (tmp_path / "op").exists()
