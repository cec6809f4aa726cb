"""timm `mvitv2_*` state dicts, made here with NumPy in timm's names and shapes, loaded and compared with
`naive_mvit`, a loop-by-loop NumPy forward of timm's model reading the same state dict."""

import re

import numpy as np
import pytest
from safetensors.numpy import save_file

from keras_vit.applications import MViTv2
from keras_vit.applications.mvit.convert import resize_rel_pos
from keras_vit.convert import load_timm_checkpoint, load_weights
from keras_vit.convert.registry import timm_converter
from tests.applications.mvit import naive_mvit
from tests.conftest import assert_parity

# Two stages, 32 px: 8x8 tokens, then 4x4; k/v strides 4 then 2, so k/v maps are 2x2 throughout.
BASE = dict(depths=(1, 2), embed_dim=8, num_heads=1, stride_q=((1, 1), (2, 2)))
CONFIGS = {
    "mvitv2": {},  # expand_attn, relative positions, residual pooling
    "mvitv2_l_layout": dict(expand_attn=False, num_heads=(1, 2)),  # width grows in the MLP: shortcut_proj_mlp
    "mvit_v1": dict(use_class_token=True, use_abs_pos=True, use_rel_pos=False, residual_pooling=False,
                    expand_attn=False, pool_q_every_block=False, pooling="token"),
}


def _architecture(name):
    return {**BASE, **CONFIGS[name]}


def _naive_config(architecture):
    stages = len(architecture["depths"])
    heads = architecture["num_heads"]
    heads = heads if isinstance(heads, tuple) else tuple(heads * 2**i for i in range(stages))
    return dict(architecture, num_heads=heads, stride_kv=((4, 4), (2, 2)), use_cls_token=architecture.get("use_class_token", False))


