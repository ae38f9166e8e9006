"""backends.geometry against brute-force enumeration of where a sliding window lands."""

import itertools

from backends.geometry import kernel_offsets, output_hw, spread, window


def positions(size, kernel, stride, before=0, after=0):
    """Start of every window along one padded axis, by walking it."""
    starts, start = [], 0
    while start + kernel <= size + before + after:
        starts.append(start)
        start += stride
    return starts


def test_output_hw_counts_the_windows_that_fit():
    for h, w, kh, kw, sh, sw, top, bottom, left, right in itertools.product(
        (1, 4, 7), (3, 8), (1, 2, 3), (1, 3), (1, 2), (1, 3), (0, 1), (0, 2), (0, 1), (0, 3)
    ):
        if kh > h + top + bottom or kw > w + left + right:
            continue
        want = (len(positions(h, kh, sh, top, bottom)), len(positions(w, kw, sw, left, right)))
        assert output_hw((h, w), (kh, kw), (sh, sw), ((top, bottom), (left, right))) == want


def test_kernel_offsets_pick_the_input_under_each_output():
    for kh, kw, sh, sw, oh, ow in itertools.product((1, 2, 3), (1, 3), (1, 2), (1, 3), (1, 4), (2, 5)):
        offsets = kernel_offsets((kh, kw), (sh, sw), (oh, ow))
        assert [(i, j) for i, j, _, _ in offsets] == [(i, j) for i in range(kh) for j in range(kw)]
        height, width = (oh - 1) * sh + kh, (ow - 1) * sw + kw
        for i, j, rows, cols in offsets:
            assert list(range(height)[rows]) == [y * sh + i for y in range(oh)]
            assert list(range(width)[cols]) == [x * sw + j for x in range(ow)]
            assert rows == window(i, sh, oh) and cols == window(j, sw, ow)


def test_spread_places_every_value_that_fits_and_only_those():
    for count, stride, start, size in itertools.product(range(6), range(1, 4), range(-7, 8), range(10)):
        want = [(y, start + y * stride) for y in range(count) if 0 <= start + y * stride < size]
        source, target = spread(count, stride, start, size)
        assert list(zip(range(count)[source], range(size)[target])) == want
        assert len(range(count)[source]) == len(range(size)[target])
