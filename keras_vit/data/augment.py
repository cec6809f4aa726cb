"""Training augmentation inside tf.data with Keras core's multi-backend layers.

`Augmentation` says how strong each method is; `load_dataset(...,
augmentation=...)` applies it: RandAugment and random erasing to each image
before batching, MixUp or CutMix to each batch (they mix pairs of images and
their one-hot labels). The layers run in tf.data, so the batches feed
`model.fit` on every Keras backend.

RandAugment magnitudes are given on AugReg's scale (big_vision's TensorFlow
AutoAugment code: an op's strength is `magnitude / 10` of its "full" level, so
15 and 20 go past full) and mapped onto Keras' `RandAugment(factor=...)` by
`randaugment_factor`.
"""

import dataclasses

import keras
import tensorflow as tf

# big_vision / TF AutoAugment: an op at `magnitude` has strength magnitude / _MAX_LEVEL of its full level.
AUGREG_MAX_LEVEL = 10.0
# Its rotation at full level, in degrees.
AUGREG_MAX_ROTATION_DEGREES = 30.0


def randaugment_factor(magnitude):
    """Maps an AugReg RandAugment magnitude onto Keras' `RandAugment(factor=...)`.

    Keras draws each op's strength from `[0, factor]` of its own range, and for
    rotation that range is a whole turn (factor 1 = 360 degrees). big_vision
    rotates by `30 * magnitude / 10` degrees. The factor makes the two rotation
    bounds equal: `factor = 30 * magnitude / 10 / 360 = magnitude / 120`, so
    AugReg's 10 / 15 / 20 become 0.083 / 0.125 / 0.167 and keep their ratios.
    The other ops then reach, at magnitude 20: shear 0.167 (big_vision 0.6),
    translation 16.7% of the side (big_vision 200 px at 224), brightness
    +-16.7% of the range and contrast x[0.83, 1.17] (big_vision blends with
    factor 3.7). A larger factor would rotate further than AugReg ever does
    (Keras' default 0.5 turns images up to 180 degrees).
    """
    if not 0 <= magnitude <= 12 * AUGREG_MAX_LEVEL:
        raise ValueError(
            f"RandAugment magnitude must be in [0, {12 * AUGREG_MAX_LEVEL:g}] on AugReg's scale "
            f"(10 = big_vision's full level; AugReg uses 0, 10, 15, 20), got {magnitude}."
        )
    return magnitude * AUGREG_MAX_ROTATION_DEGREES / AUGREG_MAX_LEVEL / 360.0


class SelectedOpsRandAugment(keras.layers.RandAugment):
    """Keras' `RandAugment` that runs only the ops it drew for an image.

    Keras' layer computes all eleven ops and keeps the drawn ones with
    `where`; inside tf.data this subclass picks them with `tf.switch_case`,
    so each image pays for `num_ops` ops. Same ops, same random draws, same
    output (a test compares them); run eagerly it is Keras' layer.
    """

    def transform_images(self, images, transformation, training=True):
        if not training or tf.executing_eagerly():
            return super().transform_images(images, transformation, training=training)
        images = tf.cast(images, self.compute_dtype)
        transforms = transformation["transforms"]
        for index in range(self.num_ops):
            branches = [self._branch(name, transforms[name], images) for name in transforms]
            selected = tf.cast(transformation["layer_idxes"][index], tf.int32)
            images = tf.ensure_shape(tf.switch_case(selected, branches), images.shape)
        return images

    def _branch(self, name, transform, images):
        layer = getattr(self, name)
        return lambda: tf.cast(layer.transform_images(images, transform), self.compute_dtype)


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Strengths of the training augmentations; zero turns a method off.

    Attributes:
        randaugment_layers: ops RandAugment applies to each image (AugReg: 2).
        randaugment_magnitude: op strength on AugReg's scale (0-20; see
            `randaugment_factor`). Used when `randaugment_layers > 0`.
        mixup_alpha: MixUp's Beta(alpha, alpha) concentration.
        cutmix_alpha: CutMix's Beta(alpha, alpha) concentration, at most 1.
            With MixUp also on, each batch gets one of the two, with equal
            probability (as timm/DeiT's mixup switch).
        random_erasing: probability that a rectangle of an image is replaced
            by noise (Swin/DeiT: 0.25).
    """

    randaugment_layers: int = 0
    randaugment_magnitude: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    random_erasing: float = 0.0

    def __post_init__(self):
        if not isinstance(self.randaugment_layers, int) or self.randaugment_layers < 0:
            raise ValueError(f"randaugment_layers must be an int >= 0, got {self.randaugment_layers!r}.")
        randaugment_factor(self.randaugment_magnitude)
        if self.mixup_alpha < 0:
            raise ValueError(f"mixup_alpha must be >= 0 (0 turns MixUp off), got {self.mixup_alpha}.")
        if not 0 <= self.cutmix_alpha <= 1:
            raise ValueError(
                f"cutmix_alpha must be in [0, 1] (Keras' CutMix bound; 0 turns it off), got {self.cutmix_alpha}."
            )
        if not 0 <= self.random_erasing <= 1:
            raise ValueError(f"random_erasing is a probability in [0, 1], got {self.random_erasing}.")

    @property
    def mixes_labels(self):
        """True when batches mix images, so labels must be one-hot."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def image_layers(self, seed=None):
        """The per-image Keras layers, in the order they apply."""
        layers = []
        if self.randaugment_layers:
            layers.append(
                SelectedOpsRandAugment(
                    value_range=(0, 255),
                    num_ops=self.randaugment_layers,
                    factor=randaugment_factor(self.randaugment_magnitude),
                    seed=seed,
                )
            )
        if self.random_erasing:
            # A pair makes the probability exact: one float would be drawn from [0, p].
            factor = (self.random_erasing, self.random_erasing)
            layers.append(keras.layers.RandomErasing(factor=factor, value_range=(0, 255), seed=seed))
        return layers

    def batch_function(self, seed=None):
        """`(images, one_hot_labels) -> (images, labels)` for batches, or None."""
        mixers = []
        if self.mixup_alpha:
            mixers.append(keras.layers.MixUp(alpha=self.mixup_alpha, seed=seed))
        if self.cutmix_alpha:
            mixers.append(keras.layers.CutMix(factor=(self.cutmix_alpha, self.cutmix_alpha), seed=seed))
        if not mixers:
            return None

        def mix(images, labels):
            data = {"images": images, "labels": labels}
            if len(mixers) == 1:
                data = mixers[0](data)
            else:
                data = tf.cond(
                    tf.random.uniform(()) < 0.5, lambda: mixers[0](data), lambda: mixers[1](data)
                )
            return tf.clip_by_value(data["images"], 0.0, 255.0), data["labels"]

        return mix

    def image_function(self, seed=None):
        """`image -> image` for one `(height, width, 3)` image, or None."""
        layers = self.image_layers(seed)
        if not layers:
            return None

        def augment(image):
            for layer in layers:
                image = layer(image)
            return tf.clip_by_value(tf.cast(image, tf.float32), 0.0, 255.0)

        return augment
