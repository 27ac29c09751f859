"""Certified norms of reflect and replicate 3×3 layers on 32×32 by verified positive definiteness, 16 to 64 channels.

For each layer, ``certified_norm_bound(kernel, theta)`` gives the certified upper bound (route
``"verified-cholesky"``: Cholesky's factorisation of :math:`tI - K^\\top K`, banded or by nested
dissection, ``structops.solvers._dissection``), timed (CPU, i.e. process, and wall time), and
the guaranteed Lanczos lower bound of the estimate route (a Ritz value,
``route(kernel, theta, "spectral_norm", embedding=False)``); their ratio. In the same run the previous
configuration as the peer: the nested dissection switched off (``MAX_DISSECTION_FLOPS = 0``),
so the banded factorisation up to its limit and ``‖K_valid‖‖E‖`` or Schur's bound above it.
Medians over ``--repeat`` runs (one for 64 channels); ``maxrss_mb``, the largest resident
memory of the process so far (run ``--channels 64`` alone for the 64-channel figure). The
machine may be loaded: compare CPU times, and run with ``OMP_NUM_THREADS=1`` for one thread.

Run with ``OMP_NUM_THREADS=1 python benchmarks/bench_verified.py [--quick] [--repeat R]``.
"""

from __future__ import annotations

import resource
import warnings

import _common

import structops
from structops.solvers import EstimateWarning, _certified, certified_norm_bound, route


def _lower(kernel, theta) -> float:
    """The Lanczos lower bound alone (the estimate route: ``spectral_norm`` itself would verify too)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimateWarning)
        lanczos = route(kernel, theta, "spectral_norm", dense_limit=0, embedding=False)
        return lanczos.spectral_norm(maxiter=300, tol=1e-6).lower


def _maxrss() -> float:
    """The largest resident memory of the process so far, MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rows(quick: bool, repeat: int, channels=None) -> list[dict]:
    channels = channels or ((16,) if quick else (16, 32, 64))
    budget = _certified.MAX_DISSECTION_FLOPS
    out = []
    for c in channels:
        for bc in ("reflect", "replicate"):
            kernel = structops.Conv((32, 32), 3, bc=bc, in_channels=c, out_channels=c)
            theta = kernel.random_theta(0)
            lower = _lower(kernel, theta)
            times = 1 if c >= 64 else repeat
            for name, cap in (("dissection", budget), ("previous", 0.0)):
                _certified.MAX_DISSECTION_FLOPS = cap
                try:
                    upper, wall, cpu = _common.timed(
                        lambda k=kernel, t=theta: certified_norm_bound(k, t, dense_limit=0), times
                    )
                finally:
                    _certified.MAX_DISSECTION_FLOPS = budget
                out.append({"layer": f"{c}->{c} 3x3 32x32 {bc}", "route": name, "upper": upper, "lower": lower,
                            "ratio": upper / lower, "wall": wall, "cpu": cpu, "maxrss_mb": _maxrss()})  # fmt: skip
    return out


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="16 channels only")
    parser.add_argument("--channels", type=int, nargs="*", help="channel counts (default 16 32 64)")
    parser.add_argument("--repeat", type=int, default=3)
    args = _common.setup(parser)
    for r in rows(args.quick, args.repeat, args.channels):
        print("  ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()), flush=True)
    print(f"max resident memory {_maxrss():.0f} MB")


if __name__ == "__main__":
    main()
