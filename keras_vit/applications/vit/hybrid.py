"""ResNet + ViT hybrids (Dosovitskiy et al., 2021): R26+S/32, R50+B/16, R50+L/32.

A ResNet-v2 stem (GroupNorm, weight-standardized convs, non-pre-activation
bottlenecks) turns the image into a feature map; the ViT then embeds each
feature-map cell as a token (patch size 1). The transformer part is the
generic `VisionTransformer` builder.
"""

import functools
import inspect

import keras

from keras_vit.applications import common
from keras_vit.applications.vit.model import VisionTransformer, _register
from keras_vit.applications.vit.resnet_v2 import ResNetV2Bottleneck, StandardizedConv2D

# stem_depths: bottlenecks per ResNet stage (stage widths 256, 512, 1024, 2048;
# the first stage has stride 1, the others 2, after a stride-4 root).
HYBRID_VARIANTS = {
    "vit_r26_s32": dict(stem_depths=(2, 2, 2, 2), hidden_dim=384, depth=12, num_heads=6, mlp_dim=1536),
    "vit_r50_b16": dict(stem_depths=(3, 4, 9), hidden_dim=768, depth=12, num_heads=12, mlp_dim=3072),
    "vit_r50_l32": dict(stem_depths=(3, 4, 6, 3), hidden_dim=1024, depth=24, num_heads=16, mlp_dim=4096),
}

STAGE_WIDTHS = (256, 512, 1024, 2048)


def resnet_v2_stem(images, stem_depths, root_width=64):
    """Applies the hybrid's ResNet-v2 feature extractor to a normalized image tensor.

    Shape: `(batch, h, w, c)` in, `(batch, h / 2**(1 + len(stem_depths)), ..., STAGE_WIDTHS[len - 1])` out.
    """
    if not 1 <= len(stem_depths) <= len(STAGE_WIDTHS):
        raise ValueError(f"stem_depths needs 1 to {len(STAGE_WIDTHS)} stages, got {stem_depths}.")
    x = StandardizedConv2D(
        root_width, 7, strides=2, padding="same", use_bias=False, kernel_initializer="he_normal", name="stem_conv"
    )(images)
    x = keras.layers.GroupNormalization(32, epsilon=1e-5, name="stem_norm")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, (blocks, width) in enumerate(zip(stem_depths, STAGE_WIDTHS)):
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            x = ResNetV2Bottleneck(width, strides=strides, name=f"stem_stage{stage}_block{block}")(x)
    return x


def HybridVisionTransformer(stem_depths, hidden_dim, depth, num_heads, mlp_dim, *, input_shape=None, **kwargs):
    """Builds a ResNet+ViT hybrid; the arguments are those of `VisionTransformer`
    plus `stem_depths`, the bottleneck count per ResNet stage."""
    stride = 2 ** (1 + len(stem_depths))
    if input_shape is not None:
        input_shape = common.image_input_shape(kwargs.get("name", "vision_transformer"), input_shape, kwargs.get("default_size", 224))
    if input_shape is not None and (input_shape[0] % stride or input_shape[1] % stride):
        raise ValueError(
            f"Image size {input_shape[0]}x{input_shape[1]} is not divisible by the ResNet stem's "
            f"stride {stride}. Use a multiple of {stride}, e.g. 224 or 384."
        )
    stem = functools.partial(resnet_v2_stem, stem_depths=tuple(stem_depths))
    return VisionTransformer(
        patch_size=1,
        hidden_dim=hidden_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_dim=mlp_dim,
        input_shape=input_shape,
        stem=stem,
        **kwargs,
    )


# The arguments it forwards are VisionTransformer's (less the patch size and stem it sets).
HybridVisionTransformer.__signature__ = inspect.signature(VisionTransformer).replace(
    parameters=[inspect.Parameter("stem_depths", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    + [p for p in inspect.signature(VisionTransformer).parameters.values() if p.name not in ("patch_size", "stem")]
)

ViTR26S32 = _register("vit_r26_s32", "ViTR26S32", "R26+ViT-S/32", 36_431_912, HybridVisionTransformer, HYBRID_VARIANTS["vit_r26_s32"])
ViTR50B16 = _register("vit_r50_b16", "ViTR50B16", "R50+ViT-B/16", 98_659_112, HybridVisionTransformer, HYBRID_VARIANTS["vit_r50_b16"])
ViTR50L32 = _register("vit_r50_l32", "ViTR50L32", "R50+ViT-L/32", 328_994_856, HybridVisionTransformer, HYBRID_VARIANTS["vit_r50_l32"])
