"""Where distill's shipped files are: recipes, benchmark definitions and small data files.

In a checkout they are the top-level `recipes/`, `eval/` and `data/` folders; every module asks here
instead of computing paths from its own location, so the files have one home.
"""

from __future__ import annotations

from pathlib import Path

from distill.common.errors import DistillError

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"
EVAL_DIR = ROOT / "eval"
DATA_DIR = ROOT / "data"
CHAT_TEMPLATES = RECIPES / "chat_templates"
ACCELERATE_CONFIGS = RECIPES / "accelerate"


def recipe_for(size: str, method: str = "sft") -> Path:
    """recipes/<method>/*-<size>.yaml (sft, logit-kd, onpolicy); exactly one must match."""
    folder = RECIPES / (method or "sft")
    matches = sorted(folder.glob(f"*-{size.lower()}.yaml"))
    if not matches:
        sizes = sorted({p.stem.rsplit("-", 1)[1] for p in folder.glob("*-*.yaml")})
        raise DistillError(
            f"no {method or 'sft'} recipe for size {size!r} in {folder} (sizes: {', '.join(sizes) or 'none'})"
        )
    if len(matches) > 1:
        raise DistillError(f"several recipes for size {size!r}: {', '.join(p.name for p in matches)}; pass --config")
    return matches[0]


def resolve_chat_template(spec: str) -> Path:
    """A .jinja file path, or a template name under recipes/chat_templates/ (with or without .jinja)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    named = CHAT_TEMPLATES / (spec if spec.endswith(".jinja") else f"{spec}.jinja")
    if named.is_file():
        return named
    names = ", ".join(sorted(p.stem for p in CHAT_TEMPLATES.glob("*.jinja"))) or "none"
    raise DistillError(f"chat_template {spec!r} is neither a file nor a template in {CHAT_TEMPLATES} ({names})")
