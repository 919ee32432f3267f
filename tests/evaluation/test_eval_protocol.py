"""What the server sees: every sampling value sent, the model's own system prompt, the length the protocol
needs checked against the model and the server before any request, and --check-protocol. The real vLLM
server's side of this contract is tests/test_e2e.py::test_every_eval_definition_passes_the_real_servers_protocol_check."""

import json

import pytest
import yaml

from distill.common.errors import DistillError
from distill.common.lengths import check_length, model_positions
from distill.common.records import write_jsonl
from distill.evaluation.config import EvalConfig
from distill.evaluation.evaluate import NEUTRAL_SAMPLING, model_prompt, run
from tests.fakes import FakeOpenAI


def bench(tmp_path, n=3, extra=""):
    rows = [{"id": f"q{i}", "problem": f"Add {i} and {i + 10}.", "answer": str(2 * i + 10)} for i in range(n)]
    write_jsonl(tmp_path / "probs.jsonl", rows)
    d = tmp_path / "mine.yaml"
    d.write_text("description: sums\ndataset: probs.jsonl\nid_column: id\nverifier: math\n" + extra)
    return str(d)


def student_folder(tmp_path, stage="train", **values):
    """A distill output folder as train/grpo leave it: its config and a config.json with positions."""
    folder = tmp_path / "student"
    folder.mkdir()
    (folder / "distill_config.yaml").write_text(yaml.safe_dump({"stage": stage, **values}))
    (folder / "config.json").write_text(json.dumps({"max_position_embeddings": 2048}))
    return folder


def test_every_sampling_value_is_sent_with_each_request(tmp_path):
    with FakeOpenAI() as server:
        run(EvalConfig(tasks=bench(tmp_path), server_url=[server.url], output=str(tmp_path / "ev"), num_prompts=0))
        bodies = list(server.bodies)
    assert len(bodies) == 3
    for b in bodies:
        assert {k: b[k] for k in NEUTRAL_SAMPLING} == NEUTRAL_SAMPLING  # never the model's generation_config
        assert (b["temperature"], b["top_p"], b["max_tokens"]) == (0.0, 1.0, 1024)


def test_the_system_prompt_the_student_was_trained_with_is_used_and_recorded(tmp_path):
    folder = student_folder(tmp_path, data_system_prompt="Think step by step.")
    assert model_prompt(str(folder)) == (
        "Think step by step.",
        f"{folder / 'distill_config.yaml'} (data_system_prompt)",
    )
    grpo = tmp_path / "g"
    grpo.mkdir()
    (grpo / "distill_config.yaml").write_text(yaml.safe_dump({"stage": "grpo", "system_prompt": "R1-Zero"}))
    assert model_prompt(str(grpo))[0] == "R1-Zero" and model_prompt("embedded:student") == ("", "")
    with FakeOpenAI() as server:
        cfg = EvalConfig(
            model=[str(folder)], tasks=bench(tmp_path), server_url=[server.url], output=str(tmp_path / "ev"),
            num_prompts=0,
        )  # fmt: skip
        res = run(cfg)
        assert all(b["messages"][0] == {"role": "system", "content": "Think step by step."} for b in server.bodies)
        server.bodies.clear()
        res2 = run(EvalConfig(**{**cfg.__dict__, "output": str(tmp_path / "ev2"), "system_prompt": ""}))
        assert all(b["messages"][0]["role"] == "user" for b in server.bodies)  # '' overrides: no system turn
    assert (
        res["system_prompt"] == "Think step by step."
        and "data_system_prompt" in res["protocol_sources"]["system_prompt"]
    )
    assert res2["system_prompt"] == "" and res2["protocol_sources"]["system_prompt"] == "flag"
    assert res["chat_template"] == "the model's own"


def test_a_protocol_longer_than_the_server_holds_is_refused_before_any_request(tmp_path):
    with FakeOpenAI() as server:
        server.max_model_len = 600
        cfg = EvalConfig(
            tasks=bench(tmp_path), server_url=[server.url], output=str(tmp_path / "ev"), num_prompts=0, max_tokens=1024
        )
        with pytest.raises(DistillError, match=r"holds 600 \(max_model_len\).*--max-model-len .* or less"):
            run(cfg)
        assert server.requests == 0
        ok = run(EvalConfig(**{**cfg.__dict__, "max_tokens": 400}))  # prompts counted by their bytes (upper bound)
    assert ok["n"] == 3 and ok["max_model_len"] == 600 and 0 < ok["longest_prompt_tokens"] < 100


def test_a_model_with_fewer_positions_is_refused_naming_them(tmp_path):
    folder = student_folder(tmp_path)
    assert model_positions(str(folder)) == 2048
    (tmp_path / "scaled").mkdir()
    (tmp_path / "scaled" / "config.json").write_text(
        json.dumps({"max_position_embeddings": 4096, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})
    )
    assert model_positions(str(tmp_path / "scaled")) == 16384 and model_positions("no/such/model") is None
    with pytest.raises(DistillError, match=r"needs 2,100 tokens .* holds 2,048 positions .*--max-tokens 1948 or less"):
        check_length("my-student", str(folder), 2100, 100, 2000, None)
    check_length("my-student", str(folder), 2048, 100, 1948, None)  # exactly fits


def test_check_protocol_sends_one_streamed_request_per_problem_and_scores_nothing(tmp_path):
    with FakeOpenAI() as server:
        server.max_model_len = 4096
        report = run(
            EvalConfig(
                tasks=bench(tmp_path, extra="temperature: 0.6\ntop_p: 0.95\nnum_samples: 4\n"), server_url=[server.url],
                output=str(tmp_path / "ev"), num_prompts=0, check_protocol=True,
            )
        )  # fmt: skip
        bodies = list(server.bodies)
    assert report["requests"] == 3 and report["rejected"] == 0 and len(bodies) == 3  # one per problem, not per sample
    assert all(b["stream"] and b["top_p"] == 0.95 and b["temperature"] == 0.6 for b in bodies)
    assert json.loads((tmp_path / "ev" / "protocol.json").read_text())["server_max_model_len"] == 4096
    assert not (tmp_path / "ev" / "results.json").exists()


def test_check_protocol_reports_a_rejection(tmp_path):
    with FakeOpenAI() as server:
        server.fail_marker = "Add"  # every request answered with HTTP 500
        with pytest.raises(DistillError, match=r"rejected 3 of 3 requests .*HTTP 500"):
            run(
                EvalConfig(
                    tasks=bench(tmp_path), server_url=[server.url], output=str(tmp_path / "ev"), num_prompts=0,
                    check_protocol=True,
                )
            )  # fmt: skip
