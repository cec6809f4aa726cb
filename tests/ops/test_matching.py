"""keras_vit.ops.linear_sum_assignment against scipy's optimum, on thousands of random matrices.

The bulk runs inside the compiled function a train step would use on this backend: jax.jit,
tf.function(jit_compile=True) (XLA), eager torch. The batch items of one call step in lockstep, so
one call checks `PER_KIND` matrices, and one compilation serves a shape.
"""

import functools

import keras
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment as scipy_assignment

from keras_vit.ops import linear_sum_assignment
from tests.conftest import to_numpy

PER_KIND = 200  # matrices of each kind, per shape
SHAPES = [(8, 8), (100, 20), (4, 9), (1, 7), (7, 1)]  # (100, 20): DETR's queries x targets
TOLERANCE = 1e-6  # of the sum of the rows' largest |cost| (measured: 0, every total equals scipy's)


@functools.cache
def compiled():
    """`linear_sum_assignment` compiled as in a train step on the current backend."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(linear_sum_assignment)
    if backend == "tensorflow":
        import tensorflow as tf

        function = tf.function(linear_sum_assignment, jit_compile=True)
        return lambda cost: function(tf.constant(cost))
    return linear_sum_assignment


def solve(cost):
    """The compiled matcher on `PER_KIND` matrices at a time -> NumPy (rows, cols)."""
    pieces = [[to_numpy(x) for x in compiled()(cost[k : k + PER_KIND])] for k in range(0, len(cost), PER_KIND)]
    return tuple(np.concatenate(parts) for parts in zip(*pieces))


def random_costs(rng, n, m):
    """`PER_KIND` matrices of each kind, float32: uniform, integer ties in {0, 1, 2}, magnitudes
    over 8 decades, and normal costs with a random number of trailing columns, or rows, of 0."""
    shape = (PER_KIND, n, m)
    padded_cols, padded_rows = rng.normal(size=shape), rng.normal(size=shape)
    padded_cols *= np.arange(m) < rng.integers(0, m + 1, (PER_KIND, 1, 1))
    padded_rows *= np.arange(n)[:, None] < rng.integers(0, n + 1, (PER_KIND, 1, 1))
    kinds = [
        rng.uniform(size=shape),
        rng.integers(0, 3, shape),
        rng.choice([-1, 1], shape) * 10.0 ** rng.uniform(-4, 4, shape),
        padded_cols,
        padded_rows,
    ]
    return np.concatenate(kinds).astype("float32")


def assert_optimal(cost, rows, cols):
    """Shapes, dtype, rows ascending, each column at most once, and scipy's minimum total cost
    (both totals in float64 from the float32 matrix)."""
    rows, cols = to_numpy(rows), to_numpy(cols)
    batch, n, m = cost.shape
    assert rows.shape == cols.shape == (batch, min(n, m)) and rows.dtype == cols.dtype == np.int32
    assert (np.diff(rows, axis=1) > 0).all() and (rows >= 0).all() and (rows < n).all()
    assert (np.diff(np.sort(cols, axis=1), axis=1) > 0).all() and (cols >= 0).all() and (cols < m).all()
    cost = cost.astype(np.float64)
    ours = cost[np.arange(batch)[:, None], rows, cols].sum(axis=1)
    best = np.array([item[scipy_assignment(item)].sum() for item in cost])
    error = np.abs(ours - best) / np.maximum(np.abs(cost).max(axis=2).sum(axis=1), 1e-30)
    assert error.max() <= TOLERANCE, f"{(error > TOLERANCE).sum()} of {batch} not optimal, worst {error.max():.3g}"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_optimal_like_scipy(shape):
    cost = random_costs(np.random.default_rng(shape[0] * 100 + shape[1]), *shape)
    assert_optimal(cost, *solve(cost))


def test_padded_targets_leave_the_valid_part_optimal():
    """DETR pads the target columns of its (queries, targets) cost with a constant: the pairs with
    a real target must then be an optimal matching of the unpadded (queries, valid) problem."""
    rng = np.random.default_rng(7)
    queries = targets = SHAPES[0][0]
    cost = rng.normal(size=(1000, queries, targets)).astype("float32")
    valid = rng.integers(0, targets + 1, 1000)
    cost *= np.arange(targets) < valid[:, None, None]
    rows, cols = solve(cost)
    for item, count, row, col in zip(cost.astype(np.float64), valid, rows, cols):
        real = col < count
        assert real.sum() == count
        best = item[:, :count][scipy_assignment(item[:, :count])].sum()
        assert abs(item[row[real], col[real]].sum() - best) <= TOLERANCE * np.abs(item).max(axis=1).sum()


def test_inside_a_compiled_train_step():
    """The matched costs' gradient, in the compiled step of this backend: 1 on the matched pairs."""
    cost = np.random.default_rng(10).normal(size=(16, 6, 4)).astype("float32")
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def loss(cost):
            rows, cols = linear_sum_assignment(cost)
            return cost[jax.numpy.arange(16)[:, None], rows, cols].sum(), (rows, cols)

        gradient, (rows, cols) = jax.jit(jax.grad(loss, has_aux=True))(cost)
    elif backend == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def step(cost):
            with tf.GradientTape() as tape:
                tape.watch(cost)
                rows, cols = linear_sum_assignment(cost)
                total = tf.reduce_sum(tf.gather_nd(cost, tf.stack([rows, cols], -1), batch_dims=1))
            return tape.gradient(total, cost), rows, cols

        gradient, rows, cols = step(tf.constant(cost))
    else:
        import torch

        weights = torch.tensor(cost, requires_grad=True)
        rows, cols = linear_sum_assignment(weights)
        weights[torch.arange(16)[:, None], rows.long(), cols.long()].sum().backward()
        gradient = weights.grad
    assert_optimal(cost, rows, cols)
    expected = np.zeros_like(cost)
    expected[np.arange(16)[:, None], to_numpy(rows), to_numpy(cols)] = 1
    np.testing.assert_array_equal(to_numpy(gradient), expected)


def test_non_finite_costs_stop():
    """NaN or infinite costs give an undefined result, but the loop ends (no hung train step)."""
    cost = np.random.default_rng(11).uniform(size=(PER_KIND,) + SHAPES[0]).astype("float32")
    cost[::3, 1] = np.nan
    cost[1::3, :, 2] = np.inf
    cost[2::3, 3, 3] = -np.inf
    rows, cols = solve(cost)
    assert rows.shape == cols.shape == (PER_KIND, SHAPES[0][0])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_eager_unbatched_half_precision(dtype):
    cost = np.random.default_rng(9).integers(0, 3, (3, 5)).astype("float32")
    rows, cols = linear_sum_assignment(keras.ops.cast(cost, dtype))
    assert tuple(rows.shape) == tuple(cols.shape) == (3,)
    assert_optimal(cost[None], to_numpy(rows)[None], to_numpy(cols)[None])


@pytest.mark.parametrize("shape", [(2, 0, 3), (2, 3, 0)])
def test_empty(shape):
    rows, cols = linear_sum_assignment(np.zeros(shape, "float32"))
    assert tuple(rows.shape) == tuple(cols.shape) == (2, 0)


def test_rejects_other_ranks():
    with pytest.raises(ValueError, match=r"\(N, M\) or \(batch, N, M\)"):
        linear_sum_assignment(np.zeros((2, 2, 2, 2), "float32"))
