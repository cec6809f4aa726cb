"""DETR's set prediction loss: Hungarian matching of queries to objects, then classification,
L1 and generalized-IoU losses on the matched pairs (Carion et al., 2020, Sec. 3.1)."""

import keras
from keras import ops

from keras_vit.ops import center_to_corners, generalized_box_iou, linear_sum_assignment
from keras_vit.ops.set_prediction import box_count_across_replicas, fill_padded_boxes



@keras.saving.register_keras_serializable(package="keras_vit")
class DETRLoss(keras.losses.Loss):
    """`class_weight * CE + l1_weight * L1 + giou_weight * (1 - GIoU)`, per decoder layer, summed.

    Each decoder output (the last, and the auxiliary ones when present) is matched
    to the targets again with an exact Hungarian matcher
    (`keras_vit.ops.linear_sum_assignment`, inside the compiled step) on the cost
    `class_cost * -p(class) + l1_cost * L1 + giou_cost * -GIoU`. Unmatched queries
    learn "no object" (the last logit), weighted `no_object_weight` in the
    cross-entropy's weighted mean. L1 and GIoU are summed over the matched pairs and
    divided by the number of objects in the global batch (averaged over tf.distribute
    replicas, at least 1). Images without objects are fine.

    `y_true`: `{"boxes": (batch, T, 4) normalized (cx, cy, w, h), "labels": (batch, T),
    "valid": (batch, T)}` (other keys are ignored). `y_pred`: the detector's outputs,
    `{"logits", "pred_boxes"}` and optionally `{"aux_logits", "aux_boxes"}`.
    `T` must not exceed the queries.
    """

    def __init__(
        self,
        class_weight=1.0,
        l1_weight=5.0,
        giou_weight=2.0,
        no_object_weight=0.1,
        class_cost=1.0,
        l1_cost=5.0,
        giou_cost=2.0,
        name="detr_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.class_weight = class_weight
        self.l1_weight = l1_weight
        self.giou_weight = giou_weight
        self.no_object_weight = no_object_weight
        self.class_cost = class_cost
        self.l1_cost = l1_cost
        self.giou_cost = giou_cost

    def call(self, y_true, y_pred):
        logits, boxes = y_pred["logits"][:, None], y_pred["pred_boxes"][:, None]
        if "aux_logits" in y_pred:
            logits = ops.concatenate([y_pred["aux_logits"], logits], axis=1)
            boxes = ops.concatenate([y_pred["aux_boxes"], boxes], axis=1)
        _, layers, queries, classes = logits.shape
        targets = int(y_true["boxes"].shape[1])
        if targets > int(queries):
            raise ValueError(
                f"The targets hold up to {targets} objects per image but the model has {queries} queries: "
                "lower max_objects in the data, or build the model with num_queries >= max_objects."
            )
        # One matching problem per (image, decoder layer).
        repeat = lambda x: ops.reshape(ops.repeat(x[:, None], layers, axis=1), (-1, *x.shape[1:]))
        valid = repeat(ops.cast(y_true["valid"], "float32"))
        labels = repeat(ops.cast(y_true["labels"], "int32")) * ops.cast(valid, "int32")
        target_boxes = fill_padded_boxes(repeat(y_true["boxes"]), valid)
        logits = ops.reshape(ops.cast(logits, "float32"), (-1, queries, classes))
        boxes = ops.reshape(ops.cast(boxes, "float32"), (-1, queries, 4))

        query_of_target = self._match(logits, boxes, labels, target_boxes, valid)  # (batch * layers, T)
        matched = ops.one_hot(query_of_target, queries) * valid[..., None]  # (batch * layers, T, queries)
        object_classes = ops.einsum("btq,btc->bqc", matched, ops.one_hot(labels, classes))
        no_object = 1.0 - ops.sum(matched, axis=1)  # (batch * layers, queries)
        class_targets = object_classes + no_object[..., None] * ops.one_hot(classes - 1, classes)
        weights = 1.0 - (1.0 - self.no_object_weight) * no_object
        cross_entropy = -ops.sum(class_targets * ops.log_softmax(logits, axis=-1), axis=-1)
        # The weighted mean of each layer; every layer has the same weight total.
        loss_class = ops.sum(weights * cross_entropy) / ops.sum(weights) * ops.cast(layers, "float32")

        matched_boxes = ops.take_along_axis(boxes, query_of_target[..., None], axis=1)  # (batch * layers, T, 4)
        num_boxes = box_count_across_replicas(ops.sum(ops.cast(y_true["valid"], "float32")))
        loss_l1 = ops.sum(ops.abs(matched_boxes - target_boxes) * valid[..., None]) / num_boxes
        giou = generalized_box_iou(center_to_corners(matched_boxes[..., None, :]), center_to_corners(target_boxes[..., None, :]))
        loss_giou = ops.sum((1.0 - giou[..., 0, 0]) * valid) / num_boxes
        return self.class_weight * loss_class + self.l1_weight * loss_l1 + self.giou_weight * loss_giou

    def _match(self, logits, boxes, labels, target_boxes, valid):
        """The query matched to each target, `(batch, T)` int32 (padded targets: any free query)."""
        logits, boxes = ops.stop_gradient(logits), ops.stop_gradient(boxes)
        probabilities = ops.softmax(logits, axis=-1)
        cost_class = -ops.einsum("bqc,btc->bqt", probabilities, ops.one_hot(labels, ops.shape(logits)[-1]))
        cost_l1 = ops.sum(ops.abs(boxes[:, :, None, :] - target_boxes[:, None, :, :]), axis=-1)
        cost_giou = -generalized_box_iou(center_to_corners(boxes), center_to_corners(target_boxes))
        cost = self.class_cost * cost_class + self.l1_cost * cost_l1 + self.giou_cost * cost_giou
        # Padded targets cost the same for every query, which leaves the real targets' matching optimal.
        cost = ops.where(valid[:, None, :] > 0, cost, 0.0)
        rows, columns = linear_sum_assignment(cost)  # (batch, T) each: rows ascending, columns a permutation
        return ops.take_along_axis(rows, ops.argsort(columns, axis=-1), axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "class_weight": self.class_weight,
                "l1_weight": self.l1_weight,
                "giou_weight": self.giou_weight,
                "no_object_weight": self.no_object_weight,
                "class_cost": self.class_cost,
                "l1_cost": self.l1_cost,
                "giou_cost": self.giou_cost,
            }
        )
        return config
