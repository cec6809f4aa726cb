"""Image listing and loading, top-k predictions, and attention rollout against a naive NumPy
rollout of attention weights recomputed from each block's own LayerNorm and qkv weights."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vit
from keras_vit.applications.vit.model import VisionTransformer
from keras_vit.data import load_dataset
from keras_vit.evaluation import (
    attention_rollout,
    list_image_files,
    load_images,
    predict_images,
    save_attention_overlay,
)
from tests.conftest import randomize_weights, to_numpy

SIZE = 32


def _write_image(path, height, width, seed, fmt="png", channels=3):
    pixels = np.random.RandomState(seed).randint(0, 256, size=(height, width, channels)).astype(np.uint8)
    encode = tf.io.encode_png if fmt == "png" else tf.io.encode_jpeg
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as file:
        file.write(encode(pixels).numpy())


@pytest.fixture
def image_folder(tmp_path):
    """`root/{train,val}/{a,b}/` with non-square PNGs, a JPEG and a grayscale PNG in `val/`."""
    root = tmp_path / "images"
    for split in ("train", "val"):
        _write_image(str(root / split / "a" / "1.png"), 40, 56, seed=1)
        _write_image(str(root / split / "a" / "2.jpg"), 64, 48, seed=2, fmt="jpeg")
        _write_image(str(root / split / "b" / "3.png"), 45, 45, seed=3, channels=1)
        _write_image(str(root / split / "b" / "4.png"), 33, 70, seed=4)
    return root


def _vit(pooling="avg", activation=None, seed=0):
    if pooling == "avg":
        model = keras_vit.create_model("vit_pico8", classes=3, input_shape=(SIZE, SIZE, 3),
                                       classifier_activation=activation)
    else:
        model = VisionTransformer(patch_size=8, hidden_dim=32, depth=2, num_heads=2, mlp_dim=64, pooling=pooling,
                                  input_shape=(SIZE, SIZE, 3), classes=3, classifier_activation=activation,
                                  name="tiny_vit_token")
    randomize_weights(model, seed)
    return model


# list_image_files


@pytest.mark.backend_agnostic  # files, tf.data and NumPy only
def test_list_image_files_recurses_sorts_skips_hidden_and_keeps_given_order(image_folder):
    val = image_folder / "val"
    _write_image(str(val / ".hidden.png"), 8, 8, seed=5)
    _write_image(str(val / ".cache" / "5.png"), 8, 8, seed=6)
    (val / "notes.txt").write_text("not an image")
    single = str(image_folder / "train" / "b" / "4.png")
    files = list_image_files([single, str(val), single])
    expected = [str(val / "a" / "1.png"), str(val / "a" / "2.jpg"), str(val / "b" / "3.png"), str(val / "b" / "4.png")]
    assert files == [single, *expected]
    assert list_image_files(str(val / "a" / "2.jpg")) == [str(val / "a" / "2.jpg")]


@pytest.mark.backend_agnostic  # files, tf.data and NumPy only
def test_list_image_files_errors_name_the_path_and_the_fix(tmp_path, image_folder):
    missing = str(tmp_path / "missing.png")
    with pytest.raises(ValueError, match=f"{missing!r}: no such file or folder"):
        list_image_files([missing])
    fake = tmp_path / "fake.jpg"
    fake.write_text("hello")
    with pytest.raises(ValueError, match=r"fake.jpg' is not an image: it starts with b'hell'.*convert it"):
        list_image_files([str(image_folder / "val"), str(fake)])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="is not an image: it is empty"):
        list_image_files(str(empty))
    bad_in_folder = image_folder / "val" / "b" / "broken.png"
    bad_in_folder.write_text("text")
    with pytest.raises(ValueError, match="broken.png' is not an image"):
        list_image_files(str(image_folder / "val"))
    no_images = tmp_path / "no_images"
    (no_images / "sub").mkdir(parents=True)
    (no_images / "sub" / "readme.txt").write_text("x")
    _write_image(str(no_images / ".hidden.png"), 8, 8, seed=0)
    with pytest.raises(ValueError, match=f"Folder {str(no_images)!r} holds no images.*Pass a folder with images"):
        list_image_files(str(no_images))


# load_images


@pytest.mark.backend_agnostic  # files, tf.data and NumPy only
def test_load_images_equals_the_evaluation_pipeline(image_folder):
    for fraction in (0.875, 1.0):
        dataset, info = load_dataset(str(image_folder), "validation", image_size=SIZE, batch_size=8,
                                     training=False, eval_crop_fraction=fraction)
        expected = np.concatenate([images for images, _ in dataset.as_numpy_iterator()])
        images = load_images(list_image_files(str(image_folder / "val")), SIZE, fraction)
        assert images.shape == (4, SIZE, SIZE, 3) and images.dtype == np.float32
        assert info.num_examples == 4
        np.testing.assert_array_equal(images, expected)
        assert 0.0 <= images.min() and images.max() <= 255.0


@pytest.mark.backend_agnostic  # files, tf.data and NumPy only
def test_load_images_refuses_bad_options_and_undecodable_files(tmp_path, image_folder):
    path = str(image_folder / "val" / "a" / "1.png")
    with pytest.raises(ValueError, match="eval_crop_fraction must be in"):
        load_images([path], SIZE, 0.0)
    with pytest.raises(ValueError, match="image_size must be a positive int"):
        load_images([path], 0)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(open(path, "rb").read()[:40])
    with pytest.raises(ValueError, match="truncated.png' could not be decoded"):
        load_images([str(truncated)], SIZE)


# predict_images


def _softmax(logits):
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("activation", [None, "softmax"])
def test_predict_images_gives_sorted_top_k_probabilities(image_folder, activation):
    model = _vit(activation=activation)
    names = ["circle", "square", "triangle"]
    results = predict_images(model, [str(image_folder / "val")], names, SIZE, top_k=2, batch_size=3)
    files = list_image_files(str(image_folder / "val"))
    outputs = to_numpy(model.predict(load_images(files, SIZE), verbose=0)).astype(np.float64)
    expected = outputs if activation == "softmax" else _softmax(outputs)
    assert [result["path"] for result in results] == files
    for result, row in zip(results, expected):
        probabilities = [entry["probability"] for entry in result["top"]]
        assert len(result["top"]) == 2
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-6
        order = np.argsort(-row)[:2]
        assert [entry["class"] for entry in result["top"]] == [names[i] for i in order]
        np.testing.assert_allclose(probabilities, row[order], atol=1e-5)
    every = predict_images(model, files[:1], names, SIZE, top_k=10, progress=False)
    assert sum(entry["probability"] for entry in every[0]["top"]) == pytest.approx(1.0, abs=1e-5)
    assert len(every[0]["top"]) == 3


def test_predict_images_checks_class_names_and_options(image_folder):
    model = _vit()
    path = str(image_folder / "val" / "a" / "1.png")
    with pytest.raises(ValueError, match="3 outputs but 2 class names"):
        predict_images(model, [path], ["a", "b"], SIZE)
    with pytest.raises(ValueError, match="top_k must be a positive int"):
        predict_images(model, [path], ["a", "b", "c"], SIZE, top_k=0)


# attention_rollout


def _layer_norm(x, layer):
    gamma, beta = (to_numpy(weight).astype(np.float64) for weight in (layer.gamma, layer.beta))
    mean = x.mean(axis=-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + layer.epsilon) * gamma + beta


def _naive_attention_weights(x, block):
    """`(batch, heads, tokens, tokens)` softmax(q k^T / sqrt(d)) from the block's own weights."""
    normed = _layer_norm(x, block.norm1)
    kernel = to_numpy(block.attention.qkv.kernel).astype(np.float64)
    bias = to_numpy(block.attention.qkv.bias).astype(np.float64)
    qkv = normed @ kernel + bias
    batch, tokens, width = x.shape
    heads = block.attention.num_heads
    dim = width // heads
    weights = np.zeros((batch, heads, tokens, tokens))
    for b in range(batch):
        for h in range(heads):
            q = qkv[b, :, h * dim : (h + 1) * dim]
            k = qkv[b, :, width + h * dim : width + (h + 1) * dim]
            logits = q @ k.T / np.sqrt(dim)
            exp = np.exp(logits - logits.max(axis=1, keepdims=True))
            weights[b, h] = exp / exp.sum(axis=1, keepdims=True)
    return weights


