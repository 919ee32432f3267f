"""bench/grpo.py: the held-out evaluation it asks for is the GRPO recipe's own prompt, levels and cap, greedy."""

from pathlib import Path

from bench.grpo import held_out_eval_args
from distill.cli import build_parser
from distill.common import config as C
from distill.evaluation.config import EvalConfig

ROOT = Path(__file__).resolve().parents[1]


def eval_config(argv: list[str]) -> EvalConfig:
    return C.from_args(EvalConfig, build_parser().parse_args(argv))


def test_the_held_out_eval_uses_the_recipes_prompt_levels_and_cap(tmp_path):
    recipe = C.load_yaml(ROOT / "recipes/grpo/tiny-cpu.yaml")
    cfg = eval_config(held_out_eval_args(recipe, tmp_path / "grpo", tmp_path / "eval", 150))
    assert cfg.model == [recipe["model"], str(tmp_path / "grpo")]  # before and after, paired in one call
    assert cfg.tasks == ["builtin"] and cfg.levels == recipe["levels"] and cfg.num_prompts == 150
    assert cfg.prompt_template == recipe["prompt_template"] and cfg.system_prompt == ""
    assert cfg.max_tokens == recipe["max_completion_length"] == 64 and cfg.temperature == 0


def test_a_nested_cap_a_system_prompt_and_no_template_are_carried(tmp_path):
    recipe = {"model": "m", "levels": [3], "system_prompt": "Be brief.", "grpo": {"max_completion_length": 200}}
    cfg = eval_config(held_out_eval_args(recipe, tmp_path / "g", tmp_path / "e", 10))
    assert (cfg.levels, cfg.max_tokens, cfg.system_prompt, cfg.prompt_template) == ([3], 200, "Be brief.", "")
