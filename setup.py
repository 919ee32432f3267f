"""Build hook: a wheel carries the top-level recipes/, eval/ and data/ folders as distill/_shipped/.

The folders stay at the top of the checkout (users edit the recipes there; git holds one copy). When
setuptools builds a wheel (`pip install .`, `pip wheel .`, `python -m build`), `build_py` copies every
file under them into the build tree at distill/_shipped/{recipes,eval,data}/, keeping their sibling
layout so the `../data/...` paths in eval/*.yaml still resolve. An editable install
(`pip install -e .`, `make install`) copies nothing and keeps reading the checkout's folders.
distill/common/resources.py picks the packaged copy when it exists, else the checkout.

All other metadata is in pyproject.toml; an sdist carries the folders through MANIFEST.in.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SHIPPED_FOLDERS = ("recipes", "eval", "data")
SHIPPED_PACKAGE_DIR = ("distill", "_shipped")  # keep in step with distill/common/resources.py


def _skipped(name: str) -> bool:
    """Editor and interpreter droppings; MANIFEST.in leaves the same ones out of an sdist."""
    return name.startswith(".") or name == "__pycache__" or name.endswith((".pyc", ".pyo", "~"))


def shipped_files(root: Path = HERE) -> list[str]:
    """Every file under the shipped folders, as sorted paths relative to `root` ('recipes/sft/x.yaml')."""
    found = []
    for folder in SHIPPED_FOLDERS:
        top = root / folder
        if not top.is_dir():
            raise RuntimeError(f"{top} is missing: a distill wheel must carry {', '.join(SHIPPED_FOLDERS)}")
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if not _skipped(d))
            rel = Path(dirpath).relative_to(root)
            found.extend((rel / name).as_posix() for name in filenames if not _skipped(name))
    return sorted(found)


class build_py_with_shipped_files(build_py):
    """build_py, then copy recipes/, eval/ and data/ into <build_lib>/distill/_shipped/ (not when editable)."""

    def _shipped_mapping(self) -> list[tuple[str, str]]:
        target = os.path.join(self.build_lib, *SHIPPED_PACKAGE_DIR)
        return [(os.path.join(target, *rel.split("/")), str(HERE / rel)) for rel in shipped_files()]

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        # Start from an empty folder: a build/ left by an earlier build must not ship files deleted since.
        shutil.rmtree(os.path.join(self.build_lib, *SHIPPED_PACKAGE_DIR), ignore_errors=True)
        for dest, src in self._shipped_mapping():
            self.mkpath(os.path.dirname(dest))
            self.copy_file(src, dest)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if self.editable_mode:
            return outputs
        return outputs + [dest for dest, _ in self._shipped_mapping()]


setup(cmdclass={"build_py": build_py_with_shipped_files})
