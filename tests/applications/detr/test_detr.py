"""DETR: the published parameter counts, outputs equal to transformers' DetrForObjectDetection (and to
the original repository's state-dict layout), inputs, saving, backbones and a training step."""

import json
import re

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit.applications.detr import DETR, DetrDetector
from keras_vit.applications.detr.loss import DETRLoss
from keras_vit.convert import load_transformers_checkpoint, load_weights
from tests.conftest import assert_parity, build_shapes_only, to_numpy

TINY = dict(num_queries=5, hidden_dim=16, num_heads=2, encoder_layers=1, decoder_layers=2, ffn_dim=32, classes=3)


def _tiny_backbone(input_shape=(None, None, 3)):
    return keras_vit.model_info("resnet50").builder(
        depths=(1, 1), widths=(8, 16), filters=(32, 64), include_top=False, pooling=None,
        include_preprocessing=False, input_shape=input_shape,
    )


def _tiny_detr(**kwargs):
    return DETR(_tiny_backbone(), **{**TINY, **kwargs})


def _padded_batch(seed=0):
    """Two images of 70x90 and 50x61 in one padded batch (channels first, as transformers takes them)."""
    rng = np.random.default_rng(seed)
    mask = np.ones((2, 70, 90), "float32")
    mask[1, 50:, :] = 0
    mask[1, :, 61:] = 0
    pixels = rng.standard_normal((2, 3, 70, 90)).astype("float32") * mask[:, None]
    return pixels, mask


@pytest.fixture(scope="module")
def transformers_detr(tmp_path_factory):
    """A random-weight DetrForObjectDetection with transformers' own ResNet, saved with save_pretrained."""
    torch = pytest.importorskip("torch")
    from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig

    torch.manual_seed(0)
    backbone = ResNetConfig(embedding_size=64, hidden_sizes=[32, 64], depths=[1, 1], layer_type="bottleneck",
                            out_features=["stage2"])
    config = DetrConfig(backbone_config=backbone, use_timm_backbone=False, d_model=16, encoder_layers=1,
                        decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                        decoder_ffn_dim=32, num_queries=5, num_labels=3, auxiliary_loss=False)
    model = DetrForObjectDetection(config).eval()
    with torch.no_grad():  # weights and BatchNorm statistics that keep activations of order 1 and all matter
        for name, parameter in model.named_parameters():
            fan_in = int(np.prod(parameter.shape[1:])) if parameter.ndim > 1 else 1
            norm_scale = name.endswith(("normalization.weight", "norm.weight"))
            parameter.copy_(torch.randn_like(parameter) / np.sqrt(fan_in) * (1.0 if parameter.ndim > 1 else 0.1) + norm_scale)
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(torch.randn_like(buffer) * 0.1)
            elif name.endswith("running_var"):
                buffer.copy_(torch.rand_like(buffer) + 0.5)
    path = tmp_path_factory.mktemp("detr") / "transformers"
    model.save_pretrained(path)
    return model, path


def _reference_outputs(model, pixels, mask):
    import torch

    with torch.no_grad():
        outputs = model(pixel_values=torch.tensor(pixels), pixel_mask=torch.tensor(mask).long())
    return outputs.logits.numpy(), outputs.pred_boxes.numpy()


def test_equals_transformers_on_a_padded_batch(transformers_detr):
    reference, path = transformers_detr
    model = load_transformers_checkpoint(path)
    pixels, mask = _padded_batch()
    logits, boxes = _reference_outputs(reference, pixels, mask)
    outputs = model({"images": np.transpose(pixels, (0, 2, 3, 1)), "pixel_mask": mask})
    assert set(outputs) == {"logits", "pred_boxes"}
    assert_parity(outputs["logits"], logits, "logits")
    assert_parity(outputs["pred_boxes"], boxes, "pred_boxes")
    assert np.abs(logits).max() > 0.3 and boxes.std() > 0.02  # outputs that a wrong weight would change


