"""The text of :meth:`nncore.CNN.summary`: layers, output shapes and parameter counts (as Keras prints)."""

from backends import dtype_name

from .validation import check_positive_int


def summary_table(model, input_shape=None):
    """The summary of ``model`` for per-sample ``input_shape`` (default: the shape it was built for)."""
    if input_shape is None:
        if model.input_shape is None:
            raise ValueError("summary: the CNN is not built yet, so its input shape is unknown; call "
                             "summary(input_shape=(channels, height, width)) with the shape of one sample, "
                             "or fit/predict first")
        input_shape = model.input_shape
    if isinstance(input_shape, int) or not hasattr(input_shape, "__len__"):
        input_shape = (input_shape,)
    input_shape = tuple(check_positive_int("summary: input_shape entries", s) for s in input_shape)
    if not model.layers:
        raise ValueError("summary: the CNN has no layers")
    shapes = model._output_shapes(input_shape)
    rows, total, shape = [], 0, input_shape
    for layer, out in zip(model.layers, shapes):
        count = layer.n_params(shape)
        total += count
        rows.append((f"{layer.position} {type(layer).__name__}", str((None, *out)), f"{count:,}", layer.describe()))
        shape = out
    header = ("Layer (type)", "Output Shape", "Param #", "Details")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]

    def line(row):
        return "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()

    rule = sum(widths) + 6
    lines = [f"CNN: backend {model.backend.name}, dtype {dtype_name(model.dtype)}, "
             f"input shape {(None, *input_shape)}", "_" * rule, line(header), "=" * rule]
    lines += [line(row) for row in rows]
    complete = model.pred_format is not None
    lines += ["=" * rule, f"Total params: {total:,}", f"Trainable params: {total:,}", "Non-trainable params: 0",
              f"Cost: {getattr(model.cost_func, '__name__', model.cost_func)}; scheduler: {model.scheduler!r}"
              + ("" if complete else "; no OutputLayer yet"), "_" * rule]
    return "\n".join(lines)
