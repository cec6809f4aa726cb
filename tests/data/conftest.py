import socket

import pytest
import tensorflow_datasets as tfds

import keras_vit.data  # noqa: F401  (registers the `shapes` builder)


def _refuse_network(*args, **kwargs):
    raise OSError("Network access is forbidden in tests.")


@pytest.fixture
def no_network(monkeypatch):
    """Makes any attempt to open a socket fail."""
    monkeypatch.setattr(socket, "socket", _refuse_network)


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    """A TFDS data_dir holding `shapes/small` (600 train, 120 test)."""
    data_dir = tmp_path_factory.mktemp("tfds")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "socket", _refuse_network)
        tfds.builder("shapes/small", data_dir=data_dir).download_and_prepare()
    return str(data_dir)
