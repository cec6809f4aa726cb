import socket

import pytest


def _refuse_network(*args, **kwargs):
    raise OSError("Network access is forbidden in tests.")


@pytest.fixture
def no_network(monkeypatch):
    """Makes any attempt to open a socket fail."""
    monkeypatch.setattr(socket, "socket", _refuse_network)


@pytest.fixture(scope="session")
def shapes_dir(shapes_data_dir):
    """A TFDS data_dir holding `shapes/small` (600 train, 120 test)."""
    return shapes_data_dir
