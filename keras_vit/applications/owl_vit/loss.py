"""OWL-ViT's detection loss (Minderer et al., 2022, Sec. 3.2): Hungarian matching of image patches
to objects, then a sigmoid focal loss over the text queries and L1 and generalized-IoU box losses
on the matched pairs, as scenic's `projects/owl_vit` (`losses.py`, `matching_base_models.py`)."""

import keras
from keras import ops

from keras_vit.ops import center_to_corners, generalized_box_iou, linear_sum_assignment
from keras_vit.ops.set_prediction import box_count_across_replicas, fill_padded_boxes

# Without `query_valid`, a query whose logits are at or below this at every patch is padding:
# scenic masks padded queries with -1e6, transformers with the float32 minimum.
PADDED_QUERY_THRESHOLD = -1e6


@keras.saving.register_keras_serializable(package="keras_vit")
class OWLViTLoss(keras.losses.Loss):
    """`class_weight * focal + l1_weight * L1 + giou_weight * (1 - GIoU)`, OWL-ViT's training loss.

    Every patch predicts a box and one logit per text query. Each image's patches are matched to
    its objects with an exact Hungarian matcher (`keras_vit.ops.linear_sum_assignment`, inside the
    compiled step) on the cost `class_cost * focal cost + l1_cost * L1(cx, cy, w, h) + giou_cost *
    -GIoU`, where the focal cost at the object's query is `alpha (1 - p)^gamma (-log p) - (1 - alpha)
    p^gamma (-log(1 - p))` (Deformable DETR's, scenic's `sigmoid_cost`). The sigmoid focal loss
    covers every (patch, real query) pair: target 1 at a matched patch's object query, 0 elsewhere.
    L1 (on the corners `x1, y1, x2, y2`, as scenic) and `1 - GIoU` cover the matched pairs.

    `normalization="global"` divides the sums by the objects in the global batch (averaged over
    tf.distribute replicas, at least 1); `"per_example"` (scenic's OWL-ViT configs, which pair it
    with per-example gradient clipping) divides each image's sums by its objects (at least 1) and
    averages over the batch. Images without objects are fine.

    `y_true`: `{"boxes": (batch, T, 4)` normalized `(cx, cy, w, h)`, `"labels": (batch, T)` int,
    the object's index in the image's query list, `"valid": (batch, T)}`, and optionally
    `"query_valid": (batch, queries)` (1 for real queries; without it, queries whose logits are
    `<= PADDED_QUERY_THRESHOLD` at every patch are padding). Objects whose label is negative, out of
    range or a padded query count as padding. `y_pred`: `{"logits": (batch, patches, queries),
    "pred_boxes": (batch, patches, 4)}`. `T` must not exceed the patches.
    """

    def __init__(
        self,
        class_weight=1.0,
        l1_weight=1.0,
        giou_weight=1.0,
        class_cost=1.0,
        l1_cost=1.0,
        giou_cost=1.0,
        focal_alpha=0.3,
        focal_gamma=2.0,
        normalization="global",
        name="owl_vit_loss",
        **kwargs,
    ):
        if normalization not in ("global", "per_example"):
            raise ValueError(f"`normalization` must be 'global' or 'per_example'; received {normalization!r}.")
        super().__init__(name=name, **kwargs)
        self.class_weight = class_weight
        self.l1_weight = l1_weight
        self.giou_weight = giou_weight
        self.class_cost = class_cost
        self.l1_cost = l1_cost
        self.giou_cost = giou_cost
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.normalization = normalization

    def call(self, y_true, y_pred):
        logits, boxes = ops.cast(y_pred["logits"], "float32"), ops.cast(y_pred["pred_boxes"], "float32")
        _check_shapes(y_true, logits, boxes)
        patches, queries = int(logits.shape[1]), ops.shape(logits)[2]  # queries may vary by batch (TF)
        if "query_valid" in y_true:
            query_valid = ops.cast(y_true["query_valid"], "float32") > 0
        else:
            query_valid = ops.max(logits, axis=1) > PADDED_QUERY_THRESHOLD
        labels = ops.cast(y_true["labels"], "int32")
        in_range = (labels >= 0) & (labels < queries)
        labels = ops.where(in_range, labels, 0)
        label_is_real = ops.take_along_axis(query_valid, labels, axis=1)
        valid = ops.cast((ops.cast(y_true["valid"], "float32") > 0) & in_range & label_is_real, "float32")
        target_boxes = fill_padded_boxes(y_true["boxes"], valid)
        # Padded queries: finite logits (no NaN gradient through the mask), and no loss.
        query_mask = ops.cast(query_valid, "float32")[:, None, :]
        logits = ops.where(query_mask > 0, logits, 0.0)

        patch_of_target = self._match(logits, boxes, labels, target_boxes, valid)  # (batch, T)
        matched = ops.one_hot(patch_of_target, patches) * valid[..., None]  # (batch, T, patches)
        class_targets = ops.einsum("btp,btq->bpq", matched, ops.one_hot(labels, queries))
        focal = _sigmoid_focal_loss(logits, class_targets, self.focal_alpha, self.focal_gamma) * query_mask
        loss_class = ops.sum(focal, axis=(1, 2))

        matched_boxes = ops.take_along_axis(boxes, patch_of_target[..., None], axis=1)  # (batch, T, 4)
        predicted, target = center_to_corners(matched_boxes), center_to_corners(target_boxes)
        loss_l1 = ops.sum(ops.sum(ops.abs(predicted - target), axis=-1) * valid, axis=1)
        giou = generalized_box_iou(predicted[..., None, :], target[..., None, :])[..., 0, 0]
        loss_giou = ops.sum((1.0 - giou) * valid, axis=1)

        per_image = self.class_weight * loss_class + self.l1_weight * loss_l1 + self.giou_weight * loss_giou
        objects = ops.sum(valid, axis=1)
        if self.normalization == "per_example":
            return ops.mean(per_image / ops.maximum(objects, 1.0))
        return ops.sum(per_image) / box_count_across_replicas(ops.sum(objects))

    def _match(self, logits, boxes, labels, target_boxes, valid):
        """The patch matched to each object, `(batch, T)` int32 (padded objects: any free patch)."""
        logits, boxes = ops.stop_gradient(logits), ops.stop_gradient(boxes)
        alpha, gamma = self.focal_alpha, self.focal_gamma
        positive = alpha * ops.power(ops.sigmoid(-logits), gamma) * -ops.log_sigmoid(logits)
        negative = (1.0 - alpha) * ops.power(ops.sigmoid(logits), gamma) * -ops.log_sigmoid(-logits)
        cost_class = ops.einsum("bpq,btq->bpt", positive - negative, ops.one_hot(labels, ops.shape(logits)[2]))
        cost_l1 = ops.sum(ops.abs(boxes[:, :, None, :] - target_boxes[:, None, :, :]), axis=-1)
        cost_giou = -generalized_box_iou(center_to_corners(boxes), center_to_corners(target_boxes))
        cost = self.class_cost * cost_class + self.l1_cost * cost_l1 + self.giou_cost * cost_giou
        # Non-finite costs (degenerate boxes) exceed every finite one, as scenic's nan_to_num guard.
        finite = ops.isfinite(cost)
        worst = ops.max(ops.where(finite, ops.abs(cost), 0.0), axis=(1, 2), keepdims=True, initial=0.0) * 2.0 + 1.0
        cost = ops.where(finite, cost, worst)
        # Padded objects cost the same for every patch, which leaves the real objects' matching optimal.
        cost = ops.where(valid[:, None, :] > 0, cost, 0.0)
        # Solved as (T, patches), T <= patches: the columns are then each object's patch.
        _, patch_of_target = linear_sum_assignment(ops.transpose(cost, (0, 2, 1)))
        return patch_of_target

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "class_weight": self.class_weight,
                "l1_weight": self.l1_weight,
                "giou_weight": self.giou_weight,
                "class_cost": self.class_cost,
                "l1_cost": self.l1_cost,
                "giou_cost": self.giou_cost,
                "focal_alpha": self.focal_alpha,
                "focal_gamma": self.focal_gamma,
                "normalization": self.normalization,
            }
        )
        return config


