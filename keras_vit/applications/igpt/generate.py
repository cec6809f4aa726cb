"""Sampling images from an iGPT, one pixel token at a time, with a key/value cache.

`generate` runs the whole sampling loop as one compiled call (`predict_on_batch`:
`jax.jit`, `tf.function` or torch eager), with `keras.ops.fori_loop` over the tokens.
With the cache (default) each new token runs the blocks on one position and attends
to the cached keys and values: `O(T)` per token instead of a full `O(T^2)` forward
pass. Randomness is Gumbel noise drawn once from `seed`, so cached and uncached
sampling pick the same tokens.
"""

import keras
import numpy as np
from keras import ops

# Logit of the colors top-k excludes (finite, so that adding Gumbel noise stays finite).
_EXCLUDED = -1e9


def generate(model, num_samples=None, prompt=None, temperature=1.0, top_k=None, seed=None, use_cache=True):
    """Samples image token sequences from a causal iGPT.

    Args:
        model: an `ImageGPT` with its palette head (`include_top=True`, no `classes`),
            trained with `objective="causal"`.
        num_samples: images to sample without a prompt.
        prompt: optional int `(batch, P)` palette indices: the first `P` pixels in raster
            order (e.g. the top half of images, to complete the bottom half).
        temperature: divides the logits (> 0); lower is more conservative.
        top_k: sample among the `top_k` most likely colors only (None: all).
        seed: int seed of the sampling noise; the same seed gives the same images.
        use_cache: attend to cached keys and values (False: a full forward pass per
            token, for comparison).

    Returns int32 NumPy `(batch, T)` palette indices, the prompt included.
    """
    palette_size, tokens = _check_model(model)
    start_id = palette_size  # the id after the colors
    if prompt is None:
        if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise ValueError(f"generate: give num_samples (a positive int) or a prompt, got num_samples={num_samples!r}.")
        prompt = np.zeros((int(num_samples), 0), "int32")
    elif num_samples is not None and num_samples != len(prompt):
        raise ValueError(
            f"generate: num_samples={num_samples!r} but the prompt has {len(prompt)} rows; a prompt gives one "
            "image per row, so pass one of the two."
        )
    prompt = np.asarray(prompt)
    if prompt.ndim != 2 or not np.issubdtype(prompt.dtype, np.integer):
        raise ValueError(f"generate: prompt must be int palette indices of shape (batch, pixels), got {prompt.dtype} {prompt.shape}.")
    if prompt.shape[1] > tokens:
        raise ValueError(
            f"generate: the prompt has {prompt.shape[1]} pixels, more than the model's image of {tokens} "
            f"({int(tokens**0.5)}x{int(tokens**0.5)}). Give at most {tokens} pixels (half an image is {tokens // 2})."
        )
    if prompt.size and (prompt.min() < 0 or prompt.max() >= palette_size):
        bad = prompt.min() if prompt.min() < 0 else prompt.max()
        raise ValueError(f"generate: prompt token {bad} is outside the palette of {palette_size} colors [0, {palette_size - 1}].")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.floating)) or not temperature > 0:
        raise ValueError(f"generate: temperature must be > 0, got {temperature!r}; use top_k=1 for greedy sampling.")
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= palette_size):
        raise ValueError(f"generate: top_k must be an int in [1, {palette_size}] (the palette size), got {top_k!r}.")
    batch, known = prompt.shape
    if known == tokens:
        return prompt.astype("int32")
    sequence = np.zeros((batch, tokens + 1), "int32")
    sequence[:, 0] = start_id
    sequence[:, 1 : known + 1] = prompt
    uniform = keras.random.uniform((batch, tokens, palette_size), minval=1e-10, maxval=1.0, seed=seed)
    gumbel = -ops.log(-ops.log(uniform))
    sampler = _sampler(model, known, temperature, top_k, use_cache)
    sampled = sampler.predict_on_batch([sequence, ops.convert_to_numpy(gumbel)])
    return np.asarray(sampled)[:, 1:].astype("int32")


