"""Doctest collection skips the bridges whose framework is not installed (optional extras)."""

import importlib.util

_BRIDGES = (("torch", "structops/torch"), ("jax", "structops/jax.py"))
collect_ignore = [path for name, path in _BRIDGES if importlib.util.find_spec(name) is None]
