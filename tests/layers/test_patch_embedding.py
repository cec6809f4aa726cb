import numpy as np
import pytest
import torch

from keras_vit.layers import PatchEmbedding, resize_position_embedding
from tests.conftest import assert_parity, to_numpy


def test_tokens_are_projected_patches_plus_position():
    images = np.random.RandomState(0).rand(2, 8, 12, 3).astype("float32")
    layer = PatchEmbedding(hidden_dim=5, patch_size=4)
    tokens = to_numpy(layer(images))
    assert tokens.shape == (2, 1 + 2 * 3, 5)
    kernel, bias = to_numpy(layer.projection.kernel), to_numpy(layer.projection.bias)
    position = to_numpy(layer.position_embedding)[0]
    patch = images[1, 4:8, 8:12]  # row 1, column 2 -> token 1 + 1 * 3 + 2
    expected = np.einsum("hwc,hwcd->d", patch, kernel) + bias + position[6]
    assert_parity(tokens[1, 6], expected, "patch token vs NumPy projection")
    assert_parity(tokens[0, 0], to_numpy(layer.class_token)[0, 0] + position[0], "class token + position")


def test_without_class_token():
    layer = PatchEmbedding(hidden_dim=4, patch_size=2, use_class_token=False)
    assert tuple(layer(np.zeros((1, 4, 4, 3), "float32")).shape) == (1, 4, 4)


def test_size_not_divisible_by_patch():
    with pytest.raises(ValueError, match="not divisible by the patch size 16x16"):
        PatchEmbedding(hidden_dim=4, patch_size=16)(np.zeros((1, 40, 32, 3), "float32"))


@pytest.mark.parametrize("method,mode", [("bicubic", "bicubic"), ("bilinear", "bilinear")])
@pytest.mark.parametrize("source,target", [((4, 4), (6, 6)), ((7, 7), (3, 5)), ((3, 3), (12, 12))])
def test_resize_matches_torch_interpolate(method, mode, source, target):
    rng = np.random.RandomState(0)
    embedding = rng.randn(1, 1 + source[0] * source[1], 3).astype("float32")
    resized = resize_position_embedding(embedding, target, 1, source, method)
    grid = torch.from_numpy(embedding[0, 1:].reshape(1, *source, 3)).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=target, mode=mode, align_corners=False)
    expected = expected.permute(0, 2, 3, 1).reshape(1, -1, 3).numpy()
    assert_parity(resized[:, 1:], expected, f"{method} position embedding resize vs torch interpolate")
    np.testing.assert_array_equal(resized[:, :1], embedding[:, :1])


def test_set_position_embedding_resizes_to_the_built_grid():
    layer = PatchEmbedding(hidden_dim=2, patch_size=4)
    layer.build((None, 24, 24, 3))
    source = np.random.RandomState(1).randn(1, 1 + 16, 2).astype("float32")
    layer.set_position_embedding(source)
    assert to_numpy(layer.position_embedding).shape == (1, 1 + 36, 2)
    np.testing.assert_allclose(to_numpy(layer.position_embedding), resize_position_embedding(source, (6, 6)), atol=1e-6)


def test_non_square_embedding_needs_source_grid():
    with pytest.raises(ValueError, match="not square"):
        resize_position_embedding(np.zeros((1, 1 + 6, 2)), (2, 2))
