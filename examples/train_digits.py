"""Train the parametric layer of Ruthotto's "Parametric Models" on the shipped 8x8 digits.

The layer E(σ(K(θ)y + b)W + c, C) is the one of Lars Ruthotto's lecture notes *Numerical
Methods for Deep Learning*, "Parametric Models", trained here with the library API.

Run with ``python examples/train_digits.py [--quick] [--out DIR]``. It

1. checks the gradient of the full objective E(σ(K(θ)y + b)W + c, C) by a Taylor test,
2. trains a multi-channel convolution with L-BFGS and, for comparison, a dense layer and an
   M-matrix layer (θ ≥ 0 kept by L-BFGS-B bounds),
3. takes a few Gauss--Newton--Krylov steps whose inner solves run scipy's CG on the operator
   JᵀHJ + λI built from ``kernel.jac``,
4. writes the checkpoint, metrics and plots of the convolution run into ``--out`` (default: a
   temporary folder, removed at the end).

``--quick`` uses a subset and few iterations (as in CI).
"""

import argparse
import tempfile

import numpy as np

import structops as so
from structops.testing import taylor_test
from structops.train import GaussNewtonKrylov, LayerClassifier, Problem, TrainConfig, load_digits, train

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="small subset, few iterations")
parser.add_argument("--out", default=None, help="folder for checkpoint, metrics and plots")
args = parser.parse_args()

data = load_digits()
if args.quick:
    data = data.subset(300, 200)
epochs, iters = (2, 10) if args.quick else (6, 25)

# 1. Gradient check of the whole objective (θ, b, W, c) for a 4-channel convolution.
conv = so.Conv((8, 8), (3, 3), out_channels=4)
model = LayerClassifier(conv, 10, reg_theta=1e-3, reg_W=1e-3)
X = data.x_train[:64]
y = data.y_train[:64]
x0 = model.init_params(X, rng=0).ravel()
g = model.gradient(x0, X, y).ravel()
v = np.random.default_rng(1).standard_normal(x0.size)
v /= np.linalg.norm(v)
res = taylor_test(lambda t: np.array([model.loss(t, X, y)]), lambda d: np.array([g @ d]), x0, v, h0=0.5)
print("Taylor test of the objective:", res.regime, "(E1 order", np.round(np.median(res.order1), 2), ")")
assert res.passed

# 2. Train three families on the same data and budget.
# without --out: a temporary folder, removed at the end (or at exit, should the script fail)
scratch = None if args.out else tempfile.TemporaryDirectory(prefix="structops-train-")
out = args.out or scratch.name
print(f"\n{'family':<10} {'params in K':>12} {'train acc':>10} {'test acc':>9} {'time':>7}")
for kernel in ("conv", "dense", "mmatrix"):
    cfg = TrainConfig(kernel=kernel, channels=8, epochs=epochs, iters=iters, seed=0)
    result = train(cfg, data, out=out if kernel == "conv" else None)
    k = result.model.kernel
    print(
        f"{kernel:<10} {k.nparams:>12,} {100 * result.train_acc:>9.2f}% {100 * result.test_acc:>8.2f}% "
        f"{result.seconds:>6.1f}s"
    )
    if k.bounds is not None:
        assert result.params.theta.min() >= 0, "MMatrix theta left its bound"
    if kernel == "conv":
        written = result.outputs

# 3. Gauss-Newton-Krylov from a fresh start: every step solves (JᵀHJ + λI) d = -g with CG.
model = LayerClassifier(so.Conv((8, 8), (3, 3), out_channels=8), 10, reg_theta=1e-3, reg_W=1e-3)
Xtr = data.x_train.reshape(len(data.x_train), -1)
problem = Problem(model, Xtr, data.y_train)
x = model.init_params(Xtr, rng=0).ravel()
gnk = GaussNewtonKrylov(iters=3 if args.quick else 8)
losses = [problem.loss(x)]
x = gnk.run_epoch(problem, x, np.random.default_rng(0), callback=losses.append)
print("\nGauss-Newton-Krylov losses:", " ".join(f"{val:.4f}" for val in losses))
print("CG iterations per step:", gnk.cg_history)
Xte = data.x_test.reshape(len(data.x_test), -1)
print(f"GNK test accuracy: {100 * model.accuracy(x, Xte, data.y_test):.2f}%")
assert losses[-1] < losses[0]

print("\nwrote:", *[str(p) for p in written], sep="\n  ")
if scratch is not None:
    scratch.cleanup()
    print("(into a temporary folder, now removed: pass --out DIR to keep them)")
