"""Exact block-wise scaled dot-product attention (FlashAttention's algorithm) in `keras.ops`.

Dense attention materialises the whole score matrix `q k^T`: `tokens^2` values
per head, 64 MiB per head at iGPT's 4096 pixel tokens in float32. Block-wise
attention computes the same result one `(block_size, block_size)` tile at a
time and never holds more than a tile of scores per head (Dao et al., 2022,
"FlashAttention"; Rabe & Staats, 2021, "Self-attention does not need O(n^2)
memory").

**Forward (online softmax).** For one block of query rows the key blocks are
visited in order, keeping per row a running maximum `m`, a running sum `l` and
an unnormalised output accumulator `acc`:

    s     = q_i k_j^T * scale                      (float32, masked if causal)
    m_new = max(m, rowmax(s))
    alpha = exp(m - m_new)                         (rescales what came before)
    p     = exp(s - m_new)
    l     = alpha * l + rowsum(p)
    acc   = alpha * acc + p v_j
    m     = m_new

and at the end `out_i = acc / l`, `lse_i = m + log(l)`. Because every earlier
term is rescaled by `exp(m_old - m_new)` when the maximum grows, the result is
exactly `softmax(q k^T * scale) v`, up to float rounding. The statistics `m`,
`l` and the accumulator are float32 whatever the input dtype; the output has
the input dtype.

**Causal.** Query `i` of `Tq` queries attends keys `0 .. Tk - Tq + i` (the
queries are the last `Tq` positions of the keys, as with a KV cache; with
`Tq == Tk` this is the usual lower triangle). Key blocks entirely above the
diagonal are never computed, only the blocks crossing it are masked, so causal
attention costs about half of the full product (136 of 256 tile pairs at 4096
tokens and block 256).

**Backward.** Differentiating through the loop would keep every tile's
probabilities for the backward pass: `O(tokens^2)` memory again. With
`remat=True` (the default) the function has a custom gradient, FlashAttention's
backward pass: only the output and the per-row log-sum-exp `lse` are kept
(`O(tokens)`), and each tile's probabilities are recomputed as
`p = exp(q_i k_j^T * scale - lse_i)`; then, with `D_i = rowsum(dout_i * out_i)`,

    dv_j += p^T dout_i
    ds    = p * (dout_i v_j^T - D_i)
    dq_i += ds k_j * scale
    dk_j += ds^T q_i * scale

The key blocks run outside and the query blocks inside (FlashAttention-2),
so `dk_j` and `dv_j` stay in the inner loop's carry. This works through
`keras.ops.custom_gradient` on JAX (`jax.custom_gradient`, also under
`jax.jit`), TensorFlow (`tf.custom_gradient`: eager, `tf.function`,
`jit_compile=True`) and PyTorch (`torch.autograd.Function`).

`remat=False` lets the backend differentiate through the loops instead: same
forward, but every tile's probabilities are kept for the backward pass
(quadratic training memory, longer compilation); only for higher-order
gradients.

**Loops.** The token axes are zero-padded to whole blocks (padded keys are
masked, padded queries dropped) and laid out block-major, and the blocks run
in `keras.ops.fori_loop`s: a loop over query blocks and, inside it, one over
the key blocks fully visible to the whole query block (no mask) and one over
the blocks crossing the diagonal or holding padding (masked). The graph has a
constant number of operations whatever the sequence length (at 4096 tokens on
JAX the forward and backward compile in under a second, against about ten
seconds for the same tiles unrolled), and the loops make the backend run the
tiles one after the other, so that only one tile's scores are alive at a time
(XLA schedules independent unrolled tiles side by side). One exception:
TensorFlow without XLA lets `tf.while_loop` overlap up to 10 iterations, of
the outer and the inner loop alike, so up to about a hundred tiles can be
alive at once: a bound that does not grow with the sequence (forward +
backward with 8 heads on CPU: 450 to 700 MiB at 4096 tokens and about as much
at 8192, against about 2 GiB for dense attention at 4096). That memory is held
from the forward to the backward pass, so it adds up over layers (an
igpt_s-width step at 64x64: 15.5 GiB for 24 layers, 6.0 GiB with one iteration
at a time; `keras.ops` does not expose `parallel_iterations`). Remat or
`jit_compile=True` avoid it. The shapes must be static when the function is
traced.
"""

