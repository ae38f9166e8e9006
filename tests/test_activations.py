"""Activations and their analytic derivatives against formulas, SciPy and central differences."""

import warnings

import numpy as np
import pytest
import scipy.special

from backends import to_numpy
from nncore import activations
from nncore.activations import LRELU, RELU, derivate, identity, sigmoid, softmax, tanh

ELEMENTWISE = [identity, sigmoid, tanh, RELU, LRELU]
ALL = ELEMENTWISE + [softmax]
IDS = {f: f.__name__ for f in ALL}

# Formulas written out here (float64), independent of nncore.
FORMULAS = {
    identity: lambda z: z,
    sigmoid: scipy.special.expit,
    tanh: np.tanh,
    RELU: lambda z: np.maximum(z, 0.0),
    LRELU: lambda z: np.where(z > 0, z, 1e-3 * z),  # the course's slope 10e-4
    softmax: lambda z: scipy.special.softmax(z, axis=-1),
}
DERIVATIVES = {
    identity: lambda z: np.ones_like(z),
    sigmoid: lambda z: scipy.special.expit(z) * (1 - scipy.special.expit(z)),
    tanh: lambda z: 1 / np.cosh(z) ** 2,
    RELU: lambda z: (z > 0).astype(z.dtype),
    LRELU: lambda z: np.where(z > 0, 1.0, 1e-3),
}


def away_from_kinks(rng, shape):
    """Values with |z| >= 0.05 so that RELU/LRELU are differentiable at z +- h."""
    z = rng.normal(scale=2.0, size=shape)
    return np.where(np.abs(z) < 0.05, 0.5, z)


@pytest.mark.parametrize("func", ALL, ids=IDS.get)
def test_activation_matches_formula(func, rng):
    z = rng.normal(scale=3.0, size=(5, 7))
    np.testing.assert_allclose(func(z), FORMULAS[func](z), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("func", ELEMENTWISE, ids=IDS.get)
def test_derivative_matches_formula_and_central_differences(func, rng):
    z = away_from_kinks(rng, (4, 6))
    d = derivate(func)(z)
    np.testing.assert_allclose(d, DERIVATIVES[func](z), rtol=1e-12, atol=1e-15)
    h = 1e-6
    fd = (FORMULAS[func](z + h) - FORMULAS[func](z - h)) / (2 * h)
    np.testing.assert_allclose(d, fd, rtol=1e-6, atol=1e-9)
    # ... and central differences of nncore's own function (elementwise, so one sweep suffices).
    fd_own = (np.asarray(func(z + h)) - np.asarray(func(z - h))) / (2 * h)
    np.testing.assert_allclose(d, fd_own, rtol=1e-6, atol=1e-9)


def test_softmax_derivative_is_jacobian_diagonal(rng, numgrad):
    z = rng.normal(size=(3, 5))
    d = derivate(softmax)(z)
    s = scipy.special.softmax(z, axis=-1)
    np.testing.assert_allclose(d, s * (1 - s), rtol=1e-12)
    # d s_ij / d z_ij by central differences, entry by entry.
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            fd = numgrad(lambda v: scipy.special.softmax(v, axis=-1)[i, j], z, indices=[i * z.shape[1] + j])
            assert d[i, j] == pytest.approx(fd[i, j], rel=1e-6)


@pytest.mark.parametrize("func", ALL, ids=IDS.get)
def test_backprop_is_vector_jacobian_product(func, rng, numgrad):
    # activations.backprop(func, z, a, g) must be d(sum(g * func(z)))/dz, the full Jacobian for softmax.
    z = away_from_kinks(rng, (3, 4))
    g = rng.normal(size=z.shape)
    got = activations.backprop(func, z, func(z), g)
    fd = numgrad(lambda v: np.sum(g * FORMULAS[func](v)), z)
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-9)


def test_relu_kink_conventions_match_torch():
    # torch: relu'(0) = 0; leaky_relu'(0) = negative slope (the gradient test is x > 0).
    zero = np.zeros(3)
    np.testing.assert_array_equal(derivate(RELU)(zero), 0.0)
    np.testing.assert_allclose(derivate(LRELU)(zero), 1e-3)


