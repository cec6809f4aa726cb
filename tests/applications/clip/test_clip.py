"""CLIP towers and the contrastive loss: the loss against NumPy, pretraining learns which caption goes with which image."""

import keras
import numpy as np
import pytest

from keras_vit.applications.clip import CLIPContrastiveLoss, CLIPTextEncoder, CLIPVisionEncoder, contrastive_model
from tests.conftest import build_shapes_only


def _reference_loss(ids, logits):
    """Mean of both directions' cross-entropy, every equal caption a positive (spread evenly)."""
    same = (ids[:, None, :] == ids[None, :, :]).all(-1).astype("float64")
    targets = same / same.sum(-1, keepdims=True)
    log_softmax = lambda z: z - z.max(-1, keepdims=True) - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))
    per_image = -(targets * log_softmax(logits)).sum(-1)
    per_text = -(targets * log_softmax(logits.T)).sum(-1)
    return float(((per_image + per_text) / 2).mean())


def test_contrastive_loss_equals_numpy_and_is_clip_loss_for_unique_captions():
    rng = np.random.RandomState(0)
    logits = rng.randn(5, 5).astype("float32") * 3
    unique = np.arange(5)[:, None].repeat(4, axis=1).astype("int32")
    loss = float(keras.ops.convert_to_numpy(CLIPContrastiveLoss()(unique, logits)))
    assert loss == pytest.approx(_reference_loss(unique, logits.astype("float64")), rel=1e-5)
    # CLIP's loss: cross-entropy against the diagonal, both ways.
    diagonal = lambda z: -np.mean(np.diag(z) - np.log(np.exp(z).sum(-1)))
    assert loss == pytest.approx((diagonal(logits.astype("float64")) + diagonal(logits.T.astype("float64"))) / 2, rel=1e-5)
    repeated = unique.copy()
    repeated[3] = repeated[1]  # images 1 and 3 share a caption: each is a positive of the other
    value = float(keras.ops.convert_to_numpy(CLIPContrastiveLoss()(repeated, logits)))
    assert value == pytest.approx(_reference_loss(repeated, logits.astype("float64")), rel=1e-5) and value != pytest.approx(loss)


def test_pretraining_learns_which_caption_goes_with_which_image():
    text = CLIPTextEncoder(width=16, depth=1, num_heads=2, mlp_dim=32, projection_dim=8, vocabulary_size=12, sequence_length=4)
    vision = CLIPVisionEncoder(patch_size=8, width=16, depth=1, num_heads=2, mlp_dim=32, projection_dim=8,
                               input_shape=(16, 16, 3))
    model = contrastive_model(text, vision)
    rng = np.random.RandomState(0)
    kinds = np.repeat(np.arange(3), 4)  # one batch: three colors, four images each, one caption per color
    colors = np.array([[230, 30, 30], [30, 230, 30], [30, 30, 230]], "float32")
    images = colors[kinds][:, None, None, :] + rng.randn(12, 16, 16, 3).astype("float32") * 10
    input_ids = np.stack([[10, 1 + kind, 11, 0] for kind in kinds]).astype("int32")
    x = {"images": images, "input_ids": input_ids, "attention_mask": (input_ids > 0).astype("int32")}
    y = {"logits_per_image": input_ids}
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss={"logits_per_image": CLIPContrastiveLoss()})
    before = model.evaluate(x, y, batch_size=12, verbose=0)
    steps = 60  # the same batch 60 times, in one epoch (one fit call per step costs more than the step)
    model.fit({key: np.tile(value, (steps,) + (1,) * (value.ndim - 1)) for key, value in x.items()},
              {"logits_per_image": np.tile(input_ids, (steps, 1))}, batch_size=12, epochs=1, shuffle=False, verbose=0)
    after = model.evaluate(x, y, batch_size=12, verbose=0)
    floor = np.log(4.0)  # each row spread evenly over its 4 positives
    assert before > floor + 1.0 and after < floor + 0.2, (before, after)
    logits = keras.ops.convert_to_numpy(model.predict_on_batch(x)["logits_per_image"])
    assert (kinds[logits.argmax(-1)] == kinds).all()  # each image's best caption names its color


@pytest.mark.slow
@pytest.mark.backend_agnostic
def test_published_parameter_counts():
    import keras_vit

    # transformers' CLIPModel at 224 px with 77 text positions (the OWL-ViT detectors' counts are in test_owl_vit).
    for name, params in {"clip_b32": 151_277_313, "clip_b16": 149_620_737, "clip_l14": 427_616_513}.items():
        assert keras_vit.model_info(name).params == params
        assert build_shapes_only(name).count_params() == params, name