def _check_model(model):
    """`(palette_size, tokens)` of a causal iGPT; ValueError for anything else."""
    names = {layer.name for layer in model.layers}
    if not {"embedding", "lm_head", "norm"} <= names:
        raise ValueError(
            f"generate needs an iGPT with its palette head (keras_vit.create_model('igpt_s')), got model {model.name!r} "
            "without an 'lm_head' layer (a classifier or a feature model cannot sample)."
        )
    block = model.get_layer("block0")
    if not block.attention.causal:
        raise ValueError(f"generate: {model.name!r} was built with objective='masked'; sampling pixel by pixel needs a causal model.")
    palette_size = model.get_layer("lm_head").units
    return palette_size, model.input.shape[1]


def _sampler(model, known, temperature, top_k, use_cache):
    """The sampling model for these settings, kept on `model` so that a second call reuses its
    compiled function."""
    key = (known, float(temperature), top_k, bool(use_cache))
    cache = model.__dict__.setdefault("_keras_vit_samplers", {})
    if key not in cache:
        cache[key] = _ImageGPTSampler(model, known, temperature, top_k, use_cache)
    return cache[key]


class _ImageGPTSampler(keras.Model):
    """Runs the sampling loop with `model`'s layers (shared weights).

    Input: `[sequence, gumbel]`: int `(batch, T + 1)` (the start id, then the known
    pixels, then anything) and float `(batch, T, palette)` noise. Output: the sequence
    with every pixel after the known ones sampled.
    """

    def __init__(self, model, known, temperature, top_k, use_cache):
        super().__init__(name=f"{model.name}_sampler")
        self.embedding = model.get_layer("embedding")
        self.blocks = [layer for layer in model.layers if layer.name.startswith("block")]
        self.norm = model.get_layer("norm")
        self.head = model.get_layer("lm_head")
        self.tokens = model.input.shape[1]
        self.known = known
        self.temperature = float(temperature)
        self.top_k = top_k
        self.use_cache = use_cache

    def call(self, inputs):
        sequence, gumbel = inputs
        sequence = ops.cast(sequence, "int32")
        if not self.use_cache:
            return ops.fori_loop(self.known, self.tokens, lambda i, seq: self._uncached_step(i, seq, gumbel), sequence)
        batch = ops.shape(sequence)[0]
        attention = self.blocks[0].attention
        shape = (batch, 2, self.tokens, attention.num_heads, attention.head_dim)
        caches = [ops.zeros(shape, self.compute_dtype) for _ in self.blocks]
        # The prompt (the start id and the known pixels) in one pass fills the caches.
        logits, caches = self._forward(sequence[:, : self.known + 1], caches, 0)
        sequence = self._write(sequence, self.known, logits[:, -1], gumbel)

        def step(i, state):
            seq, caches = state
            logits, caches = self._forward(ops.slice(seq, [0, i], [batch, 1]), caches, i)
            return self._write(seq, i, logits[:, 0], gumbel), caches

        sequence, _ = ops.fori_loop(self.known + 1, self.tokens, step, (sequence, tuple(caches)))
        return sequence

    def _forward(self, tokens, caches, start):
        """Logits `(batch, n, palette)` of `tokens` at positions `start..start + n - 1`, and the updated caches."""
        x = self.embedding(tokens, start_index=start)
        updated = []
        for block, cache in zip(self.blocks, caches):
            x, cache = block(x, cache=cache, cache_index=start)
            updated.append(cache)
        return self.head(self.norm(x)), tuple(updated)

    def _uncached_step(self, i, sequence, gumbel):
        x = self.embedding(sequence[:, : self.tokens])
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.norm(x))
        position_logits = ops.take(logits, i, axis=1)
        return self._write(sequence, i, position_logits, gumbel)

    def _write(self, sequence, i, logits, gumbel):
        """Samples pixel `i` from its logits `(batch, palette)` into `sequence[:, i + 1]`."""
        logits = ops.cast(logits, "float32") / self.temperature
        if self.top_k is not None:
            kth = ops.top_k(logits, self.top_k, sorted=True)[0][:, -1:]
            logits = ops.where(logits >= kth, logits, _EXCLUDED)
        noise = ops.take(gumbel, i, axis=1)
        token = ops.cast(ops.argmax(logits + ops.cast(noise, "float32"), axis=-1), "int32")
        return ops.slice_update(sequence, [0, i + 1], token[:, None])