def _original_layout(tensors):
    """transformers' DETR tensor names -> the facebookresearch/detr state dict (torchvision ResNet
    names, nn.MultiheadAttention's fused in_proj)."""
    renamed, fused = {}, {}
    for key, value in tensors.items():
        new = key.replace("model.backbone.model.embedder.embedder.convolution", "backbone.0.body.conv1")
        new = new.replace("model.backbone.model.embedder.embedder.normalization", "backbone.0.body.bn1")
        match = re.match(r"model\.backbone\.model\.encoder\.stages\.(\d+)\.layers\.(\d+)\.(.*)", new)
        if match:
            stage, block, rest = int(match[1]), match[2], match[3]
            rest = re.sub(r"layer\.(\d)\.convolution", lambda m: f"conv{int(m[1]) + 1}", rest)
            rest = re.sub(r"layer\.(\d)\.normalization", lambda m: f"bn{int(m[1]) + 1}", rest)
            rest = rest.replace("shortcut.convolution", "downsample.0").replace("shortcut.normalization", "downsample.1")
            new = f"backbone.0.body.layer{stage + 1}.{block}.{rest}"
        new = new.replace("model.input_projection", "input_proj").replace("model.query_position_embeddings", "query_embed")
        new = new.replace("model.encoder.", "transformer.encoder.").replace("model.decoder.layers", "transformer.decoder.layers")
        new = new.replace("model.decoder.layernorm", "transformer.decoder.norm")
        new = new.replace("class_labels_classifier", "class_embed").replace("bbox_predictor", "bbox_embed")
        new = new.replace("encoder_attn.", "multihead_attn.").replace(".o_proj.", ".out_proj.")
        new = new.replace("mlp.fc1", "linear1").replace("mlp.fc2", "linear2")
        for old, norm in (("self_attn_layer_norm", "norm1"), ("encoder_attn_layer_norm", "norm2")):
            new = new.replace(old, norm)
        new = new.replace("final_layer_norm", "norm3" if "decoder" in new else "norm2")
        projection = re.match(r"(.*)\.(q|k|v)_proj\.(weight|bias)", new)
        if projection:
            fused.setdefault((projection[1], projection[3]), {})[projection[2]] = value
        else:
            renamed[new] = value
    for (prefix, kind), parts in fused.items():
        renamed[f"{prefix}.in_proj_{kind}"] = np.concatenate([parts["q"], parts["k"], parts["v"]])
    return renamed


def test_reads_the_original_detr_state_dict_layout(transformers_detr, tmp_path):
    from safetensors.numpy import save_file

    from keras_vit.convert import read_safetensors

    reference, path = transformers_detr
    from keras_vit.applications.detr.convert import rename_legacy_transformers

    # transformers 5 writes its 4.x names (out_proj, fc1, backbone.conv_encoder); reading them is tested above
    tensors = _original_layout(rename_legacy_transformers(read_safetensors(str(path / "model.safetensors"))))
    assert "transformer.encoder.layers.0.self_attn.in_proj_weight" in tensors and "backbone.0.body.layer1.0.downsample.0.weight" in tensors
    save_file(tensors, str(tmp_path / "detr.safetensors"))
    model = DETR(_tiny_backbone(), include_preprocessing=False, **TINY)
    load_weights(model, str(tmp_path / "detr.safetensors"), family="detr")
    pixels, mask = _padded_batch(seed=1)
    logits, boxes = _reference_outputs(reference, pixels, mask)
    outputs = model({"images": np.transpose(pixels, (0, 2, 3, 1)), "pixel_mask": mask})
    assert_parity(outputs["logits"], logits, "logits")
    assert_parity(outputs["pred_boxes"], boxes, "pred_boxes")


def test_a_checkpoint_of_another_architecture_is_refused(transformers_detr, tmp_path):
    _, path = transformers_detr
    with pytest.raises(ValueError, match="detr family.*cannot fill"):
        load_weights(keras_vit.create_model("vit_pico8", input_shape=(16, 16, 3), classes=3), str(path), family="vit")
    config = json.loads((path / "config.json").read_text())
    config["backbone_config"]["layer_type"] = "basic"
    (tmp_path / "basic").mkdir()
    (tmp_path / "basic" / "config.json").write_text(json.dumps(config))
    for shard in path.glob("*.safetensors"):
        (tmp_path / "basic" / shard.name).write_bytes(shard.read_bytes())
    with pytest.raises(ValueError, match="layer_type 'basic' is not supported"):
        load_transformers_checkpoint(tmp_path / "basic")