def _sigmoid_focal_loss(logits, targets, alpha, gamma):
    """Elementwise sigmoid focal loss (Lin et al., 2017) for 0/1 `targets`, as scenic's
    `focal_sigmoid_cross_entropy`: `-alpha_t (1 - p_t)^gamma log(p_t)`."""
    cross_entropy = -(targets * ops.log_sigmoid(logits) + (1.0 - targets) * ops.log_sigmoid(-logits))
    one_minus_p_t = targets * ops.sigmoid(-logits) + (1.0 - targets) * ops.sigmoid(logits)
    alpha_t = alpha * targets + (1.0 - alpha) * (1.0 - targets)
    return alpha_t * ops.power(one_minus_p_t, gamma) * cross_entropy


def _check_shapes(y_true, logits, boxes):
    """ValueErrors for inconsistent ranks, batch sizes, patches, or more objects than patches."""
    for key in ("boxes", "labels", "valid"):
        if key not in y_true:
            raise ValueError(f"`y_true` must hold 'boxes', 'labels' and 'valid'; it lacks {key!r} (keys: {sorted(y_true)}).")
    shapes = {key: tuple(y_true[key].shape) for key in ("boxes", "labels", "valid", "query_valid") if key in y_true}
    shapes.update({"logits": tuple(logits.shape), "pred_boxes": tuple(boxes.shape)})
    ranks = {"boxes": 3, "labels": 2, "valid": 2, "query_valid": 2, "logits": 3, "pred_boxes": 3}
    if any(len(shape) != ranks[key] for key, shape in shapes.items()) or shapes["boxes"][-1] != 4 or shapes["pred_boxes"][-1] != 4:
        raise ValueError(
            "Expected boxes (batch, T, 4), labels and valid (batch, T), query_valid (batch, queries), "
            f"logits (batch, patches, queries) and pred_boxes (batch, patches, 4); received {shapes}."
        )
    batches = {shape[0] for shape in shapes.values() if shape[0] is not None}
    targets = {shapes[key][1] for key in ("boxes", "labels", "valid")} - {None}
    if len(batches) > 1 or len(targets) > 1 or shapes["logits"][1] != shapes["pred_boxes"][1]:
        raise ValueError(f"The batch sizes, object counts T or patch counts disagree: {shapes}.")
    query_counts = {shapes[key][-1] for key in ("query_valid", "logits") if key in shapes} - {None}
    if len(query_counts) > 1:
        raise ValueError(f"query_valid must be (batch, queries) like the logits' queries: {shapes}.")
    patches = shapes["logits"][1]
    if patches is None or not targets:
        raise ValueError(f"The matching needs static patch and object counts (pad the objects to a fixed T): {shapes}.")
    if max(targets) > patches:
        raise ValueError(
            f"The targets hold up to {max(targets)} objects per image but the model predicts {patches} boxes "
            "(one per patch): lower max_objects in the data, or use more patches."
        )
