"""GRPO: the rule-based rewards on real texts, the recipes' keys, and a short real run on the embedded student."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from distill.common.config import build
from distill.common.errors import DistillError
from distill.training import rewards as R
from distill.training.config import GrpoConfig
from distill.training.grpo import GRPO_RECIPES, grpo_fields, load_recipe, load_rows, make_args, reward_curve

CORRECT = "Mia starts with 12 apples and buys 30 more, so she has 12 + 30 = 42 apples.\n\nThe answer is \\boxed{42}."
WRONG = "Mia has 12 apples and buys 30 more: 12 + 30 = 41.\n\nThe answer is \\boxed{41}."
UNBOXED = "12 + 30 = 42"
THINK_OK = "<think>\n12 + 30 is 42.\n</think>\n\nMia has \\boxed{42} apples."


def msg(text: str) -> list[dict]:
    """A completion as TRL passes it for a conversational dataset."""
    return [{"role": "assistant", "content": text}]


# --------------------------------------------------------------------------------------------------
# Rewards


def test_accuracy_reward_verifies_boxed_answers_against_the_gold():
    completions = [msg(CORRECT), msg(WRONG), msg(UNBOXED), msg("<think>12 + 30 = 42, so \\boxed{42}"), CORRECT]
    got = R.accuracy_reward([None] * 5, completions, answer=["42"] * 5)
    # an unclosed <think> is a truncated trace (0); a plain-string completion works too
    assert got == [1.0, 0.0, 0.0, 0.0, 1.0]
    # equivalent forms count: math-verify compares values, and the gold may itself be a boxed solution
    assert R.accuracy_reward([None] * 2, [msg("\\boxed{\\frac{1}{2}}"), msg("\\boxed{0.5}")], answer=["1/2"] * 2) == [
        1.0,
        1.0,
    ]
    assert R.accuracy_reward([None], [msg("so \\boxed{7}")], answer=["We get \\boxed{7}."]) == [1.0]


def test_accuracy_reward_is_time_bounded():
    # A tower of powers makes sympy spin; the worker is killed at the bound and the sample scores 0.
    tower = "\\boxed{9^{9^{9^{9^{9}}}}}"
    got = R.accuracy_reward(
        [None, None], [msg(tower), msg(CORRECT)], answer=["9^{9^{9^{9^{9}}}} + 1", "42"], timeout=1.0
    )
    assert got == [0.0, 1.0]


def test_accuracy_reward_needs_an_answer_column():
    with pytest.raises(DistillError, match="answer"):
        R.accuracy_reward([None], [msg(CORRECT)])


def test_format_reward_r1_zero_shape():
    cases = {
        THINK_OK: 1.0,
        "  <think>reasoning</think> \\boxed{42}": 1.0,  # leading whitespace is fine
        CORRECT: 0.0,  # no think block
        "<think>\n12 + 30 = 42\n</think>\n\nThe answer is 42.": 0.0,  # no box after the reasoning
        "<think>\\boxed{42}</think> It is 42.": 0.0,  # the box is inside the reasoning only
        "Sure! <think>x</think> \\boxed{42}": 0.0,  # text before <think>
        "<think>a</think><think>b</think> \\boxed{42}": 0.0,  # two think blocks
        "<think>   </think> \\boxed{42}": 0.0,  # empty reasoning
        "<think>12 + 30 = 42, so \\boxed{42}": 0.0,  # never closed
        "<think>x</think> \\boxed{}": 0.0,  # empty box
    }
    got = R.format_reward([None] * len(cases), [msg(t) for t in cases])
    assert got == list(cases.values()), list(zip(cases, got, strict=True))


def test_format_reward_with_configured_tags():
    tags = ("think", "answer")
    good = "<think>12 + 30 = 42</think>\n<answer>\\boxed{42}</answer>"
    bad = [
        THINK_OK,  # no answer block
        "<answer>\\boxed{42}</answer><think>12 + 30</think>",  # wrong order
        "<think>12 + 30</think> so <answer>\\boxed{42}</answer>",  # text between the blocks
    ]
    assert R.format_reward([None] * 4, [msg(t) for t in [good, *bad]], tags=tags) == [1.0, 0.0, 0.0, 0.0]
    funcs = R.make_reward_funcs(["format"], format_tags=["<think>", "answer"])
    assert funcs[0]([None], [msg(good)]) == [1.0]


def test_boxed_format_reward_wants_exactly_one_box_in_the_final_part():
    cases = {
        CORRECT: 1.0,
        THINK_OK: 1.0,
        "<think>maybe \\boxed{41}</think> no: \\boxed{42}": 1.0,  # boxes in the reasoning do not count
        UNBOXED: 0.0,
        "\\boxed{41} or \\boxed{42}": 0.0,  # hedging
        "<think>\\boxed{42}": 0.0,  # unclosed think
        "\\boxed{ }": 0.0,
    }
    got = R.boxed_format_reward([None] * len(cases), [msg(t) for t in cases])
    assert got == list(cases.values()), list(zip(cases, got, strict=True))


def test_overlong_penalty_values_at_the_boundaries():
    # DAPO with max_len 20, buffer 5: 0 up to 15 tokens, then -1/5 per token, -1 at 20 and beyond.
    assert [R.overlong_penalty(n, 20, 5) for n in (0, 10, 15, 16, 18, 20, 21)] == [
        0.0,
        0.0,
        0.0,
        -0.2,
        -0.6,
        -1.0,
        -1.0,
    ]
    got = R.length_reward(
        [None] * 3, ["a", "b", "c"], completion_ids=[[1] * 15, [1] * 17, [1] * 20], max_len=20, buffer=5
    )
    assert got == pytest.approx([0.0, -0.4, -1.0])
    with pytest.raises(DistillError):
        R.overlong_penalty(5, 20, 0)
    with pytest.raises(DistillError):
        R.overlong_penalty(5, 20, 21)
    # the bound function takes max_len from max_completion_length, and a fifth of it as the buffer by default
    (length,) = R.make_reward_funcs(["length"], max_completion_length=100)
    assert length([None] * 3, ["x"] * 3, completion_ids=[[0] * 80, [0] * 90, [0] * 100]) == pytest.approx(
        [0.0, -0.5, -1.0]
    )


def test_repetition_penalty_on_looping_and_varied_text():
    loop = "Let me compute 12 plus 30 again to be sure. " * 40
    varied = CORRECT + " First we read the problem, then we add the two counts and check the sum by subtracting."
    got = R.repetition_penalty([None] * 3, [msg(loop), msg(varied), msg("42")])
    assert got[0] < -0.9
    assert got[1] == 0.0 and got[2] == 0.0


def test_registry_rejects_unknown_and_duplicate_names():
    assert set(R.REWARDS) == {"accuracy", "format", "boxed_format", "length", "repetition"}
    with pytest.raises(DistillError, match="unknown reward 'acuracy'"):
        R.make_reward_funcs(["acuracy"])
    with pytest.raises(DistillError, match="twice"):
        R.make_reward_funcs(["accuracy", "accuracy"])
    with pytest.raises(DistillError, match="overlong_buffer"):
        R.make_reward_funcs(["length"], max_completion_length=32, overlong_buffer=64)
    # TRL logs a reward under its function's name, also through functools.partial
    from trl.trainer.utils import get_callable_name

    names = [get_callable_name(f) for f in R.make_reward_funcs(list(R.REWARDS))]
    assert names == [f.__name__ for f in R.REWARDS.values()]


# --------------------------------------------------------------------------------------------------
# Config and recipes


def test_r1_zero_recipe_settings():
    cfg = load_recipe(GRPO_RECIPES / "r1-zero-qwen2.5-math-7b.yaml")
    assert cfg.requires_gpu and cfg.reward_funcs == ["accuracy", "format"]
    g = cfg.grpo
    assert g["num_generations"] == 16 and g["use_vllm"] is True and g["vllm_mode"] == "colocate"
    assert g["beta"] in (0.0, 0.001) and float(g["learning_rate"]) <= 3e-6


def test_unknown_keys_name_the_key_and_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: embedded:student\nnum_generatoins: 4\n")
    with pytest.raises(DistillError, match=r"bad\.yaml: unknown key 'num_generatoins'"):
        load_recipe(bad)
    with pytest.raises(DistillError, match="reward_weights"):
        build(GrpoConfig, {"reward_funcs": ["accuracy"], "reward_weights": [1.0, 0.5]})


def test_trl_fields_pass_through_and_numbers_as_text_are_numbers():
    cfg = build(GrpoConfig, {"beta": 0.001, "learning_rate": "1e-6", "num_generations": 4}, extra=grpo_fields())
    assert cfg.grpo == {"beta": 0.001, "learning_rate": "1e-6", "num_generations": 4}
    args = make_args(cfg, "/tmp/unused", cpu=True)
    assert args.learning_rate == 1e-6 and args.beta == 0.001 and args.use_cpu and not args.use_vllm
    with pytest.raises(DistillError, match="invalid GRPO settings"):
        make_args(build(GrpoConfig, {"num_generations": 3}, extra=grpo_fields()), "/tmp/unused", cpu=True)


def test_rows_are_conversational_prompts_with_gold_answers():
    rows = load_rows(GrpoConfig(num_prompts=6, levels=[1, 2]))
    assert len(rows) == 6 and {r["level"] for r in rows} == {1, 2}
    assert rows[0]["prompt"][-1]["role"] == "user" and "\\boxed{}" in rows[0]["prompt"][-1]["content"]
    assert all(r["answer"].isdigit() for r in rows)


def test_reward_curve_summarizes_first_and_last_steps():
    history = [
        {"step": s, "reward": s / 10, "rewards/accuracy_reward/mean": s / 20, "completions/mean_length": 30}
        for s in range(1, 21)
    ] + [{"train_runtime": 1.0, "step": 20}]
    curve = reward_curve(history, ["accuracy"])
    assert len(curve["steps"]) == 20 and curve["steps"][0]["accuracy"] == 0.05
    assert curve["first_10_mean"]["accuracy"] == pytest.approx(0.275)
    assert curve["last_10_mean"]["accuracy"] == pytest.approx(0.775)


# --------------------------------------------------------------------------------------------------
# A real run


def _length_spread_reward(prompts, completions, **kwargs):
    """Test-only reward that always differs within a group: the completion's length in characters."""
    return [len(R.completion_text(c)) / 100 for c in completions]


