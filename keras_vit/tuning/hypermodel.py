"""`AugRegHyperModel`: a registry model whose regularization, optimizer and data
augmentation come from a KerasTuner trial."""

import keras
import keras_tuner as kt

from keras_vit.training.recipes import get_recipe
from keras_vit.tuning.defaults import DEFAULT_BATCH_SIZE, DEFAULT_DATASET, DEFAULT_EPOCHS_PER_TRIAL, DEFAULT_MODEL
from keras_vit.tuning.search_space import SearchSpace

# AugReg warms up over 10k of its ~93.8k steps; the same share of each trial.
AUGREG_WARMUP_FRACTION = get_recipe("augreg-none").warmup_fraction


class AugRegHyperModel(kt.HyperModel):
    """Builds and fits one trial of an augmentation/regularization search.

    `build(hp)` declares the search space on `hp` and returns a model compiled
    with the trial's dropout, stochastic depth, weight decay and learning rate
    (AdamW, warmup + cosine over the trial's steps, gradient clipping 1.0,
    categorical cross-entropy on logits, `accuracy`). `fit(hp, model, ...)`
    builds the training data for this trial with the trial's `Augmentation`
    (RandAugment layers and magnitude, MixUp, CutMix), so the augmentation
    strength is searched like any other knob; the validation data is built once.

    Args:
        model: registry name (`keras_vit.list_models()`).
        dataset: "shapes", "shapes/small", a prepared TFDS name or a folder of class sub-folders.
        search_space: a `SearchSpace` (default: AugReg's 28-point grid).
        data_dir: TFDS data_dir.
        image_size: square input side (default: the model's).
        batch_size: global batch size.
        epochs: epochs per trial (Hyperband passes its own).
        steps_per_epoch: cap on training steps per epoch.
        min_crop_scale: smallest area of the random resized crop (default: `default_min_crop_scale`,
            0.8 for images of at most 64 px, shapes included, else 0.08).
        seed: data order and augmentation seed (the same for every trial, so trials differ only
            by their hyperparameters).
        clip_norm: global gradient-norm clipping (AugReg: 1.0).
        warmup_fraction: share of the trial's steps spent warming up.
        model_kwargs: more constructor arguments for the model.
        verbose: `model.fit` verbosity.

    Attributes:
        augmentations: the `Augmentation` of every training dataset built so far, in order.
    """

    def __init__(
        self,
        model=DEFAULT_MODEL,
        dataset=DEFAULT_DATASET,
        *,
        search_space=None,
        data_dir=None,
        image_size=None,
        batch_size=DEFAULT_BATCH_SIZE,
        epochs=DEFAULT_EPOCHS_PER_TRIAL,
        steps_per_epoch=None,
        min_crop_scale=None,
        seed=0,
        clip_norm=1.0,
        warmup_fraction=AUGREG_WARMUP_FRACTION,
        model_kwargs=None,
        verbose="auto",
        name=None,
    ):
        super().__init__(name=name)
        from keras_vit.applications.registry import get_constructor
        from keras_vit.data import default_min_crop_scale, image_side
        from keras_vit.training.train import default_image_size

        get_constructor(model)  # unknown names fail here
        for key, value in dict(batch_size=batch_size, epochs=epochs).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive int, got {value!r}.")
        if steps_per_epoch is not None and steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be None or >= 1, got {steps_per_epoch}.")
        self.model_name = model
        self.dataset = dataset
        self.search_space = (search_space or SearchSpace()).validate()
        self.data_dir = data_dir
        self.image_size = image_size or default_image_size(model)
        self.batch_size = batch_size
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        if min_crop_scale is None:
            min_crop_scale = default_min_crop_scale(dataset, image_side(dataset, data_dir))
        self.min_crop_scale = min_crop_scale
        self.seed = seed
        self.clip_norm = clip_norm
        self.warmup_fraction = warmup_fraction
        self.model_kwargs = dict(model_kwargs or {})
        self.verbose = verbose
        self.augmentations = []
        self._validation = None
        self._train_info = None

    # ---- data ------------------------------------------------------------------------------

    def _common(self):
        return dict(data_dir=self.data_dir, image_size=self.image_size, batch_size=self.batch_size, seed=self.seed,
                    label_mode="categorical")

    def validation_data(self):
        """`(dataset, info)` of the validation split, built once."""
        if self._validation is None:
            from keras_vit.data import load_dataset

            self._validation = load_dataset(self.dataset, "validation", training=False, **self._common())
        return self._validation

    def train_info(self):
        """`DatasetInfo` of the training split."""
        if self._train_info is None:
            from keras_vit.data import load_dataset

            _, self._train_info = load_dataset(self.dataset, "train", training=False, **self._common())
        return self._train_info

    def steps(self):
        """Training steps per epoch."""
        full = self.train_info().num_examples // self.batch_size
        return max(1, min(self.steps_per_epoch or full, full))

    def train_data(self, augmentation):
        """The training dataset of one trial: crop, flip and `augmentation`, one-hot labels."""
        from keras_vit.data import load_dataset

        dataset, _ = load_dataset(
            self.dataset, "train", training=True, augmentation=augmentation,
            crop_scale=(self.min_crop_scale, 1.0), **self._common(),
        )
        self.augmentations.append(augmentation)
        if self.steps_per_epoch:
            dataset = dataset.take(self.steps_per_epoch)
        return dataset

    # ---- KerasTuner ------------------------------------------------------------------------

    def settings(self, hp):
        """Declares the search space on `hp`; returns the trial's `TrialSettings`."""
        values = self.search_space.declare(hp)
        return self.search_space.resolve(values)

    def build(self, hp):
        from keras_vit.training.train import build_optimizer, create_training_model

        settings = self.settings(hp)
        info = self.validation_data()[1]
        kwargs = {**self.model_kwargs}
        kwargs.setdefault("dropout_rate", settings.dropout_rate)
        kwargs.setdefault("drop_path_rate", settings.drop_path_rate)
        model = create_training_model(
            self.model_name, "the search space or model_kwargs", classes=info.num_classes,
            input_shape=(self.image_size, self.image_size, 3), classifier_activation=None, **kwargs,
        )
        epochs = hp.values.get("tuner/epochs", self.epochs) - hp.values.get("tuner/initial_epoch", 0)
        total_steps = self.steps() * max(1, epochs)
        model.compile(
            optimizer=build_optimizer(
                settings.learning_rate, settings.weight_decay, total_steps,
                round(self.warmup_fraction * total_steps), clip_norm=self.clip_norm, model=model,
            ),
            loss=keras.losses.CategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        return model

    def fit(self, hp, model, *args, callbacks=None, epochs=None, initial_epoch=0, **kwargs):
        """Trains `model` on data augmented with this trial's settings; returns the `History`."""
        settings = self.search_space.resolve(hp.values)
        kwargs.pop("verbose", None)
        kwargs.setdefault("shuffle", False)  # tf.data shuffles; Keras warns about shuffle=True
        return model.fit(
            self.train_data(settings.augmentation),
            validation_data=self.validation_data()[0],
            epochs=epochs or self.epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            verbose=self.verbose,
            **kwargs,
        )


__all__ = ["AugRegHyperModel", "AUGREG_WARMUP_FRACTION"]
