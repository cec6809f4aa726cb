"""OWL-ViT converters: transformers `save_pretrained` directories of `model_type` "owlvit"
(`OwlViTForObjectDetection`) and "owlv2" (`Owlv2ForObjectDetection`).

config.json gives the towers (transformers writes only the values that differ from its
defaults, which are filled in here); the tensors map one to one, q/k/v projections
concatenated into our fused qkv. The tokenizer files the processor saves beside the
weights (`vocab.json`, `merges.txt`) become `model.tokenizer`. Importing this module
registers both converters with `keras_vit.convert`.
"""

import os

from keras_vit.data.tokenizer import CLIPTokenizer
from keras_vit.applications.owl_vit.model import OWLViT
from keras_vit.convert import TransformersConverter, register_converter
from keras_vit.convert.weight_map import conv_kernel, dense_kernel
from keras_vit.convert.weight_map import map_dense as _dense
from keras_vit.convert.weight_map import map_norm as _norm
from keras_vit.layers.patch_embedding import resize_position_embedding

# transformers' defaults (configuration_owlvit.py / configuration_owlv2.py), which save_pretrained omits.
_TEXT_DEFAULTS = dict(
    vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
    max_position_embeddings=16, hidden_act="quick_gelu", layer_norm_eps=1e-5,
)
_VISION_DEFAULTS = {
    "owlvit": dict(
        hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, num_channels=3,
        image_size=768, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    ),
}
_VISION_DEFAULTS["owlv2"] = dict(_VISION_DEFAULTS["owlvit"], patch_size=16)


def tower_configs(config):
    """`(text, vision)` config dicts of an OWL-ViT config.json, transformers' defaults filled in."""
    model_type = config["model_type"]
    text = {**_TEXT_DEFAULTS, **(config.get("text_config") or {})}
    vision = {**_VISION_DEFAULTS[model_type], **(config.get("vision_config") or {})}
    return text, vision


def owl_vit_kwargs_from_config(config, tensors):
    """keras-vit `OWLViT` arguments equivalent to a transformers OWL-ViT / OWLv2 config."""
    text, vision = tower_configs(config)
    projection_dim = config.get("projection_dim", 512)
    for tower, values in (("text_config", text), ("vision_config", vision)):
        if values["hidden_act"] != "quick_gelu":
            raise ValueError(f"{tower}.hidden_act={values['hidden_act']!r} is not supported; OWL-ViT's towers use 'quick_gelu'.")
    if text["layer_norm_eps"] != vision["layer_norm_eps"]:
        raise ValueError(
            f"text_config.layer_norm_eps={text['layer_norm_eps']} differs from vision_config.layer_norm_eps="
            f"{vision['layer_norm_eps']}; keras-vit's OWL-ViT uses one epsilon for both towers."
        )
    if text["hidden_size"] != projection_dim:
        raise ValueError(
            f"text_config.hidden_size={text['hidden_size']} differs from projection_dim={projection_dim}: transformers' "
            "class head maps image tokens to the text width and compares them with projected queries, so OWL-ViT "
            "checkpoints keep both equal."
        )
    image_size, patch_size = vision["image_size"], vision["patch_size"]
    if not isinstance(image_size, int) or not isinstance(patch_size, int):
        raise ValueError(f"vision_config image_size={image_size!r} and patch_size={patch_size!r} must be ints (square images and patches).")
    return dict(
        clip="clip_b32",  # the towers below replace its architecture entirely
        text=dict(
            width=text["hidden_size"], depth=text["num_hidden_layers"], num_heads=text["num_attention_heads"],
            mlp_dim=text["intermediate_size"],
        ),
        vision=dict(
            patch_size=patch_size, width=vision["hidden_size"], depth=vision["num_hidden_layers"],
            num_heads=vision["num_attention_heads"], mlp_dim=vision["intermediate_size"],
        ),
        projection_dim=projection_dim,
        objectness=config["model_type"] == "owlv2",
        vocabulary_size=text["vocab_size"],
        query_length=text["max_position_embeddings"],
        layer_norm_epsilon=text["layer_norm_eps"],
        input_shape=(image_size, image_size, vision["num_channels"]),
    )


def build_owl_vit(include_top=True, **kwargs):
    """`OWLViT(**kwargs)`; the generic loader's `include_top` has no meaning for a detector."""
    if not include_top:
        raise ValueError("OWL-ViT has no classification head to drop: include_top=False is not supported.")
    return OWLViT(**kwargs)


