"""Check that a PyTorch convolution module has the geometry of a :class:`~structops.Conv` (no torch import).

:meth:`structops.Conv.theta_from_torch` reads a ``torch.nn.Conv1d/2d/3d``'s attributes through
this module before it takes the module's weight, so that a weight is never used with another
geometry (a dilated, grouped, strided or differently padded layer would give a different map
with the same weight shape).
"""

from __future__ import annotations

from typing import Any

from ._core import ConvGeometry

__all__ = ["TORCH_PADDING_MODES", "check_torch_module", "torch_pads"]

#: torch's ``padding_mode`` and the boundary condition of :class:`~structops.Conv` it is.
TORCH_PADDING_MODES = {"zeros": "zero", "circular": "periodic", "reflect": "reflect", "replicate": "replicate"}


def _per_axis(value: Any, d: int) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),) * d


def torch_pads(module: Any) -> tuple[tuple[int, int], ...]:
    """The ``(before, after)`` padding per axis that ``module`` applies (torch's ``"same"``: the extra pad after)."""
    d = len(module.kernel_size)
    if module.padding == "valid":
        return ((0, 0),) * d
    if module.padding == "same":
        totals = [dl * (k - 1) for dl, k in zip(_per_axis(module.dilation, d), _per_axis(module.kernel_size, d))]
        return tuple((t // 2, t - t // 2) for t in totals)
    return tuple((p, p) for p in _per_axis(module.padding, d))


def check_torch_module(geo: ConvGeometry, module: Any) -> None:
    """Raise a ``ValueError`` naming the first attribute of ``module`` that differs from the geometry ``geo``."""
    d = len(geo.grid)
    if not hasattr(module, "kernel_size") or len(module.kernel_size) != d or getattr(module, "transposed", False):
        raise ValueError(f"`weight` must be a torch.nn.Conv{d}d (or its weight), got {type(module).__name__}.")
    mode = module.padding_mode
    bc = TORCH_PADDING_MODES.get(mode)
    pads = torch_pads(module)
    same_bc = bc == geo.bc or (bc == "zero" and geo.bc == "valid" and pads == ((0, 0),) * d)
    found = [
        ("in_channels", int(module.in_channels), geo.cin),
        ("out_channels", int(module.out_channels), geo.cout),
        ("kernel_size", _per_axis(module.kernel_size, d), tuple(geo.stencil)),
        ("stride", _per_axis(module.stride, d), tuple(geo.stride)),
        ("dilation", _per_axis(module.dilation, d), tuple(geo.dilation)),
        ("groups", int(module.groups), geo.groups),
        ("padding_mode", mode if same_bc else f"{mode!r} (bc {bc!r})", mode),
        ("padding", pads, tuple(geo.pads)),
    ]
    for name, value, want in found:
        if value != want:
            expected = {"padding_mode": f"bc={geo.bc!r}", "padding": f"{want!r} (before, after)"}.get(name, repr(want))
            raise ValueError(
                f"`weight`: the module's `{name}` is {value!r}, but this Conv has {expected}: its weight would "
                f"give another map. Build the family with structops.torch.from_module(module, input_shape)."
            )
