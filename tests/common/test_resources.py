"""Files shipped with distill: recipes."""

import pytest

from distill.common.errors import DistillError
from distill.common.resources import recipe_for


def test_every_size_has_one_recipe():
    for size in ("tiny", "1.5b", "7b", "8b", "14b", "32b", "70b"):
        assert recipe_for(size).is_file()
    with pytest.raises(DistillError, match="no sft recipe for size '3b'"):
        recipe_for("3b")
