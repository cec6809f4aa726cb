"""Pieces every set-prediction loss (DETR, OWL-ViT) shares: padded targets and the box count it
normalizes by."""

import keras
from keras import ops

# Put in place of padded targets, so that no padding enters a division by zero (GIoU of empty boxes).
PLACEHOLDER_BOX = (0.5, 0.5, 1.0, 1.0)


def fill_padded_boxes(boxes, valid):
    """`boxes` `(..., T, 4)` float32 with the targets where `valid` `(..., T)` is 0 replaced by `PLACEHOLDER_BOX`."""
    return ops.where(valid[..., None] > 0, ops.cast(boxes, "float32"), ops.convert_to_tensor(PLACEHOLDER_BOX, "float32"))


def box_count_across_replicas(count):
    """The objects per replica, averaged over tf.distribute replicas (each replica sees its own
    batch there; Keras divides each replica's loss by the replica count), at least 1.
    JAX and torch steps see the global batch, so their count is already global."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # the one backend whose steps run per replica

        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            count = context.all_reduce("sum", count) / context.num_replicas_in_sync
    return ops.maximum(count, 1.0)
