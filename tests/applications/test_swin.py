import keras
import numpy as np
import pytest

import keras_vit
from keras_vit.applications import SwinTransformer
from keras_vit.applications.complexity import measure
from tests.conftest import to_numpy

PARAMS = {"swin_t": 28_288_354, "swin_s": 49_606_258, "swin_b": 87_768_224, "swin_b_384": 87_903_584,
          "swin_l": 196_532_476}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_counts_match_reference(name):
    assert keras_vit.create_model(name).count_params() == PARAMS[name]


def _tiny(**kwargs):
    config = dict(embed_dim=8, depths=(2, 2), num_heads=(2, 4), window_size=4, patch_size=2,
                  input_shape=(32, 32, 3), classes=3)
    config.update(kwargs)
    return SwinTransformer(**config)


@pytest.mark.parametrize("size", [32, 36, 50])
def test_any_size_divisible_by_the_patch_runs(size):
    model = _tiny(input_shape=(size, size, 3), include_top=False, pooling=None)
    grid = -(-(size // 2) // 2)
    assert model(np.zeros((1, size, size, 3), "float32")).shape == (1, grid, grid, 16)


def test_bad_arguments():
    with pytest.raises(ValueError, match="divisible by the patch size 2"):
        _tiny(input_shape=(33, 33, 3))
    with pytest.raises(ValueError, match="pooling must be 'avg' or None"):
        _tiny(pooling="token")
    with pytest.raises(ValueError, match="one entry per stage"):
        _tiny(num_heads=(2,))


def test_save_load_and_train(tmp_path):
    model = _tiny(drop_path_rate=0.1)
    images = np.random.RandomState(0).rand(4, 32, 32, 3).astype("float32") * 255
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(images, np.arange(4) % 3, epochs=1, verbose=0)
    model.save(tmp_path / "swin.keras")
    restored = keras.saving.load_model(tmp_path / "swin.keras")
    np.testing.assert_allclose(to_numpy(restored(images)), to_numpy(model(images)), atol=1e-5)


def test_attention_memory_grows_linearly_for_swin_and_quadratically_for_vit():
    swin = [measure(_tiny(input_shape=(s, s, 3))).attention_elements for s in (32, 64)]
    vit = [measure(keras_vit.create_model("vit_pico8", pooling="gap", input_shape=(s, s, 3))).attention_elements
           for s in (64, 128)]
    assert swin[1] == 4 * swin[0]  # M^2 * H * W
    assert vit[1] == 16 * vit[0]  # (H * W)^2
