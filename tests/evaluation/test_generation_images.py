"""Images of a generative pixel model: palette tokens to RGB, grid layout, atomic PNG writing,
and the sample / completion grids (their layout, with `generate` stood in for)."""

import inspect
import os

import numpy as np
import pytest
from PIL import Image

from keras_vit.evaluation import generation
from keras_vit.evaluation.generation import completion_grid, image_grid, sample_grid, tokens_to_images, write_png

pytestmark = pytest.mark.backend_agnostic  # NumPy and PIL only (`generate` is replaced below)

COLORS = np.array([[0, 0, 0], [255, 255, 255], [255, 0, 128], [10, 200, 37]], "uint8")
PALETTE = COLORS.astype("float32") / 127.5 - 1.0  # the palette convention: colors in [-1, 1]


def test_tokens_to_images_maps_each_token_to_its_palette_color_exactly():
    tokens = np.random.RandomState(0).randint(0, len(COLORS), (2, 9))
    images = tokens_to_images(tokens, PALETTE)
    assert images.shape == (2, 3, 3, 3) and images.dtype == np.uint8
    for b in range(2):
        for r in range(3):
            for c in range(3):
                np.testing.assert_array_equal(images[b, r, c], COLORS[tokens[b, 3 * r + c]])


def test_tokens_to_images_refuses_non_square_images_and_tokens_outside_the_palette():
    with pytest.raises(ValueError, match=r"8 tokens per image is not a square image"):
        tokens_to_images(np.zeros((1, 8), "int32"), PALETTE)
    with pytest.raises(ValueError, match=r"tokens must index the palette's 4 colors, got 0\.\.4"):
        tokens_to_images(np.array([[0, 1, 2, 4]]), PALETTE)
    with pytest.raises(ValueError, match=r"got -1\.\.0"):
        tokens_to_images(np.array([[0, -1, 0, 0]]), PALETTE)


def _images(count, value_offset=0, side=2):
    return np.stack([np.full((side, side, 3), 10 * (index + 1) + value_offset, "uint8") for index in range(count)])


def test_image_grid_places_enlarged_images_between_white_gaps():
    scale, gap, side = 3, 1, 2
    rows = [_images(3), _images(2, value_offset=100)]  # the second row is one image short
    grid = image_grid(rows, scale=scale, gap=gap)
    cell = side * scale
    assert grid.shape == (2 * (cell + gap) + gap, 3 * (cell + gap) + gap, 3) and grid.dtype == np.uint8
    for r, row in enumerate(rows):
        for c in range(3):
            top, left = gap + r * (cell + gap), gap + c * (cell + gap)
            expected = row[c, 0, 0] if c < len(row) else 255  # a missing image leaves white
            assert (grid[top : top + cell, left : left + cell] == expected).all(), (r, c)
    assert (grid[:gap] == 255).all() and (grid[:, :gap] == 255).all()
    assert (grid[gap + cell : 2 * gap + cell] == 255).all()  # the gap between the rows


def test_image_grid_enlarges_by_nearest_neighbour():
    image = np.arange(12, dtype="uint8").reshape(1, 2, 2, 3)
    grid = image_grid([image], scale=2, gap=0)
    np.testing.assert_array_equal(grid, image[0].repeat(2, axis=0).repeat(2, axis=1))


def test_write_png_writes_a_readable_png_and_leaves_no_temporary_file(tmp_path):
    image = np.random.RandomState(0).randint(0, 256, (5, 7, 3)).astype("uint8")
    path = tmp_path / "grid.png"
    path.write_bytes(b"an older file")  # replaced whole
    write_png(str(path), image)
    with Image.open(path) as png:
        assert png.format == "PNG"
        np.testing.assert_array_equal(np.asarray(png), image)
    assert os.listdir(tmp_path) == ["grid.png"]


def test_write_png_that_fails_leaves_neither_a_file_nor_a_temporary(tmp_path):
    path = tmp_path / "grid.png"
    with pytest.raises(TypeError):
        write_png(str(path), np.zeros((2, 2, 5), "uint8"))  # PIL has no 5-channel mode
    assert os.listdir(tmp_path) == []


def _fake_generate(calls, side):
    """Stands in for `generate` (checked against its real signature): the prompt, then pixels of
    color `1 + seed % 3` (or color 3 for unconditional samples)."""
    signature = inspect.signature(generation.generate)

    def fake(model, *args, **kwargs):
        arguments = signature.bind(model, *args, **kwargs).arguments
        calls.append(arguments)
        prompt = arguments.get("prompt")
        if prompt is None:
            return np.full((arguments["num_samples"], side * side), 3, "int32")
        rest = np.full((len(prompt), side * side - prompt.shape[1]), 1 + arguments["seed"] % 3, "int32")
        return np.concatenate([prompt, rest], axis=1)

    return fake


def test_completion_grid_rows_are_masked_inputs_completions_and_originals(monkeypatch):
    side, scale, gap = 4, 4, 2  # image_grid's defaults
    calls = []
    monkeypatch.setattr(generation, "generate", _fake_generate(calls, side))
    originals = np.random.RandomState(0).randint(0, len(COLORS), (3, side * side))
    grid = completion_grid("model", PALETTE, originals, seed=5, temperature=0.5, top_k=2, completions=2)
    assert [call["seed"] for call in calls] == [5, 6]
    for call in calls:
        np.testing.assert_array_equal(call["prompt"], originals[:, : (side // 2) * side])  # the top halves
        assert call["temperature"] == 0.5 and call["top_k"] == 2
    cell = side * scale
    assert grid.shape == (4 * (cell + gap) + gap, 3 * (cell + gap) + gap, 3)

    def image_at(row, column):
        top, left = gap + row * (cell + gap), gap + column * (cell + gap)
        return grid[top : top + cell : scale, left : left + cell : scale]

    full = tokens_to_images(originals, PALETTE)
    half = side // 2
    for column in range(3):
        masked = image_at(0, column)
        np.testing.assert_array_equal(masked[:half], full[column, :half])
        assert (masked[half:] == 128).all()  # the hidden bottom half is grey
        for row, seed in ((1, 5), (2, 6)):
            completed = image_at(row, column)
            np.testing.assert_array_equal(completed[:half], full[column, :half])
            assert (completed[half:] == COLORS[1 + seed % 3]).all()
        np.testing.assert_array_equal(image_at(3, column), full[column])


def test_sample_grid_is_one_row_of_samples(monkeypatch):
    calls = []
    monkeypatch.setattr(generation, "generate", _fake_generate(calls, 3))
    grid = sample_grid("model", PALETTE, num_samples=5, seed=7, top_k=4)
    assert len(calls) == 1 and calls[0]["num_samples"] == 5 and calls[0]["seed"] == 7 and calls[0]["top_k"] == 4
    assert grid.shape == (3 * 4 + 2 * 2, 5 * (3 * 4 + 2) + 2, 3)
    assert (grid[2 : 2 + 12, 2 : 2 + 12] == COLORS[3]).all()
