"""Where distill's shipped files are: recipes, benchmark definitions and small data files.

They live in the checkout's top-level `recipes/`, `eval/` and `data/` folders; every module asks here
instead of computing paths from its own location, so the files have one home. ROOT is the folder
holding the three:

- an installed wheel (`pip install .`, `pip install distill-*.whl`): the copy the wheel carries in
  `distill/_shipped/` (setup.py's build hook puts it there; the checkout's folders are not needed);
- otherwise, a checkout or an editable install (`pip install -e .`, `make install`): the checkout
  itself, so edits to its recipes take effect at once.

The rule is only "distill/_shipped/ exists": a checkout never has one (builds write to build/).
Both places keep eval/ and data/ side by side, so a definition's `../data/...` path works in either.
"""

from __future__ import annotations

from pathlib import Path

from distill.common.errors import DistillError

_PACKAGE = Path(__file__).resolve().parents[1]  # distill/
_SHIPPED = _PACKAGE / "_shipped"  # keep in step with SHIPPED_PACKAGE_DIR in setup.py
ROOT = _SHIPPED if _SHIPPED.is_dir() else _PACKAGE.parent
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
