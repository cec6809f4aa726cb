"""Trains a tiny ViT under a distribution and saves losses and weights; run by test_distribute.py
in a fresh process, because devices and TF_CONFIG must be set before TensorFlow/JAX start.

    python _distributed_fit.py tf-mirrored OUT_DIR    # default strategy, then mirrored over 2 logical CPUs
    python _distributed_fit.py tf-multiworker OUT_DIR # one worker of a TF_CONFIG cluster
    python _distributed_fit.py jax-data OUT_DIR       # DataParallel over the host devices
    python _distributed_fit.py jax-model OUT_DIR      # ModelParallel on a (1, 2) mesh

Each run writes OUT_DIR/<name>.npz: loss (per epoch), replicas, initial_i and weight_i arrays.
"""

import json
import os
import sys

import numpy as np

MODE, OUT = sys.argv[1], sys.argv[2]
EPOCHS = 2
GLOBAL_BATCH = 8


def data():
    rng = np.random.RandomState(0)
    images = (rng.rand(32, 16, 16, 3) * 255).astype("float32")
    return images, (np.arange(32) % 3).astype("int32")


def tiny_vit():
    import keras

    from keras_vit.applications import VisionTransformer

    keras.utils.set_random_seed(0)
    model = VisionTransformer(
        patch_size=4, hidden_dim=16, depth=2, num_heads=2, mlp_dim=32, input_shape=(16, 16, 3),
        classes=3, pooling="gap", classifier_activation=None,
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def save(name, history, model, initial, replicas, **extra):
    arrays = {f"weight_{i}": np.asarray(w) for i, w in enumerate(model.get_weights())}
    arrays.update({f"initial_{i}": np.asarray(w) for i, w in enumerate(initial)})
    losses = {key: np.array(values) for key, values in history.history.items()}
    np.savez(os.path.join(OUT, f"{name}.npz"), replicas=replicas, **losses, **arrays, **extra)


def tf_mirrored():
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from keras_vit.training.distribute import get_strategy

    images, labels = data()
    initial = None
    for kind in ("cpu", "mirrored"):
        strategy = get_strategy(kind)
        with strategy.scope():
            model = tiny_vit()
            if initial is None:
                initial = model.get_weights()
            model.set_weights(initial)  # the very same start for both runs
        dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(GLOBAL_BATCH)
        history = model.fit(dataset, epochs=EPOCHS, shuffle=False, verbose=0)
        save(kind, history, model, initial, strategy.num_replicas_in_sync)


def tf_multiworker():
    import tensorflow as tf

    from keras_vit.training.distribute import get_strategy

    strategy = get_strategy("multiworker")
    assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    images, labels = data()
    with strategy.scope():
        model = tiny_vit()
    initial = model.get_weights()
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(GLOBAL_BATCH)
    options = tf.data.Options()
    # Every worker builds the same dataset from memory: shard it by element, not by file.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = dataset.with_options(options)
    history = model.fit(dataset, validation_data=dataset, epochs=EPOCHS, shuffle=False, verbose=0)
    save(f"worker{index}", history, model, initial, strategy.num_replicas_in_sync)


def jax_fit(mode):
    import jax

    from keras_vit.training.distribute import configure_jax_distribution, num_replicas

    distribution = configure_jax_distribution(mode, model_parallel=2 if mode == "model" else None)
    images, labels = data()
    model = tiny_vit()
    initial = model.get_weights()
    history = model.fit(images, labels, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False, verbose=0)
    qkv = next(v for v in model.weights if v.path.endswith("attention/qkv/kernel"))
    slots = [v for v in model.optimizer.variables if "qkv_kernel" in v.path]
    specs = {name: str(tuple(getattr(v.value.sharding, "spec", ()))) for name, v in (("qkv_spec", qkv), ("slot_spec", slots[0]))}
    print(type(distribution).__name__, specs)
    save(f"jax-{mode}-{len(jax.devices())}", history, model, initial, num_replicas(), **specs)


if __name__ == "__main__":
    {"tf-mirrored": tf_mirrored, "tf-multiworker": tf_multiworker,
     "jax-data": lambda: jax_fit("data"), "jax-model": lambda: jax_fit("model")}[MODE]()
