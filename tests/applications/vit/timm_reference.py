"""A timm-semantics ViT forward pass in torch.nn.functional, read from a state dict.

Written here from the paper and timm's module definitions, it is the reference
the timm converter is checked against (timm itself cannot be imported here).
"""

import math

import torch
import torch.nn.functional as F


def vit_forward(state, images, num_heads, eps=1e-6, features=None):
    """images: NCHW; `features` replaces the patch input (hybrids' CNN output)."""
    x = images if features is None else features
    x = F.conv2d(x, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"],
                 stride=state["patch_embed.proj.weight"].shape[-1])
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([state["cls_token"].expand(x.shape[0], -1, -1), x], dim=1) + state["pos_embed"]
    dim = x.shape[-1]
    i = 0
    while f"blocks.{i}.norm1.weight" in state:
        p = f"blocks.{i}."
        h = F.layer_norm(x, (dim,), state[p + "norm1.weight"], state[p + "norm1.bias"], eps)
        qkv = F.linear(h, state[p + "attn.qkv.weight"], state[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(x.shape[0], x.shape[1], 3, num_heads, -1).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-1, -2) / (q.shape[-1] ** 0.5), dim=-1)
        h = (attn @ v).transpose(1, 2).reshape(x.shape)
        x = x + F.linear(h, state[p + "attn.proj.weight"], state[p + "attn.proj.bias"])
        h = F.layer_norm(x, (dim,), state[p + "norm2.weight"], state[p + "norm2.bias"], eps)
        h = F.linear(F.gelu(F.linear(h, state[p + "mlp.fc1.weight"], state[p + "mlp.fc1.bias"])),
                     state[p + "mlp.fc2.weight"], state[p + "mlp.fc2.bias"])
        x = x + h
        i += 1
    x = F.layer_norm(x, (dim,), state["norm.weight"], state["norm.bias"], eps)
    return F.linear(x[:, 0], state["head.weight"], state["head.bias"])


def random_vit_state(dim, depth, mlp, patch, grid, channels, classes, generator):
    """Random weights that keep activations of order 1 at any width and depth: kernels N(0, 1/fan_in),
    norm scales 1 + N(0, 0.2^2), biases and embeddings N(0, 0.2^2)."""

    def r(*shape, scale=0.2):
        return torch.randn(*shape, generator=generator) * scale

    def w(*shape):  # a torch (out, in, ...) kernel
        return r(*shape, scale=math.prod(shape[1:]) ** -0.5)

    state = {
        "cls_token": r(1, 1, dim), "pos_embed": r(1, 1 + grid * grid, dim),
        "patch_embed.proj.weight": w(dim, channels, patch, patch), "patch_embed.proj.bias": r(dim),
        "norm.weight": 1 + r(dim), "norm.bias": r(dim), "head.weight": w(classes, dim), "head.bias": r(classes),
    }
    for i in range(depth):
        p = f"blocks.{i}."
        state.update({
            p + "norm1.weight": 1 + r(dim), p + "norm1.bias": r(dim),
            p + "norm2.weight": 1 + r(dim), p + "norm2.bias": r(dim),
            p + "attn.qkv.weight": w(3 * dim, dim), p + "attn.qkv.bias": r(3 * dim),
            p + "attn.proj.weight": w(dim, dim), p + "attn.proj.bias": r(dim),
            p + "mlp.fc1.weight": w(mlp, dim), p + "mlp.fc1.bias": r(mlp),
            p + "mlp.fc2.weight": w(dim, mlp), p + "mlp.fc2.bias": r(dim),
        })
    return state
