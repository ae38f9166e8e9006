"""The course's first CNN usage example, unchanged, on nncore.

One 3x3 convolution (1 feature map, LRELU), a flatten layer, dense layers of
30 and 20 LRELU nodes and a 10-node softmax output, trained with Adam
(eta=1e-3) for 100 epochs of 10 minibatches with lam=1e-5; then the
accuracy-vs-epoch plot.

The notes train on 10000 MNIST images from OpenML. This machine-independent
version uses MNIST when ``--data-dir`` points at the IDX files and otherwise
scikit-learn's bundled 8x8 digits (the network works on any image size).

    python examples/course_quickstart.py                 # digits, ~3 s
    python examples/course_quickstart.py --data-dir DIR  # 10000 MNIST images
"""

import sys

from sklearn.model_selection import train_test_split

from _shared import Timer, load_images, parser, report_training, use_agg_unless_interactive
from nncore import CNN, LRELU, Adam, CostCrossEntropy, softmax


def main(argv=None):
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    use_agg_unless_interactive()
    epochs = 5 if args.quick else 100
    X, t, data_name = load_images(args.data_dir, n=500 if args.quick else 10000)

    # ---- the course code, as in the notes ----
    adam_scheduler = Adam(eta=1e-3, rho=0.9, rho2=0.999)
    cnn = CNN(cost_func=CostCrossEntropy, scheduler=adam_scheduler, seed=args.seed,
              backend=args.backend)

    cnn.add_Convolution2DLayer(
        input_channels=1,
        feature_maps=1,
        kernel_height=3,
        kernel_width=3,
        act_func=LRELU,
    )
    cnn.add_FlattenLayer()
    cnn.add_FullyConnectedLayer(30, LRELU)
    cnn.add_FullyConnectedLayer(20, LRELU)
    cnn.add_OutputLayer(10, softmax)

    # split into training and validation data (the notes' default 75/25 split)
    x_train, x_val, y_train, y_val = train_test_split(X, t, random_state=args.seed, stratify=t.argmax(axis=1))

    with Timer() as timer:
        scores = cnn.fit(
            x_train,
            y_train,
            lam=1e-5,
            batches=10,
            epochs=epochs,
            X_val=x_val,
            t_val=y_val,
        )
    # ---- end of the course code ----

    cnn.summary()
    report_training(cnn, scores, len(x_train), x_val, y_val, epochs, timer.seconds, data_name,
                    "Course quickstart CNN: accuracy per epoch", args.out / "course_quickstart_accuracy.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
