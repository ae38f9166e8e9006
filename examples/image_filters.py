"""The course's image-filtering demo: Gaussian blur, Sobel edges, and three ways to convolve.

On scikit-learn's bundled photograph ``china.jpg`` (427 x 640 pixels, made
grey), with :mod:`nncore.filters`:

1. a figure of the original, a Gaussian blur, and the Sobel edge magnitude
   ``sqrt(Gx**2 + Gy**2)`` of the original and of the blurred image;
2. a timing table of ``convolve2d`` by direct summation (one shifted copy of
   the image per kernel entry), by separable 1-D passes (a Gaussian is the
   outer product of two 1-D Gaussians) and by FFT, for growing Gaussian
   kernels, with the largest difference from the direct result.

    python examples/image_filters.py           # ~6 s
    python examples/image_filters.py --quick   # a 128x128 crop, two kernel sizes

Writes ``image_filters.png``, ``filter_timings.png``, ``filter_timings.csv``
and ``filter_timings.md`` to ``--out``. Loading the JPEG needs Pillow, which
matplotlib already depends on.
"""

import sys
import time

import numpy as np

from _shared import parser, use_agg_unless_interactive
from nncore.filters import convolve2d, gaussian_kernel, sobel_kernels

METHODS = ("direct", "separable", "fft")


def grey_photo():
    """``china.jpg`` as a float64 grey image in [0, 1] (ITU-R BT.601 luma weights)."""
    from sklearn.datasets import load_sample_image

    rgb = load_sample_image("china.jpg").astype(np.float64) / 255.0
    return rgb @ np.array([0.299, 0.587, 0.114])


def edge_magnitude(image):
    """Sobel gradient magnitude ``sqrt(Gx**2 + Gy**2)``."""
    gx, gy = sobel_kernels()
    return np.hypot(convolve2d(image, gx), convolve2d(image, gy))


def best_time(func, min_total=0.2, max_repeats=5):
    """The fastest of up to ``max_repeats`` runs (stopping once ``min_total`` seconds are spent)."""
    times = []
    while len(times) < max_repeats and sum(times) < min_total:
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return min(times), result


def timing_table(image, sizes):
    """One row per kernel size: seconds per method and the largest deviation from "direct"."""
    rows = []
    for size in sizes:
        kernel = gaussian_kernel((size - 1) / 6, size=size)  # +-3 sigma inside the kernel
        seconds, results = {}, {}
        for method in METHODS:
            seconds[method], results[method] = best_time(lambda: convolve2d(image, kernel, "same", method))
        rows.append({
            "kernel": f"{size}x{size}",
            "size": size,
            **{f"{m}_ms": 1e3 * seconds[m] for m in METHODS},
            "separable_speedup": seconds["direct"] / seconds["separable"],
            "fft_speedup": seconds["direct"] / seconds["fft"],
            "max_abs_diff_separable": float(np.max(np.abs(results["separable"] - results["direct"]))),
            "max_abs_diff_fft": float(np.max(np.abs(results["fft"] - results["direct"]))),
        })
    return rows


def write_tables(rows, image_shape, out):
    csv = out / "filter_timings.csv"
    keys = [k for k in rows[0] if k != "kernel"]
    with open(csv, "w") as f:
        f.write(",".join(keys) + "\n")
        for row in rows:
            f.write(",".join(f"{row[k]:.6g}" for k in keys) + "\n")
    header = ("| kernel | direct (ms) | separable (ms) | FFT (ms) | separable speed-up | FFT speed-up "
              "| max abs diff separable | max abs diff FFT |")
    lines = [f"Gaussian blur of a {image_shape[0]}x{image_shape[1]} float64 image with "
             "`nncore.filters.convolve2d(image, kernel, mode=\"same\", method=...)`; best of up to 5 runs.", "",
             header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['kernel']} | {r['direct_ms']:.2f} | {r['separable_ms']:.2f} | {r['fft_ms']:.2f} "
                     f"| {r['separable_speedup']:.1f}x | {r['fft_speedup']:.1f}x "
                     f"| {r['max_abs_diff_separable']:.1e} | {r['max_abs_diff_fft']:.1e} |")
    md = out / "filter_timings.md"
    md.write_text("\n".join(lines) + "\n")
    return csv, md, "\n".join(lines[2:])


def plot_filters(image, blurred, sigma, edges, edges_blurred, path):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8.2), layout="constrained")
    panels = [
        (image, "Original (grey)", "intensity", (0, 1)),
        (blurred, f"Gaussian blur, $\\sigma$ = {sigma} px", "intensity", (0, 1)),
        (edges, "Sobel edge magnitude of the original", "gradient magnitude", None),
        (edges_blurred, f"Sobel edge magnitude after the blur ($\\sigma$ = {sigma} px)", "gradient magnitude", None),
    ]
    for ax, (data, title, label, limits) in zip(axes.flat, panels):
        vmin, vmax = limits if limits else (0, np.percentile(data, 99.5))
        im = ax.imshow(data, cmap="gray" if limits else "magma", vmin=vmin, vmax=vmax)
        ax.set_title(title)
        ax.set_xlabel("column (px)")
        ax.set_ylabel("row (px)")
        fig.colorbar(im, ax=ax, label=label, shrink=0.85)
    fig.suptitle("Image filtering with nncore.filters.convolve2d on scikit-learn's china.jpg")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_timings(rows, image_shape, path):
    import matplotlib.pyplot as plt

    sizes = [r["size"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    for method, marker in zip(METHODS, "osd"):
        ax.plot(sizes, [r[f"{method}_ms"] for r in rows], marker=marker, label=method)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sizes, [f"{s}" for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("kernel side k (a k x k Gaussian)")
    ax.set_ylabel("time per convolution (ms)")
    ax.set_title(f"convolve2d on a {image_shape[0]}x{image_shape[1]} image: direct vs separable vs FFT")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    args = parser(__doc__.splitlines()[0], data=False, backend=False).parse_args(argv)
    use_agg_unless_interactive()
    image = grey_photo()
    sizes = (3, 5, 9, 17, 33, 65)
    sigma = 4
    if args.quick:
        image, sizes, sigma = image[150:278, 250:378], (3, 9), 2
    args.out.mkdir(parents=True, exist_ok=True)

    gauss = gaussian_kernel(sigma)
    blurred = convolve2d(image, gauss, method="separable")
    figure = plot_filters(image, blurred, sigma, edge_magnitude(image), edge_magnitude(blurred),
                          args.out / "image_filters.png")
    print(f"image {image.shape[0]}x{image.shape[1]}; Gaussian kernel {gauss.shape[0]}x{gauss.shape[1]} "
          f"(sigma {sigma} px)")

    rows = timing_table(image, sizes)
    csv, md, table = write_tables(rows, image.shape, args.out)
    print(table)
    for path in (figure, plot_timings(rows, image.shape, args.out / "filter_timings.png"), csv, md):
        print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
