"""Local Relation Networks (Hu et al., ICCV 2019): LR-Net-26/50/101.

ResNets whose 3x3 convs are replaced by 7x7 local relation layers (m = 8
channels per aggregation), with wider bottlenecks (100/200/400/800) so that
parameters and FLOPs stay close to ResNet's. The stem is a 1x1 conv to 64
channels and a 7x7 local relation layer with stride 2. Built by the generic
`ResNet` builder of `attention_resnet.py`.
"""

from keras_vit.applications.attention_resnet import ResNet
from keras_vit.applications.vit import make_constructor

# m = 8 channels per aggregation, except res2: its width 100 is not a multiple of 8,
# and the paper does not say how it groups it; 5, the largest divisor of 100 up to 8,
# keeps the groups even (20 aggregations of 5 channels instead of 12.5 of 8).
_LRNET = dict(
    widths=(100, 200, 400, 800),
    filters=(256, 512, 1024, 2048),
    stem="local_relation",
    spatial="local_relation",
    kernel_size=7,
    channels_per_group=(5, 8, 8, 8),
)

LRNET_VARIANTS = {
    "lrnet26": dict(depths=(2, 2, 2, 2), **_LRNET),
    "lrnet50": dict(depths=(3, 4, 6, 3), **_LRNET),
    "lrnet101": dict(depths=(3, 4, 23, 3), **_LRNET),
}

LRNet26 = make_constructor(ResNet, "lrnet26", "LRNet26", "LR-Net-26 (7x7, m=8)", "14,628,670 trainable params", LRNET_VARIANTS["lrnet26"])
LRNet50 = make_constructor(ResNet, "lrnet50", "LRNet50", "LR-Net-50 (7x7, m=8)", "23,410,288 trainable params", LRNET_VARIANTS["lrnet50"])
LRNet101 = make_constructor(ResNet, "lrnet101", "LRNet101", "LR-Net-101 (7x7, m=8)", "40,853,104 trainable params", LRNET_VARIANTS["lrnet101"])