import math

import keras
from keras import ops

# Added to the scores of masked (future) keys before the softmax, in float32.
# Finite, so that no `inf - inf` can appear; `exp(_MASK_VALUE - m)` is exactly 0.
_MASK_VALUE = -1e30

DEFAULT_BLOCK_SIZE = 256


def blockwise_attention(query, key, value, *, causal=False, block_size=DEFAULT_BLOCK_SIZE, scale=None, remat=True):
    """Exact scaled dot-product attention computed in blocks, with linear memory.

    Same layout and result as `keras.ops.dot_product_attention` without bias
    and mask, but the score matrix is never materialised: the scratch memory is
    `(block_size, block_size)` scores per head, forward and backward (with
    `remat=True`).

    Args:
        query: `(batch, query_tokens, heads, head_dim)`.
        key: `(batch, key_tokens, heads, head_dim)`.
        value: `(batch, key_tokens, heads, value_dim)`.
        causal: query `i` attends keys `0 .. key_tokens - query_tokens + i`
            (the queries are the last `query_tokens` positions); requires
            `query_tokens <= key_tokens`. Key blocks above the diagonal are
            skipped.
        block_size: rows and columns of one score tile. Token counts need not
            be multiples of it.
        scale: multiplies the scores; defaults to `1 / sqrt(head_dim)`.
        remat: recompute each tile's probabilities in the backward pass
            (FlashAttention's backward, memory linear in the tokens). `False`
            lets the backend differentiate through the loop, which stores every
            tile's probabilities (memory quadratic in the tokens).

    Returns:
        `(batch, query_tokens, heads, value_dim)` in the dtype of `query`.
    """
    plan = _plan(query, key, value, causal=causal, block_size=block_size, scale=scale)
    if remat:
        return _flash_attention(plan)(query, key, value)
    return _forward(plan, query, key, value, unroll=True)[0]


def attention_scratch_bytes(tokens, heads, batch=1, dtype_bytes=4, block_size=None, causal=True):
    """Bytes of attention scores held at once: dense attention vs block-wise.

    Dense attention (`keras.ops.dot_product_attention` on TensorFlow and JAX)
    materialises the whole `(batch, heads, tokens, tokens)` score matrix in the
    input dtype (`dtype_bytes` per value), causal or not: the mask is applied to
    the full matrix. Block-wise attention holds one float32
    `(block_size, block_size)` tile per batch row and head.

    Args:
        tokens: sequence length (queries = keys).
        heads: attention heads.
        batch: batch size.
        dtype_bytes: bytes per value of the inputs (4 float32, 2 bfloat16).
        block_size: tile size; `None` uses the default (256), capped at `tokens`.
        causal: whether tiles above the diagonal are skipped (`tiles_computed`).

    Returns:
        A dict: `dense` and `blockwise` (bytes of scores), `block_size`,
        `tiles_computed` and `tiles_total` (tile pairs per head).
    """
    tokens, heads, batch = int(tokens), int(heads), int(batch)
    block_size = _check_block_size(DEFAULT_BLOCK_SIZE if block_size is None else block_size)
    block_size = min(block_size, tokens)
    plan = _Plan(tokens, tokens, block_size, causal, 1.0, "float32")
    return {
        "dense": batch * heads * tokens * tokens * int(dtype_bytes),
        "blockwise": batch * heads * block_size * block_size * 4,
        "block_size": block_size,
        "tiles_computed": sum(plan.key_range(i)[1] for i in range(plan.query_blocks)),
        "tiles_total": plan.query_blocks * plan.key_blocks,
    }


# --------------------------------------------------------------------------- plan


