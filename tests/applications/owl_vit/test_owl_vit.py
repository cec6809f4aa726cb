"""OWL-ViT / OWLv2: transformers parity (text and image queries), registry counts, inputs and saving."""

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit.applications.owl_vit.detect import embed_image_queries, image_outputs, class_logits
from keras_vit.convert import load_transformers_checkpoint
from tests.conftest import assert_parity, build_shapes_only

IMAGE_SIZE, PATCH = 32, 8
VOCABULARY = 60  # ids 0..59; the test's end-of-text id is the largest (59), as in CLIP's vocabulary


def _tiny_config(model_type):
    from transformers import Owlv2Config, OwlViTConfig

    text = dict(vocab_size=VOCABULARY, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=16, bos_token_id=VOCABULARY - 2, eos_token_id=VOCABULARY - 1)
    vision = dict(hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=2, image_size=IMAGE_SIZE,
                  patch_size=PATCH)
    config_class = OwlViTConfig if model_type == "owlvit" else Owlv2Config
    return config_class(text_config=text, vision_config=vision, projection_dim=32)


@pytest.fixture(scope="module", params=["owlvit", "owlv2"])
def transformers_owl(request, tmp_path_factory):
    """A random-weight OwlViT/Owlv2ForObjectDetection saved with save_pretrained."""
    torch = pytest.importorskip("torch")
    from transformers import Owlv2ForObjectDetection, OwlViTForObjectDetection

    torch.manual_seed(0)
    model_class = OwlViTForObjectDetection if request.param == "owlvit" else Owlv2ForObjectDetection
    model = model_class(_tiny_config(request.param)).eval()
    with torch.no_grad():  # weights that keep activations of order 1, biases that matter
        for name, parameter in model.named_parameters():
            if name.endswith("logit_scale") and parameter.ndim == 0:
                continue
            fan_in = int(np.prod(parameter.shape[1:])) if parameter.ndim > 1 else 1
            is_norm = "norm" in name and name.endswith("weight")
            parameter.copy_(torch.randn_like(parameter) / np.sqrt(fan_in) * (1.0 if parameter.ndim > 1 else 0.2) + is_norm)
    path = tmp_path_factory.mktemp(request.param) / "checkpoint"
    model.save_pretrained(path)
    return request.param, model, path


def _queries(batch=2):
    """(batch, 3, 16) ids: queries of different lengths, and a padded (all-zero) query in image 1."""
    rng = np.random.RandomState(1)
    input_ids = np.zeros((batch, 3, 16), "int32")
    attention_mask = np.zeros((batch, 3, 16), "int32")
    for image in range(batch):
        for query, length in enumerate((3, 5, 9)):
            if image == 1 and query == 2:
                continue
            input_ids[image, query, :length] = [VOCABULARY - 2, *rng.randint(1, VOCABULARY - 2, length - 2), VOCABULARY - 1]
            attention_mask[image, query, :length] = 1
    return input_ids, attention_mask


def _pixels(batch=2, seed=0):
    return np.random.RandomState(seed).randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE).astype("float32")


def test_equals_transformers_for_text_queries(transformers_owl):
    import torch

    model_type, reference, path = transformers_owl
    model = load_transformers_checkpoint(path)
    assert model.objectness == (model_type == "owlv2")
    assert model.count_params() == sum(p.numel() for p in reference.parameters())
    pixels = _pixels()
    input_ids, attention_mask = _queries()
    with torch.no_grad():
        expected = reference(
            pixel_values=torch.tensor(pixels),
            input_ids=torch.tensor(input_ids.reshape(-1, 16)).long(),
            attention_mask=torch.tensor(attention_mask.reshape(-1, 16)).long(),
        )
    outputs = model({"images": np.transpose(pixels, (0, 2, 3, 1)), "input_ids": input_ids, "attention_mask": attention_mask})
    assert_parity(outputs["logits"], expected.logits, "logits")  # the padded query: float32 min in both
    assert_parity(outputs["pred_boxes"], expected.pred_boxes, "pred_boxes")
    assert_parity(outputs["image_embeddings"], expected.image_embeds, "image_embeds")
    classes, text = (keras.ops.convert_to_numpy(outputs[key]) for key in ("class_embeddings", "text_embeddings"))
    # transformers returns both normalized (class embeddings with its +1e-6); ours are the raw projections.
    assert_parity(classes / (np.linalg.norm(classes, axis=-1, keepdims=True) + 1e-6), expected.class_embeds, "class_embeds")
    real_queries = input_ids[..., 0] > 0  # a padded query's embedding is never used (its logits are masked)
    assert_parity((text / np.linalg.norm(text, axis=-1, keepdims=True))[real_queries],
                  expected.text_embeds.numpy()[real_queries], "text_embeds")
    if model_type == "owlv2":
        assert_parity(outputs["objectness_logits"], expected.objectness_logits, "objectness_logits")
    real = np.asarray(expected.logits)[np.asarray(expected.logits) > -1e30]
    assert real.std() > 0.1 and np.asarray(expected.pred_boxes).std() > 0.02  # outputs a wrong weight would change


