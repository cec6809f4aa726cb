"""A trained classifier's or detector's `.keras` file with what later commands need inside it.

`save_classifier` writes `model.save(path)` plus a `keras_vit.json` member in the
same zip: the class names, the registry name, the input size and the evaluation
crop. `load_classifier` reads both back from that file or from a run folder that
holds `model.keras`. Keras' own `load_model` ignores the extra member, so the file
stays an ordinary `.keras` file.
"""

import dataclasses
import json
import os
import zipfile

import keras

METADATA_MEMBER = "keras_vit.json"
MODEL_FILE = "model.keras"


@dataclasses.dataclass(frozen=True)
class ClassifierMetadata:
    """What a saved classifier's users need besides its weights.

    Attributes:
        class_names: the label of each output, in order.
        model: the registry name it was built from (e.g. "vit_pico8"), or None.
        image_size: the square input side it expects, in pixels.
        eval_crop_fraction: side of the evaluation center crop, as a fraction of
            the shorter image side (images are then resized to `image_size`).
        task: the model's task ("classification", "detection": then `image_size`
            is the shorter side images are resized to, and `max_size` caps the longer;
            "generation": `image_size` is the side of the generated images).
        max_size: detection: the longer side's cap.
        palette: generation: the `(colors, 3)` palette in [-1, 1] the model's tokens index.
        tokenizer: open-vocabulary detection: the `CLIPTokenizer` config (vocabulary and
            merges) of the text queries; `class_names` are then the categories it was
            evaluated on, and `load_classifier` sets `model.tokenizer`.
    """

    class_names: list
    model: str = None
    image_size: int = None
    eval_crop_fraction: float = 0.875
    task: str = "classification"
    max_size: int = None
    palette: list = None
    tokenizer: dict = None


def save_classifier(model, path, metadata):
    """`model.save(path)` (a `.keras` file) with `metadata` (a `ClassifierMetadata`) inside it."""
    if metadata.task == "open_vocabulary_detection":
        if not metadata.tokenizer:
            raise ValueError("An open-vocabulary detector is saved with its tokenizer: pass ClassifierMetadata(tokenizer=...).")
    elif metadata.task == "generation":
        classes = _output_classes(model)
        colors = len(metadata.palette or ())
        if colors != classes:
            raise ValueError(
                f"The model scores {classes} palette colors but the metadata's palette has {colors}: "
                "save the palette the model was trained with."
            )
    elif len(metadata.class_names) != _output_classes(model):
        raise ValueError(
            f"The model has {_output_classes(model)} outputs but {len(metadata.class_names)} class names were given: "
            "pass one name per output."
        )
    model.save(path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(METADATA_MEMBER, json.dumps(dataclasses.asdict(metadata), indent=1))


def _output_classes(model):
    """The classes a detector scores (its `classes`), or a classifier's outputs."""
    classes = getattr(model, "classes", None)
    return classes if isinstance(classes, int) else model.output_shape[-1]


def resolve_model_path(path):
    """`path` itself when it is a `.keras` file, `path/model.keras` for a run folder; ValueError otherwise."""
    path = os.fspath(path)
    if os.path.isdir(path):
        candidate = os.path.join(path, MODEL_FILE)
        if not os.path.isfile(candidate):
            raise ValueError(
                f"{path!r} is a folder without {MODEL_FILE}: pass a finished run folder of `keras-vit train` "
                "(with summary.json and model.keras) or a .keras file."
            )
        return candidate
    if not os.path.isfile(path):
        raise ValueError(f"{path!r}: no such file or folder. Pass a run folder of `keras-vit train` or a .keras file.")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path!r} is not a .keras model file. Pass a run folder of `keras-vit train` or a .keras file.")
    return path


def read_metadata(path):
    """The `ClassifierMetadata` of a `.keras` file or run folder; ValueError when it has none."""
    path = resolve_model_path(path)
    with zipfile.ZipFile(path) as archive:
        if METADATA_MEMBER not in archive.namelist():
            raise ValueError(
                f"{path!r} holds no class names (it was not saved by keras-vit's train, or by an older "
                "version). Save it with keras_vit.applications.saving.save_classifier(model, path, "
                "ClassifierMetadata(class_names=[...], image_size=...)), or pass --class-names."
            )
        try:
            fields = json.loads(archive.read(METADATA_MEMBER))
            return ClassifierMetadata(**fields)
        except (ValueError, TypeError) as error:
            raise ValueError(f"The keras-vit metadata in {path!r} is damaged ({error}). Save the model again.") from None


def load_classifier(path, metadata_required=True):
    """`(model, metadata)` from a `.keras` file or a run folder holding `model.keras`.

    `metadata` is None when the file has none and `metadata_required` is False.
    """
    path = resolve_model_path(path)
    try:
        metadata = read_metadata(path)
    except ValueError:
        if metadata_required:
            raise
        metadata = None
    import keras_vit.layers  # noqa: F401  (registers the serializable layers)
    import keras_vit.applications  # noqa: F401

    # Detectors and generators are returned uncompiled: their training setups live in keras_vit.training.
    compiled = metadata is None or metadata.task == "classification"
    model = keras.saving.load_model(path, compile=compiled)
    if metadata is not None and metadata.tokenizer:
        from keras_vit.data.tokenizer import CLIPTokenizer

        model.tokenizer = CLIPTokenizer.from_config(metadata.tokenizer)
    return model, metadata
