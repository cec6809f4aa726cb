"""Exact minimum-cost bipartite matching (the linear sum assignment problem) in `keras.ops`."""

from keras import ops

_SEARCH, _AUGMENT, _DONE = 0, 1, 2


def linear_sum_assignment(cost):
    """Minimum-cost assignment of rows to columns, batched: `scipy.optimize.linear_sum_assignment`
    in `keras.ops`, so that it runs inside a compiled train step (`jax.jit`,
    `tf.function(jit_compile=True)`) as well as eagerly.

    The algorithm is scipy's: shortest augmenting paths with dual potentials (Jonker-Volgenant for
    rectangular matrices, Crouse 2016), O(n^2 m) for n rows and m >= n columns (a tall matrix is
    solved transposed). It starts from a greedy assignment of each row to its cheapest column and
    assigns rows of constant cost (padding) in one step at the end. The batch items run in
    lockstep: the loop lasts as long as the slowest item.

    Args:
        cost: `(B, N, M)` or `(N, M)` float costs, computed in float32 (no gradient flows
            through the matching). They must be finite: with NaN or infinite costs the result
            is undefined (the loop still stops after its worst-case number of steps).

    Returns:
        `(row_indices, col_indices)`, int32, each `(B, K)` or `(K,)` with `K = min(N, M)`: row
        `row_indices[..., k]` goes to column `col_indices[..., k]`, rows in ascending order, at the
        minimum total cost (on ties the assignment may differ from scipy's, at the same cost).
    """
    cost = ops.convert_to_tensor(cost)
    if len(cost.shape) not in (2, 3):
        raise ValueError(
            f"`cost` must be (N, M) or (batch, N, M); received shape {tuple(cost.shape)}. "
            "Stack cost matrices of one shape into a batch, or pad them to one shape."
        )
    batched = len(cost.shape) == 3
    cost = ops.stop_gradient(ops.cast(cost if batched else cost[None], "float32"))
    n, m = cost.shape[1], cost.shape[2]
    if n > m:  # solve the transposed problem: col4row[:, j] is then the row of column j
        col4row = _solve(ops.transpose(cost, (0, 2, 1)))
        col_indices = ops.cast(ops.argsort(col4row, axis=-1), "int32")
        row_indices = ops.take_along_axis(col4row, col_indices, axis=-1)
    else:
        col_indices = _solve_square(cost) if n == m else _solve(cost)
        row_indices = ops.zeros_like(col_indices) + ops.arange(n, dtype="int32")
    if not batched:
        return row_indices[0], col_indices[0]
    return row_indices, col_indices


def _solve_square(cost):
    """Padding makes constant rows or columns, and constant rows are assigned in one step: each
    item is solved transposed where that gives it more constant rows."""
    flip = ops.sum(ops.cast(_is_constant(cost, 1), "int32"), 1) > ops.sum(ops.cast(_is_constant(cost, 2), "int32"), 1)
    col4row = _solve(ops.where(flip[:, None, None], ops.transpose(cost, (0, 2, 1)), cost))
    return ops.where(flip[:, None], ops.cast(ops.argsort(col4row, axis=-1), "int32"), col4row)


def _is_constant(cost, axis):
    return ops.max(cost, axis=axis) == ops.min(cost, axis=axis)


def _take(x, index):
    """`x[b, index[b]]` for `x` of shape `(B, K)` and `index` of shape `(B,)`."""
    return ops.take_along_axis(x, index[:, None], axis=1)[:, 0]


def _first(mask):
    """`(B, K)` bool -> `(B,)` int32 index of the first True, K where there is none."""
    size = mask.shape[-1]
    return ops.min(ops.where(mask, ops.arange(size, dtype="int32"), size), axis=-1)


