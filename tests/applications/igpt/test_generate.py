"""iGPT sampling: the key/value cache changes nothing but the speed, the seed decides the samples,
prompts are kept and continued, top_k=1 is greedy decoding, and bad requests are refused.

Each distinct (prompt length, temperature, top_k, use_cache) compiles one sampler (seconds on JAX),
so the tests share one model and few settings."""

import keras
import numpy as np
import pytest

from keras_vit.applications.igpt import ImageGPT
from keras_vit.applications.igpt.generate import generate

PALETTE, SIDE = 8, 4
TOKENS = SIDE * SIDE
TINY = dict(hidden_dim=16, depth=2, num_heads=2, palette_size=PALETTE, image_size=SIDE)


def _randomize(model, seed=0):
    """Order-1 weights, so that the logits of the colors are well apart (the default N(0, 0.02)
    start leaves them within ~1e-3 of each other, where rounding could pick a different color)."""
    rng = np.random.RandomState(seed)
    for weight in model.trainable_weights:
        shape = tuple(weight.shape)
        if len(shape) >= 2:
            value = rng.randn(*shape) / np.sqrt(shape[0])
        elif weight.path.endswith("scale"):
            value = 1.0 + 0.2 * rng.randn(*shape)
        else:
            value = 0.2 * rng.randn(*shape)
        weight.assign(value.astype("float32"))


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    model = ImageGPT(**TINY)
    _randomize(model)
    return model


@pytest.fixture(scope="module")
def unconditional(model):
    """Three samples of seed 1 (cached), shared by the tests that compare against them."""
    return generate(model, num_samples=3, seed=1)


def _assert_tokens(tokens, batch):
    assert tokens.shape == (batch, TOKENS) and tokens.dtype == np.int32
    assert tokens.min() >= 0 and tokens.max() < PALETTE


def test_cached_and_uncached_sampling_pick_the_same_tokens(model, unconditional):
    _assert_tokens(unconditional, 3)
    np.testing.assert_array_equal(generate(model, num_samples=3, seed=1, use_cache=False), unconditional)
    cached = generate(model, num_samples=3, seed=1, temperature=0.7, top_k=3)
    _assert_tokens(cached, 3)
    np.testing.assert_array_equal(generate(model, num_samples=3, seed=1, temperature=0.7, top_k=3, use_cache=False), cached)
    assert (cached != unconditional).any()  # temperature and top_k do change the samples
    # every pixel is one of the 3 likeliest colors given the pixels before it; without top_k, not always
    assert (_rank_of_each_pixel(model, cached) < 3).all()
    assert (_rank_of_each_pixel(model, unconditional) >= 3).any()


def _rank_of_each_pixel(model, tokens):
    """How many colors the model finds likelier than each chosen pixel, given the pixels before it
    (one teacher-forced pass: the start id, then the pixels but the last)."""
    shifted = np.concatenate([np.full((len(tokens), 1), PALETTE, "int32"), tokens[:, :-1]], axis=1)
    logits = np.asarray(model.predict_on_batch(shifted))
    return (logits > np.take_along_axis(logits, tokens[..., None], axis=-1)).sum(-1)


def test_the_seed_decides_the_samples(model, unconditional):
    # (the same seed giving the same samples is what the cached / uncached and prompt tests compare)
    other = generate(model, num_samples=3, seed=2)
    _assert_tokens(other, 3)
    assert (other != unconditional).mean() > 0.25
    assert len({row.tobytes() for row in unconditional}) == 3  # the samples of one call differ from each other


def test_a_prompt_is_kept_and_continued(model, unconditional):
    known = 6
    prompt = unconditional[:, :known].copy()
    prompt[2] = [7, 7, 0, 1, 2, 3]  # another prompt for the last image
    completed = generate(model, prompt=prompt, seed=1)
    _assert_tokens(completed, 3)
    np.testing.assert_array_equal(completed[:, :known], prompt)
    # the noise of every position is drawn from the seed, so prompting with the first pixels of
    # a sample of the same seed must give back that sample: only the rest is sampled, the same way
    np.testing.assert_array_equal(completed[:2], unconditional[:2])
    full = np.tile(np.arange(TOKENS) % PALETTE, (2, 1))
    np.testing.assert_array_equal(generate(model, prompt=full, seed=1), full)  # nothing left to sample


def test_top_k_one_is_greedy_decoding(model):
    sequence = np.full((2, TOKENS + 1), PALETTE, "int32")  # the start id, then pixels as they are chosen
    for index in range(TOKENS):  # a full forward pass per pixel, no cache
        logits = np.asarray(model.predict_on_batch(sequence[:, :TOKENS]))
        sequence[:, index + 1] = logits[:, index].argmax(-1)
    greedy = sequence[:, 1:]
    np.testing.assert_array_equal(generate(model, num_samples=2, top_k=1, seed=3), greedy)
    assert len(np.unique(greedy)) > 1  # not a degenerate constant image


def test_bad_requests_are_refused(model):
    with pytest.raises(ValueError, match=r"the prompt has 17 pixels, more than the model's image of 16 \(4x4\)\. Give at most 16"):
        generate(model, prompt=np.zeros((1, TOKENS + 1), "int32"))
    with pytest.raises(ValueError, match=r"prompt token 8 is outside the palette of 8 colors \[0, 7\]"):
        generate(model, prompt=[[0, 8]])
    with pytest.raises(ValueError, match=r"prompt token -1 is outside the palette"):
        generate(model, prompt=[[-1, 3]])
    with pytest.raises(ValueError, match=r"prompt must be int palette indices of shape \(batch, pixels\), got float64 \(1, 2\)"):
        generate(model, prompt=[[0.5, 1.0]])
    with pytest.raises(ValueError, match=r"top_k must be an int in \[1, 8\] \(the palette size\), got 9"):
        generate(model, num_samples=1, top_k=9)
    with pytest.raises(ValueError, match=r"top_k must be an int in \[1, 8\]"):
        generate(model, num_samples=1, top_k=0)
    for temperature in (0.0, -1.0):
        with pytest.raises(ValueError, match=r"temperature must be > 0, got .*; use top_k=1 for greedy"):
            generate(model, num_samples=1, temperature=temperature)
    with pytest.raises(ValueError, match=r"give num_samples \(a positive int\) or a prompt, got num_samples=None"):
        generate(model)
    with pytest.raises(ValueError, match=r"got num_samples=0"):
        generate(model, num_samples=0)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(classes=3), r"without an 'lm_head' layer \(a classifier or a feature model cannot sample\)"),
        (dict(include_top=False), r"without an 'lm_head' layer"),
        (dict(objective="masked"), r"was built with objective='masked'; sampling pixel by pixel needs a causal model"),
    ],
    ids=["classifier", "features", "masked"],
)
def test_models_that_cannot_sample_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        generate(ImageGPT(**TINY, **options), num_samples=1)
