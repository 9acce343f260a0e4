"""The examples in the core modules' docstrings run and say what they print."""

import doctest
import importlib

import pytest


@pytest.mark.parametrize(
    "module", ["optscale_jax.distributions", "optscale_jax.model", "optscale_jax.fit", "optscale_jax.nstar"]
)
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