def timm_state_dict(architecture, image_size=32, classes=5, seed=0):
    """A random state dict with timm's names and shapes for `MultiScaleVit(MultiScaleVitCfg(...))`, values of a
    scale that keeps activations of order 1."""
    rng = np.random.RandomState(seed)
    config = _naive_config(architecture)
    depths, heads, stages = config["depths"], config["num_heads"], len(config["depths"])
    dims = tuple(architecture["embed_dim"] * 2**i for i in range(stages))
    expand = architecture.get("expand_attn", True)
    params = {}

    def dense(name, out_dim, in_dim):
        params[name + ".weight"] = rng.randn(out_dim, in_dim) / np.sqrt(in_dim)
        params[name + ".bias"] = 0.2 * rng.randn(out_dim)

    def norm(name, dim):
        params[name + ".weight"], params[name + ".bias"] = 1 + 0.2 * rng.randn(dim), 0.2 * rng.randn(dim)

    params["patch_embed.proj.weight"] = rng.randn(dims[0], 3, 7, 7) / np.sqrt(3 * 49)
    params["patch_embed.proj.bias"] = 0.2 * rng.randn(dims[0])
    feat = image_size // 4
    if config["use_cls_token"]:
        params["cls_token"] = 0.5 * rng.randn(1, 1, dims[0])
    if architecture.get("use_abs_pos"):
        params["pos_embed"] = 0.5 * rng.randn(1, int(config["use_cls_token"]) + feat * feat, dims[0])
    dim = dims[0]
    for stage, depth in enumerate(depths):
        stage_out = dims[stage] if expand else dims[min(stage + 1, stages - 1)]
        for index in range(depth):
            out = stage_out if expand or index == depth - 1 else dim
            prefix = f"stages.{stage}.blocks.{index}."
            stride_q = config["stride_q"][stage] if index == 0 else (1, 1)
            attention_dim = out if expand else dim
            head_dim = attention_dim // heads[stage]
            norm(prefix + "norm1", dim)
            dense(prefix + "attn.qkv", 3 * attention_dim, dim)
            dense(prefix + "attn.proj", attention_dim, attention_dim)
            for part in "qkv":
                if part != "q" or architecture.get("pool_q_every_block", True) or stride_q != (1, 1):
                    params[f"{prefix}attn.pool_{part}.weight"] = rng.randn(head_dim, 1, 3, 3) / 3
                    norm(f"{prefix}attn.norm_{part}", head_dim)
            if architecture.get("use_rel_pos", True):
                length = 2 * max(feat // stride_q[0], feat // config["stride_kv"][stage][0]) - 1
                params[prefix + "attn.rel_pos_h"] = 0.3 * rng.randn(length, head_dim)
                params[prefix + "attn.rel_pos_w"] = 0.3 * rng.randn(length, head_dim)
            if dim != out:
                dense(prefix + ("shortcut_proj_attn" if expand else "shortcut_proj_mlp"), out, dim)
            norm(prefix + "norm2", attention_dim)
            dense(prefix + "mlp.fc1", 4 * attention_dim, attention_dim)
            dense(prefix + "mlp.fc2", out, 4 * attention_dim)
            dim = out
            feat //= stride_q[0]
    norm("norm", dim)
    dense("head.fc", classes, dim)
    return params


def _save(params, path):
    save_file({key: np.ascontiguousarray(value, dtype=np.float32) for key, value in params.items()}, str(path))
    return str(path)


def _images(size=32):
    return np.random.RandomState(1).randn(2, size, size, 3)


def _expected(params, architecture, images):
    config = _naive_config(architecture)
    return np.stack([naive_mvit.mvit(image, params, config) for image in images])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_timm_state_dict_matches_naive_forward(tmp_path, name):
    architecture = _architecture(name)
    params = timm_state_dict(architecture)
    path = _save(params, tmp_path / "mvit.safetensors")
    model = load_timm_checkpoint("mvitv2_tiny", path, **architecture, input_shape=(32, 32, 3), include_preprocessing=False)
    assert model.get_layer("head").units == 5
    images = _images()
    assert_parity(model(images.astype("float32")), _expected(params, architecture, images), f"{name} logits vs naive NumPy")


def _official_layout(params, depths, expand_attn):
    """timm's names back to the official facebookresearch/mvit flat layout (timm's checkpoint_filter_fn, inverted)."""
    starts = np.cumsum((0, *depths))
    out = {}
    for key, value in params.items():
        match = re.match(r"stages\.(\d+)\.blocks\.(\d+)\.(.*)", key)
        if match:
            rest = match.group(3).replace("shortcut_proj_attn" if expand_attn else "shortcut_proj_mlp", "proj")
            key = f"blocks.{starts[int(match.group(1))] + int(match.group(2))}.{rest}"
        out[key.replace("head.fc.", "head.projection.")] = value
    return out


def _pytorchvideo_layout(params, depths):
    """An MViTv1 state dict in pytorchvideo's layout: separate q/k/v, the position embedding in spatial,
    temporal and class parts under `cls_positional_encoding`, `norm_embed`, `head.proj`."""
    out = _official_layout(params, depths, expand_attn=False)
    for key in [k for k in out if k.endswith(("attn.qkv.weight", "attn.qkv.bias"))]:
        stem, kind = key.rsplit(".qkv.", 1)
        for part, value in zip("qkv", np.split(out.pop(key), 3, axis=0)):
            out[f"{stem}.{part}.{kind}"] = value
    joint = out.pop("pos_embed")
    temporal = 0.3 * np.random.RandomState(2).randn(1, 1, joint.shape[-1])
    out["cls_positional_encoding.pos_embed_spatial"] = joint[:, 1:] - temporal
    out["cls_positional_encoding.pos_embed_temporal"] = temporal
    out["cls_positional_encoding.pos_embed_class"] = joint[:, :1]
    out["cls_positional_encoding.cls_token"] = out.pop("cls_token")
    renames = {"patch_embed.proj.": "patch_embed.patch_model.", "norm.": "norm_embed.", "head.projection.": "head.proj."}
    for old, new in renames.items():
        for key in [k for k in out if k.startswith(old)]:
            out[new + key[len(old):]] = out.pop(key)
    return out


@pytest.mark.parametrize("layout", ["official_mvitv2", "pytorchvideo_mvit_v1"])
def test_flat_official_layouts_load_the_same_model(tmp_path, layout):
    name = "mvitv2" if layout == "official_mvitv2" else "mvit_v1"
    architecture = _architecture(name)
    params = timm_state_dict(architecture)
    if layout == "official_mvitv2":
        flat = _official_layout(params, architecture["depths"], expand_attn=True)
        assert "blocks.1.proj.weight" in flat  # the shortcut projection at the stage transition
    else:
        flat = _pytorchvideo_layout(params, architecture["depths"])
        architecture = dict(architecture, sep_pos_embed=True)
    assert timm_converter(tensors=flat).family == "mvit"
    model = MViTv2(**architecture, input_shape=(32, 32, 3), classes=5, classifier_activation=None, include_preprocessing=False)
    load_weights(model, _save(flat, tmp_path / "flat.safetensors"))
    images = _images()
    assert_parity(model(images.astype("float32")), _expected(params, _architecture(name), images), f"{layout} logits vs naive NumPy")


def test_other_image_sizes_need_allow_resize(tmp_path):
    torch = pytest.importorskip("torch")
    architecture = _architecture("mvitv2")
    params = timm_state_dict(architecture)
    path = _save(params, tmp_path / "mvit.safetensors")
    build = dict(architecture, input_shape=(64, 64, 3), classes=5)
    with pytest.raises(ValueError, match="relative position tables were trained for another image size \\(15 rows where the "
                                         "model has 31\\).*pass allow_resize=True"):
        load_weights(MViTv2(**build), path)
    model = MViTv2(**build)
    load_weights(model, path, allow_resize=True)
    table = params["stages.0.blocks.0.attn.rel_pos_h"]
    expected = torch.nn.functional.interpolate(torch.tensor(table.T[None]), size=31, mode="linear")[0].T.numpy()
    assert_parity(model.get_layer("stage0_block0").attention.rel_pos_h, expected, "resized table vs F.interpolate")
    assert_parity(resize_rel_pos(table, 15), table, "same size is unchanged")


def test_v1_position_embedding_of_another_size_is_resized_only_when_allowed(tmp_path):
    architecture = _architecture("mvit_v1")
    path = _save(timm_state_dict(architecture), tmp_path / "mvit.safetensors")
    with pytest.raises(ValueError, match="position embedding has 64 patch positions but the model has 256 \\(16x16\\)"):
        load_weights(MViTv2(**architecture, input_shape=(64, 64, 3), classes=5), path)
    model = MViTv2(**architecture, input_shape=(64, 64, 3), classes=5)
    load_weights(model, path, allow_resize=True)
    assert tuple(model.get_layer("patch_embedding").position_embedding.shape) == (1, 257, 8)


def test_timm_names_select_the_family_and_a_mismatch_is_reported(tmp_path):
    path = _save(timm_state_dict(_architecture("mvitv2")), tmp_path / "mvit.safetensors")
    with pytest.raises(ValueError, match="(?s)does not match model 'mvitv2_t'.*lacks: stages.2.blocks.0.norm1.weight"):
        load_timm_checkpoint("mvitv2_tiny.fb_in1k", path, depths=(1, 2, 1, 1), embed_dim=8, input_shape=(32, 32, 3))
    assert timm_converter(tensors={"blocks.0.attn.qkv.weight": None, "pos_embed": None}).family == "vit"
