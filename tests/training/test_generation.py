"""The generative trainer (iGPT) fits on every backend: palette, next-pixel and masked-pixel
objectives, bits per dimension, the saved model with its palette, samples.png."""

import json
import math
import os

import numpy as np
import pytest

from keras_vit import create_model
from keras_vit.applications.saving import ClassifierMetadata, load_classifier, save_classifier
from keras_vit.data.palette import save_palette
from keras_vit.training import train, train_generator
from tests.conftest import to_numpy

TINY = dict(depth=1, hidden_dim=16, num_heads=2)


def _train(data_dir, output_dir, **options):
    settings = dict(
        dataset="shapes/small", data_dir=data_dir, image_size=8, palette_size=8, palette_examples=64, batch_size=8,
        epochs=1, steps_per_epoch=2, validation_steps=1, samples=2, model_kwargs=TINY, output_dir=output_dir, verbose=0,
    )
    return train_generator("igpt_pico", **{**settings, **options})


def test_causal_training_writes_model_palette_history_and_samples(shapes_data_dir, tmp_path):
    output_dir = str(tmp_path / "run")
    result = train("igpt_pico", "shapes/small", **{
        key: value for key, value in dict(
            data_dir=shapes_data_dir, image_size=8, palette_size=8, palette_examples=64, batch_size=8, epochs=2,
            steps_per_epoch=2, validation_steps=1, samples=2, model_kwargs=TINY, output_dir=output_dir, verbose=0,
        ).items()
    })
    for name in ("model.keras", "palette.npy", "history.json", "summary.json", "curves.png", "samples.png"):
        assert os.path.getsize(os.path.join(output_dir, name)) > 0, name
    history = json.load(open(os.path.join(output_dir, "history.json")))
    assert len(history["loss"]) == 2
    # bits per dimension is the loss (nats per token) over 3 ln 2
    np.testing.assert_allclose(history["val_bits_per_dim"], np.array(history["val_loss"]) / (3 * math.log(2)), rtol=1e-4)
    assert history["loss"][1] < history["loss"][0]
    assert history["loss"][0] < math.log(8) + 0.5  # starts near uniform over 8 colors
    model, metadata = load_classifier(output_dir)
    assert metadata.task == "generation" and metadata.image_size == 8
    np.testing.assert_array_equal(np.asarray(metadata.palette, "float32"), np.load(os.path.join(output_dir, "palette.npy")))
    assert model.output_shape == (None, 64, 8)
    tokens = np.random.RandomState(0).randint(0, 9, (2, 64))
    np.testing.assert_allclose(np.asarray(model.predict_on_batch(tokens)), np.asarray(result.model.predict_on_batch(tokens)), atol=1e-5)
    summary = json.load(open(os.path.join(output_dir, "summary.json")))
    assert summary["task"] == "generation" and summary["tokens"] == 64 and summary["palette_size"] == 8


def test_masked_objective_trains_on_masked_pixels_only(shapes_data_dir, tmp_path):
    result = _train(shapes_data_dir, str(tmp_path / "masked"), objective="masked")
    assert not result.model.get_layer("block0").attention.causal
    assert np.isfinite(result.history["loss"]).all()
    assert not os.path.exists(os.path.join(result.output_dir, "samples.png"))  # a masked model does not sample


def test_a_run_starts_from_a_finished_run_with_its_palette(shapes_data_dir, tmp_path):
    first = _train(shapes_data_dir, str(tmp_path / "first"), samples=0)
    # A rate of 1e-9 moves no weight measurably: the second run's model is the first run's.
    second = _train(shapes_data_dir, str(tmp_path / "second"), weights=first.output_dir, learning_rate=1e-9,
                    palette_examples=8, samples=0)
    for before, after in zip(first.model.weights, second.model.weights):
        np.testing.assert_allclose(to_numpy(after), to_numpy(before), atol=1e-6, err_msg=before.path)
    np.testing.assert_array_equal(np.load(str(tmp_path / "second" / "palette.npy")),
                                  np.load(str(tmp_path / "first" / "palette.npy")))
    other = save_palette(str(tmp_path / "other.npy"), np.linspace(-1, 1, 24, dtype="float32").reshape(8, 3))
    with pytest.raises(ValueError, match="is not the palette .* was trained with"):
        _train(shapes_data_dir, str(tmp_path / "third"), weights=first.output_dir, palette=other)
    classifier = create_model("vit_pico8", input_shape=(32, 32, 3), classes=2)
    save_classifier(classifier, str(tmp_path / "vit.keras"), ClassifierMetadata(class_names=["a", "b"], image_size=32))
    with pytest.raises(ValueError, match="is a classification model; a generative run starts from a generative"):
        _train(shapes_data_dir, str(tmp_path / "fourth"), weights=str(tmp_path / "vit.keras"))


@pytest.mark.backend_agnostic
def test_bad_options_are_refused_before_training(shapes_data_dir, tmp_path):
    with pytest.raises(ValueError, match="is a classification model"):
        train_generator("vit_pico8", dataset="shapes/small", data_dir=shapes_data_dir, output_dir=str(tmp_path / "a"))
    palette = save_palette(str(tmp_path / "palette.npy"), np.linspace(-1, 1, 12, dtype="float32").reshape(4, 3))
    with pytest.raises(ValueError, match="palette_size=8 but the palette"):
        _train(shapes_data_dir, str(tmp_path / "b"), palette=palette)
    with pytest.raises(ValueError, match="not options of the generative trainer"):
        _train(shapes_data_dir, str(tmp_path / "c"), recipe="augreg-light1")
    with pytest.raises(ValueError, match="objective"):
        _train(shapes_data_dir, str(tmp_path / "d"), objective="autoregressive")
