r"""Which backend computes a product: the family's torch form or the numpy bridge.

``backend="auto"`` takes the numpy bridge (the family's hooks and numba kernels, measured
faster on the CPU for the convolutions, see ``benchmarks/README.md``) only for a *plain eager
call*: both tensors plain ``torch.Tensor``\ s (or parameters) on the CPU in float32/float64,
outside ``torch.func`` transforms, ``torch.compile``/``torch.export`` tracing and fake or
functional tensor modes. Everywhere else -- any other device, ``vmap``/``grad``/``jacrev``,
compile and export, float16/bfloat16 -- it takes the torch form, which is the only one those
can run. Families registered in :data:`TORCH_ON_CPU` take the torch form on the CPU too (it is
faster there); a family without a torch form stays on the bridge on the CPU and gets a clear
error elsewhere.
"""

from __future__ import annotations

import torch

from ..kernels import ParametricKernel
from ._forms import has_torch_form

__all__ = ["BACKENDS", "TORCH_ON_CPU", "choose_backend", "is_plain_eager"]

#: The values of ``backend=``.
BACKENDS = ("auto", "torch", "numpy")
#: The dtypes the numpy bridge computes in.
BRIDGE_DTYPES = (torch.float32, torch.float64)
#: Families whose torch form ``"auto"`` prefers on the CPU as well (where it is measured faster than
#: the bridge): none at present. CayleyConv was one until the bridge got its numba FFTs (eighth
#: session, ``benchmarks/bench_torch.py --only cayley`` on an idle 2-core AVX-512 machine,
#: 128×16×28×28 float32 forward+backward: bridge 1.42–1.48× ``nn.Conv2d`` against the torch
#: form's 1.77× on one thread in CPU time, 1.8–2.0× against 2.4–2.5× on two threads in wall
#: time). Since the eleventh session CayleyConv's torch form runs the same numba kernels on a plain
#: eager CPU call (``structops.torch._fused``), 1-8 % slower than the bridge in the same runs, so
#: the bridge stays (its θ-gradient of a non-affine family is differentiated again through the
#: torch form, so second derivatives are exact on both).
TORCH_ON_CPU: tuple[type, ...] = ()


def _plain(t: torch.Tensor) -> bool:
    """A plain CPU tensor: no subclass (fake, functional, proxy), no functorch wrapper."""
    return (
        type(t) in (torch.Tensor, torch.nn.Parameter)
        and t.device.type == "cpu"
        and not torch._C._functorch.is_functorch_wrapped_tensor(t)
    )


def is_plain_eager(*tensors: torch.Tensor) -> bool:
    """Whether this is a plain eager call on plain CPU tensors (no transform, no tracing, no compile/export)."""
    if torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing():
        return False
    if torch._C._are_functorch_transforms_active():
        return False
    return all(_plain(t) for t in tensors)


def check_backend(backend: object) -> str:
    """``backend`` if it is one of :data:`BACKENDS`, else a ``ValueError`` naming it."""
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {BACKENDS!r}, got {backend!r}.")
    return str(backend)


def choose_backend(kernel: ParametricKernel, theta: torch.Tensor, x: torch.Tensor, backend: str) -> str:
    """``"torch"`` or ``"numpy"`` for this call (see the module notes); errors name ``backend``.

    Raises
    ------
    ValueError
        If ``backend`` is unknown.
    NotImplementedError
        If the chosen backend cannot run this call: ``"torch"`` for a family without a torch
        form, ``"numpy"`` off the CPU, inside a transform or tracing, or in float16/bfloat16.
    """
    backend = check_backend(backend)
    plain = is_plain_eager(theta, x) and x.dtype in BRIDGE_DTYPES
    form = has_torch_form(kernel)
    if backend == "auto":
        if form and not (plain and not isinstance(kernel, TORCH_ON_CPU)):
            return "torch"
        if plain:
            return "numpy"
        raise NotImplementedError(
            f"{kernel!r} has no torch form, so it runs only through the numpy bridge: on plain CPU float32/float64 "
            f"tensors outside torch.func transforms, torch.compile and torch.export (got a {x.dtype} tensor on "
            f"{str(x.device)!r}). Give the family a torch form (a `torch_apply` method, see docs/contract.md)."
        )
    if backend == "torch" and not form:
        raise NotImplementedError(
            f"backend='torch' needs a torch form of {kernel!r}, which it has none of; use backend='numpy' on the CPU "
            "or give the family a `torch_apply` method (see docs/contract.md)."
        )
    # the bridge also runs under torch.compile, as a graph break (it is compiler-disabled)
    if backend == "numpy" and not (plain or (torch.compiler.is_compiling() and _bridge_dtype(theta, x))):
        raise NotImplementedError(
            f"backend='numpy' runs only on plain CPU float32/float64 tensors outside torch.func transforms and "
            f"torch.export; got a {x.dtype} tensor on {str(x.device)!r}: use backend='torch' or 'auto'."
        )
    return backend


def _bridge_dtype(theta: torch.Tensor, x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype in BRIDGE_DTYPES
