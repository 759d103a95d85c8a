"""A run folder's ``mask`` values are data like its ``data`` values: typed and range-checked, never code."""

import pytest

from protocell.build import datamodule_from_run
from protocell.errors import ConfigError


@pytest.mark.parametrize(
    "mask, message",
    [
        ({"_target_": "os.system", "command": "touch /tmp/pwned"}, "'mask' does not match protocell's mask schema"),
        (
            {"zero_background": {"_target_": "torch.load", "f": "evil.pt"}},
            "'mask' does not match protocell's mask schema",
        ),
        ({"zero_margin": -2}, r"mask.zero_margin=-2 is invalid"),
        ({"zero_margin": "two"}, "'mask' does not match protocell's mask schema"),
    ],
)
def test_a_run_folders_mask_values_are_refused_before_anything_is_built(mask, message, tmp_path):
    with pytest.raises(ConfigError, match=message) as err:
        datamodule_from_run({"path": str(tmp_path / "store")}, "run/config.yaml", mask=mask)
    assert str(err.value).startswith("run/config.yaml")