def _naive_rollout(model, images, class_token):
    """Rollout with explicit loops from `_naive_attention_weights` of each block's input."""
    tokens = model.get_layer("patch_embedding")(model.get_layer("preprocessing")(images))
    blocks = [layer for layer in model.layers if layer.name.startswith("block_")]
    per_block = []
    for block in blocks:
        per_block.append(_naive_attention_weights(to_numpy(tokens).astype(np.float64), block))
        tokens = block(tokens)
    batch, _, count, _ = per_block[0].shape
    grid = int(round(np.sqrt(count - class_token)))
    maps = np.zeros((batch, grid, grid))
    for b in range(batch):
        joint = np.eye(count)
        for weights in per_block:
            mixed = weights[b].mean(axis=0) + np.eye(count)
            for row in range(count):
                mixed[row] /= mixed[row].sum()
            joint = mixed @ joint
        row = joint[0] if class_token else joint.mean(axis=0)
        patches = row[class_token:].reshape(grid, grid)
        maps[b] = (patches - patches.min()) / (patches.max() - patches.min())
    return maps


@pytest.mark.parametrize("pooling", ["avg", "token"])
def test_attention_rollout_matches_a_naive_numpy_rollout(pooling):
    model = _vit(pooling)
    images = np.random.RandomState(1).rand(3, SIZE, SIZE, 3).astype("float32") * 255
    maps = attention_rollout(model, images, batch_size=2)
    expected = _naive_rollout(model, images, class_token=int(pooling == "token"))
    assert maps.shape == (3, SIZE // 8, SIZE // 8) and maps.dtype == np.float32
    assert maps.min() == 0.0 and maps.max() == 1.0
    np.testing.assert_allclose(maps, expected, atol=1e-4, rtol=1e-4)
    # The attention is far from uniform, so the maps say something (and differ per image).
    assert np.abs(maps[0] - maps[1]).max() > 0.1


def test_attention_rollout_refuses_models_without_global_attention():
    from keras_vit.applications.swin.model import SwinTransformer

    swin = SwinTransformer(embed_dim=16, depths=(1, 1), num_heads=(1, 2), window_size=4, input_shape=(SIZE, SIZE, 3),
                           classes=3)
    inputs = keras.Input((SIZE, SIZE, 3))
    cnn = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(inputs)))
    for model in (swin, cnn):
        with pytest.raises(ValueError, match="Attention maps are available for ViT models"):
            attention_rollout(model, np.zeros((1, SIZE, SIZE, 3), np.float32))


