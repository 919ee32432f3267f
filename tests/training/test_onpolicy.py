"""On-policy distillation with the real embedded student sampling and a fake teacher server scoring its
tokens (the real vLLM teacher is in the e2e tests): spans across tokenizers, scoring, a few steps."""

import json

import numpy as np
import pytest

from distill.align import spans
from distill.config import TrainConfig
from distill.errors import DistillError
from distill.records import write_jsonl
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


@pytest.mark.parametrize("loss", ["reverse-kl", "jsd"])
def test_onpolicy_steps_score_the_students_samples_and_train(tmp_path, student_path, loss):
    from distill.models import ensure_embedded
    from distill.train import run

    write_jsonl(tmp_path / "kept.jsonl", rows())
    with FakeScorer() as teacher:
        cfg = TrainConfig(
            model=student_path, method="onpolicy", teacher=str(ensure_embedded("teacher")), teacher_url=teacher.url,
            data=str(tmp_path), output=str(tmp_path / "op"), onpolicy_loss=loss, onpolicy_max_new_tokens=16,
            onpolicy_top_k=3 if loss == "jsd" else 0, onpolicy_lambda=0.5 if loss == "jsd" else 1.0,
            sft={"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-4, "bf16": False},
        )  # fmt: skip
        metrics = run(cfg)
        scored = teacher.scored
    assert metrics["steps"] == 2 and metrics["same_tokenizer"] is False
    assert metrics["teacher_tokens"] == scored > 0 and metrics["student_tokens"] > 0
    history = json.loads((tmp_path / "op" / "log_history.json").read_text())
    assert len(history) == 2 and all(h["divergence"] is not None and np.isfinite(h["divergence"]) for h in history)
    assert all(h["grad_norm"] > 0 for h in history)
    assert (tmp_path / "op" / "model.safetensors").is_file() and (tmp_path / "op" / "distill_config.yaml").is_file()


def test_onpolicy_needs_a_teacher_server_and_steps(tmp_path, student_path):
    from distill.train import run

    write_jsonl(tmp_path / "kept.jsonl", rows(1))
    base = dict(model=student_path, method="onpolicy", data=str(tmp_path), output=str(tmp_path / "op"))
    with pytest.raises(DistillError, match="--teacher-url"):
        run(TrainConfig(**base, sft={"max_steps": 1}))
    with FakeScorer() as teacher:
        with pytest.raises(DistillError, match="max_steps"):
            run(TrainConfig(**base, teacher_url=teacher.url))
        with pytest.raises(DistillError, match="jsd"):
            run(TrainConfig(**base, teacher_url=teacher.url, onpolicy_lambda=0.5, sft={"max_steps": 1}))
        # a run that fails while loading (here: the teacher's tokenizer) leaves no output folder behind
        missing = str(tmp_path / "no-teacher")
        with pytest.raises(DistillError, match="no-teacher does not exist"):
            run(TrainConfig(**base, teacher_url=teacher.url, teacher=missing, sft={"max_steps": 1}))
    assert not (tmp_path / "op").exists()
