"""nncore against PyTorch on the SPEC workloads: throughput, GFLOP/s and peak memory.

    python benchmarks/bench.py                       # NumPy vs torch CPU, A and B, 7 repetitions
    python benchmarks/bench.py --reps 9 --sweep      # plus the batch-size / image-size sweep for B
    python benchmarks/bench.py --markdown benchmarks/RESULTS.md
    python benchmarks/bench.py --backend cupy        # CuPy vs torch CUDA (untested: written blind)

What is measured (see benchmarks/README.md):

* Both networks are built from the same initial weights (nncore's, copied into
  torch), float32, CostCrossEntropy/softmax (torch: CrossEntropyLoss on the
  logits) and Adam(1e-3, 0.9, 0.999); torch uses ``torch.set_num_threads(2)``
  (or ``--threads``) and NumPy's BLAS its own threads (both cores).
* Training: one repetition is one epoch of ``--batches`` minibatches of random
  data, through nncore's public ``CNN.fit(X, t, epochs=1, batch_size=...,
  shuffle=True, verbose=False)`` and the equivalent torch loop (random
  permutation, zero_grad, forward, loss, backward, step, loss summed on the
  device as nncore does). Inference: ``CNN.predict_proba(X)`` against torch
  ``softmax(model(x))`` under ``inference_mode`` on chunks of the same size
  (1024, nncore's default).
* Interleaving: in each repetition the workloads run A, B, A, B ... and
  nncore and torch alternate which goes first; the ratio quoted is the MEDIAN
  of the per-repetition ratios nncore/torch (> 1: nncore faster). Each timed
  call starts after ``--gap`` seconds of idle: OpenBLAS's and OpenMP's worker
  threads busy-wait for a while after a call and would otherwise steal the
  cores from whichever library runs next.
* GFLOP/s: 2 x multiply-adds of the convolution and dense layers, forward;
  a training step counts 3 x forward.
* Peak memory: for each (library, workload, mode) a FRESH subprocess imports
  the library, builds the model and the data, calls ``malloc_trim(0)``, reads
  VmRSS, resets the peak (``/proc/self/clear_refs``), runs the same calls and
  reads VmHWM. The figure is the growth of the peak resident set: it sees
  NumPy's and torch's allocations alike (tracemalloc would miss torch).
* The C allocator: glibc serves blocks over M_MMAP_THRESHOLD (dynamic, at most
  32 MiB) with mmap and gives them back on free, so a large per-batch buffer
  costs page faults every batch. Timings are taken twice in the same process,
  first with glibc's defaults ("default heap"), then after
  ``mallopt(M_MMAP_THRESHOLD, 1 GiB)`` and ``mallopt(M_TRIM_THRESHOLD, 2 GiB)``
  ("pre-grown heap": freed memory stays in the heap and is reused). Both
  tables are printed; the memory figures use the defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORKLOADS = {
    # name: (description, default batch size)
    "A": ("seed-demo: Conv 1->1 3x3 LRELU, FC 30, FC 20, Output 10", 750),
    "B": ("lenet: Conv 1->16, MaxPool, Conv 16->32, MaxPool, FC 128, Output 10", 128),
}
LRELU_SLOPE = 1e-3
PREDICT_BATCH = 1024
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


# ---- the networks ---------------------------------------------------------------------


def build_nncore(workload, side=28, backend="numpy", seed=2023):
    from nncore import CNN, LRELU, RELU, Adam, CostCrossEntropy, softmax

    cnn = CNN(cost_func=CostCrossEntropy, scheduler=Adam(1e-3, 0.9, 0.999), seed=seed, backend=backend)
    if workload == "A":
        cnn.add_Convolution2DLayer(1, 1, 3, 3, act_func=LRELU)
        cnn.add_FlattenLayer()
        cnn.add_FullyConnectedLayer(30, LRELU)
        cnn.add_FullyConnectedLayer(20, LRELU)
        cnn.add_OutputLayer(10, softmax)
    else:
        cnn.add_Convolution2DLayer(1, 16, 3, 3, act_func=RELU)
        cnn.add_PoolingLayer(2, 2, 2, 2, pooling="max")
        cnn.add_Convolution2DLayer(16, 32, 3, 3, act_func=RELU)
        cnn.add_PoolingLayer(2, 2, 2, 2, pooling="max")
        cnn.add_FlattenLayer()
        cnn.add_FullyConnectedLayer(128, RELU)
        cnn.add_OutputLayer(10, softmax)
    # Build the layers (predict on one image), so that the weights exist and can be copied.
    cnn.predict_proba(np.zeros((1, 1, side, side), np.float32))
    return cnn


def build_torch(workload, cnn, device):
    """The same network in torch, with nncore's initial weights."""
    import torch
    from torch import nn

    from nncore.layers import Convolution2DLayer, FullyConnectedLayer

    if workload == "A":
        side = cnn.input_shape[-1]
        model = nn.Sequential(
            nn.Conv2d(1, 1, 3, padding=1), nn.LeakyReLU(LRELU_SLOPE), nn.Flatten(),
            nn.Linear(side * side, 30), nn.LeakyReLU(LRELU_SLOPE),
            nn.Linear(30, 20), nn.LeakyReLU(LRELU_SLOPE),
            nn.Linear(20, 10),
        )
    else:
        side = cnn.input_shape[-1]
        model = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Flatten(), nn.Linear(32 * (side // 4) ** 2, 128), nn.ReLU(),
            nn.Linear(128, 10),
        )
    ours = [layer for layer in cnn.layers if isinstance(layer, (Convolution2DLayer, FullyConnectedLayer))]
    theirs = [m for m in model if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for layer, module in zip(ours, theirs, strict=True):
            if isinstance(layer, Convolution2DLayer):
                module.weight.copy_(torch.from_numpy(cnn.backend.to_numpy(layer.kernel).copy()))
            else:
                module.weight.copy_(torch.from_numpy(cnn.backend.to_numpy(layer.weights).T.copy()))
            module.bias.copy_(torch.from_numpy(cnn.backend.to_numpy(layer.bias).copy()))
    return model.to(device)


def forward_flops(workload, side=28):
    """2 x multiply-adds of the conv and dense layers for ONE image, forward."""
    if workload == "A":
        macs = side * side * 9 + side * side * 30 + 30 * 20 + 20 * 10
    else:
        quarter = (side // 4) ** 2
        macs = side * side * 16 * 9 + (side // 2) ** 2 * 32 * 16 * 9 + 32 * quarter * 128 + 128 * 10
    return 2 * macs


def make_data(n, side, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, 1, side, side), dtype=np.float32)
    labels = rng.integers(0, 10, n)
    return X, np.eye(10, dtype=np.float32)[labels], labels


# ---- one library, one workload ------------------------------------------------------------


class NncoreRunner:
    name = "nncore"

    def __init__(self, workload, batch, side, n_batches, backend):
        self.cnn = build_nncore(workload, side, backend)
        self.batch = batch
        X, t, self.labels = make_data(batch * n_batches, side)
        be = self.cnn.backend
        self.X, self.t = be.asarray(X), be.asarray(t)  # on the device, as a user would keep it

    def train(self):
        self.cnn.fit(self.X, self.t, epochs=1, batch_size=self.batch, shuffle=True, verbose=False)
        self.cnn.backend.synchronize()

    def infer(self):
        out = self.cnn.predict_proba(self.X, batch_size=PREDICT_BATCH)
        self.cnn.backend.synchronize()
        return out

    def output(self, X):
        return self.cnn.backend.to_numpy(self.cnn.predict_proba(self.cnn.backend.asarray(X)))


class TorchRunner:
    name = "torch"

    def __init__(self, workload, batch, side, n_batches, backend, cnn=None):
        import torch

        self.torch = torch
        self.device = "cuda" if backend == "cupy" else "cpu"
        cnn = cnn or build_nncore(workload, side, "numpy")
        self.model = build_torch(workload, cnn, self.device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
        self.loss = torch.nn.CrossEntropyLoss()
        self.batch = batch
        X, _, labels = make_data(batch * n_batches, side)
        self.X = torch.from_numpy(X).to(self.device)
        self.y = torch.from_numpy(labels).to(self.device)
        self.generator = torch.Generator().manual_seed(0)

    def sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def train(self):
        torch, n = self.torch, self.X.shape[0]
        order = torch.randperm(n, generator=self.generator).to(self.device)
        loss_sum = torch.zeros((), device=self.device)
        self.model.train()
        for start in range(0, n, self.batch):
            idx = order[start : start + self.batch]
            self.opt.zero_grad(set_to_none=True)
            loss = self.loss(self.model(self.X[idx]), self.y[idx])
            loss.backward()
            self.opt.step()
            loss_sum += loss.detach() * idx.shape[0]
        self.sync()

    def infer(self):
        torch = self.torch
        self.model.eval()
        with torch.inference_mode():
            out = [torch.softmax(self.model(self.X[i : i + PREDICT_BATCH]), dim=1)
                   for i in range(0, self.X.shape[0], PREDICT_BATCH)]
            out = torch.cat(out) if len(out) > 1 else out[0]
        self.sync()
        return out

    def output(self, X):
        torch = self.torch
        self.model.eval()
        with torch.inference_mode():
            return torch.softmax(self.model(torch.from_numpy(X).to(self.device)), dim=1).cpu().numpy()


def _seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ---- memory, in a fresh process ---------------------------------------------------------


def _status(key):
    return int(re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1)) * 1024


def _malloc_trim():
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def memory_child(spec):
    """Run in a fresh process: peak RSS growth (bytes) of ``spec['mode']`` calls, plus their timing."""
    lib, workload, batch, side, n_batches = (spec[k] for k in ("lib", "workload", "batch", "side", "n_batches"))
    backend, mode, repeats = spec["backend"], spec["mode"], spec.get("repeats", 2)
    if lib == "torch":
        import torch

        torch.set_num_threads(spec["threads"])
        runner = TorchRunner(workload, batch, side, n_batches, backend)
    else:
        runner = NncoreRunner(workload, batch, side, n_batches, backend)
    gc.collect()
    _malloc_trim()
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    run = runner.train if mode == "train" else runner.infer
    times = [_seconds(run) for _ in range(repeats)]
    peak = _status("VmHWM") - before
    result = {"peak_bytes": peak, "seconds": times}
    if backend == "cupy":
        result["device_peak_bytes"] = _device_peak(lib)
    print(json.dumps(result))


def _device_peak(lib):
    if lib == "torch":
        import torch

        return int(torch.cuda.max_memory_reserved())  # what its caching allocator held at most
    import cupy

    return int(cupy.get_default_memory_pool().total_bytes())  # the pool keeps what it ever needed


def measure_in_child(args, lib, workload, batch, side, n_batches, mode, repeats=2):
    spec = {"lib": lib, "workload": workload, "batch": batch, "side": side, "n_batches": n_batches,
            "mode": mode, "backend": args.backend, "threads": args.threads, "repeats": repeats}
    env = dict(os.environ)
    env.pop("NNCORE_FAST_PATHS", None) if not args.generic else env.update(NNCORE_FAST_PATHS="0")
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child {spec} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- the interleaved timing -----------------------------------------------------------------


def set_heap(pregrown):
    libc = ctypes.CDLL("libc.so.6")
    if pregrown:
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
        libc.mallopt(M_TRIM_THRESHOLD, 2 << 30)


def time_interleaved(args, runners, reps):
    """``{(workload, mode, lib): [seconds per repetition]}``, A B A B ..., libraries alternating."""
    times = {}
    for rep in range(reps):
        for workload in args.workloads:
            pair = runners[workload]
            order = pair if rep % 2 == 0 else pair[::-1]
            for mode in ("train", "infer"):
                for runner in order:
                    fn = runner.train if mode == "train" else runner.infer
                    # Let the other library's thread pool stop spinning before the clock starts
                    # (OpenBLAS and OpenMP workers busy-wait a while after each call).
                    time.sleep(args.gap)
                    times.setdefault((workload, mode, runner.name), []).append(_seconds(fn))
    return times


def summarise(args, times, images):
    rows = []
    for workload in args.workloads:
        for mode in ("train", "infer"):
            ours, theirs = times[(workload, mode, "nncore")], times[(workload, mode, "torch")]
            n = images[(workload, mode)]
            ratios = [b / a for a, b in zip(ours, theirs)]  # img/s ratio nncore/torch = t_torch / t_nncore
            flops = forward_flops(workload) * (3 if mode == "train" else 1)
            ours_ips, theirs_ips = n / statistics.median(ours), n / statistics.median(theirs)
            rows.append({
                "workload": workload, "mode": mode,
                "nncore_ips": ours_ips, "torch_ips": theirs_ips,
                "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                "nncore_gflops": ours_ips * flops / 1e9, "torch_gflops": theirs_ips * flops / 1e9,
            })
    return rows


def _fmt_table(rows, memory):
    lines = [
        "| workload | mode | nncore img/s | torch img/s | ratio nncore/torch (median, min-max) "
        "| nncore GFLOP/s | torch GFLOP/s | nncore peak MiB | torch peak MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mem = memory.get((r["workload"], r["mode"]), {})
        ours = f"{mem['nncore'] / 2**20:.1f}" if "nncore" in mem else "-"
        theirs = f"{mem['torch'] / 2**20:.1f}" if "torch" in mem else "-"
        lines.append(
            f"| {r['workload']} | {r['mode']} | {r['nncore_ips']:,.0f} | {r['torch_ips']:,.0f} "
            f"| **{r['ratio']:.2f}x** ({r['ratio_min']:.2f}-{r['ratio_max']:.2f}) "
            f"| {r['nncore_gflops']:.1f} | {r['torch_gflops']:.1f} | {ours} | {theirs} |"
        )
    return "\n".join(lines)


def sweep(args):
    """Time per training step and peak memory for B over batch sizes and image sides (fresh processes)."""
    points = [(b, 28) for b in (16, 32, 64, 128, 256, 512, 1024)] + [(128, s) for s in (56, 84, 112)]
    loads = []
    lines = [
        "| batch | side | nncore ms/step | torch ms/step | nncore img/s | torch img/s | ratio "
        "| nncore peak MiB | torch peak MiB | nncore MiB/img | torch MiB/img |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for batch, side in points:
        n_batches = max(2, min(8, 2048 // batch))
        res = {lib: measure_in_child(args, lib, "B", batch, side, n_batches, "train", repeats=4)
               for lib in ("nncore", "torch")}
        step = {lib: min(r["seconds"][1:]) / n_batches for lib, r in res.items()}  # skip the warm-up epoch
        loads.append(os.getloadavg()[0])
        peak = {lib: r["peak_bytes"] / 2**20 for lib, r in res.items()}
        lines.append(
            f"| {batch} | {side} | {step['nncore'] * 1e3:.1f} | {step['torch'] * 1e3:.1f} "
            f"| {batch / step['nncore']:,.0f} | {batch / step['torch']:,.0f} | {step['torch'] / step['nncore']:.2f}x "
            f"| {peak['nncore']:.1f} | {peak['torch']:.1f} | {peak['nncore'] / batch:.3f} | {peak['torch'] / batch:.3f} |"
        )
        print(lines[-1], flush=True)
    lines.append("")
    lines.append(f"1-min load average after each point: {', '.join(f'{load:.2f}' for load in loads)}")
    return "\n".join(lines)


def _blas_of(module):
    """``"name version"`` of the BLAS that NumPy or SciPy was built with, or ``"?"``."""
    with contextlib.suppress(Exception):
        blas = module.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas['version']}"
    return "?"


def machine_info(args):
    import array_api_compat
    import torch

    import nncore

    model = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        found = re.search(r"Model name:\s*(.+)", out)
        model = found.group(1).strip() if found else model
    import scipy

    info = {
        "cpu": f"{model}, {os.cpu_count()} logical CPUs",
        "python": platform.python_version(),
        "numpy": f"{np.__version__} ({_blas_of(np)})",
        "scipy": f"{scipy.__version__} ({_blas_of(scipy)}; its BLAS axpy carries A's convolution)",
        "array-api-compat": array_api_compat.__version__,
        "torch": f"{torch.__version__} (threads {torch.get_num_threads()})",
        "nncore": nncore.__version__,
        "os": platform.platform(),
    }
    if args.backend == "cupy":
        import cupy

        info["gpu"] = f"{torch.cuda.get_device_name(0)}; cupy {cupy.__version__}"
    return info


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("numpy", "cupy"), default="numpy",
                        help="nncore backend; cupy also moves torch to CUDA (untested)")
    parser.add_argument("--reps", type=int, default=7, help="repetitions (at least 5)")
    parser.add_argument("--batches", type=int, default=None,
                        help="minibatches per repetition (default: 16 for A and B)")
    parser.add_argument("--workloads", default="AB", help="which workloads, e.g. AB or B")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--gap", type=float, default=0.3,
                        help="seconds of idle before each timed call, so that neither library's spinning "
                             "thread pool slows the other (default 0.3)")
    parser.add_argument("--heap", choices=("both", "default", "pregrown"), default="both",
                        help="time with glibc's default heap, a pre-grown one, or both (default)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--sweep", action="store_true", help="also run the scaling sweep for B")
    parser.add_argument("--generic", action="store_true",
                        help="switch nncore's NumPy fast paths off (NNCORE_FAST_PATHS=0): the generic code")
    parser.add_argument("--markdown", metavar="FILE", help="also write the report as markdown to FILE")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return memory_child(json.loads(args.child))
    if args.reps < 5:
        parser.error("--reps must be at least 5")
    args.workloads = [w for w in args.workloads.upper() if w in WORKLOADS]
    if args.generic:
        os.environ["NNCORE_FAST_PATHS"] = "0"

    import torch

    torch.set_num_threads(args.threads)
    if args.backend == "cupy":
        from backends import get_backend

        try:
            get_backend("cupy")
        except (ImportError, RuntimeError) as exc:
            parser.error(f"--backend cupy needs CuPy and a CUDA GPU: {exc}")
        if not torch.cuda.is_available():
            parser.error("--backend cupy compares with torch on CUDA, but this torch build sees no GPU "
                         f"(torch {torch.__version__}); install a CUDA build of torch")
    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    command = "python benchmarks/bench.py " + " ".join(argv if argv is not None else sys.argv[1:])

    runners, images, checks = {}, {}, {}
    for workload in args.workloads:
        batch = WORKLOADS[workload][1]
        n_batches = args.batches or 16
        ours = NncoreRunner(workload, batch, 28, n_batches, args.backend)
        theirs = TorchRunner(workload, batch, 28, n_batches, args.backend, cnn=build_nncore(workload))
        probe = make_data(16, 28, seed=1)[0]
        checks[workload] = float(np.max(np.abs(ours.output(probe) - theirs.output(probe))))
        runners[workload] = (ours, theirs)
        images[(workload, "train")] = images[(workload, "infer")] = batch * n_batches
        ours.train(), theirs.train(), ours.infer(), theirs.infer()  # warm up (and build caches)

    tables = {}
    heaps = ["default", "pregrown"] if args.heap == "both" else [args.heap]
    for heap in heaps:
        if heap == "pregrown":
            set_heap(True)
        times = time_interleaved(args, runners, args.reps)
        tables[heap] = summarise(args, times, images)

    memory = {}
    if not args.no_memory:
        for workload in args.workloads:
            batch = WORKLOADS[workload][1]
            n_batches = args.batches or 16
            for mode in ("train", "infer"):
                key = "device_peak_bytes" if args.backend == "cupy" else "peak_bytes"
                memory[(workload, mode)] = {
                    lib: measure_in_child(args, lib, workload, batch, 28, n_batches, mode)[key]
                    for lib in ("nncore", "torch")
                }
    sweep_table = sweep(args) if args.sweep else None
    load_after = os.getloadavg()

    info = machine_info(args)
    out = [f"# nncore vs PyTorch ({'CuPy vs CUDA' if args.backend == 'cupy' else 'NumPy vs CPU'})", ""]
    out.append(f"- date: {started:%Y-%m-%d %H:%M} UTC")
    out.append(f"- command: `{command.strip()}`")
    for key, value in info.items():
        out.append(f"- {key}: {value}")
    out.append(f"- nncore fast paths: {'off (generic code)' if args.generic else 'on (backends/numpy_fast.py)'}")
    out.append(f"- load average (1, 5, 15 min) before: {load_before[0]:.2f} {load_before[1]:.2f} "
               f"{load_before[2]:.2f}; after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    out.append(f"- repetitions: {args.reps}; same initial weights, max |softmax difference| on 16 images: "
               + ", ".join(f"{w} {d:.1e}" for w, d in checks.items()))
    for workload in args.workloads:
        batch = WORKLOADS[workload][1]
        out.append(f"- workload {workload} ({WORKLOADS[workload][0]}): batch {batch}, "
                   f"{images[(workload, 'train')]} images per repetition, "
                   f"{forward_flops(workload) / 1e6:.2f} MFLOP per image forward")
    for heap in heaps:
        label = ("glibc default heap (large blocks mmapped and unmapped per batch)" if heap == "default"
                 else "pre-grown heap (mallopt M_MMAP_THRESHOLD=1 GiB, M_TRIM_THRESHOLD=2 GiB)")
        out += ["", f"## Throughput, {label}", "", _fmt_table(tables[heap], memory)]
    if memory and args.backend == "cupy":
        out += ["", "Peak MiB: GPU memory held at most (torch: max_memory_reserved; CuPy: the memory "
                "pool's total_bytes) in a fresh process per (library, workload, mode)."]
    elif memory:
        out += ["", "Peak MiB: growth of the peak resident set (VmHWM) in a fresh process per (library, "
                "workload, mode) over two calls (train: two epochs as above; infer: two predict passes), "
                "from the built model with its data; glibc default heap."]
    if sweep_table:
        out += ["", "## Scaling sweep, workload B training (fresh process per point, default heap)", "",
                "ms/step: best of three timed epochs after a warm-up epoch; peak MiB over all four.", "",
                sweep_table]
    report = "\n".join(out) + "\n"
    print(report)
    if args.markdown:
        Path(args.markdown).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
