"""Costs against their formulas; gradients and output deltas against central differences."""

import warnings

import numpy as np
import pytest
import scipy.special

from backends import to_numpy
from nncore import activations, costs
from nncore.activations import LRELU, identity, sigmoid, softmax, tanh
from nncore.costs import CostCrossEntropy, CostLogReg, CostOLS

COSTS = [CostOLS, CostLogReg, CostCrossEntropy]

# The course formulas, written out in float64 (n = number of samples).
FORMULAS = {
    CostOLS: lambda t, X: np.sum((t - X) ** 2) / t.shape[0],
    CostLogReg: lambda t, X: -np.sum(t * np.log(X) + (1 - t) * np.log(1 - X)) / t.shape[0],
    CostCrossEntropy: lambda t, X: -np.sum(t * np.log(X)) / t.shape[0],
}
OUTPUT_FUNCS = {
    identity: lambda z: z,
    sigmoid: scipy.special.expit,
    softmax: lambda z: scipy.special.softmax(z, axis=-1),
    tanh: np.tanh,
}


def targets(rng, cost, shape):
    if cost is CostCrossEntropy:
        return np.eye(shape[1])[rng.integers(0, shape[1], size=shape[0])]
    if cost is CostLogReg:
        return rng.integers(0, 2, size=shape).astype(np.float64)
    return rng.normal(size=shape)


@pytest.mark.parametrize("cost", COSTS, ids=lambda c: c.__name__)
def test_cost_matches_formula(cost, rng):
    t = targets(rng, cost, (6, 4))
    X = rng.uniform(0.05, 0.95, size=(6, 4))
    assert float(cost(t)(X)) == pytest.approx(FORMULAS[cost](t, X), rel=1e-12)


def test_cross_entropy_with_soft_targets(rng):
    t = rng.dirichlet(np.ones(5), size=4)
    X = rng.dirichlet(np.ones(5), size=4)
    assert float(CostCrossEntropy(t)(X)) == pytest.approx(-np.sum(t * np.log(X)) / 4, rel=1e-12)


@pytest.mark.parametrize("cost", COSTS, ids=lambda c: c.__name__)
def test_cost_gradient_matches_central_differences(cost, rng, numgrad):
    t = targets(rng, cost, (5, 3))
    X = rng.uniform(0.1, 0.9, size=(5, 3))
    func = cost(t)
    fd = numgrad(lambda v: FORMULAS[cost](t, v), X)
    np.testing.assert_allclose(func.gradient(X), fd, rtol=1e-6, atol=1e-9)
    # ... and of nncore's own cost value.
    np.testing.assert_allclose(func.gradient(X), numgrad(lambda v: float(func(v)), X), rtol=1e-6, atol=1e-9)


# (output function, cost): the combined closed forms and some generic pairs.
PAIRS = [
    (softmax, CostCrossEntropy),
    (sigmoid, CostLogReg),
    (identity, CostOLS),
    (sigmoid, CostCrossEntropy),
    (softmax, CostOLS),
    (tanh, CostOLS),
    (sigmoid, CostOLS),
]


@pytest.mark.parametrize("output_func,cost", PAIRS, ids=lambda p: p.__name__)
def test_output_delta_matches_central_differences_of_composite(output_func, cost, rng, numgrad):
    z = rng.normal(size=(4, 3))
    t = targets(rng, cost, z.shape)
    a = output_func(z)
    delta = costs.output_delta(cost, output_func, t, z, a)
    fd = numgrad(lambda v: FORMULAS[cost](t, OUTPUT_FUNCS[output_func](v)), z)
    np.testing.assert_allclose(delta, fd, rtol=1e-6, atol=1e-9)


def test_softmax_cross_entropy_delta_is_a_minus_t_over_n(rng):
    z = rng.normal(size=(5, 4))
    t = np.eye(4)[rng.integers(0, 4, size=5)]
    a = softmax(z)
    np.testing.assert_allclose(costs.output_delta(CostCrossEntropy, softmax, t, z, a), (a - t) / 5, rtol=1e-12)


