"""A slow, loop-by-loop NumPy MViT / MViTv2 written from timm's `mvitv2.py`, the reference of the MViT
tests (timm cannot be imported here). Weights are in timm's (PyTorch) layout and names, float64.

Token sequences are `(tokens, channels)` for one image, the class token first when there is one.
"""

import math

import numpy as np

_erf = np.vectorize(math.erf)


def layer_norm(x, weight, bias, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def linear(x, params, name):
    out = x @ params[name + ".weight"].T
    return out + params[name + ".bias"] if name + ".bias" in params else out


def pool_map(x, mode, kernel, stride, weight=None):
    """Pools a `(h, w, c)` map with PyTorch's padding `kernel // 2`, position by position: "conv"
    (depthwise `weight` `(c, 1, kh, kw)`, zeros outside), "max" (outside ignored), "avg" (zeros
    outside counted)."""
    height, width, channels = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    ph, pw = kh // 2, kw // 2
    out_h, out_w = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
    out = np.zeros((out_h, out_w, channels))
    for i in range(out_h):
        for j in range(out_w):
            cells = [
                (a, b, i * sh - ph + a, j * sw - pw + b)
                for a in range(kh)
                for b in range(kw)
                if 0 <= i * sh - ph + a < height and 0 <= j * sw - pw + b < width
            ]
            if mode == "max":
                out[i, j] = np.max([x[y, z] for _, _, y, z in cells], axis=0)
            elif mode == "avg":
                out[i, j] = np.sum([x[y, z] for _, _, y, z in cells], axis=0) / (kh * kw)
            else:
                out[i, j] = np.sum([x[y, z] * weight[:, 0, a, b] for a, b, y, z in cells], axis=0)
    return out


def _pool_tokens(tokens, size, has_cls, mode, kernel, stride, weight):
    prefix, spatial = (tokens[:1], tokens[1:]) if has_cls else (tokens[:0], tokens)
    pooled = pool_map(spatial.reshape(*size, -1), mode, kernel, stride, weight)
    return np.concatenate([prefix, pooled.reshape(-1, pooled.shape[-1])]), pooled.shape[:2]


def rel_pos_row(query, key, q_size, k_size):
    """timm's `cal_rel_pos_type` distance along one axis: query `query` of `q_size`, key `key` of `k_size`."""
    q_ratio, k_ratio = max(k_size / q_size, 1.0), max(q_size / k_size, 1.0)
    return int(query * q_ratio - key * k_ratio + (k_size - 1) * k_ratio)


def pooling_attention(x, size, params, num_heads, mode="conv", kernel_q=(3, 3), stride_q=(1, 1), kernel_kv=(3, 3),
                      stride_kv=(1, 1), has_cls=False, residual_pooling=True):
    """timm's `MultiScaleAttention.forward` with explicit loops over heads, queries and keys.

    `params` holds `qkv`, `proj`, `pool_{q,k,v}` (conv mode, where pooled), `norm_{q,k,v}` and
    `rel_pos_{h,w}` (when relative positions are on) under timm's names without the `attn.` prefix.
    Returns the output tokens and the query map size."""
    dim = params["qkv.weight"].shape[0] // 3
    head_dim = dim // num_heads
    qkv = linear(x, params, "qkv")
    use_rel_pos, prefix = "rel_pos_h" in params, int(has_cls)
    pooled = {}
    for index, part in enumerate("qkv"):
        kernel, stride = (kernel_q, stride_q) if part == "q" else (kernel_kv, stride_kv)
        pools = np.prod(kernel) > 1 or np.prod(stride) > 1
        pooled[part] = []
        for head in range(num_heads):
            start = index * dim + head * head_dim
            tokens, part_size = qkv[:, start : start + head_dim], tuple(size)
            if pools:
                tokens, part_size = _pool_tokens(tokens, size, has_cls, mode, kernel, stride, params.get(f"pool_{part}.weight"))
            if f"norm_{part}.weight" in params:
                tokens = layer_norm(tokens, params[f"norm_{part}.weight"], params[f"norm_{part}.bias"])
            pooled[part].append(tokens)
        pooled[part + "_size"] = part_size
    (q_h, q_w), (k_h, k_w) = pooled["q_size"], pooled["k_size"]
    queries = len(pooled["q"][0])
    out = np.zeros((queries, dim))
    for head in range(num_heads):
        q, k, v = pooled["q"][head], pooled["k"][head], pooled["v"][head]
        for i in range(queries):
            logits = np.array([q[i] @ k[j] / math.sqrt(head_dim) for j in range(len(k))])
            if use_rel_pos and i >= prefix:
                qy, qx = divmod(i - prefix, q_w)
                for j in range(prefix, len(k)):
                    ky, kx = divmod(j - prefix, k_w)
                    logits[j] += q[i] @ params["rel_pos_h"][rel_pos_row(qy, ky, q_h, k_h)]
                    logits[j] += q[i] @ params["rel_pos_w"][rel_pos_row(qx, kx, q_w, k_w)]
            weights = np.exp(logits - logits.max())
            weights /= weights.sum()
            value = sum(weights[j] * v[j] for j in range(len(v)))
            out[i, head * head_dim : (head + 1) * head_dim] = value + (q[i] if residual_pooling else 0.0)
    return linear(out, params, "proj"), (q_h, q_w)


def _sub(params, prefix):
    return {key[len(prefix):]: value for key, value in params.items() if key.startswith(prefix)}


def block(x, size, params, num_heads, stride_q, stride_kv, config):
    """timm's `MultiScaleBlock.forward`; `params` are the block's tensors without their prefix."""
    has_cls = config.get("use_cls_token", False)
    kernel = config.get("kernel_qkv", (3, 3))
    pools_q = config.get("pool_q_every_block", True) or np.prod(stride_q) > 1
    normed = layer_norm(x, params["norm1.weight"], params["norm1.bias"])
    shortcut = linear(normed, params, "shortcut_proj_attn") if "shortcut_proj_attn.weight" in params else x
    if np.prod(stride_q) > 1:
        skip = tuple(s + 1 if s > 1 else s for s in stride_q)
        shortcut, _ = _pool_tokens(shortcut, size, has_cls, "max", skip, stride_q, None)
    attended, new_size = pooling_attention(
        normed, size, _sub(params, "attn."), num_heads, config.get("mode", "conv"),
        kernel if pools_q else (1, 1), stride_q, kernel, stride_kv, has_cls, config.get("residual_pooling", True),
    )
    x = shortcut + attended
    normed = layer_norm(x, params["norm2.weight"], params["norm2.bias"])
    shortcut = linear(normed, params, "shortcut_proj_mlp") if "shortcut_proj_mlp.weight" in params else x
    return shortcut + linear(gelu(linear(normed, params, "mlp.fc1")), params, "mlp.fc2"), new_size


def conv2d(image, weight, bias, stride, padding):
    """`(h, w, c_in)` image, PyTorch `(c_out, c_in, kh, kw)` weight -> `(h', w', c_out)`."""
    image = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    _, _, kh, kw = weight.shape
    out_h, out_w = (image.shape[0] - kh) // stride + 1, (image.shape[1] - kw) // stride + 1
    out = np.zeros((out_h, out_w, weight.shape[0]))
    for i in range(out_h):
        for j in range(out_w):
            patch = image[i * stride : i * stride + kh, j * stride : j * stride + kw]  # (kh, kw, c_in)
            out[i, j] = np.einsum("abc,ocab->o", patch, weight) + bias
    return out


def mvit(image, params, config):
    """Logits of timm's `MultiScaleVit` for one `(h, w, 3)` image (preprocessing excluded).

    `config`: depths, num_heads (per stage), stride_q (per stage), stride_kv (per stage), and the
    flags use_cls_token, residual_pooling, pool_q_every_block, mode, kernel_qkv."""
    x = conv2d(image, params["patch_embed.proj.weight"], params["patch_embed.proj.bias"], 4, 3)
    size = x.shape[:2]
    x = x.reshape(-1, x.shape[-1])
    has_cls = config.get("use_cls_token", False)
    if has_cls:
        x = np.concatenate([params["cls_token"].reshape(1, -1), x])
    if "pos_embed" in params:
        x = x + params["pos_embed"][0]
    for stage, depth in enumerate(config["depths"]):
        for index in range(depth):
            stride_q = tuple(config["stride_q"][stage]) if index == 0 else (1, 1)
            x, size = block(x, size, _sub(params, f"stages.{stage}.blocks.{index}."), config["num_heads"][stage],
                            stride_q, tuple(config["stride_kv"][stage]), config)
    x = layer_norm(x, params["norm.weight"], params["norm.bias"])
    pooled = x[0] if has_cls else x.mean(0)
    return linear(pooled, params, "head.fc")
