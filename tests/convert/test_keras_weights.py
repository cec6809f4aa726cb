"""Keras `.weights.h5` files load as strictly as transformers and timm checkpoints: every
difference listed, nothing assigned when there is any."""

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit.convert import load_weights
from tests.conftest import to_numpy


def _vit(**kwargs):
    config = dict(patch_size=8, hidden_dim=16, depth=4, num_heads=2, mlp_dim=16, input_shape=(16, 16, 3), classes=3)
    return keras_vit.applications.VisionTransformer(**{**config, **kwargs})


def _saved(tmp_path, model, name="model"):
    path = str(tmp_path / f"{name}.weights.h5")
    model.save_weights(path)
    return path


def _values(model):
    return [to_numpy(weight).copy() for weight in model.weights]


def _unchanged(model, before):
    return all(np.array_equal(a, to_numpy(b)) for a, b in zip(before, model.weights))


def test_a_deeper_file_is_refused_by_a_shallower_model(tmp_path):
    path = _saved(tmp_path, _vit(depth=4))
    expected = (r"does not match model 'vision_transformer':\n  - weights in the file the model does not have: "
                r"block_2 \(layers/transformer_block_2\): 12 weights; block_3 \(layers/transformer_block_3\): 12 weights")
    with pytest.raises(ValueError, match=expected):
        _vit(depth=2, weights=path)
    shallow = _vit(depth=2)
    before = _values(shallow)
    with pytest.raises(ValueError, match=expected):
        load_weights(shallow, path)
    assert _unchanged(shallow, before)


def test_a_shallower_file_is_refused_and_nothing_is_assigned(tmp_path):
    path = _saved(tmp_path, _vit(depth=2))
    deep = _vit(depth=4)
    before = _values(deep)
    with pytest.raises(ValueError, match=r"weights the model has and the file lacks: block_2 .*; block_3 \(layers/transformer_block_3\)"):
        load_weights(deep, path)
    assert _unchanged(deep, before)  # Keras alone would fill blocks 0-1 before failing


def test_every_shape_difference_is_listed(tmp_path):
    path = _saved(tmp_path, _vit())
    other = _vit(input_shape=(32, 32, 3), classes=5)
    before = _values(other)
    with pytest.raises(ValueError) as error:
        load_weights(other, path)
    message = str(error.value)
    assert "patch_embedding/position_embedding (layers/patch_embedding/vars/1): file shape (1, 5, 16) != model shape (1, 17, 16)" in message
    assert "head/kernel (layers/dense/vars/0): file shape (16, 3) != model shape (16, 5)" in message
    assert "head/bias (layers/dense/vars/1): file shape (3,) != model shape (5,)" in message
    assert "include_top=False" in message
    assert _unchanged(other, before)


def test_matching_files_load_and_a_headless_model_skips_the_head(tmp_path):
    source = _vit()
    images = np.random.RandomState(0).rand(2, 16, 16, 3).astype("float32") * 255
    path = _saved(tmp_path, source)
    np.testing.assert_allclose(to_numpy(_vit(weights=path)(images)), to_numpy(source(images)), atol=1e-6)
    features = keras.Model(source.input, source.get_layer("head").input)
    np.testing.assert_allclose(to_numpy(_vit(include_top=False, weights=path)(images)), to_numpy(features(images)), atol=1e-6)
    resnet = keras_vit.applications.ResNet(depths=(1,), widths=(4,), filters=(8,), input_shape=(16, 16, 3), classes=2)
    again = keras_vit.applications.ResNet(
        depths=(1,), widths=(4,), filters=(8,), input_shape=(16, 16, 3), classes=2, weights=_saved(tmp_path, resnet, "resnet")
    )
    assert all(np.array_equal(to_numpy(a), to_numpy(b)) for a, b in zip(resnet.weights, again.weights))


def test_a_file_that_is_not_hdf5_is_a_value_error(tmp_path):
    path = tmp_path / "broken.weights.h5"
    path.write_text("not hdf5")
    with pytest.raises(ValueError, match="Cannot read .*broken.weights.h5' as a Keras .weights.h5 file"):
        load_weights(_vit(), str(path))
    with pytest.raises(ValueError, match="does not exist"):
        load_weights(_vit(), str(tmp_path / "missing.weights.h5"))