def _solve(cost):
    """`(B, n, m)` float32 costs with `n <= m` -> `(B, n)` int32 column of each row.

    One loop step advances every unfinished item by one step of its own run of scipy's
    `augmenting_path` for its current row `cur` (scan row `i`, then settle the cheapest unsettled
    column) and, once that reached a free column (the sink), by one step of the augmentation back
    along the path. Only the column potentials `v` are kept: an assigned row's potential is
    `u[i] = cost[i, col4row[i]] - v[col4row[i]]` (its edge is tight), and the new row's is 0.
    """
    n, m = cost.shape[1], cost.shape[2]
    if n == 0:
        return ops.cast(ops.sum(cost, axis=2), "int32")
    rows, cols = ops.arange(n, dtype="int32"), ops.arange(m, dtype="int32")
    inf = float("inf")
    constant = _is_constant(cost, 2)
    zeros_col = ops.zeros_like(cost[:, 0, :])

    def search(state):
        v, col4row, row4col, path, spc, in_sc, min_val, cur, i, sink, phase = state
        active = phase == _SEARCH
        # Scan row i: shortest path costs to the unsettled columns through it.
        cost_i = ops.take_along_axis(cost, i[:, None, None], axis=1)[:, 0]
        own = _take(col4row, i)
        u_i = ops.where(i == cur, 0.0, _take(cost_i, own) - _take(v, own))
        reduced = (min_val - u_i)[:, None] + cost_i - v
        better = active[:, None] & ~in_sc & (reduced < spc)
        path = ops.where(better, i[:, None], path)
        spc = ops.where(better, reduced, spc)
        # Settle the cheapest unsettled column; on a tie a free one (it ends the search).
        unsettled = ops.where(in_sc, inf, spc)
        lowest = ops.min(unsettled, axis=1)
        tied = ops.where(unsettled == lowest[:, None], ops.where(row4col < 0, cols, cols + m), 2 * m)
        j = ops.min(tied, axis=1) % m
        in_sc = in_sc | (active[:, None] & (cols == j[:, None]))
        owner = _take(row4col, j)
        found = active & (owner < 0)
        # A free column reached: move the potentials of the settled columns (and so of their rows).
        v = ops.where(found[:, None] & in_sc, v - (lowest[:, None] - spc), v)
        min_val = ops.where(active, lowest, min_val)
        i = ops.where(active & ~found, owner, i)
        sink = ops.where(found, j, sink)
        phase = ops.where(found, _AUGMENT, phase)
        return v, col4row, row4col, path, spc, in_sc, min_val, cur, i, sink, phase

    def augment(state):
        v, col4row, row4col, path, spc, in_sc, min_val, cur, i, sink, phase = state
        active = phase == _AUGMENT
        # Flip one edge of the alternating path: the sink takes its row, whose old column is next.
        row = _take(path, sink)
        row4col = ops.where(active[:, None] & (cols == sink[:, None]), row[:, None], row4col)
        next_sink = _take(col4row, row)
        col4row = ops.where(active[:, None] & (rows == row[:, None]), sink[:, None], col4row)
        sink = ops.where(active, next_sink, sink)
        # Back at the new row: start the next pending row.
        done = active & (row == cur)
        next_row = _first((col4row < 0) & ~constant)
        cur = ops.where(done, ops.minimum(next_row, n - 1), cur)
        phase = ops.where(done, ops.where(next_row < n, _SEARCH, _DONE), phase)
        i = ops.where(done, cur, i)
        min_val = ops.where(done, 0.0, min_val)
        spc = ops.where(done[:, None], inf, spc)
        in_sc = in_sc & ~done[:, None]
        return v, col4row, row4col, path, spc, in_sc, min_val, cur, i, sink, phase

    def body(*state):
        return augment(search(state))

    def unfinished(*state):
        return ops.any(state[-1] != _DONE)

    # Greedy start: each row takes its cheapest column unless an earlier row took it. With v = 0
    # (and u = the row minima) every reduced cost is >= 0 and 0 on the assignment.
    cheapest = ops.cast(ops.argmin(cost, axis=2), "int32")
    taken_earlier = (cheapest[:, :, None] == cheapest[:, None, :]) & (rows[:, None] > rows[None, :])
    col4row = ops.where(ops.any(taken_earlier, axis=2), -1, cheapest)
    owner = _first(ops.transpose(col4row[:, :, None] == cols, (0, 2, 1)))
    row4col = ops.where(owner < n, owner, -1)

    next_row = _first((col4row < 0) & ~constant)
    cur = ops.minimum(next_row, n - 1)
    phase = ops.where(next_row < n, _SEARCH, _DONE)
    state = (
        zeros_col, col4row, row4col, ops.cast(zeros_col, "int32") - 1, zeros_col + inf,
        zeros_col != 0, zeros_col[:, 0], cur, cur, cur, phase,
    )
    # At most 2n - 1 steps a row (n settled columns, a path of at most n): the bound only stops
    # a run whose costs are not finite.
    _, col4row, row4col, *_ = ops.while_loop(unfinished, body, state, maximum_iterations=2 * n * n)

    # Rows of constant cost left: each takes a free column (v = 0 there, so any free column is a
    # shortest path). The k-th such row takes the k-th free column.
    left = (col4row < 0) & constant
    free = row4col < 0
    row_rank = ops.cumsum(ops.cast(left, "int32"), axis=1)
    col_rank = ops.cumsum(ops.cast(free, "int32"), axis=1)
    return ops.where(left, _first(free[:, None, :] & (row_rank[:, :, None] == col_rank[:, None, :])), col4row)
