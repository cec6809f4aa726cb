"""Local Relation Networks (Hu et al., ICCV 2019): LR-Net-26/50/101.

ResNets whose 3x3 convs are replaced by 7x7 local relation layers (m = 8
channels per aggregation), with wider bottlenecks (100/200/400/800) so that
parameters and FLOPs stay close to ResNet's. The stem is a 1x1 conv to 64
channels and a 7x7 local relation layer with stride 2. Built by the generic
`ResNet` builder of `model.py`.
"""

from keras_vit.applications.resnet.model import register_resnet

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

LRNet26 = register_resnet("lrnet26", "LRNet26", "LR-Net-26 (7x7, m=8)", 14_628_670, LRNET_VARIANTS["lrnet26"])
LRNet50 = register_resnet("lrnet50", "LRNet50", "LR-Net-50 (7x7, m=8)", 23_410_288, LRNET_VARIANTS["lrnet50"])
LRNet101 = register_resnet("lrnet101", "LRNet101", "LR-Net-101 (7x7, m=8)", 40_853_104, LRNET_VARIANTS["lrnet101"])
