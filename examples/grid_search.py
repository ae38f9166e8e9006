"""The course's learning-rate x L2-penalty grid search, with GridSearchCV on CNNClassifier.

The notes build a Keras CNN for every (eta, lambda) pair on the 8x8 digits --
a 3x3 convolution into 10 feature maps (ReLU, no padding), 2x2 max pooling, a
50-node ReLU layer, a softmax output, plain SGD, 100 epochs of batch 100 --
and draw the training and test accuracies as two heat maps. Here the loop is
scikit-learn's ``GridSearchCV`` over ``CNNClassifier(eta=..., lam=...)``:
each cell is the mean over 3 cross-validation folds of the training split;
the best cell is then refitted on the whole training split and scored on the
held-out test split.

Cells whose training diverged (the loss became NaN or infinite: nncore stops
with ``TrainingDivergedError``) are drawn grey and marked "div."

    python examples/grid_search.py            # 7 x 7 grid, ~1.5 min on 2 cores
    python examples/grid_search.py --quick    # 2 x 2 grid, a few seconds

Writes ``grid_search_train.png``, ``grid_search_test.png`` and
``grid_search.csv`` to ``--out``.
"""

import sys
import warnings

import numpy as np
from sklearn.exceptions import FitFailedWarning
from sklearn.model_selection import GridSearchCV, train_test_split

from _shared import Timer, parser, use_agg_unless_interactive
from nncore.datasets import load_digits
from nncore.estimator import CNNClassifier

# The notes' Keras network: Conv2D(10, 3x3, relu) [no padding], MaxPooling2D(2x2), Flatten, Dense(50, relu),
# Dense(10, softmax) -- the output layer is added by CNNClassifier.
KERAS_LAYERS = [
    ("conv", {"feature_maps": 10, "kernel_height": 3, "kernel_width": 3, "pad": "valid", "act_func": "relu"}),
    ("pool", {"kernel_height": 2, "kernel_width": 2, "v_stride": 2, "h_stride": 2}),
    "flatten",
    ("dense", {"nodes": 50, "act_func": "relu"}),
]


def heatmap(values, eta_vals, lmbd_vals, title, path):
    """An annotated accuracy heat map: eta down the rows, lambda across the columns."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6.5), layout="constrained")
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")  # NaN (diverged) cells
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=1, origin="upper")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            value = values[i, j]
            text, colour = ("div.", "black") if np.isnan(value) else (f"{value:.2f}",
                                                                      "black" if value > 0.6 else "white")
            ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=10)
    ax.set_xticks(range(len(lmbd_vals)), [f"{v:g}" for v in lmbd_vals])
    ax.set_yticks(range(len(eta_vals)), [f"{v:g}" for v in eta_vals])
    ax.set_xlabel(r"$\lambda$ (L2 penalty)")
    ax.set_ylabel(r"$\eta$ (learning rate)")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="accuracy")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    p = parser(__doc__.splitlines()[0], data=False)
    p.add_argument("--epochs", type=int, default=None, help="epochs per fit (default 50, --quick 3)")
    p.add_argument("--cv", type=int, default=3, help="cross-validation folds (default 3)")
    p.add_argument("--jobs", type=int, default=2, help="parallel fits (GridSearchCV n_jobs; default 2)")
    args = p.parse_args(argv)
    use_agg_unless_interactive()

    X, t = load_digits()
    y = t.argmax(axis=1)
    X_train, X_test, y_train, y_test = train_test_split(X, y, train_size=0.8, random_state=args.seed, stratify=y)
    if args.quick:
        eta_vals, lmbd_vals = np.array([1e-2, 1.0]), np.array([1e-5, 1.0])
        X_train, y_train, epochs, cv, jobs = X_train[:300], y_train[:300], args.epochs or 3, 2, 1
    else:
        eta_vals, lmbd_vals = np.logspace(-5, 1, 7), np.logspace(-5, 1, 7)
        epochs, cv, jobs = args.epochs or 50, args.cv, args.jobs

    cnn = CNNClassifier(KERAS_LAYERS, scheduler="sgd", epochs=epochs, batch_size=100, random_state=args.seed,
                        backend=args.backend)
    search = GridSearchCV(cnn, {"eta": list(eta_vals), "lam": list(lmbd_vals)}, cv=cv, n_jobs=jobs,
                          return_train_score=True, error_score=np.nan)
    print(f"{len(eta_vals)} x {len(lmbd_vals)} grid, {cv}-fold CV on {len(X_train)} digits, {epochs} epochs "
          f"of SGD per fit, {jobs} parallel job(s)")
    with Timer() as timer, warnings.catch_warnings():
        warnings.simplefilter("ignore", FitFailedWarning)  # diverged fits: counted and drawn below
        warnings.simplefilter("ignore", UserWarning)  # "one or more of the test scores are non-finite"
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's overflow warnings in the diverging fits
        search.fit(X_train, y_train)

    # cv_results_ lists the cells with the last parameter (lam) varying fastest.
    shape = (len(eta_vals), len(lmbd_vals))
    train_accuracy = np.asarray(search.cv_results_["mean_train_score"], dtype=float).reshape(shape)
    test_accuracy = np.asarray(search.cv_results_["mean_test_score"], dtype=float).reshape(shape)
    assert np.allclose(np.asarray(search.cv_results_["param_eta"], dtype=float).reshape(shape)[:, 0], eta_vals)

    print(f"fitted {len(eta_vals) * len(lmbd_vals) * cv + 1} networks in {timer.seconds:.1f} s")
    print(f"diverged cells: {int(np.isnan(test_accuracy).sum())} of {test_accuracy.size}")
    print("cross-validated test accuracy (rows: eta, columns: lambda):")
    print("eta \\ lambda " + " ".join(f"{v:>7g}" for v in lmbd_vals))
    for eta, row in zip(eta_vals, test_accuracy):
        print(f"{eta:>12g} " + " ".join("   div." if np.isnan(v) else f"{v:7.3f}" for v in row))
    best = search.best_params_
    print(f"best: eta={best['eta']:g}, lambda={best['lam']:g}, CV accuracy {search.best_score_:.4f}")
    print(f"test accuracy of the refitted best model on {len(X_test)} held-out digits: "
          f"{search.score(X_test, y_test):.4f}")

    args.out.mkdir(parents=True, exist_ok=True)
    folds = f"{cv}-fold CV on the digits, {epochs} epochs of SGD, batch 100"
    paths = [
        heatmap(train_accuracy, eta_vals, lmbd_vals, f"Training accuracy (mean over the training folds)\n{folds}", args.out / "grid_search_train.png"),
        heatmap(test_accuracy, eta_vals, lmbd_vals, f"Test accuracy (mean over the held-out folds)\n{folds}", args.out / "grid_search_test.png"),
    ]
    csv = args.out / "grid_search.csv"
    with open(csv, "w") as f:
        f.write("eta,lambda,mean_train_accuracy,mean_test_accuracy\n")
        for i, eta in enumerate(eta_vals):
            for j, lam in enumerate(lmbd_vals):
                f.write(f"{eta:g},{lam:g},{train_accuracy[i, j]:.4f},{test_accuracy[i, j]:.4f}\n")
    for path in [*paths, csv]:
        print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
