"""Swin Transformer V2 (Liu et al., CVPR 2022): Swin-V2-T/S/B at 256 px, windows 8 and 16.

The same generic `SwinTransformer` builder with `version=2`: scaled cosine
attention with a clamped per-head temperature, a continuous position bias
(an MLP of log-spaced offsets), residual post-norm, and patch merging that
reduces before it normalizes. The position bias has no per-window weights,
so the window-16 variants have the window-8 variants' parameter counts.
"""

from keras_vit.applications.swin import SwinTransformer
from keras_vit.applications.vit import make_constructor

# REFERENCE.md; drop_path_rate is the recipe's default for each size.
SWIN_V2_VARIANTS = {}
_V2 = dict(version=2, default_size=256)
for _window in (8, 16):
    _suffix = "" if _window == 8 else f"_w{_window}"
    SWIN_V2_VARIANTS.update(
        {
            f"swinv2_t{_suffix}": dict(
                embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=_window, drop_path_rate=0.2, **_V2
            ),
            f"swinv2_s{_suffix}": dict(
                embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), window_size=_window, drop_path_rate=0.3, **_V2
            ),
            f"swinv2_b{_suffix}": dict(
                embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=_window, drop_path_rate=0.5, **_V2
            ),
        }
    )


SwinV2Tiny = make_constructor(SwinTransformer, "swinv2_t", "SwinV2Tiny", "Swin-V2-T (256 px, window 8)", "28,347,154 params", SWIN_V2_VARIANTS["swinv2_t"])
SwinV2Small = make_constructor(SwinTransformer, "swinv2_s", "SwinV2Small", "Swin-V2-S (256 px, window 8)", "49,728,418 params", SWIN_V2_VARIANTS["swinv2_s"])
SwinV2Base = make_constructor(SwinTransformer, "swinv2_b", "SwinV2Base", "Swin-V2-B (256 px, window 8)", "87,918,816 params", SWIN_V2_VARIANTS["swinv2_b"])
SwinV2TinyWindow16 = make_constructor(SwinTransformer, "swinv2_t_w16", "SwinV2TinyWindow16", "Swin-V2-T (256 px, window 16)", "28,347,154 params", SWIN_V2_VARIANTS["swinv2_t_w16"])
SwinV2SmallWindow16 = make_constructor(SwinTransformer, "swinv2_s_w16", "SwinV2SmallWindow16", "Swin-V2-S (256 px, window 16)", "49,728,418 params", SWIN_V2_VARIANTS["swinv2_s_w16"])
SwinV2BaseWindow16 = make_constructor(SwinTransformer, "swinv2_b_w16", "SwinV2BaseWindow16", "Swin-V2-B (256 px, window 16)", "87,918,816 params", SWIN_V2_VARIANTS["swinv2_b_w16"])
