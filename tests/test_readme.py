"""The README's quickstart runs and does what its comment says."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).parent.parent / "README.md"


def test_readme_quickstart_learns_the_gaussian(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README has no python block"
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    samples = np.asarray(namespace["samples"].x)
    # The model of N(0.5, 0.25 I) after 300 steps, sampled by 2,000 MALA chains: with fixed seeds
    # the means come out within 0.03 and the standard deviations within 0.02 of 0.5; the Monte-Carlo
    # error of 2,000 samples alone is 0.011, so 0.08 leaves room for other platforms' float rounding
    # while still failing for an untrained model (whose samples drift far from 0.5).
    np.testing.assert_allclose(samples.mean(0), 0.5, atol=0.08)
    np.testing.assert_allclose(samples.std(0), 0.5, atol=0.08)
    assert "[" in capsys.readouterr().out
