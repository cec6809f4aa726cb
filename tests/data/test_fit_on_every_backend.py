"""A tf.data pipeline of keras-vit feeds `fit` on every backend (the rest of tests/data is backend-agnostic)."""

import keras
import numpy as np

from keras_vit.data import load_dataset


def test_model_fit(shapes_dir):
    dataset, info = load_dataset(
        "shapes/small",
        data_dir=shapes_dir,
        image_size=32,
        batch_size=16,
        training=True,
    )
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(info.num_classes),
        ]
    )
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(dataset.take(2), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert model.evaluate(dataset.take(1), verbose=0)[0] > 0