@pytest.mark.model
def test_short_grpo_run_updates_the_student_and_writes_its_files(tmp_path, student_path, monkeypatch):
    from distill.cli import main

    # The real rewards score the tiny student's 16-token answers 0 everywhere (no learning signal, so
    # no update); a registered test reward that varies within each group makes the update non-zero.
    monkeypatch.setitem(R.REWARDS, "spread", _length_spread_reward)
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    out = tmp_path / "grpo"
    argv = ["grpo", "--model", student_path, "--output", str(out), "--num-prompts", "4", "--levels", "1"]
    argv += ["--reward-funcs", "accuracy", "boxed_format", "spread", "--reward-weights", "1", "0.5", "1"]
    for kv in ("max_steps=2", "num_generations=2", "per_device_train_batch_size=4", "max_completion_length=16"):
        argv += ["--set", kv]
    argv += ["--set", "learning_rate=1e-4"]
    assert main(argv) == 0

    for name in ("model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja", "distill_config.yaml"):
        assert (out / name).is_file(), name
    rewards = json.loads((out / "rewards.json").read_text())
    assert rewards["steps_done"] == 2 and len(rewards["steps"]) == 2
    assert rewards["reward_funcs"] == ["accuracy", "boxed_format", "spread"] and rewards["reward_weights"] == [
        1,
        0.5,
        1,
    ]
    assert all(s["accuracy"] is not None and s["spread"] > 0 for s in rewards["steps"])
    history = json.loads((out / "log_history.json").read_text())
    assert any("rewards/accuracy_reward/mean" in h for h in history)

    before = load_file(f"{student_path}/model.safetensors")
    after = load_file(out / "model.safetensors")
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k].float(), after[k].float())]
    assert len(changed) == len(before), f"parameters not updated: {sorted(set(before) - set(changed))[:5]}"


def test_with_vllm_sampling_stops_at_the_end_of_turn_token():
    """TRL's vLLM path builds SamplingParams from generation_kwargs only: the end-of-turn token must be there (on
    the model's generation_config alone, vLLM never saw it and completions ran to max_completion_length)."""
    from trl import GRPOConfig

    from distill.training.grpo import add_vllm_stop

    args = GRPOConfig(output_dir="/tmp/unused", use_vllm=True, use_cpu=True, bf16=False, num_generations=2,
                      per_device_train_batch_size=2, generation_kwargs={"stop_token_ids": [7]})  # fmt: skip
    add_vllm_stop(args, 151645)
    assert args.generation_kwargs["stop_token_ids"] == [7, 151645]
    add_vllm_stop(args, 151645)  # once
    assert args.generation_kwargs["stop_token_ids"] == [7, 151645]
    plain = GRPOConfig(output_dir="/tmp/unused", use_cpu=True, bf16=False, num_generations=2,
                       per_device_train_batch_size=2)  # fmt: skip
    add_vllm_stop(plain, 151645)  # transformers' generate reads the generation config; its kwargs stay untouched
    assert not plain.generation_kwargs
