"""Doctest collection skips the bridges whose framework is not installed (optional extras)."""

import importlib.util

collect_ignore = [f"structops/{name}.py" for name in ("torch", "jax") if importlib.util.find_spec(name) is None]
