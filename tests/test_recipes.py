"""Every file under recipes/ is checked here, by its folder: a file in a folder this test does not know
fails, so a new kind of recipe comes with its check.

- sft/, logit-kd/, onpolicy/: a TrainConfig (distill's keys and trl.SFTConfig's), its method, found by
  `--size`, and a header that gives the command;
- grpo/: a GrpoConfig whose rewards exist and whose TRL settings TRL accepts;
- generate/: a GenerateConfig;
- accelerate/: an accelerate config of the launcher its name says;
- chat_templates/: a Jinja template that renders a conversation and ends the assistant's turn with a token;
- slurm/: bash that parses, with its #SBATCH header.
"""

import re
import subprocess

import jinja2
import pytest
import yaml

from distill.common import config as C
from distill.common.resources import RECIPES, recipe_for
from distill.generation.config import GenerateConfig
from distill.training import rewards
from distill.training.config import METHODS, GrpoConfig, TrainConfig
from distill.training.grpo import grpo_fields, make_args
from distill.training.train import sft_fields

FILES = sorted(p for p in RECIPES.rglob("*") if p.is_file())
KINDS = {*METHODS, "grpo", "generate", "accelerate", "chat_templates", "slurm"}


def test_every_recipe_folder_is_known():
    unknown = sorted({p.relative_to(RECIPES).parts[0] for p in FILES} - KINDS)
    assert not unknown, f"recipes/{unknown[0]}/ has no check in tests/test_recipes.py"
    assert len(FILES) >= 25


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(RECIPES)))
def test_recipe(path):
    kind = path.relative_to(RECIPES).parts[0]
    text = path.read_text()
    if kind in METHODS:
        size = path.stem.rsplit("-", 1)[1]
        assert recipe_for(size, kind) == path
        cfg = C.build(TrainConfig, C.load_yaml(path), source=str(path), extra=sft_fields())
        assert cfg.model and cfg.sft and cfg.method == kind, path
        command = "# distill train --size" if kind == "sft" else f"# distill train --method {kind} --size {size}"
        assert text.startswith(command), f"{path}: header must give the command"
    elif kind == "grpo":
        cfg = C.build(GrpoConfig, C.load_yaml(path), source=str(path), extra=grpo_fields())
        assert cfg.grpo, f"{path.name}: expected trl.GRPOConfig settings"
        rewards.make_reward_funcs(cfg.reward_funcs, format_tags=cfg.format_tags)
        args = make_args(cfg, "/tmp/unused", cpu=True)  # TRL's own checks on the values (batch vs group size)
        assert args.generation_batch_size % args.num_generations == 0
        assert text.startswith("# distill grpo --config"), f"{path.name}: header must give the command"
    elif kind == "generate":
        cfg = C.build(GenerateConfig, C.load_yaml(path), source=str(path))
        assert cfg.teacher and cfg.serve.tensor_parallel_size >= 1, path
        assert text.startswith("# distill generate"), f"{path}: header must give the command"
    elif kind == "accelerate":
        conf = yaml.safe_load(text)
        expected = {"ddp": "MULTI_GPU", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED", "fsdp": "FSDP"}[path.stem]
        assert conf["distributed_type"] == expected and conf["compute_environment"] == "LOCAL_MACHINE", path
        if path.stem.startswith("zero"):
            assert conf["deepspeed_config"]["zero_stage"] == int(path.stem[-1])
    elif kind == "chat_templates":
        template = jinja2.Environment().from_string(text)
        messages = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]
        rendered = template.render(messages=messages, add_generation_prompt=False, bos_token="", eos_token="")
        assert "1+1?" in rendered and "2" in rendered
        assert rendered.rstrip().endswith(("<|im_end|>", "<|eot_id|>")), (
            f"{path}: the assistant turn must end with a token"
        )
    elif kind == "slurm":
        r = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert r.returncode == 0, (path, r.stderr)
        assert "#SBATCH --nodes=" in text


LAUNCH_LINE = re.compile(r"^# Launch: distill train .*--launcher (\w+) --num-gpus (\d+)", re.M)


@pytest.mark.parametrize(
    "path", sorted(p for m in METHODS for p in (RECIPES / m).glob("*.yaml")), ids=lambda p: f"{p.parent.name}/{p.stem}"
)
def test_a_recipe_headers_launcher_is_the_one_distill_plan_picks(path):
    """The header's launch command names the launcher `distill plan` chooses for the recipe on its GPUs (the 7b
    header said ZeRO-3 while the plan picked ZeRO-2)."""
    from distill.training.config import PlanConfig
    from distill.training.plan import plan

    found = LAUNCH_LINE.search(path.read_text())
    if not found or path.parent.name not in ("sft", "logit-kd"):  # no single-node launch line, or no plan profile
        pytest.skip("no `--launcher` in the header's launch line")
    size = path.stem.rsplit("-", 1)[1]
    result = plan(PlanConfig(size=size, method=path.parent.name, gpus=int(found.group(2))))
    assert result["fits"] and result["memory_gib"]["launcher"] == found.group(1), (
        result["verdict"],
        result["memory_gib"],
    )
