"""Training recipes as data: AugReg's grid and fine-tuning, the Swin/DeiT recipe and keras-vit's small ones.

A `Recipe` holds the published values. `keras-vit train --recipe NAME` and
`train(recipe=NAME)` use them; explicit arguments override single values.
Two values adapt to the run instead of being copied:
- the learning rate is quoted for `reference_batch_size` and scaled linearly
  to the global batch (`lr = learning_rate * batch / reference_batch_size`);
- the warmup is the same fraction of the run as in the paper
  (AugReg: 10k of ~93.8k steps; Swin: 20 of 300 epochs).
"""

import dataclasses
import difflib

from keras_vit.data.augment import Augmentation
from keras_vit.training.distribute import scale_learning_rate

# AugReg's augmentation settings (REFERENCE.md): RandAugment layers, magnitude, MixUp alpha.
AUGREG_AUGMENTATIONS = {
    "none": Augmentation(0, 0, 0.0),
    "light1": Augmentation(2, 0, 0.0),
    "light2": Augmentation(2, 10, 0.2),
    "medium1": Augmentation(2, 15, 0.2),
    "medium2": Augmentation(2, 15, 0.5),
    "strong1": Augmentation(2, 20, 0.5),
    "strong2": Augmentation(2, 20, 0.8),
}
# Regularization: none, or dropout 0.1 + stochastic depth 0.1 (linear over depth).
AUGREG_REGULARIZATION = {"noreg": (0.0, 0.0), "reg": (0.1, 0.1)}
AUGREG_WEIGHT_DECAYS = (0.1, 0.03)
# 300 ImageNet-1k epochs at batch 4096 are 93,838 steps, 10k of them warmup.
_AUGREG_STEPS = 300 * 1_281_167 // 4096


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One training recipe.

    Attributes:
        name: registry name (`list_recipes()`).
        learning_rate: peak learning rate at `reference_batch_size`.
        reference_batch_size: the batch the learning rate was published for.
        weight_decay: decoupled AdamW weight decay (biases, norms, tokens,
            position embeddings and tables are not decayed).
        warmup_fraction: share of the run's steps spent warming up linearly.
        clip_norm: global gradient-norm clipping.
        augmentation: an `Augmentation` (RandAugment, MixUp, CutMix, erasing).
        label_smoothing: label smoothing of the cross-entropy.
        dropout_rate: dropout of the model (None: the model's default).
        drop_path_rate: stochastic depth of the last block (None: the model's
            default, e.g. Swin-T 0.2, Swin-S 0.3, Swin-B 0.5).
        ema_momentum: momentum of an exponential moving average of the
            weights (None: no EMA).
        epochs: the paper's number of epochs (for reference; runs pass their own).
        beta_2: Adam's second-moment decay.
        optimizer: "adamw", or "sgd" (with `momentum`; fine-tuning).
        momentum: SGD's momentum.
        image_size: the input side the recipe trains at (fine-tuning at a higher
            resolution than pre-training); None: the model's own.
        min_steps: the fewest optimizer steps a run gets when it does not set
            its epochs (`train.default_epochs`): small datasets get more epochs.
    """

    name: str
    learning_rate: float
    reference_batch_size: int
    weight_decay: float
    warmup_fraction: float
    clip_norm: float
    augmentation: Augmentation = Augmentation()
    label_smoothing: float = 0.0
    dropout_rate: float | None = None
    drop_path_rate: float | None = None
    ema_momentum: float | None = None
    epochs: int = 300
    beta_2: float = 0.999
    optimizer: str = "adamw"
    momentum: float = 0.9
    image_size: int | None = None
    min_steps: int = 0

    def scaled_learning_rate(self, batch_size):
        """The peak learning rate for a global `batch_size` (linear scaling rule)."""
        return scale_learning_rate(self.learning_rate, batch_size, self.reference_batch_size)

    def model_kwargs(self):
        """The regularization arguments the recipe sets on the model."""
        kwargs = {}
        if self.dropout_rate is not None:
            kwargs["dropout_rate"] = self.dropout_rate
        if self.drop_path_rate is not None:
            kwargs["drop_path_rate"] = self.drop_path_rate
        return kwargs


def _augreg(augmentation, regularization, weight_decay):
    dropout, drop_path = AUGREG_REGULARIZATION[regularization]
    suffix = "-reg" if regularization == "reg" else ""
    return Recipe(
        name=f"augreg-{augmentation}{suffix}-wd{weight_decay:g}",
        learning_rate=1e-3,
        reference_batch_size=4096,
        weight_decay=weight_decay,
        warmup_fraction=10_000 / _AUGREG_STEPS,
        clip_norm=1.0,
        augmentation=AUGREG_AUGMENTATIONS[augmentation],
        dropout_rate=dropout,
        drop_path_rate=drop_path,
    )


RECIPES = {
    recipe.name: recipe
    for recipe in [
        _augreg(augmentation, regularization, weight_decay)
        for augmentation in AUGREG_AUGMENTATIONS
        for regularization in AUGREG_REGULARIZATION
        for weight_decay in AUGREG_WEIGHT_DECAYS
    ]
    + [
        # Swin (and DeiT): AdamW, 20 of 300 epochs warmup. Swin's code scales BASE_LR 5e-4 by
        # batch / 512, so its batch of 1024 trains at 1e-3, the paper's "0.001" (REFERENCE.md's
        # "5e-4 (batch 1024)" is the config value, not the rate used). RandAugment m9 with
        # magnitude std 0.5 in timm; Keras draws each op's strength from [0, factor] instead.
        Recipe(
            name="swin",
            learning_rate=5e-4,
            reference_batch_size=512,
            weight_decay=0.05,
            warmup_fraction=20 / 300,
            clip_norm=5.0,
            augmentation=Augmentation(2, 9, mixup_alpha=0.8, cutmix_alpha=1.0, random_erasing=0.25),
            label_smoothing=0.1,
        ),
        # MViTv2 (Li et al., CVPR 2022), as facebookresearch/mvit's configs/MVITv2_{T,S,B}.yaml and
        # mvit/config/defaults.py set it: AdamW, BASE_LR 2.5e-4 per 256 images of a shard, scaled by
        # the shards (BASE_LR_SCALE_NUM_SHARDS; 2e-3 at batch 2048), weight decay 0.05, 70 of 300
        # epochs warmup, cosine to 1e-6, clip 1.0, RandAugment "rand-m9-n6-mstd0.5-inc1" (6 ops,
        # magnitude 9), MixUp 0.8 / CutMix 1.0 switched per batch, random erasing 0.25, label
        # smoothing 0.1. Drop path is the model's own (T 0.1, S 0.1, B 0.3, L 0.5 in the same configs).
        Recipe(
            name="mvitv2",
            learning_rate=2.5e-4,
            reference_batch_size=256,
            weight_decay=0.05,
            warmup_fraction=70 / 300,
            clip_norm=1.0,
            augmentation=Augmentation(6, 9, mixup_alpha=0.8, cutmix_alpha=1.0, random_erasing=0.25),
            label_smoothing=0.1,
        ),
        # keras-vit's default for the small models on `shapes`: no augmentation beyond crop and flip.
        # Tuned for vit_pico8 on shapes (20 epochs, batch 64): a 20% warmup, a higher peak rate,
        # Adam's beta_2 0.99 and label smoothing 0.1 shorten the plateau at chance accuracy of the
        # first epochs; with 1/15 warmup, lr 2e-3, beta_2 0.999, no smoothing and 15 epochs, seeds
        # ended anywhere from 77% to 92%, now 96-97% (README, "Set up").
        Recipe(
            name="baseline",
            learning_rate=3e-3,
            reference_batch_size=64,
            weight_decay=0.05,
            warmup_fraction=0.2,
            clip_norm=1.0,
            label_smoothing=0.1,
            epochs=20,
            beta_2=0.99,
            min_steps=1800,
        ),
        # AugReg's (and the ViT paper's) fine-tuning: SGD momentum 0.9, batch 512, no weight
        # decay, cosine with linear warmup (500 of 10k steps in vision_transformer's configs),
        # global clipping at 1.0, crop + flip only, at 384 px. AugReg sweeps the rate over
        # {0.001, 0.003, 0.01, 0.03}; 0.03 is vision_transformer's default.
        Recipe(
            name="augreg-finetune",
            learning_rate=0.03,
            reference_batch_size=512,
            weight_decay=0.0,
            warmup_fraction=500 / 10_000,
            clip_norm=1.0,
            epochs=1,
            optimizer="sgd",
            image_size=384,
            min_steps=10_000,
        ),
        # The same on a laptop-sized folder at the model's own resolution. The rate linearly
        # scaled from 0.03 at 512 would be 3.75e-3 at 64, far too low for the small ViTs here:
        # vit_pico8 from shapes to the digits (82 epochs at batch 64) reached 65.2% at 1e-2 and
        # 89.7% at 0.1 (README, "Your own images").
        Recipe(
            name="finetune-small",
            learning_rate=0.1,
            reference_batch_size=64,
            weight_decay=0.0,
            warmup_fraction=0.1,
            clip_norm=1.0,
            epochs=1,
            optimizer="sgd",
            min_steps=500,
        ),
    ]
}
OPTIMIZERS = ("adamw", "sgd")
# Short AugReg names (`augreg-medium2-reg`) mean weight decay 0.1.
_ALIASES = {
    f"augreg-{augmentation}{'-reg' if regularization == 'reg' else ''}": (
        f"augreg-{augmentation}{'-reg' if regularization == 'reg' else ''}-wd0.1"
    )
    for augmentation in AUGREG_AUGMENTATIONS
    for regularization in AUGREG_REGULARIZATION
}


def list_recipes():
    """The recipe names: AugReg's 28 (7 augmentations x 2 regularizations x 2 weight decays), swin, baseline,
    and the fine-tuning ones (augreg-finetune, finetune-small)."""
    return list(RECIPES)


def get_recipe(name):
    """The `Recipe` called `name` (a `Recipe` passes through); ValueError naming close matches otherwise."""
    if isinstance(name, Recipe):
        return name
    name = _ALIASES.get(name, name)
    if name not in RECIPES:
        close = difflib.get_close_matches(str(name), list(RECIPES) + list(_ALIASES), n=4, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"Unknown recipe {name!r}.{hint} Recipes: augreg-<{'|'.join(AUGREG_AUGMENTATIONS)}>[-reg][-wd0.1|-wd0.03], "
            "swin, baseline, augreg-finetune, finetune-small (keras_vit.training.list_recipes() lists them all)."
        )
    return RECIPES[name]
