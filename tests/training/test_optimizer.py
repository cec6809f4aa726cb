import keras
import numpy as np

from keras_vit.applications import VisionTransformer
from keras_vit.training import build_optimizer, warmup_cosine_schedule
from tests.conftest import to_numpy


def test_weight_decay_skips_biases_norms_tokens_and_position_embedding():
    model = VisionTransformer(patch_size=4, hidden_dim=8, depth=1, num_heads=2, mlp_dim=8, input_shape=(8, 8, 3), classes=2)
    for variable in model.trainable_weights:
        variable.assign(np.ones(variable.shape, "float32"))
    optimizer = build_optimizer(learning_rate=0.1, weight_decay=0.5, total_steps=10, warmup_steps=0)
    zero_gradients = [keras.ops.zeros(v.shape) for v in model.trainable_weights]
    optimizer.apply_gradients(zip(zero_gradients, model.trainable_weights))
    decayed = {v.path for v in model.trainable_weights if not np.allclose(to_numpy(v), 1.0)}
    expected = {v.path for v in model.trainable_weights if v.name == "kernel"}
    assert decayed == expected  # only kernels shrink: lr * wd = 0.05 per step


def test_warmup_then_cosine_schedule():
    schedule = warmup_cosine_schedule(learning_rate=1.0, total_steps=110, warmup_steps=10)
    values = [float(to_numpy(schedule(step))) for step in (0, 5, 10, 60, 110)]
    np.testing.assert_allclose(values, [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-5)


def test_weight_decay_skips_swin_position_biases_and_logit_scales():
    from keras_vit.applications import SwinTransformer

    for version in (1, 2):
        model = SwinTransformer(embed_dim=8, depths=(2,), num_heads=(2,), window_size=2, patch_size=2,
                                input_shape=(8, 8, 3), classes=2, version=version)
        for variable in model.trainable_weights:
            variable.assign(np.ones(variable.shape, "float32"))
        optimizer = build_optimizer(learning_rate=0.1, weight_decay=0.5, total_steps=10, warmup_steps=0, model=model)
        optimizer.apply_gradients(zip([keras.ops.zeros(v.shape) for v in model.trainable_weights], model.trainable_weights))
        decayed = {v.path for v in model.trainable_weights if not np.allclose(to_numpy(v), 1.0)}
        expected = {v.path for v in model.trainable_weights
                    if v.name == "kernel" and "continuous_position_bias" not in v.path}
        assert decayed == expected
