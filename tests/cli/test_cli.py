import json
import os

import pytest

from keras_vit import cli

pytestmark = pytest.mark.backend_agnostic


def _vit_macs(depth, dim, mlp, tokens, patch_inputs, classes):
    """Closed form: per block qkv + projection + MLP + the two attention products."""
    block = tokens * (4 * dim * dim + 2 * dim * mlp) + 2 * tokens * tokens * dim
    return depth * block + (tokens - 1) * patch_inputs * dim + dim * classes


def test_info_prints_parameters_macs_and_attention_memory(capsys):
    assert cli.main(["info", "vit_ti16"]) == 0
    out = capsys.readouterr().out
    assert "5,717,416" in out
    gmacs = float(out.split("GMACs")[1].split()[0])
    assert abs(gmacs - 1.26) / 1.26 < 0.01  # REFERENCE.md 1.26 also counts norms and activations
    assert "attention layers    12; the first: 3 heads x 197x197" in out


def test_macs_equal_the_closed_form():
    from keras_vit import create_model
    from keras_vit.evaluation.complexity import measure

    cost = measure(create_model("vit_b16"))
    assert cost.macs == _vit_macs(12, 768, 3072, 197, 16 * 16 * 3, 1000)
    assert abs(cost.gmacs - 17.58) / 17.58 < 0.01


def test_info_attention_grows_quadratically_with_tokens():
    from keras_vit import create_model
    from keras_vit.evaluation.complexity import measure

    small = measure(create_model("vit_pico8", input_shape=(64, 64, 3)))
    large = measure(create_model("vit_pico8", input_shape=(128, 128, 3)))
    assert small.attention_elements == 4 * 4 * 64 * 64  # 4 layers x 4 heads, no class token (gap)
    assert large.attention_elements == 4 * 4 * 256 * 256


def test_info_attention_memory_table_per_side(capsys):
    assert cli.main(["info", "vit_pico8", "--sides", "32", "64", "--against", "resnet_pico"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[2:]}
    # 16 -> 64 tokens: 16x the elements (4 layers x 4 heads, no class token); a ResNet has none.
    assert float(rows["vit_pico8"][1]) == pytest.approx(16 * float(rows["vit_pico8"][0]), rel=0.01)
    assert rows["vit_pico8"][2] == "x16.0" and rows["resnet_pico"] == ["0", "0", "-"]
    assert cli.main(["info", "vit_pico8", "--against", "swin_t"]) == 2


def test_info_unknown_model_is_a_clear_error(capsys):
    assert cli.main(["info", "vit_bb16"]) == 2
    assert "Unknown model name 'vit_bb16'. Did you mean: vit_b16" in capsys.readouterr().err


def test_info_list(capsys):
    assert cli.main(["info", "--list"]) == 0
    assert "vit_r50_b16" in capsys.readouterr().out.split()


@pytest.mark.slow
def test_train_writes_model_history_and_plot(tmp_path, shapes_data_dir):
    out = tmp_path / "run"
    code = cli.main(["train", "--data-dir", shapes_data_dir, "--dataset", "shapes/small", "--epochs", "1", "--steps-per-epoch", "2",
                     "--batch-size", "8", "--image-size", "32", "--output-dir", str(out)])
    assert code == 0
    assert sorted(os.listdir(out)) == ["curves.png", "history.json", "model.keras", "summary.json"]
    history = json.loads((out / "history.json").read_text())
    assert set(history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "vit_pico8" and summary["image_size"] == 32
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".keras-vit-")]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--model", "vit_nope"], "Unknown model name 'vit_nope'"),
        (["--dataset", "no_such_dataset_xyz"], "no_such_dataset_xyz"),
        (["--batch-size", "0"], "batch_size must be positive"),
        (["--image-size", "60"], "not divisible by the patch size 8"),
    ],
)
def test_train_bad_input_fails_without_writing(tmp_path, shapes_data_dir, capsys, argv, message):
    out = tmp_path / "run"
    argv = ["train", "--data-dir", shapes_data_dir, "--dataset", "shapes/small", "--output-dir", str(out),
            "--epochs", "1"] + argv
    code = cli.main(argv)
    assert code == 2
    assert message in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_train_on_empty_folder_fails_without_writing(tmp_path, capsys):
    (tmp_path / "images" / "cats").mkdir(parents=True)
    (tmp_path / "images" / "dogs").mkdir()
    code = cli.main(["train", "--dataset", str(tmp_path / "images"), "--output-dir", str(tmp_path / "run")])
    assert code == 2
    assert "no images" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
