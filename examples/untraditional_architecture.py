"""The course's "untraditional architecture" example, unchanged, on nncore.

A 7x1 convolution into 7 feature maps, average then max pooling (2x2,
stride 1), a 4x4 convolution with asymmetric stride (2, 3) written as the
readable direct sum (``optimized=False``), a 2x2 sigmoid convolution, more
max pooling, then dense layers of 100 (LRELU), 10 (sigmoid) and 101
(identity) nodes and a 10-node softmax output.

The architecture is meant for 28x28 MNIST images: pass ``--data-dir`` with the
IDX files. Without it, scikit-learn's 8x8 digits are resized to 28x28 by
nearest-neighbour upsampling (each pixel becomes a 3x3 or 4x4 block, since
28 / 8 = 3.5), which is enough to show the network learning.

    python examples/untraditional_architecture.py                 # digits upsampled, ~1 min
    python examples/untraditional_architecture.py --data-dir DIR  # 10000 MNIST images
"""

import sys

from sklearn.model_selection import train_test_split

from _shared import Timer, load_images, parser, report_training, use_agg_unless_interactive
from nncore import CNN, LRELU, Adam, CostCrossEntropy, identity, sigmoid, softmax


def untraditional_cnn(seed=2023, backend=None):
    """The notes' second architecture, in the course API."""
    adam_scheduler = Adam(eta=1e-3, rho=0.9, rho2=0.999)
    cnn = CNN(cost_func=CostCrossEntropy, scheduler=adam_scheduler, seed=seed, backend=backend)

    cnn.add_Convolution2DLayer(
        input_channels=1,
        feature_maps=7,
        kernel_height=7,
        kernel_width=1,
        act_func=LRELU,
    )
    cnn.add_PoolingLayer(
        kernel_height=2,
        kernel_width=2,
        pooling="average",
    )
    cnn.add_PoolingLayer(
        kernel_height=2,
        kernel_width=2,
        pooling="max",
    )
    cnn.add_Convolution2DLayer(
        input_channels=7,
        feature_maps=1,
        kernel_height=4,
        kernel_width=4,
        v_stride=2,
        h_stride=3,
        act_func=LRELU,
        optimized=False,
    )
    cnn.add_Convolution2DLayer(
        input_channels=1,
        feature_maps=1,
        kernel_height=2,
        kernel_width=2,
        act_func=sigmoid,
        optimized=True,
    )
    cnn.add_PoolingLayer(
        kernel_height=2,
        kernel_width=2,
        pooling="max",
    )
    cnn.add_FlattenLayer()
    cnn.add_FullyConnectedLayer(100, LRELU)
    cnn.add_FullyConnectedLayer(10, sigmoid)
    cnn.add_FullyConnectedLayer(101, identity)
    cnn.add_OutputLayer(10, softmax)
    return cnn


def main(argv=None):
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    use_agg_unless_interactive()
    epochs = 3 if args.quick else 60
    X, t, data_name = load_images(args.data_dir, n=300 if args.quick else 10000, size=28)

    cnn = untraditional_cnn(args.seed, args.backend)
    x_train, x_val, y_train, y_val = train_test_split(X, t, random_state=args.seed, stratify=t.argmax(axis=1))
    cnn.summary(input_shape=x_train.shape[1:])

    with Timer() as timer:
        scores = cnn.fit(x_train, y_train, lam=1e-5, batches=10, epochs=epochs, X_val=x_val, t_val=y_val)

    report_training(cnn, scores, len(x_train), x_val, y_val, epochs, timer.seconds, data_name,
                    "Untraditional CNN: accuracy per epoch", args.out / "untraditional_accuracy.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