def map_owl_vit(weight_map, model_type):
    """Plans every variable of an `OwlViTDetector` from transformers OWL-ViT / OWLv2 tensors."""
    model, take = weight_map.model, weight_map.take
    base = f"{model_type}."
    _map_text(weight_map, model.text_encoder, base + "text_model.")
    _map_vision(weight_map, model.vision_encoder, base + "vision_model.")
    weight_map.set("text_projection/kernel", take(base + "text_projection.weight", dense_kernel))
    weight_map.set("visual_projection/kernel", take(base + "visual_projection.weight", dense_kernel))
    weight_map.set("contrastive_logits/logit_scale", take(base + "logit_scale"))
    _norm(weight_map, "layer_norm", "layer_norm")
    for name in ("dense0", "logit_shift", "logit_scale"):
        _dense(weight_map, f"class_head/{name}", f"class_head.{name}")
    heads = ("box_head", "objectness_head") if model.objectness else ("box_head",)
    for head in heads:
        for name in ("dense0", "dense1", "dense2"):
            _dense(weight_map, f"{head}/{name}", f"{head}.{name}")
    # Buffers older transformers versions saved with the weights.
    weight_map.ignore(lambda key: key.endswith("position_ids") or key == "box_bias")
    attach_tokenizer(model, weight_map.checkpoint_name)


def _map_text(weight_map, encoder, source):
    take = weight_map.take
    weight_map.set("text_embedding/token_embedding", take(source + "embeddings.token_embedding.weight"))
    weight_map.set("text_embedding/position_embedding", take(source + "embeddings.position_embedding.weight"))
    _map_blocks(weight_map, encoder, "text", source + "encoder.layers.")
    _norm(weight_map, "text_final_norm", source + "final_layer_norm")


def _map_vision(weight_map, encoder, source):
    take = weight_map.take
    patch_embedding = encoder.get_layer("patch_embedding")
    weight_map.set("patch_embedding/class_token", take(source + "embeddings.class_embedding", lambda t: t.reshape(1, 1, -1)))
    weight_map.set("patch_embedding/projection/kernel", take(source + "embeddings.patch_embedding.weight", conv_kernel))

    def fit_grid(position):  # a checkpoint for another image size: interpolated, as transformers' interpolate_pos_encoding
        return resize_position_embedding(position[None], patch_embedding.grid_size, 1)

    weight_map.set("patch_embedding/position_embedding", take(source + "embeddings.position_embedding.weight", fit_grid))
    _norm(weight_map, "vision_pre_norm", source + "pre_layernorm")
    _map_blocks(weight_map, encoder, "vision", source + "encoder.layers.")
    _norm(weight_map, "vision_post_norm", source + "post_layernorm")


def _map_blocks(weight_map, encoder, prefix, source):
    depth = sum(1 for layer in encoder.layers if layer.name.startswith(f"{prefix}_block_"))
    for index in range(depth):
        target, layer = f"{prefix}_block_{index}", f"{source}{index}."
        projections = [f"{layer}self_attn.{name}_proj" for name in ("q", "k", "v")]
        weight_map.set(
            f"{target}/attention/qkv/kernel",
            weight_map.take_concatenated([name + ".weight" for name in projections], dense_kernel, axis=1),
        )
        weight_map.set(f"{target}/attention/qkv/bias", weight_map.take_concatenated([name + ".bias" for name in projections]))
        _dense(weight_map, f"{target}/attention/projection", layer + "self_attn.out_proj")
        _norm(weight_map, f"{target}/norm1", layer + "layer_norm1")
        _norm(weight_map, f"{target}/norm2", layer + "layer_norm2")
        _dense(weight_map, f"{target}/mlp/fc1", layer + "mlp.fc1")
        _dense(weight_map, f"{target}/mlp/fc2", layer + "mlp.fc2")


def attach_tokenizer(model, directory):
    """Sets `model.tokenizer` from the tokenizer files saved beside the weights (`vocab.json` +
    `merges.txt`, or transformers 5's `tokenizer.json`), if there are any."""
    files = ("vocab.json", "merges.txt", "tokenizer.json")
    if any(os.path.isfile(os.path.join(directory, name)) for name in files):
        model.tokenizer = CLIPTokenizer.from_directory(directory, sequence_length=model.query_length)


for _model_type in ("owlvit", "owlv2"):
    register_converter(
        TransformersConverter(
            model_type=_model_type,
            family="owl_vit",
            builder=build_owl_vit,
            builder_arguments=owl_vit_kwargs_from_config,
            map_weights=lambda weight_map, model_type, include_top, allow_resize: map_owl_vit(weight_map, model_type),
        )
    )
