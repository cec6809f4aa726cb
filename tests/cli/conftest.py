import pytest
import tensorflow_datasets as tfds

import keras_vit.data  # noqa: F401  (registers the `shapes` builder)


@pytest.fixture(scope="session")
def shapes_data_dir(tmp_path_factory):
    """A TFDS data_dir with the small `shapes` config prepared once per session."""
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    tfds.builder("shapes/small", data_dir=data_dir).download_and_prepare()
    return data_dir