# Overflow, division by zero and invalid operations raise; underflow to 0 (exp(-1000) == 0.0) is
# the correctly rounded result, is silent under NumPy's default error state and is allowed.
STRICT_FP = dict(over="raise", divide="raise", invalid="raise", under="ignore")

EXTREMES = [-1000.0, -100.0, -30.0, -1.0, 0.0, 1.0, 30.0, 100.0, 1000.0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("func", ALL, ids=IDS.get)
def test_stable_and_finite_at_extremes(func, dtype):
    z = np.array([EXTREMES, EXTREMES[::-1]], dtype=dtype)
    with warnings.catch_warnings(), np.errstate(**STRICT_FP):
        warnings.simplefilter("error")
        a = func(z)
        d = derivate(func)(z)
        g = activations.backprop(func, z, a, np.ones_like(z))
    for out in (a, d, g):
        assert out.dtype == dtype
        assert np.all(np.isfinite(out))
    ref = FORMULAS[func](z.astype(np.float64))
    np.testing.assert_allclose(a, ref, rtol=1e-6 if dtype == np.float32 else 1e-12, atol=1e-30)


def test_saturated_values_are_exact():
    z = np.array([[-1000.0, 1000.0]], dtype=np.float32)
    with warnings.catch_warnings(), np.errstate(**STRICT_FP):
        warnings.simplefilter("error")
        np.testing.assert_array_equal(sigmoid(z), [[0.0, 1.0]])
        np.testing.assert_array_equal(softmax(z), [[0.0, 1.0]])
        np.testing.assert_array_equal(tanh(z), [[-1.0, 1.0]])
        np.testing.assert_array_equal(derivate(sigmoid)(z), [[0.0, 0.0]])
        np.testing.assert_array_equal(derivate(tanh)(z), [[0.0, 0.0]])
    # softmax is shift invariant, also for huge shifts
    z = np.array([[1000.0, 1001.0, 999.0]])
    np.testing.assert_allclose(softmax(z), scipy.special.softmax([[1.0, 2.0, 0.0]], axis=-1), rtol=1e-12)


def test_softmax_rows_sum_to_one(rng):
    s = softmax(rng.normal(scale=50.0, size=(6, 10)))
    np.testing.assert_allclose(np.sum(s, axis=-1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("func", ALL, ids=IDS.get)
def test_activations_on_strict_device1(func, rng, strict_device1):
    z = away_from_kinks(rng, (3, 4))
    zs = strict_device1.asarray(z)
    a = func(zs)
    assert a.device == strict_device1.device
    np.testing.assert_allclose(to_numpy(a), FORMULAS[func](z), rtol=1e-12, atol=1e-15)
    d = derivate(func)(zs)
    assert d.device == strict_device1.device
    g = activations.backprop(func, zs, a, zs)
    assert g.device == strict_device1.device


@pytest.mark.parametrize(
    "name,func",
    [("identity", identity), ("sigmoid", sigmoid), ("tanh", tanh), ("softmax", softmax), ("RELU", RELU),
     ("relu", RELU), ("LRELU", LRELU), ("lrelu", LRELU)],
)
def test_resolve_names(name, func):
    assert activations.resolve(name) is func
    assert activations.resolve(func) is func


def test_resolve_unknown_name_raises_value_error_naming_valid_ones():
    with pytest.raises(ValueError) as info:
        activations.resolve("swish")
    message = str(info.value)
    assert "swish" in message
    for name in ("sigmoid", "relu", "softmax"):
        assert name in message.lower()


def test_callable_without_derivative_raises_type_error():
    def swish(z):
        return z * sigmoid(z)

    with pytest.raises(TypeError):
        activations.resolve(swish)
    with pytest.raises(TypeError):
        derivate(swish)
    with pytest.raises(TypeError):
        activations.resolve(42)


def test_callable_with_derivative_attribute_is_accepted(rng):
    def softplus(z):
        return np.logaddexp(0.0, z)

    softplus.derivative = scipy.special.expit
    assert activations.resolve(softplus) is softplus
    z = rng.normal(size=5)
    h = 1e-6
    np.testing.assert_allclose(derivate(softplus)(z), (softplus(z + h) - softplus(z - h)) / (2 * h), rtol=1e-6)