def test_equals_transformers_for_image_queries(transformers_owl):
    import torch

    _, reference, path = transformers_owl
    model = load_transformers_checkpoint(path)
    pixels, query_pixels = _pixels(seed=0), _pixels(seed=1)
    with torch.no_grad():
        expected = reference.image_guided_detection(pixel_values=torch.tensor(pixels), query_pixel_values=torch.tensor(query_pixels))
    query_embeddings, _, query_boxes = embed_image_queries(model, np.transpose(query_pixels, (0, 2, 3, 1)))
    outputs = image_outputs(model, np.transpose(pixels, (0, 2, 3, 1)))
    logits = class_logits(model, outputs["image_features"], query_embeddings[:, None])
    assert_parity(logits, expected.logits, "image-guided logits")
    assert_parity(outputs["pred_boxes"], expected.target_pred_boxes, "target boxes")
    assert_parity(query_boxes, expected.query_pred_boxes, "query boxes")


@pytest.mark.slow
@pytest.mark.backend_agnostic
def test_published_parameter_counts():
    published = {"owlvit_b32": 153_231_879, "owlvit_b16": 152_789_511, "owlvit_l14": 433_888_519,
                 "owlv2_b16": 154_966_792, "owlv2_l14": 437_610_760}
    for name, params in published.items():
        assert keras_vit.model_info(name).params == params
        assert build_shapes_only(name).count_params() == params, name


def test_bad_inputs_are_value_errors(transformers_owl, tmp_path):
    model_type, _, path = transformers_owl
    model = load_transformers_checkpoint(path)
    images = np.zeros((2, IMAGE_SIZE, IMAGE_SIZE, 3), "float32")
    input_ids, attention_mask = _queries(batch=2)
    with pytest.raises(ValueError, match="takes a dict with keys"):
        model(images)
    with pytest.raises(ValueError, match="2 images but queries for 1"):
        model({"images": images, "input_ids": input_ids[:1], "attention_mask": attention_mask[:1]})
    with pytest.raises(ValueError, match="queries are 8 tokens long, the text tower takes 16"):
        model({"images": images, "input_ids": input_ids[..., :8], "attention_mask": attention_mask[..., :8]})
    with pytest.raises(ValueError, match="has no tokenizer for text queries"):
        model.detect(images[0], queries=["a cat"])
    with pytest.raises(ValueError, match="non-empty list of str"):
        model.detect(images[0], queries=[], tokenizer=object())
    with pytest.raises(ValueError, match="exactly one of queries, query_embeddings and query_images"):
        model.detect(images[0])
    with pytest.raises(ValueError, match=r"must be \(queries, dim\) with at least one query, got shape \(2, 2, 32\)"):
        model.detect(images[0], query_embeddings=np.zeros((2, 2, 32)))
    with pytest.raises(ValueError, match="pass \\(height, width, 3\\) RGB arrays"):
        model.detect(np.zeros((8, 8)), query_embeddings=np.zeros((2, 32)))
    with pytest.raises(ValueError, match=f"holds a '{model_type}' model \\(owl_vit family\\); it cannot fill"):
        keras_vit.create_model("vit_pico8", weights=str(path))  # a checkpoint of another architecture