def test_attention_overlay_png_is_written(tmp_path, image_folder):
    model = _vit()
    images = load_images(list_image_files(str(image_folder / "val" / "a")), SIZE)
    maps = attention_rollout(model, images)
    path = tmp_path / "attention" / "1.png"
    save_attention_overlay(images[0], maps[0], path, title="circle 0.93")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 5000
    with pytest.raises(ValueError, match="index the batch first"):
        save_attention_overlay(images, maps, tmp_path / "x.png")


@pytest.mark.backend_agnostic  # files, tf.data and NumPy only
def test_swin_attention_puts_each_window_key_back_where_it_sits():
    """One window's weights all on one key: the map peaks at that key's pixel, after the shift is undone."""
    from types import SimpleNamespace

    from keras_vit.evaluation.predict import _received_attention

    attention = SimpleNamespace(effective_window=2, effective_shift=1, padded_size=(4, 6))
    scores = np.zeros((2 * 3, 1, 4, 4))  # 1 image, 2x3 windows of 2x2, 1 head
    scores[4, :, :, 3] = 1.0  # window (row 1, col 1), key (1, 1): shifted-map pixel (3, 3)
    expected = np.zeros((4, 6))
    expected[(3 + 1) % 4, (3 + 1) % 6] = 1.0  # the shift of 1 rolled back
    np.testing.assert_array_equal(_received_attention(attention, scores, (4, 6))[0], expected)


def test_swin_models_get_their_last_stage_attention():
    from keras_vit.applications.swin.model import SwinTransformer
    from keras_vit.evaluation.predict import attention_map_kind, attention_maps, swin_attention

    swin = SwinTransformer(embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=2, input_shape=(32, 32, 3),
                           classes=3)
    images = np.random.RandomState(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    maps = swin_attention(swin, images, batch_size=2)
    assert maps.shape == (3, 4, 4) and maps.min() == 0.0 and maps.max() == 1.0
    np.testing.assert_array_equal(attention_maps(swin, images), maps)
    assert attention_map_kind(swin) == "last-stage attention" and attention_map_kind(_vit()) == "attention rollout"
