"""nncore against PyTorch on the SPEC workloads: throughput, GFLOP/s and peak memory.

    python benchmarks/bench.py                       # NumPy vs torch CPU, A and B, 7 repetitions
    python benchmarks/bench.py --reps 9 --sweep      # plus the batch-size / image-size sweep for B
    python benchmarks/bench.py --markdown benchmarks/RESULTS.md
    python benchmarks/bench.py --backend cupy --workloads B --batch-sizes 128,1024,8192 --torch-tf32 both
    python benchmarks/bench.py --backend cupy --dry-run   # check the arguments and print the plan only

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
  (1024, nncore's default; with ``--batch-sizes``, the batch size).
* Interleaving: in each repetition the workloads run A, B, A, B ... and
  nncore and torch alternate which goes first; the ratio quoted is the MEDIAN
  of the per-repetition ratios nncore/torch (> 1: nncore faster). Each timed
  call starts after ``--gap`` seconds of idle: OpenBLAS's and OpenMP's worker
  threads busy-wait for a while after a call and would otherwise steal the
  cores from whichever library runs next.
* GPU (``--backend cupy``): torch runs on ``cuda``; both sides wait for the
  device before the clock starts and before it stops. ``--torch-tf32 both``
  times torch twice, with its default float32 precision (cuDNN convolutions
  may use TF32 tensor cores, matrix products not) and with TF32 off for both;
  nncore's matrix products use TF32 only when CuPy's ``CUPY_TF32=1`` is set for
  the whole process. GPU memory is measured in the same process: the most
  bytes in use at once during one call above what was in use before it (CuPy:
  a memory hook on its pool; torch: ``max_memory_allocated``).
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

    def __init__(self, workload, batch, side, n_batches, backend, predict_batch=PREDICT_BATCH):
        self.cnn = build_nncore(workload, side, backend)
        self.batch, self.predict_batch = batch, predict_batch
        X, t, self.labels = make_data(batch * n_batches, side)
        be = self.cnn.backend
        self.X, self.t = be.asarray(X), be.asarray(t)  # on the device, as a user would keep it

    def prepare(self):
        """Before the clock starts: nothing of earlier calls still queued on the device."""
        self.cnn.backend.synchronize()

    def device_peak(self, fn):
        """Most GPU bytes in use at once during ``fn()``, above those in use before (a hook on CuPy's pool)."""
        import cupy

        class Peak(cupy.cuda.MemoryHook):
            name = "bench-peak"
            now = peak = 0

            def malloc_postprocess(self, **kwargs):
                self.now += kwargs["mem_size"]
                self.peak = max(self.peak, self.now)

            def free_postprocess(self, **kwargs):
                self.now -= kwargs["mem_size"]

        self.prepare()
        with Peak() as hook:
            fn()
        return hook.peak

    def train(self):
        self.cnn.fit(self.X, self.t, epochs=1, batch_size=self.batch, shuffle=True, verbose=False)
        self.cnn.backend.synchronize()

    def infer(self):
        out = self.cnn.predict_proba(self.X, batch_size=self.predict_batch)
        self.cnn.backend.synchronize()
        return out

    def output(self, X):
        return self.cnn.backend.to_numpy(self.cnn.predict_proba(self.cnn.backend.asarray(X)))


class TorchRunner:
    """The torch side; ``precision`` (GPU only) is the TF32 setting applied before each call, see
    :func:`tf32_settings`; ``None`` leaves torch's settings alone."""

    def __init__(self, workload, batch, side, n_batches, backend, cnn=None, precision=None, name="torch",
                 predict_batch=PREDICT_BATCH):
        import torch

        self.torch = torch
        self.name = name
        self.precision = precision
        self.device = "cuda" if backend == "cupy" else "cpu"
        cnn = cnn or build_nncore(workload, side, "numpy")
        self.model = build_torch(workload, cnn, self.device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
        self.loss = torch.nn.CrossEntropyLoss()
        self.batch, self.predict_batch = batch, predict_batch
        X, _, labels = make_data(batch * n_batches, side)
        self.X = torch.from_numpy(X).to(self.device)
        self.y = torch.from_numpy(labels).to(self.device)
        self.generator = torch.Generator().manual_seed(0)

    def sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def prepare(self):
        """Before the clock starts: this runner's TF32 setting, nothing still queued on the device."""
        if self.precision is not None:
            set_tf32(self.torch, self.precision)
        self.sync()

    def device_peak(self, fn):
        """Most GPU bytes allocated at once during ``fn()``, above those allocated before."""
        cuda = self.torch.cuda
        self.prepare()
        cuda.reset_peak_memory_stats()
        before = cuda.memory_allocated()
        fn()
        return cuda.max_memory_allocated() - before

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
            out = [torch.softmax(self.model(self.X[i : i + self.predict_batch]), dim=1)
                   for i in range(0, self.X.shape[0], self.predict_batch)]
            out = torch.cat(out) if len(out) > 1 else out[0]
        self.sync()
        return out

    def output(self, X):
        torch = self.torch
        self.model.eval()
        with torch.inference_mode():
            return torch.softmax(self.model(torch.from_numpy(X).to(self.device)), dim=1).cpu().numpy()


def _new_tf32_api(torch):
    """torch >= 2.9 sets TF32 per backend with ``fp32_precision`` strings and refuses reads of the
    older ``allow_tf32`` flags once the two disagree, so only one of the two APIs may be used."""
    return hasattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision")


def tf32_settings(torch, off=False):
    """torch's float32 precision for cuDNN convolutions and CUDA matrix products: the current
    settings, or (``off``) the ones that keep both in IEEE float32, never TF32."""
    if _new_tf32_api(torch):
        if off:
            return {"conv": "ieee", "matmul": "ieee"}
        return {"conv": torch.backends.cudnn.conv.fp32_precision, "matmul": torch.backends.cuda.matmul.fp32_precision}
    if off:
        return {"conv": False, "matmul": False}
    return {"conv": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32}


def set_tf32(torch, settings):
    if _new_tf32_api(torch):
        torch.backends.cudnn.conv.fp32_precision = settings["conv"]
        torch.backends.cuda.matmul.fp32_precision = settings["matmul"]
    else:
        torch.backends.cudnn.allow_tf32 = settings["conv"]
        torch.backends.cuda.matmul.allow_tf32 = settings["matmul"]


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
    chunk = spec.get("predict_batch", PREDICT_BATCH)
    if lib == "torch":
        import torch

        torch.set_num_threads(spec["threads"])
        runner = TorchRunner(workload, batch, side, n_batches, backend, predict_batch=chunk)
    else:
        runner = NncoreRunner(workload, batch, side, n_batches, backend, chunk)
    gc.collect()
    _malloc_trim()
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    run = runner.train if mode == "train" else runner.infer
    times = [_seconds(run) for _ in range(repeats)]
    peak = _status("VmHWM") - before
    print(json.dumps({"peak_bytes": peak, "seconds": times}))


def measure_in_child(args, lib, workload, batch, side, n_batches, mode, repeats=2):
    spec = {"lib": lib, "workload": workload, "batch": batch, "side": side, "n_batches": n_batches,
            "mode": mode, "backend": args.backend, "threads": args.threads, "repeats": repeats,
            "predict_batch": predict_chunk(args, batch)}
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
    """``{(case, mode, runner name): [seconds per repetition]}``.

    ``runners`` maps each case ``(workload, batch)`` to its runners (nncore first). Every repetition
    runs the cases in turn, training then inference, each runner once; the runners take turns at
    going first.
    """
    times = {}
    for rep in range(reps):
        for case, group in runners.items():
            shift = rep % len(group)
            order = group[shift:] + group[:shift]
            for mode in ("train", "infer"):
                for runner in order:
                    fn = runner.train if mode == "train" else runner.infer
                    # Let the other library's thread pool stop spinning before the clock starts
                    # (OpenBLAS and OpenMP workers busy-wait a while after each call).
                    time.sleep(args.gap)
                    runner.prepare()
                    times.setdefault((case, mode, runner.name), []).append(_seconds(fn))
    return times


def summarise(times, runners, images):
    """One row per (case, mode): nncore's img/s, and each torch runner's with the ratio nncore/it."""
    rows = []
    for case, (ours, *theirs) in runners.items():
        workload, batch = case
        for mode in ("train", "infer"):
            n = images[case]
            flops = forward_flops(workload) * (3 if mode == "train" else 1)
            mine = times[(case, mode, ours.name)]
            row = {"workload": workload, "batch": batch, "mode": mode, "nncore_ips": n / statistics.median(mine),
                   "torch": []}
            for runner in theirs:
                other = times[(case, mode, runner.name)]
                ratios = [b / a for a, b in zip(mine, other)]  # img/s ratio nncore/torch = t_torch / t_nncore
                row["torch"].append({"name": runner.name, "ips": n / statistics.median(other),
                                     "ratio": statistics.median(ratios), "min": min(ratios), "max": max(ratios)})
            row["nncore_gflops"] = row["nncore_ips"] * flops / 1e9
            for entry in row["torch"]:
                entry["gflops"] = entry["ips"] * flops / 1e9
            rows.append(row)
    return rows


def _fmt_table(rows, memory):
    names = [entry["name"] for entry in rows[0]["torch"]]
    header = ["workload", "batch", "mode", "nncore img/s"]
    for name in names:
        header += [f"{name} img/s", f"ratio nncore/{name} (median, min-max)"]
    header += ["nncore GFLOP/s", *(f"{name} GFLOP/s" for name in names), "nncore peak MiB", "torch peak MiB"]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|---|" + "---:|" * (len(header) - 3)]
    for r in rows:
        mem = memory.get((r["workload"], r["batch"], r["mode"]), {})
        cells = [r["workload"], str(r["batch"]), r["mode"], f"{r['nncore_ips']:,.0f}"]
        for entry in r["torch"]:
            cells += [f"{entry['ips']:,.0f}", f"**{entry['ratio']:.2f}x** ({entry['min']:.2f}-{entry['max']:.2f})"]
        cells += [f"{r['nncore_gflops']:.1f}", *(f"{entry['gflops']:.1f}" for entry in r["torch"])]
        cells += [f"{mem[lib] / 2**20:.1f}" if lib in mem else "-" for lib in ("nncore", "torch")]
        lines.append("| " + " | ".join(cells) + " |")
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

        runtime = cupy.cuda.runtime
        info["gpu"] = (f"{torch.cuda.get_device_name(0)}; CUDA driver {runtime.driverGetVersion()}, "
                       f"runtime {runtime.runtimeGetVersion()} (CuPy's)")
        info["cupy"] = f"{cupy.__version__}; CUPY_TF32={os.environ.get('CUPY_TF32', '') or 'unset'}"
        info["torch CUDA"] = (f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}; TF32 defaults "
                              f"{args.torch_tf32_default}")
    return info


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("numpy", "cupy"), default="numpy",
                        help="nncore backend; cupy also moves torch to CUDA")
    parser.add_argument("--reps", type=int, default=7, help="repetitions (at least 5)")
    parser.add_argument("--batches", type=int, default=None,
                        help="minibatches per repetition (default: 16 for A and B)")
    parser.add_argument("--batch-sizes", default=None, metavar="N[,N...]",
                        help="batch sizes to time, e.g. 128,1024,8192 (default: each workload's own, A 750, B 128)")
    parser.add_argument("--workloads", default="AB", help="which workloads, e.g. AB or B")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--torch-tf32", choices=("default", "off", "both"), default="default",
                        help="GPU only: time torch with its default TF32 settings (cuDNN convolutions may use "
                             "TF32), with TF32 off, or both (default: default)")
    parser.add_argument("--gap", type=float, default=0.3,
                        help="seconds of idle before each timed call, so that neither library's spinning "
                             "thread pool slows the other (default 0.3)")
    parser.add_argument("--heap", choices=("both", "default", "pregrown"), default="both",
                        help="time with glibc's default heap, a pre-grown one, or both (default)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument("--sweep", action="store_true", help="also run the scaling sweep for B")
    parser.add_argument("--generic", action="store_true",
                        help="switch nncore's NumPy fast paths off (NNCORE_FAST_PATHS=0): the generic code")
    parser.add_argument("--markdown", metavar="FILE", help="also write the report as markdown to FILE")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the arguments, print what would be timed, and stop (imports neither torch "
                             "nor CuPy)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return args
    if args.reps < 5:
        parser.error("--reps must be at least 5")
    args.workloads = [w for w in args.workloads.upper() if w in WORKLOADS]
    if not args.workloads:
        parser.error(f"--workloads names none of {', '.join(WORKLOADS)}")
    if args.batch_sizes is not None:
        try:
            args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
        except ValueError:
            parser.error(f"--batch-sizes must be positive integers separated by commas, got {args.batch_sizes!r}")
        if not args.batch_sizes or min(args.batch_sizes) < 1:
            parser.error(f"--batch-sizes must be positive integers, got {args.batch_sizes}")
    if args.torch_tf32 != "default" and args.backend != "cupy":
        parser.error("--torch-tf32 applies to torch on CUDA: use it with --backend cupy")
    args.cases = [(w, b) for w in args.workloads for b in (args.batch_sizes or [WORKLOADS[w][1]])]
    args.n_batches = args.batches or 16
    return args


def predict_chunk(args, batch):
    """Inference runs in chunks of the batch size when ``--batch-sizes`` is given, else of 1024."""
    return batch if args.batch_sizes else PREDICT_BATCH


def plan(args):
    """What a run with ``args`` times, in words (``--dry-run``)."""
    torch_runs = {"default": ["torch (its default TF32 settings)"], "off": ["torch (TF32 off)"],
                  "both": ["torch (its default TF32 settings)", "torch (TF32 off)"]}[args.torch_tf32]
    if args.backend == "numpy":
        torch_runs = ["torch (CPU)"]
    lines = [f"backend: nncore on {args.backend}, torch on {'cuda' if args.backend == 'cupy' else 'cpu'}",
             f"CUPY_TF32: {os.environ.get('CUPY_TF32', '') or 'unset'}" if args.backend == "cupy" else "",
             f"repetitions: {args.reps}, {args.n_batches} minibatches per training repetition, gap {args.gap} s",
             f"heap: {args.heap}; memory: " + ("no" if args.no_memory else "GPU, in this process"
                                                if args.backend == "cupy" else "RSS, fresh processes")]
    for workload, batch in args.cases:
        lines.append(f"case {workload} batch {batch}: {batch * args.n_batches} images per repetition, train in "
                     f"batches of {batch} and infer in chunks of {predict_chunk(args, batch)}; nncore against "
                     f"{', '.join(torch_runs)}")
    if args.sweep:
        lines.append("then the scaling sweep of B training (fresh processes)")
    return "\n".join(line for line in lines if line)


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        return memory_child(json.loads(args.child))
    if args.dry_run:
        print(plan(args))
        return 0
    if args.generic:
        os.environ["NNCORE_FAST_PATHS"] = "0"

    import torch

    torch.set_num_threads(args.threads)
    precisions = {"torch": None}
    if args.backend == "cupy":
        from backends import get_backend

        try:
            get_backend("cupy")
        except (ImportError, RuntimeError) as exc:
            sys.exit(f"bench.py: --backend cupy needs CuPy and a CUDA GPU: {exc}")
        if not torch.cuda.is_available():
            sys.exit("bench.py: --backend cupy compares with torch on CUDA, but this torch build sees no GPU "
                     f"(torch {torch.__version__}); install a CUDA build of torch")
        default, off = tf32_settings(torch), tf32_settings(torch, off=True)
        args.torch_tf32_default = f"conv {default['conv']}, matmul {default['matmul']}"
        precisions = {"default": {"torch": default}, "off": {"torch (TF32 off)": off},
                      "both": {"torch": default, "torch (TF32 off)": off}}[args.torch_tf32]
    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    command = "python benchmarks/bench.py " + " ".join(argv if argv is not None else sys.argv[1:])

    runners, images, checks = {}, {}, {}
    for case in args.cases:
        workload, batch = case
        chunk = predict_chunk(args, batch)
        group = [NncoreRunner(workload, batch, 28, args.n_batches, args.backend, chunk)]
        weights = build_nncore(workload)
        group += [TorchRunner(workload, batch, 28, args.n_batches, args.backend, cnn=weights, precision=precision,
                              name=name, predict_batch=chunk) for name, precision in precisions.items()]
        probe = make_data(16, 28, seed=1)[0]
        ours = group[0].output(probe)
        for runner in group[1:]:
            runner.prepare()
            checks[(*case, runner.name)] = float(np.max(np.abs(ours - runner.output(probe))))
        runners[case] = group
        images[case] = batch * args.n_batches
        for runner in group:  # warm up (and build caches)
            runner.prepare()
            runner.train()
            runner.infer()

    tables = {}
    heaps = ["default", "pregrown"] if args.heap == "both" else [args.heap]
    for heap in heaps:
        if heap == "pregrown":
            set_heap(True)
        times = time_interleaved(args, runners, args.reps)
        tables[heap] = summarise(times, runners, images)

    memory = {}
    if not args.no_memory:
        for case, group in runners.items():
            workload, batch = case
            for mode in ("train", "infer"):
                if args.backend == "cupy":  # the first torch runner stands for torch
                    memory[(*case, mode)] = {lib: runner.device_peak(getattr(runner, mode))
                                             for lib, runner in zip(("nncore", "torch"), group)}
                else:
                    memory[(*case, mode)] = {
                        lib: measure_in_child(args, lib, workload, batch, 28, args.n_batches, mode)["peak_bytes"]
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
    out.append(f"- nncore fast paths: {'off (generic code)' if args.generic else 'on (backends/numpy_fast/)'}")
    out.append(f"- load average (1, 5, 15 min) before: {load_before[0]:.2f} {load_before[1]:.2f} "
               f"{load_before[2]:.2f}; after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    differences = []
    for (workload, batch, name), difference in checks.items():
        label = (workload + (f" batch {batch}" if args.batch_sizes else "")
                 + (f" vs {name}" if len(precisions) > 1 else ""))
        differences.append(f"{label} {difference:.1e}")
    out.append(f"- repetitions: {args.reps}; same initial weights, max |softmax difference| on 16 images: "
               + ", ".join(differences))
    for workload in args.workloads:
        batches = args.batch_sizes or [WORKLOADS[workload][1]]
        chunks = sorted({predict_chunk(args, batch) for batch in batches})
        out.append(f"- workload {workload} ({WORKLOADS[workload][0]}): batch {', '.join(map(str, batches))}, "
                   f"{args.n_batches} minibatches per repetition, inference in chunks of "
                   f"{'the batch size' if args.batch_sizes else chunks[0]}, "
                   f"{forward_flops(workload) / 1e6:.2f} MFLOP per image forward")
    if args.backend == "cupy":
        settings = "; ".join(f"{name}: conv {p['conv']}, matmul {p['matmul']}" for name, p in precisions.items())
        out.append(f"- torch TF32 ({args.torch_tf32}): {settings}")
    for heap in heaps:
        label = ("glibc default heap (large blocks mmapped and unmapped per batch)" if heap == "default"
                 else "pre-grown heap (mallopt M_MMAP_THRESHOLD=1 GiB, M_TRIM_THRESHOLD=2 GiB)")
        out += ["", f"## Throughput, {label}", "", _fmt_table(tables[heap], memory)]
    if memory and args.backend == "cupy":
        out += ["", "Peak MiB: the most GPU memory in use at once during one call (train: one epoch; infer: one "
                "predict pass) above what was in use before it, in this process (CuPy: a hook on its memory pool; "
                "torch with its default TF32 setting: max_memory_allocated after reset_peak_memory_stats)."]
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
