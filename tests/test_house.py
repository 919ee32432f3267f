"""The house rules of distill/, checked on the source (docs/ARCHITECTURE.md explains them):

1. One import direction: common <- problems, verification <- the stages (generation, curation, training,
   evaluation) <- cli. A stage never imports another stage; problems and verification never import each
   other; common imports nothing else of distill.
2. No private name (`_x`) of one module is imported by another.
3. No import inside a function, except of a heavy or optional third-party module, with a comment on that
   line (or above its group of imports) saying why. distill's own modules are always imported at the top (the CLI
   imports stage modules by name, through importlib, when their command runs).

An AST walk rather than import-linter: import-linter's layers contract covers rule 1 only, and rules 2
and 3 need the AST anyway; one walk of ~40 files does all three with no extra dependency.
"""

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "distill"
STAGES = ("generation", "curation", "training", "evaluation")
# What each layer may import (besides itself).
ALLOWED = {
    "common": set(),
    "problems": {"common"},
    "verification": {"common"},
    **{stage: {"common", "problems", "verification"} for stage in STAGES},
    "cli": {"common", "problems", "verification", *STAGES},
    "__init__": set(),
}


@functools.cache
def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    """distill.training.base -> training; distill.cli -> cli; distill (the __init__) -> __init__."""
    parts = module.split(".")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return parts[1] if len(parts) > 1 else "__init__"


@functools.cache
def imports(path: Path) -> list[tuple[ast.AST, str, list[str], bool]]:
    """(node, imported module, names, inside a function) for every import of the file."""
    tree = ast.parse(path.read_text())
    inner = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
        for n in ast.walk(f)
        if isinstance(n, (ast.Import, ast.ImportFrom))
    }
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node, a.name, [], id(node) in inner) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import; distill spells imports absolutely"
            out.append((node, node.module or "", [a.name for a in node.names], id(node) in inner))
    return out


def test_the_package_has_its_layers():
    found = {layer(m) for m in modules()}
    assert found == set(ALLOWED), found ^ set(ALLOWED)


@pytest.mark.parametrize("module", sorted(modules()))
def test_imports_go_one_way(module):
    mods = modules()
    mine = layer(module)
    for node, target, names, _ in imports(mods[module]):
        if not target.startswith("distill"):
            continue
        # `from distill.training import kd` imports the module distill.training.kd
        targets = [f"{target}.{n}" if f"{target}.{n}" in mods else target for n in names] or [target]
        for t in targets:
            theirs = layer(t) if t != "distill" else "__init__"
            assert theirs == mine or theirs in ALLOWED[mine] or (theirs == "__init__" and names == ["__version__"]), (
                f"{mods[module]}:{node.lineno}: the {mine} layer imports {t} ({theirs}); allowed: "
                f"{sorted(ALLOWED[mine]) or 'nothing else of distill'}"
            )


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_private_name_crosses_a_module(module):
    mods = modules()
    for node, target, names, _ in imports(mods[module]):
        if target.startswith("distill") and target != module:
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            assert not private, f"{mods[module]}:{node.lineno}: imports {target}'s private {private}"


@pytest.mark.parametrize("module", sorted(modules()))
def test_imports_inside_functions_are_heavy_third_party_ones_with_a_reason(module):
    path = modules()[module]
    lines = path.read_text().splitlines()
    for node, target, _, inside in imports(path):
        if not inside:
            continue
        assert not target.startswith("distill"), (
            f"{path}:{node.lineno}: imports {target} inside a function; import distill's modules at the top"
        )
        here, i = lines[node.lineno - 1], node.lineno - 2
        while lines[i].strip().startswith(("import ", "from ")):  # a comment above a group of imports covers it
            i -= 1
        assert "#" in here or lines[i].strip().startswith("#"), (
            f"{path}:{node.lineno}: `{here.strip()}` inside a function needs a comment saying why it is not at the top"
        )


def test_the_rules_catch_what_they_forbid(tmp_path):
    """The checks above, run on a file that breaks each rule, find each break (they can fail)."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from distill.training.base import _secret\ndef f():\n    from distill.common import config\n    import torch\n"
    )
    found = imports(bad)
    assert [(t, n, inside) for _, t, n, inside in found] == [
        ("distill.training.base", ["_secret"], False),
        ("distill.common", ["config"], True),
        ("torch", [], True),
    ]
    assert "training" not in ALLOWED["curation"] and "curation" not in ALLOWED["training"]
    assert layer("distill.training.base") == "training" and layer("distill.cli") == "cli"
