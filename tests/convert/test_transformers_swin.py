import numpy as np
import pytest
import torch
from transformers import SwinConfig, SwinForImageClassification

from keras_vit.convert import load_transformers_checkpoint
from tests.conftest import to_numpy


def _save_swin(path, **overrides):
    config = dict(image_size=32, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4,
                  num_labels=5)
    config.update(overrides)
    torch.manual_seed(0)
    model = SwinForImageClassification(SwinConfig(**config)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.3)
    model.save_pretrained(path)
    return model


def _compare(reference, model, size, seed=0):
    images = np.random.RandomState(seed).randn(2, 3, size, size).astype("float32")
    with torch.no_grad():
        expected = reference(torch.from_numpy(images)).logits.numpy()
    np.testing.assert_allclose(to_numpy(model(np.transpose(images, (0, 2, 3, 1)))), expected, atol=1e-4)


def test_shifted_windows_match_transformers(tmp_path):
    # 16x16 tokens, window 4: stage 0 has 4x4 windows, shifted by 2 in every second block.
    reference = _save_swin(tmp_path)
    _compare(reference, load_transformers_checkpoint(str(tmp_path)), 32)


@pytest.mark.parametrize("image_size", [40, 44])
def test_grid_that_needs_padding_matches_transformers(tmp_path, image_size):
    # 20x20 / 22x22 tokens are not multiples of the window 8: padded windows, odd merges.
    reference = _save_swin(tmp_path, image_size=image_size, window_size=8)
    _compare(reference, load_transformers_checkpoint(str(tmp_path)), image_size)
