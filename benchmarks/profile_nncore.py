"""Profile nncore alone on a SPEC workload with cProfile (where does the time go?).

    python benchmarks/profile_nncore.py B train            # fit: 2 epochs of 16 batches of 128
    python benchmarks/profile_nncore.py A infer --top 15   # predict_proba: 3 x 12,000 images
    python benchmarks/profile_nncore.py B train --generic  # the generic array-API code (fast paths off)
    python benchmarks/profile_nncore.py A infer --layers   # wall clock per layer, no cProfile
    python benchmarks/profile_nncore.py B infer --layers --chunk-bytes 1048576   # a fast-path knob

cProfile adds a cost to every Python call, so functions that make many small
calls look slower than they are; use bench.py for wall-clock figures.
"""

import argparse
import cProfile
import os
import pstats
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=("A", "B"))
    parser.add_argument("mode", choices=("train", "infer"))
    parser.add_argument("--top", type=int, default=20, help="how many functions to list (cProfile)")
    parser.add_argument("--generic", action="store_true", help="NNCORE_FAST_PATHS=0")
    parser.add_argument("--layers", action="store_true",
                        help="wall clock per layer instead of cProfile (inference only)")
    # The NumPy fast paths' knobs (benchmarks/FAST_PATHS.md says what each was measured at).
    parser.add_argument("--threads", type=int, help="NNCORE_NUM_THREADS: threads that share each op")
    parser.add_argument("--chunk-bytes", type=int, help="work arrays per chunk of samples (default 4 MiB)")
    parser.add_argument("--no-recycle", action="store_true", help="fresh result arrays every call")
    args = parser.parse_args(argv)
    if args.layers and args.mode != "infer":
        parser.error("--layers times inference only")
    if args.generic:
        os.environ["NNCORE_FAST_PATHS"] = "0"

    import bench  # puts the repository first on sys.path
    from backends.numpy_fast import buffers, threads

    if args.threads is not None:
        threads.WORKERS = args.threads
    if args.chunk_bytes is not None:
        threads.COL_CHUNK_BYTES = args.chunk_bytes
    if args.no_recycle:
        buffers.RECYCLE = False

    batch = bench.WORKLOADS[args.workload][1]
    cnn = bench.build_nncore(args.workload)
    X, t, _ = bench.make_data(batch * 16, 28)
    cnn.fit(X[:batch], t[:batch], epochs=1, batch_size=batch, verbose=False)  # warm up
    if args.layers:
        return layer_times(cnn, X)
    profiler = cProfile.Profile()
    profiler.enable()
    if args.mode == "train":
        cnn.fit(X, t, epochs=2, batch_size=batch, verbose=False)
    else:
        for _ in range(3):
            cnn.predict_proba(X)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)
    return 0


def layer_times(cnn, X, passes=20, chunk=1024):
    """Median wall-clock ms per ``chunk`` images of each step of ``predict_proba``'s loop."""
    import statistics
    import time

    names = ["input check"] + [layer.label for layer in cnn.layers]
    seconds = {name: [] for name in names + ["whole pass"]}
    for _ in range(passes + 2):  # the first two passes warm up
        spent = dict.fromkeys(names, 0.0)
        begin = time.perf_counter()
        for start in range(0, X.shape[0], chunk):
            tick = time.perf_counter()
            a = cnn._inputs(X[start : start + chunk], method="predict")
            spent["input check"] += time.perf_counter() - tick
            for layer in cnn.layers:
                tick = time.perf_counter()
                a = layer.forward(a)
                spent[layer.label] += time.perf_counter() - tick
        spent["whole pass"] = time.perf_counter() - begin
        for name, value in spent.items():
            seconds[name].append(value)
    per_chunk = 1e3 * chunk / X.shape[0]
    for name, values in seconds.items():
        print(f"{name:>40}: {statistics.median(values[2:]) * per_chunk:7.3f} ms per {chunk} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
