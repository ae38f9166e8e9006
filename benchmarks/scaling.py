"""Data-parallel scaling of workload B: per-step compute and all-reduce time on 1 and N processes, and a model.

    python benchmarks/scaling.py                          # 1 and 2 processes (needs mpi4py and mpiexec)
    python benchmarks/scaling.py --processes 1 2 4 --steps 60
    python benchmarks/scaling.py --backend cupy --processes 1    # GPU compute time per step, for the model

Two networks: workload B (LeNet, SPEC: Conv 1->16, MaxPool, Conv 16->32, MaxPool,
FC 128, Output 10; batch 128, float32, Adam(1e-3)) and the same with a 6330-node
dense layer (10 million parameters). Every point runs in fresh processes
(``mpiexec -n N python scaling.py --worker``) with one BLAS thread each (``--threads``):
the same resources per process, and no spinning BLAS threads on a shared machine.
Each process trains on its share of every global batch of 128 and, per step,
times

* compute: forward and backward on its share, the flat gradient, the update;
* all-reduce: the sum of the flat float32 gradient over the processes, after a
  barrier, so that it is the transfer alone, not the wait for a slower process;

(the slowest process's median counts), and separately the wall time of plain
steps (no barrier), as ``fit`` runs them. Then the analytic model of
:func:`allreduce_seconds` predicts the efficiency on 8 and 64 GPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench import build_nncore, make_data  # noqa: E402  (workload B, its data)

BATCH = 128
WIDE_NODES = 6330  # the dense layer that makes LeNet a 10-million-parameter network
NETWORKS = {"lenet": "workload B (LeNet)", "lenet-10M": f"LeNet with FC {WIDE_NODES}"}

# ---- the analytic model ---------------------------------------------------------------------------
# Interconnects assumed for the prediction: (description, NCCL all-reduce bus bandwidth in bytes/s,
# latency of one all-reduce in s). Bus bandwidth as nccl-tests defines it for all_reduce_perf
# (busbw = algbw * 2(p-1)/p, large messages). See benchmarks/RESULTS.md, "Scaling", for the sources.
# Measured GPU steps of workload B at batch 128 on an NVIDIA H200 (issue 11; RESULTS.md, "GPU"):
# nncore on CuPy 13.9k images/s, PyTorch 61k images/s.
GPU_STEPS = (("nncore-CuPy", 128 / 13.9e3), ("PyTorch's speed", 128 / 61e3))
GPU_FLOPS = 10e12  # assumed sustained float32 FLOP/s for the 10M network's extra dense-layer work
INTERCONNECTS = (
    (8, "8 GPUs, one node, NVLink 4 + NVSwitch", 360e9, 20e-6),
    (64, "64 GPUs, 8 nodes, a 400 Gb/s NIC per GPU", 340e9, 60e-6),
    (64, "64 GPUs, 8 nodes, one 400 Gb/s NIC per node", 45e9, 60e-6),
)


def allreduce_seconds(n_bytes, processes, bus_bandwidth, latency):
    """Ring all-reduce time: each process sends and receives ``2 (p - 1) / p`` of the buffer, plus latency."""
    if processes == 1:
        return 0.0
    return 2 * (processes - 1) / processes * n_bytes / bus_bandwidth + latency


def step_flops(network):
    """Floating-point operations of one training step on a batch of 128: 3x the forward pass (SPEC's count)."""
    from bench import forward_flops

    extra = 2 * (1568 + 10) * (WIDE_NODES - 128) if network == "lenet-10M" else 0  # the wider dense layer
    return 3 * BATCH * (forward_flops("B") + extra)


def gpu_compute_seconds(network, lenet_step):
    """GPU step time: the measured LeNet step plus the network's extra FLOPs at :data:`GPU_FLOPS`."""
    return lenet_step + (step_flops(network) - step_flops("lenet")) / GPU_FLOPS


def efficiency(compute_seconds, n_bytes, processes, bus_bandwidth, latency):
    """Weak scaling (the per-process batch stays fixed): useful time over step time, no overlap.

    nncore reduces one flat gradient after the whole backward pass, so nothing of
    the all-reduce hides behind computation.
    """
    return compute_seconds / (compute_seconds + allreduce_seconds(n_bytes, processes, bus_bandwidth, latency))


# ---- one process of a point --------------------------------------------------------------------------


def build(network, backend):
    cnn = build_nncore("B", backend=backend)
    if network == "lenet-10M":
        from nncore import RELU, softmax

        # Same convolutions, a wider dense layer: rebuild the head, then the whole net for 28x28 inputs.
        del cnn.layers[-2:]
        cnn.add_FullyConnectedLayer(WIDE_NODES, RELU)
        cnn.add_OutputLayer(10, softmax)
        cnn.predict_proba(np.zeros((1, 1, 28, 28), np.float32))
    return cnn


def worker(args):
    from nncore import distributed

    comm = distributed.world()
    parallel = None if comm is None else distributed.DataParallel(comm, args.backend)
    rank, size = (0, 1) if parallel is None else (parallel.rank, parallel.size)
    cnn = build(args.network, args.backend)
    be, params = cnn.backend, cnn.parameters
    X, t, _ = make_data(BATCH * (args.steps + args.warmup), 28)
    X, t = be.asarray(X), be.asarray(t)
    lo, hi = (0, BATCH) if parallel is None else parallel.share(0, BATCH)

    def compute(step):
        start = step * BATCH
        output = cnn._feedforward(X[start + lo : start + hi], training=True)
        cnn._backpropagate(t[start + lo : start + hi])
        gradient = params.gradient() * ((hi - lo) / BATCH)
        be.synchronize()
        return gradient

    def clock():
        be.synchronize()
        return time.perf_counter()

    computing, reducing = [], []
    for step in range(args.warmup + args.steps):
        begin = clock()
        gradient = compute(step)
        computed = clock()
        if parallel is not None:
            parallel.barrier()
            reduce_start = clock()
            gradient = parallel.allreduce(gradient)
            reducing.append(clock() - reduce_start)
        update_start = clock()
        params.step(gradient)
        computing.append(computed - begin + clock() - update_start)
    computing, reducing = computing[args.warmup :], reducing[args.warmup :]

    # Plain steps, as fit takes them: no barrier, the all-reduce waits for the slowest process.
    begin = clock()
    for step in range(args.steps):
        gradient = compute(step)
        if parallel is not None:
            gradient = parallel.allreduce(gradient)
        params.step(gradient)
    step_seconds = (clock() - begin) / args.steps

    mine = {"compute": statistics.median(computing), "allreduce": statistics.median(reducing) if reducing else 0.0,
            "step": step_seconds}
    transport = "none" if parallel is None else parallel.transport  # collective (CuPy): on every process
    everyone = [mine] if comm is None else comm.gather(mine, root=0)
    if rank == 0:
        print(json.dumps({
            "network": args.network, "processes": size, "backend": be.name, "params": int(params.size),
            "gradient_bytes": int(params.size) * np.dtype(np.float32).itemsize, "share": hi - lo,
            "threads": os.environ.get("OMP_NUM_THREADS"),
            "transport": transport,
            **{key: max(r[key] for r in everyone) for key in mine},
        }))


# ---- the driver -----------------------------------------------------------------------------------


def run_point(args, network, processes):
    """One (network, processes) point in fresh processes; returns the worker's JSON record."""
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    steps = args.steps if network == "lenet" else max(3, args.steps // 5)
    command = [sys.executable, __file__, "--worker", "--network", network, "--backend", args.backend,
               "--steps", str(steps), "--warmup", str(args.warmup)]
    if processes > 1:
        mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
        if mpiexec is None:
            sys.exit("scaling.py: mpiexec not found; pip install 'nncore-cnn[mpi]'")
        command = [mpiexec, "-n", str(processes), *command]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"scaling.py: {' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def measured_table(records):
    lines = ["| network | params | processes | threads each | share of 128 | compute ms/step | all-reduce ms | "
             "all-reduce share | step ms (plain) | img/s | speed-up |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        alone = next(a for a in records if a["network"] == r["network"] and a["processes"] == 1)
        ms = {key: 1e3 * r[key] for key in ("compute", "allreduce", "step")}
        lines.append(
            f"| {NETWORKS[r['network']]} | {r['params']:,} | {r['processes']} | {r['threads']} | {r['share']} | "
            f"{ms['compute']:.2f} | {ms['allreduce']:.3f} | {r['allreduce'] / (r['compute'] + r['allreduce']):.1%} | "
            f"{ms['step']:.2f} | {BATCH / r['step']:,.0f} | {alone['step'] / r['step']:.2f}x |")
    return "\n".join(lines)


def model_table(records):
    names = [name for name, _ in GPU_STEPS]
    lines = ["| network | gradient MB | interconnect | all-reduce ms | "
             + " | ".join(f"efficiency, {name} step" for name in names) + " | efficiency, this run's step |",
             "|---|---:|---|---:|" + "---:|" * (len(names) + 1)]
    for r in (r for r in records if r["processes"] == 1):
        steps = [gpu_compute_seconds(r["network"], lenet_step) for _, lenet_step in GPU_STEPS] + [r["compute"]]
        for processes, description, bandwidth, latency in INTERCONNECTS:
            seconds = allreduce_seconds(r["gradient_bytes"], processes, bandwidth, latency)
            cells = [f"{efficiency(step, r['gradient_bytes'], processes, bandwidth, latency):.1%} "
                     f"({1e3 * step:.2f} ms)" for step in steps]
            lines.append(f"| {NETWORKS[r['network']]} | {r['gradient_bytes'] / 1e6:.2f} | {description} | "
                         f"{1e3 * seconds:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--networks", nargs="+", choices=sorted(NETWORKS), default=sorted(NETWORKS))
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--steps", type=int, default=40, help="timed steps (the 10M network: a fifth)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads per process (default 1)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--network", default="lenet", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if 1 not in args.processes:
        args.processes = [1, *args.processes]  # speed-ups and the model need the one-process point
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = os.getloadavg()
    records = [run_point(args, network, processes) for network in args.networks for processes in args.processes]
    print(f"- date: {started}; cpus: {os.cpu_count()}; backend: {args.backend}; 1-min load before/after: "
          f"{load[0]:.2f}/{os.getloadavg()[0]:.2f}")
    print(f"- command: python benchmarks/scaling.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print(f"- transports: {sorted({r['transport'] for r in records if r['processes'] > 1}) or 'none'}\n")
    print(measured_table(records))
    print("\nPredicted data-parallel efficiency (weak scaling: batch 128 per GPU; ring all-reduce of the float32 "
          "gradient after the backward pass, no overlap):\n")
    print(model_table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