def test_softmax_cross_entropy_delta_for_unnormalised_targets(rng, numgrad):
    # Target rows need not sum to one: the delta is still the exact gradient of -sum(t log softmax(z))/n.
    z = rng.normal(size=(3, 4))
    t = rng.uniform(0, 2, size=(3, 4))
    a = softmax(z)
    fd = numgrad(lambda v: -np.sum(t * np.log(scipy.special.softmax(v, axis=-1))) / 3, z)
    np.testing.assert_allclose(costs.output_delta(CostCrossEntropy, softmax, t, z, a), fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_saturated_outputs_give_exact_finite_deltas(dtype):
    # Softmax/sigmoid saturate at +-1000; the combined deltas stay exact and the costs finite.
    z = np.array([[1000.0, -1000.0], [-1000.0, 1000.0]], dtype=dtype)
    t = np.array([[0.0, 1.0], [0.0, 1.0]], dtype=dtype)
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise"):
        warnings.simplefilter("error")
        a = softmax(z)
        delta = costs.output_delta(CostCrossEntropy, softmax, t, z, a)
        np.testing.assert_allclose(delta, (np.array([[1.0, 0.0], [0.0, 1.0]]) - t) / 2)
        cost = CostCrossEntropy(t)(a)
        assert np.isfinite(cost) and cost > 5  # a confident wrong answer costs a lot (-log(eps)/n)
        s = sigmoid(z)
        delta = costs.output_delta(CostLogReg, sigmoid, t, z, s)
        np.testing.assert_allclose(delta, (np.array([[1.0, 0.0], [0.0, 1.0]]) - t) / 2)
        assert np.isfinite(CostLogReg(t)(s))
        assert np.all(np.isfinite(CostLogReg(t).gradient(s)))
        assert np.all(np.isfinite(CostCrossEntropy(t).gradient(a)))
    assert delta.dtype == dtype


@pytest.mark.parametrize("cost", COSTS, ids=lambda c: c.__name__)
def test_float32_in_float32_out(cost, rng):
    t = targets(rng, cost, (4, 3)).astype(np.float32)
    X = rng.uniform(0.1, 0.9, size=(4, 3)).astype(np.float32)
    assert cost(t)(X).dtype == np.float32
    assert cost(t).gradient(X).dtype == np.float32


@pytest.mark.parametrize("output_func,cost", PAIRS[:3], ids=lambda p: p.__name__)
def test_costs_on_strict_device1(output_func, cost, rng, strict_device1):
    be = strict_device1
    z = rng.normal(size=(4, 3))
    t = targets(rng, cost, z.shape)
    a = OUTPUT_FUNCS[output_func](z)
    value = cost(be.asarray(t))(be.asarray(a))
    assert value.device == be.device
    assert float(value) == pytest.approx(FORMULAS[cost](t, a), rel=1e-12)
    delta = costs.output_delta(cost, output_func, be.asarray(t), be.asarray(z), be.asarray(a))
    assert delta.device == be.device
    expected = costs.output_delta(cost, output_func, t, z, a)
    np.testing.assert_allclose(to_numpy(delta), expected, rtol=1e-12)


def test_generic_pair_uses_activation_derivative(rng, numgrad):
    # A hidden-style activation at the output (LRELU + OLS) goes through the generic chain rule.
    z = rng.normal(size=(3, 2))
    z = np.where(np.abs(z) < 0.05, 0.3, z)
    t = rng.normal(size=(3, 2))
    delta = costs.output_delta(CostOLS, LRELU, t, z, LRELU(z))
    fd = numgrad(lambda v: FORMULAS[CostOLS](t, np.where(v > 0, v, 1e-3 * v)), z)
    np.testing.assert_allclose(delta, fd, rtol=1e-6, atol=1e-9)
    assert activations.derivate(LRELU) is not None


# ---- integer and bool arrays, as the notes call the costs ---------------------------------


def notes_cross_entropy(target):
    """The notes' CostCrossEntropy, verbatim apart from the NumPy import."""

    def func(X):
        return -(1.0 / target.size) * np.sum(target * np.log(X + 10e-10))

    return func


def test_the_notes_cost_example_on_integer_arrays(numgrad):
    # The notes' "Usage of cost functions" example: integer target and integer input.
    target = np.array([[1, 2, 3]]).T
    a = np.array([[4, 5, 6]]).T

    cost_func = CostCrossEntropy
    cost_func_derivative = cost_func(target).gradient  # the notes take autograd's grad(cost_func(target))

    valued_at_a = cost_func_derivative(a)
    assert valued_at_a.dtype == np.float64 and valued_at_a.shape == (3, 1)
    oracle = numgrad(notes_cross_entropy(target), a.astype(np.float64))
    np.testing.assert_allclose(valued_at_a, oracle, rtol=1e-7)  # -t / (3 a), up to the notes' 1e-9 offset
    np.testing.assert_allclose(valued_at_a.ravel(), [-1 / 12, -2 / 15, -3 / 18], rtol=1e-12)
    value = cost_func(target)(a)
    assert value.dtype == np.float64
    assert float(value) == pytest.approx(notes_cross_entropy(target)(a), rel=1e-8)


@pytest.mark.parametrize("cost", COSTS, ids=lambda c: c.__name__)
def test_integer_targets_compute_in_float64(cost, rng):
    t = targets(rng, cost, (5, 3)) if cost is not CostOLS else rng.integers(-3, 4, size=(5, 3)).astype(np.float64)
    X = rng.uniform(0.1, 0.9, size=(5, 3))
    for target in (t.astype(np.int64), t.astype(np.int8), t.astype(bool) if cost is not CostOLS else t):
        reference = target.astype(np.float64)
        value, gradient = cost(target)(X), cost(target).gradient(X)
        assert value.dtype == np.float64 and gradient.dtype == np.float64
        assert float(value) == pytest.approx(FORMULAS[cost](reference, X), rel=1e-12)
        np.testing.assert_allclose(gradient, cost(reference).gradient(X), rtol=1e-12)


def test_integer_and_bool_inputs():
    ints = np.array([[-2, 0], [1, 3], [2, -1], [0, 0]])
    value = CostOLS(ints)(ints + 1)
    assert value.dtype == np.float64 and float(value) == 2.0  # sum of eight 1s over 4 samples
    np.testing.assert_array_equal(CostOLS(ints).gradient(ints + 1), np.full((4, 2), 0.5))
    flags = np.array([[True, False], [False, True]])
    assert float(CostCrossEntropy(flags)(np.array([[0.5, 0.5], [0.25, 0.75]]))) == pytest.approx(
        -(np.log(0.5) + np.log(0.75)) / 2, rel=1e-12)
    value = CostLogReg(flags)(flags)  # bool X is clipped into (0, 1): a perfect answer costs ~0
    assert value.dtype == np.float64 and 0 <= float(value) < 1e-12


def test_integer_target_keeps_float32_input_float32(rng):
    t = np.eye(3, dtype=np.int64)[[0, 2, 1, 1]]
    X = rng.uniform(0.1, 0.9, size=(4, 3)).astype(np.float32)
    for cost in COSTS:
        assert cost(t)(X).dtype == np.float32 and cost(t).gradient(X).dtype == np.float32


def test_integer_arrays_on_strict_device1(strict_device1):
    be = strict_device1
    xp = be.xp
    t = be.asarray(np.array([[1, 2, 3]]).T)
    a = be.asarray(np.array([[4, 5, 6]]).T)
    assert xp.isdtype(t.dtype, "integral")
    gradient = CostCrossEntropy(t).gradient(a)
    assert gradient.dtype == xp.float64 and gradient.device == be.device
    np.testing.assert_allclose(to_numpy(gradient).ravel(), [-1 / 12, -2 / 15, -3 / 18], rtol=1e-12)
    assert float(CostOLS(t)(a)) == 9.0