def test_images_alone_equal_a_full_pixel_mask_and_a_wrong_mask_is_refused():
    model = _tiny_detr()
    images = np.random.default_rng(0).uniform(0, 255, (2, 48, 40, 3)).astype("float32")
    alone = model(images)
    masked = model({"images": images, "pixel_mask": np.ones((2, 48, 40), "float32")})
    np.testing.assert_allclose(to_numpy(alone["logits"]), to_numpy(masked["logits"]), atol=1e-6)
    with pytest.raises(ValueError, match="pixel_mask has shape \\(2, 40, 48\\).*one per image"):
        model({"images": images, "pixel_mask": np.ones((2, 40, 48), "float32")})


def test_training_outputs_the_auxiliary_decoder_layers_and_saving_round_trips(tmp_path):
    model = _tiny_detr(decoder_layers=3, freeze_batchnorm=False)  # a backbone trained from scratch
    assert any(w.path.endswith("gamma") for w in model.backbone.trainable_weights)
    images = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    training = model(images, training=True)
    assert tuple(training["aux_logits"].shape) == (2, 2, 5, 4) and tuple(training["aux_boxes"].shape) == (2, 2, 5, 4)
    model.save(tmp_path / "detr.keras")
    again = keras.saving.load_model(tmp_path / "detr.keras")
    assert isinstance(again, DetrDetector) and again.decoder_layers == 3 and again.freeze_batchnorm is False
    np.testing.assert_allclose(to_numpy(again(images)["pred_boxes"]), to_numpy(model(images)["pred_boxes"]), atol=1e-6)


def test_fit_with_detr_loss_trains_all_but_the_frozen_layers():
    model = _tiny_detr(frozen_backbone_layers=("stem_", "stage0_"))
    frozen = {w.path: to_numpy(w) for w in model.weights if w.path.startswith(("stem_", "stage0_"))}
    trainable = {w.path: to_numpy(w) for w in model.trainable_weights}
    assert not set(frozen) & set(trainable) and not any("moving" in p or "gamma" in p for p in trainable if p.startswith("stage"))
    rng = np.random.default_rng(0)
    x = {"images": rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32"), "pixel_mask": np.ones((4, 32, 32), "float32")}
    y = {
        "boxes": np.tile(np.array([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.2], [0, 0, 0, 0]], "float32"), (4, 1, 1)),
        "labels": np.tile(np.array([0, 2, 0], "int32"), (4, 1)),
        "valid": np.tile(np.array([1, 1, 0], "float32"), (4, 1)),
    }
    y["valid"][3] = 0  # an image without objects
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=DETRLoss())
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert all(np.array_equal(to_numpy(w), frozen[w.path]) for w in model.weights if w.path in frozen)
    unchanged = [w.path for w in model.trainable_weights if np.array_equal(to_numpy(w), trainable[w.path])]
    # The first decoder layer attends over zeros plus query positions: its value projection sees only
    # zeros (DETR's decoder input), so its kernel gets no gradient, in the original too.
    assert unchanged == ["decoder_layer0/self_attention/value/kernel"]


@pytest.mark.slow
@pytest.mark.backend_agnostic
def test_published_parameter_counts():
    for name, (trainable, without_batch_norm) in {
        "detr_r50": (41_302_368, 41_524_768), "detr_r101": (60_242_272, 60_464_672),
    }.items():
        model = build_shapes_only(name)
        count = lambda weights: sum(int(np.prod(w.shape)) for w in weights)
        batch_norm = [w for w in model.weights if re.search(r"(^|/)(stem_bn|bn\d|shortcut_bn)/", w.path)]
        assert count(model.trainable_weights) == trainable == keras_vit.model_info(name).params
        assert count(model.weights) - count(batch_norm) == without_batch_norm