class _Plan:
    """The static facts of one call and which tiles run.

    The token axes are padded to whole blocks: `query_blocks` blocks of
    `block_size` queries, `key_blocks` blocks of keys. A tile `(i, j)` is
    masked when it crosses the causal diagonal or holds padded keys; tiles no
    query sees are never visited. Block indices may be Python ints (unrolled
    loops, torch) or scalar tensors (compiled loops): the bounds below work
    for both.
    """

    def __init__(self, query_tokens, key_tokens, block_size, causal, scale, dtype):
        self.query_tokens = query_tokens
        self.key_tokens = key_tokens
        self.block_size = block_size
        self.causal = causal
        self.scale = float(scale)
        self.dtype = dtype
        self.offset = key_tokens - query_tokens  # query r sees keys <= r + offset
        self.query_blocks = -(-query_tokens // block_size)
        self.key_blocks = -(-key_tokens // block_size)
        self.full_key_blocks = key_tokens // block_size  # key blocks without padding

    def key_range(self, i):
        """`(unmasked_stop, stop)` for query block `i`: key blocks `[0, unmasked_stop)` are fully
        visible to all its queries, `[unmasked_stop, stop)` need the mask, the rest are skipped."""
        if not self.causal:
            return self.full_key_blocks, self.key_blocks
        bs = self.block_size
        # The block's first query sees keys <= i * bs + offset: whole blocks up to there are unmasked.
        unmasked = _minimum((i * bs + self.offset + 1) // bs, self.full_key_blocks)
        # Its last real query sees keys <= min((i + 1) * bs, Tq) - 1 + offset.
        last_key = _minimum((i + 1) * bs, self.query_tokens) - 1 + self.offset
        return unmasked, _minimum(last_key // bs + 1, self.key_blocks)

    def query_range(self, j):
        """`(start, unmasked_start)` for key block `j`: query blocks `[start, unmasked_start)` see it
        through the mask, `[unmasked_start, query_blocks)` entirely, earlier ones not at all."""
        bs = self.block_size
        if self.causal:
            start = _maximum(j * bs - self.offset, 0) // bs  # first query that sees the block's first key
            # First block whose first query sees the block's last key, (j + 1) * bs - 1.
            unmasked = _minimum((_maximum((j + 1) * bs - 1 - self.offset, 0) + bs - 1) // bs, self.query_blocks)
        else:
            start = unmasked = 0
        # A block holding padded keys is always masked.
        return start, _select(j < self.full_key_blocks, unmasked, self.query_blocks)

    def mask(self, i, j):
        """Boolean `(block_size, block_size)` of tile `(i, j)`: True where the query may attend the key."""
        positions = ops.arange(self.block_size, dtype="int32")
        cols = ops.expand_dims(positions + j * self.block_size, 0)
        visible = ops.less(cols, self.key_tokens)
        if self.causal:
            rows = ops.expand_dims(positions + (i * self.block_size + self.offset), 1)
            visible = ops.logical_and(visible, ops.less_equal(cols, rows))
        return visible


def _minimum(a, b):
    return min(a, b) if isinstance(a, int) and isinstance(b, int) else ops.minimum(a, b)


def _maximum(a, b):
    return max(a, b) if isinstance(a, int) and isinstance(b, int) else ops.maximum(a, b)


def _select(condition, a, b):
    return (a if condition else b) if isinstance(condition, bool) else ops.where(condition, a, b)


def _loop(start, stop, body, carry):
    """`keras.ops.fori_loop`, leaving out loops known to be empty.

    With static bounds on TensorFlow the loop states its trip count, which XLA
    needs to differentiate a `tf.while_loop` (`remat=False` under `jit_compile`).
    """
    if isinstance(start, int) and isinstance(stop, int):
        if start >= stop:
            return carry
        if keras.backend.backend() == "tensorflow":
            return ops.while_loop(
                lambda i, carry: i < stop,
                lambda i, carry: (i + 1, body(i, carry)),
                (start, carry),
                maximum_iterations=stop - start,
            )[1]
    return ops.fori_loop(start, stop, body, carry)


def _check_block_size(block_size):
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"blockwise_attention: block_size must be a positive integer, got {block_size!r}.")
    return block_size


def _static_dim(tensor, axis, name, what):
    dim = tensor.shape[axis]
    if dim is None:
        raise ValueError(
            f"blockwise_attention: the {what} of `{name}` must be static (the blocks are laid out when "
            f"the function is traced), got shape {tuple(tensor.shape)}. Build the model or trace the "
            "function with a fixed sequence length."
        )
    return int(dim)


def _plan(query, key, value, *, causal, block_size, scale):
    _check_block_size(block_size)
    if any(isinstance(x, keras.KerasTensor) for x in (query, key, value)):
        raise ValueError(
            "blockwise_attention works on tensors, not on symbolic `keras.Input`s: call it inside a layer's "
            "`call()` (as `keras_vit.layers.CausalSelfAttention` does); the layer then works in functional "
            "models."
        )
    for name, tensor in (("query", query), ("key", key), ("value", value)):
        if len(tensor.shape) != 4:
            raise ValueError(
                f"blockwise_attention: `{name}` must be (batch, tokens, heads, head_dim), got shape "
                f"{tuple(tensor.shape)}."
            )
    query_tokens = _static_dim(query, 1, "query", "token count (axis 1)")
    key_tokens = _static_dim(key, 1, "key", "token count (axis 1)")
    value_tokens = _static_dim(value, 1, "value", "token count (axis 1)")
    _static_dim(query, 2, "query", "head count (axis 2)")
    head_dim = _static_dim(query, 3, "query", "head_dim (axis 3)")
    _static_dim(value, 3, "value", "head_dim (axis 3)")
    if key.shape[3] != head_dim:
        raise ValueError(
            f"blockwise_attention: query and key head dims differ: query {tuple(query.shape)}, key "
            f"{tuple(key.shape)}. Queries and keys need the same head_dim (axis 3)."
        )
    if value_tokens != key_tokens:
        raise ValueError(
            f"blockwise_attention: key and value token counts differ: key {tuple(key.shape)}, value "
            f"{tuple(value.shape)}."
        )
    for name, tensor in (("key", key), ("value", value)):
        if tensor.shape[2] != query.shape[2]:
            raise ValueError(
                f"blockwise_attention: `{name}` has {tensor.shape[2]} heads, `query` {query.shape[2]} "
                f"(shapes {tuple(query.shape)} and {tuple(tensor.shape)}). Repeat the key/value heads "
                "for grouped-query attention."
            )
    if causal and query_tokens > key_tokens:
        raise ValueError(
            f"blockwise_attention: causal attention needs query_tokens <= key_tokens (the queries are the "
            f"last positions of the keys), got {query_tokens} queries and {key_tokens} keys."
        )
    if scale is None:
        scale = 1.0 / math.sqrt(head_dim)
    # A block longer than both sequences would only add padding.
    block_size = min(block_size, max(query_tokens, key_tokens))
    return _Plan(query_tokens, key_tokens, block_size, causal, scale, query.dtype)


# --------------------------------------------------------------------------- forward / backward


def _scores(plan, q_i, k_j, mask=None):
    """float32 `(b, h, rows, cols)` scores of one tile; `mask` False entries get `_MASK_VALUE`."""
    s = ops.cast(ops.einsum("bhqd,bhkd->bhqk", q_i, k_j), "float32") * plan.scale
    if mask is not None:
        s = ops.where(mask, s, _MASK_VALUE)
    return s


def _to_blocks(x, blocks, block_size):
    """`(b, t, h, d)` -> `(blocks, b, h, block_size, d)`, zero-padding the tokens to whole blocks."""
    tokens, heads, dim = x.shape[1], x.shape[2], x.shape[3]
    if blocks * block_size != tokens:
        x = ops.pad(x, ((0, 0), (0, blocks * block_size - tokens), (0, 0), (0, 0)))
    x = ops.reshape(x, (-1, blocks, block_size, heads, dim))
    return ops.transpose(x, (1, 0, 3, 2, 4))


def _from_blocks(x, tokens):
    """`(blocks, b, h, block_size, d)` -> `(b, tokens, h, d)`, dropping the padding."""
    blocks, _, heads, block_size, dim = x.shape
    x = ops.reshape(ops.transpose(x, (1, 0, 3, 2, 4)), (-1, blocks * block_size, heads, dim))
    return x if blocks * block_size == tokens else x[:, :tokens]


def _forward_tile(plan, state, q_i, k_j, v_j, mask=None):
    """One online-softmax step: fold tile `(q_i, k_j, v_j)` into `state = (m, l, acc)`."""
    m, l, acc = state
    s = _scores(plan, q_i, k_j, mask)
    m_new = ops.maximum(m, ops.max(s, axis=-1, keepdims=True))
    alpha = ops.exp(m - m_new)  # 0 at the first tile, where m is _MASK_VALUE
    p = ops.exp(s - m_new)
    pv = ops.cast(ops.einsum("bhqk,bhkd->bhqd", ops.cast(p, v_j.dtype), v_j), "float32")
    return m_new, alpha * l + ops.sum(p, axis=-1, keepdims=True), alpha * acc + pv


def _forward_block(plan, i, q_blocks, k_blocks, v_blocks):
    """Output `(b, h, block_size, value_dim)` (input dtype) and float32 log-sum-exp
    `(b, h, block_size, 1)` of query block `i`.

    Key block 0, which every query sees, comes first, so `m` is a real score
    after the first tile and masked scores never contribute: `exp(_MASK_VALUE - m) = 0`.
    """
    q_i = q_blocks[i]
    zero = ops.zeros_like(q_i[..., :1], dtype="float32")  # (b, h, block_size, 1)
    state = (zero + _MASK_VALUE, zero, zero + ops.zeros((v_blocks.shape[-1],), "float32"))
    unmasked_stop, stop = plan.key_range(i)

    def unmasked(j, state):
        return _forward_tile(plan, state, q_i, k_blocks[j], v_blocks[j])

    def masked(j, state):
        return _forward_tile(plan, state, q_i, k_blocks[j], v_blocks[j], plan.mask(i, j))

    state = _loop(0, unmasked_stop, unmasked, state)
    m, l, acc = _loop(unmasked_stop, stop, masked, state)
    return ops.cast(acc / l, plan.dtype), m + ops.log(l)


def _forward(plan, query, key, value, unroll=False):
    """Online-softmax forward on `(b, t, h, d)` inputs.

    Returns the output `(b, query_tokens, h, value_dim)` and the float32
    log-sum-exp `(query_blocks, b, h, block_size, 1)`. `unroll` runs the loop
    over query blocks in Python (static key loop bounds, which JAX needs to
    differentiate through the key loops).
    """
    q_blocks = _to_blocks(query, plan.query_blocks, plan.block_size)
    k_blocks, v_blocks = (_to_blocks(x, plan.key_blocks, plan.block_size) for x in (key, value))
    if unroll:
        blocks = [_forward_block(plan, i, q_blocks, k_blocks, v_blocks) for i in range(plan.query_blocks)]
        out, lse = (ops.stack(x) for x in zip(*blocks))
    else:
        zero = ops.zeros_like(q_blocks[..., :1], dtype="float32")  # (blocks, b, h, block_size, 1)
        out = ops.cast(zero + ops.zeros((v_blocks.shape[-1],), "float32"), plan.dtype)

        def body(i, carry):
            out, lse = carry
            out_i, lse_i = _forward_block(plan, i, q_blocks, k_blocks, v_blocks)
            out = ops.slice_update(out, (i, 0, 0, 0, 0), out_i[None])
            return out, ops.slice_update(lse, (i, 0, 0, 0, 0), lse_i[None])

        out, lse = ops.fori_loop(0, plan.query_blocks, body, (out, zero))
    return _from_blocks(out, plan.query_tokens), lse


def _backward_tile(plan, q_i, k_j, v_j, d_out_i, lse_i, delta_i, mask=None):
    """float32 contributions of one tile to `(dq_i, dk_j, dv_j)`."""
    p = ops.exp(_scores(plan, q_i, k_j, mask) - lse_i)
    d_v = ops.einsum("bhqk,bhqd->bhkd", ops.cast(p, d_out_i.dtype), d_out_i)
    d_p = ops.cast(ops.einsum("bhqd,bhkd->bhqk", d_out_i, v_j), "float32")
    d_s = ops.cast(p * (d_p - delta_i) * plan.scale, q_i.dtype)
    d_q = ops.einsum("bhqk,bhkd->bhqd", d_s, k_j)
    d_k = ops.einsum("bhqk,bhqd->bhkd", d_s, q_i)
    return tuple(ops.cast(x, "float32") for x in (d_q, d_k, d_v))


def _backward(plan, query, key, value, out, lse, d_out):
    """FlashAttention backward on `(b, t, h, d)` tensors: gradients wrt query, key, value.

    Each tile's probabilities are recomputed from the log-sum-exp. Key blocks
    outside, query blocks inside (FlashAttention-2): `dk_j` and `dv_j` live in
    the inner loop's carry, `dq` is accumulated block by block.
    """
    q_blocks = _to_blocks(query, plan.query_blocks, plan.block_size)
    k_blocks, v_blocks = (_to_blocks(x, plan.key_blocks, plan.block_size) for x in (key, value))
    d_out_blocks = _to_blocks(d_out, plan.query_blocks, plan.block_size)  # padded rows: zero gradient
    out_blocks = _to_blocks(out, plan.query_blocks, plan.block_size)
    delta = ops.sum(ops.cast(d_out_blocks, "float32") * ops.cast(out_blocks, "float32"), axis=-1, keepdims=True)

    def key_block(j, carry):
        d_q, d_k, d_v = carry
        k_j, v_j = k_blocks[j], v_blocks[j]

        def tile(masked):
            def body(i, carry):
                d_k_j, d_v_j, d_q = carry
                mask = plan.mask(i, j) if masked else None
                d_q_i, d_k_ij, d_v_ij = _backward_tile(
                    plan, q_blocks[i], k_j, v_j, d_out_blocks[i], lse[i], delta[i], mask
                )
                d_q = ops.slice_update(d_q, (i, 0, 0, 0, 0), (d_q[i] + d_q_i)[None])
                return d_k_j + d_k_ij, d_v_j + d_v_ij, d_q

            return body

        start, unmasked_start = plan.query_range(j)
        carry = (ops.zeros_like(k_j, dtype="float32"), ops.zeros_like(v_j, dtype="float32"), d_q)
        carry = _loop(start, unmasked_start, tile(masked=True), carry)
        d_k_j, d_v_j, d_q = _loop(unmasked_start, plan.query_blocks, tile(masked=False), carry)
        d_k = ops.slice_update(d_k, (j, 0, 0, 0, 0), d_k_j[None])
        d_v = ops.slice_update(d_v, (j, 0, 0, 0, 0), d_v_j[None])
        return d_q, d_k, d_v

    zeros = tuple(ops.zeros_like(x, dtype="float32") for x in (q_blocks, k_blocks, v_blocks))
    d_q, d_k, d_v = ops.fori_loop(0, plan.key_blocks, key_block, zeros)
    return (
        ops.cast(_from_blocks(d_q, plan.query_tokens), query.dtype),
        ops.cast(_from_blocks(d_k, plan.key_tokens), key.dtype),
        ops.cast(_from_blocks(d_v, plan.key_tokens), value.dtype),
    )


def _flash_attention(plan):
    """`f(query, key, value) -> out` on `(b, t, h, d)` tensors, with FlashAttention's backward."""

    @ops.custom_gradient
    def attention(query, key, value):
        out, lse = _forward(plan, query, key, value)

        # The closure keeps the inputs, the output and lse for the backward pass: nothing quadratic.
        def grad(*args, upstream=None):
            if upstream is None:  # JAX and TensorFlow pass the upstream gradient positionally
                (upstream,) = args
            return _backward(plan, query, key, value, out, lse, upstream)

        return out, grad

    return attention
