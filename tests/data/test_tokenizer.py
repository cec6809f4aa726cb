"""CLIPTokenizer against transformers' CLIPTokenizer on a small vocabulary trained here (no downloads)."""

import json
import os
import warnings

import numpy as np
import pytest

from keras_vit.data.tokenizer import CLIPTokenizer, train_clip_tokenizer

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.backend_agnostic

CORPUS = [
    "a photo of a cat", "a photo of two cats", "a photo of a dog", "the dog's ball", "a remote control",
    "a red car on the road", "it's a bird", "people riding bikes", "a cat sitting on a couch",
]
TEXTS = [
    "a photo of a cat",
    "A Photo of a CAT",
    "  a  photo\tof\n  two   cats  ",
    "the dog's ball!",
    "it's a cat, isn't it?",
    "they're we've I'm you'll he'd",
    "12345 remote controls",
    "café naïve ÜNÏCODE",
    "日本 🐱",
    "ﬁne Straße İstanbul",
    "hello!world...",
    "zebra xylophone",
    "<|endoftext|> a cat",
    "!",
    "a cat sitting on a couch next to a dog riding bikes on the road with people",
]
OWL_VIT_LENGTH = 16


@pytest.fixture(autouse=True)
def _seed_and_reset():
    """Overrides conftest's per-test Keras reset (about 0.5 s a test): these tests build no Keras state."""
    yield


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """vocab.json + merges.txt laid out like CLIP's (bytes, bytes + </w>, merges, then bos, eos last), and the
    special tokens files, as `train_clip_tokenizer(...).save` writes them."""
    directory = tmp_path_factory.mktemp("clip")
    train_clip_tokenizer(CORPUS, vocabulary_size=600).save(directory)
    return directory


def _files(directory):
    return str(directory / "vocab.json"), str(directory / "merges.txt")


@pytest.fixture(scope="module")
def hf_owlvit(clip_dir):
    # OWL-ViT's conversion script: CLIPTokenizer.from_pretrained(..., pad_token="!", model_max_length=16).
    return transformers.CLIPTokenizer(*_files(clip_dir), pad_token="!", model_max_length=OWL_VIT_LENGTH)


@pytest.fixture(scope="module")
def tokenizer(clip_dir):
    return CLIPTokenizer(*_files(clip_dir))


def _reference(hf, texts, length):
    encoded = hf(texts, padding="max_length", max_length=length, truncation=True, return_tensors="np")
    return encoded["input_ids"], encoded["attention_mask"]


def _encode_quietly(tokenizer, texts):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tokenizer(texts)


def test_vocabulary_is_clip_shaped(clip_dir, tokenizer, hf_owlvit):
    vocab = json.loads((clip_dir / "vocab.json").read_text(encoding="utf-8"))
    merges = (clip_dir / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    assert vocab["!"] == 0 and vocab["!</w>"] == 256 and len(vocab) == 512 + len(merges) + 2 > 550
    assert tokenizer.vocabulary_size == len(vocab) == len(hf_owlvit)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (
        hf_owlvit.bos_token_id, hf_owlvit.eos_token_id, hf_owlvit.pad_token_id) == (len(vocab) - 2, len(vocab) - 1, 0)
    assert tokenizer.sequence_length == OWL_VIT_LENGTH


@pytest.mark.parametrize("text", TEXTS)
def test_matches_transformers_owlvit_tokenizer(tokenizer, hf_owlvit, text):
    ids, mask = _reference(hf_owlvit, [text], OWL_VIT_LENGTH)
    ours = _encode_quietly(tokenizer, text)
    assert ours["input_ids"].dtype == ours["attention_mask"].dtype == np.int32
    np.testing.assert_array_equal(ours["input_ids"], ids)
    np.testing.assert_array_equal(ours["attention_mask"], mask)


@pytest.mark.parametrize("length", [2, 5, 77])
def test_matches_transformers_at_other_lengths_and_with_eos_padding(clip_dir, length):
    hf = transformers.CLIPTokenizer(*_files(clip_dir))  # CLIP's own default: pad with <|endoftext|>
    ours = CLIPTokenizer(*_files(clip_dir), sequence_length=length, pad_id=hf.eos_token_id)
    ids, mask = _reference(hf, TEXTS, length)
    encoded = _encode_quietly(ours, TEXTS)
    np.testing.assert_array_equal(encoded["input_ids"], ids)
    np.testing.assert_array_equal(encoded["attention_mask"], mask)


def test_end_of_text_has_the_largest_id_where_owl_vit_pools(tokenizer):
    # OWL-ViT/CLIP pool the text at input_ids.argmax(-1): it must be the (first) end-of-text token.
    encoded = _encode_quietly(tokenizer, TEXTS[:-3] + TEXTS[-2:])  # not "<|endoftext|> a cat"
    last = encoded["attention_mask"].sum(-1) - 1
    np.testing.assert_array_equal(encoded["input_ids"].argmax(-1), last)
    assert tokenizer.eos_token_id == tokenizer.vocabulary_size - 1


def test_pad_token_is_special_like_in_transformers(tokenizer):
    # transformers registers OWL-ViT's pad token "!" as a special token: a "!" in a query encodes to 0.
    ids = tokenizer("a cat!")["input_ids"][0]
    assert list(ids[3:6]) == [0, tokenizer.eos_token_id, 0]


def test_truncation_keeps_end_of_text_and_warns(tokenizer, hf_owlvit):
    long_text = TEXTS[-1]
    with pytest.warns(UserWarning, match=r"sequence_length=16.*a cat sitting on a couch.*\(\d+ tokens\)"):
        encoded = tokenizer(["a cat", long_text])
    ids = encoded["input_ids"][1]
    full = hf_owlvit(long_text)["input_ids"]
    assert len(full) > OWL_VIT_LENGTH
    assert list(ids) == full[:OWL_VIT_LENGTH - 1] + [tokenizer.eos_token_id]  # bos + 14 tokens + eos
    assert encoded["attention_mask"][1].all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokenizer(TEXTS[:3])  # nothing cut, no warning


def test_batch_queries_pads_with_all_zero_queries(tokenizer):
    queries = [["a cat", "a dog", "a remote control"], ["a car"]]
    batch = tokenizer.batch_queries(queries)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, 3, OWL_VIT_LENGTH)
    assert batch["input_ids"].dtype == np.int32
    for image, image_queries in enumerate(queries):
        single = tokenizer(image_queries)
        for key in ("input_ids", "attention_mask"):
            np.testing.assert_array_equal(batch[key][image, :len(image_queries)], single[key])
    assert not batch["input_ids"][1, 1:].any() and not batch["attention_mask"][1, 1:].any()
    # OWL-ViT's query mask.
    np.testing.assert_array_equal(batch["input_ids"][..., 0] > 0, [[True, True, True], [True, False, False]])


def test_decode(tokenizer):
    encoded = tokenizer(["A photo of two cats!", "a dog's ball"])
    assert tokenizer.decode(encoded["input_ids"]) == ["a photo of two cats !", "a dog 's ball"]
    assert tokenizer.decode(encoded["input_ids"][0], skip_special_tokens=False).startswith("<|startoftext|>a photo")
    assert tokenizer.decode(np.zeros(OWL_VIT_LENGTH, "int32")) == ""


def test_from_directory_of_transformers_save_pretrained(tmp_path, hf_owlvit, tokenizer):
    hf_owlvit.save_pretrained(tmp_path)  # transformers 5 writes tokenizer.json + tokenizer_config.json only
    loaded = CLIPTokenizer.from_directory(tmp_path)
    assert loaded.pad_token_id == 0 and loaded.sequence_length == OWL_VIT_LENGTH
    ids, mask = _reference(hf_owlvit, TEXTS, OWL_VIT_LENGTH)
    encoded = _encode_quietly(loaded, TEXTS)
    np.testing.assert_array_equal(encoded["input_ids"], ids)
    np.testing.assert_array_equal(encoded["attention_mask"], mask)


def test_from_directory_of_vocab_and_merges_reads_the_pad_token(tmp_path, clip_dir, tokenizer):
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / name).write_bytes((clip_dir / name).read_bytes())
    assert CLIPTokenizer.from_directory(tmp_path, sequence_length=8).pad_token_id == 0  # OWL-ViT's default
    special = {"pad_token": {"content": "<|endoftext|>", "lstrip": False, "normalized": False}}
    (tmp_path / "special_tokens_map.json").write_text(json.dumps(special), encoding="utf-8")
    loaded = CLIPTokenizer.from_directory(tmp_path, sequence_length=8)
    assert loaded.pad_token_id == tokenizer.eos_token_id and loaded.sequence_length == 8
    assert list(loaded("a cat")["input_ids"][0, -2:]) == [tokenizer.eos_token_id] * 2


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("texts, match", [
    ([], "non-empty list"),
    ("", "'' is empty once tokenized"),
    (["a cat", " \t\n "], "only whitespace"),
    (["a cat", 3], "3 is a int, not a str"),
    ([None], "None is a NoneType"),
])
def test_bad_queries(tokenizer, texts, match):
    with pytest.raises(ValueError, match=match):
        tokenizer(texts)


@pytest.mark.parametrize("queries, match", [
    ([], "one list of queries per image"),
    (["a cat", "a dog"], "Image 0's queries are 'a cat'"),
    ([["a cat"], []], r"Image 1's queries are \[\]"),
    ([["a cat"], [""]], "empty once tokenized"),
])
def test_bad_batch_queries(tokenizer, queries, match):
    with pytest.raises(ValueError, match=match):
        tokenizer.batch_queries(queries)


def test_bad_directory(tmp_path, clip_dir):
    with pytest.raises(ValueError, match=r"vocab.json or merges.txt.*processor.save_pretrained"):
        CLIPTokenizer.from_directory(tmp_path)
    _write(tmp_path / "vocab.json", (clip_dir / "vocab.json").read_text(encoding="utf-8"))
    with pytest.raises(ValueError, match=r"has no merges.txt .*tokenizer.save_pretrained"):
        CLIPTokenizer.from_directory(tmp_path)
    with pytest.raises(ValueError, match="not a directory"):
        CLIPTokenizer.from_directory(tmp_path / "vocab.json")
    _write(tmp_path / "merges.txt", (clip_dir / "merges.txt").read_text(encoding="utf-8"))
    _write(tmp_path / "tokenizer_config.json", json.dumps({"pad_token": "<pad>"}))
    with pytest.raises(ValueError, match="pad token '<pad>'"):
        CLIPTokenizer.from_directory(tmp_path)


def test_bad_vocabulary_and_arguments(tmp_path, clip_dir):
    merges = str(clip_dir / "merges.txt")
    vocab = json.loads((clip_dir / "vocab.json").read_text(encoding="utf-8"))
    with pytest.raises(ValueError, match="Cannot read the CLIP vocabulary .*bad.json"):
        CLIPTokenizer(str(_write(tmp_path / "bad.json", "{not json")), merges)
    with pytest.raises(ValueError, match="list.json.*non-empty dict"):
        CLIPTokenizer(str(_write(tmp_path / "list.json", "[1, 2]")), merges)
    with pytest.raises(ValueError, match="non-negative int ids"):
        CLIPTokenizer({**vocab, "x": "7"}, merges)
    with pytest.raises(ValueError, match="lacks \\['<\\|endoftext\\|>'\\]"):
        CLIPTokenizer({k: v for k, v in vocab.items() if k != "<|endoftext|>"}, merges)
    with pytest.raises(ValueError, match="Cannot read the CLIP vocabulary"):
        CLIPTokenizer(str(tmp_path / "missing.json"), merges)
    with pytest.raises(ValueError, match="do not match"):
        CLIPTokenizer(vocab, ["zz qq"])
    with pytest.raises(ValueError, match="Bad BPE merge 'a b c'"):
        CLIPTokenizer(vocab, ["a b c"])
    for length in (1, 0, 2.5):
        with pytest.raises(ValueError, match=f"sequence_length={length}: it must be an int >= 2"):
            CLIPTokenizer(vocab, merges, sequence_length=length)
    with pytest.raises(ValueError, match="pad_id=100000 is not an id"):
        CLIPTokenizer(vocab, merges, pad_id=100000)


def test_train_clip_tokenizer_caps_the_vocabulary_and_matches_transformers(tmp_path):
    small = train_clip_tokenizer(CORPUS, vocabulary_size=530, sequence_length=8)
    assert small.vocabulary_size == 530 and small.eos_token_id == 529 and small.bos_token_id == 528
    assert (small.pad_token_id, small.sequence_length) == (0, 8)
    small.save(tmp_path)
    merges = (tmp_path / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0] == "#version: 0.2" and len(merges) == 1 + 530 - 514
    hf = transformers.CLIPTokenizer(*_files(tmp_path), pad_token="!")
    ids, mask = _reference(hf, TEXTS, 8)
    encoded = _encode_quietly(small, TEXTS)
    np.testing.assert_array_equal(encoded["input_ids"], ids)
    np.testing.assert_array_equal(encoded["attention_mask"], mask)
    # A small corpus runs out of pairs to merge: fewer ids than asked for, each word one token.
    words = train_clip_tokenizer(["red circle", "Blue star"])
    assert words.vocabulary_size < 600 and words.decode(words("Blue circle")["input_ids"][0]) == "blue circle"
    assert list(words("red star")["attention_mask"][0, :5]) == [1, 1, 1, 1, 0]


def test_save_round_trips_and_transformers_reads_it(tmp_path, tokenizer):
    tokenizer.save(tmp_path / "owl")
    assert sorted(p.name for p in (tmp_path / "owl").iterdir()) == [
        "merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"]  # No temporary file left.
    expected = _encode_quietly(tokenizer, TEXTS)
    loaded = CLIPTokenizer.from_directory(tmp_path / "owl")
    assert (loaded.vocabulary_size, loaded.pad_token_id, loaded.sequence_length) == (tokenizer.vocabulary_size, 0, 16)
    encoded = _encode_quietly(loaded, TEXTS)
    hf = transformers.CLIPTokenizer.from_pretrained(str(tmp_path / "owl"))
    assert (hf.pad_token, hf.model_max_length) == ("!", OWL_VIT_LENGTH)
    for ids, mask in [(encoded["input_ids"], encoded["attention_mask"]), _reference(hf, TEXTS, OWL_VIT_LENGTH)]:
        np.testing.assert_array_equal(ids, expected["input_ids"])
        np.testing.assert_array_equal(mask, expected["attention_mask"])
    # CLIP's own padding (<|endoftext|>) and another length; saving over the files replaces them.
    clip = CLIPTokenizer(*_files(tmp_path / "owl"), sequence_length=77, pad_id=tokenizer.eos_token_id)
    clip.save(tmp_path / "owl")
    assert CLIPTokenizer.from_directory(tmp_path / "owl", sequence_length=77).pad_token_id == tokenizer.eos_token_id
    assert transformers.CLIPTokenizer.from_pretrained(str(tmp_path / "owl")).model_max_length == 77


def test_config_round_trips_through_json(clip_dir):
    original = CLIPTokenizer(*_files(clip_dir), sequence_length=8, pad_id=5)
    restored = CLIPTokenizer.from_config(json.loads(json.dumps(original.get_config())))
    assert (restored.sequence_length, restored.pad_token_id, restored.vocabulary_size) == (8, 5, original.vocabulary_size)
    for key, value in _encode_quietly(original, TEXTS).items():
        np.testing.assert_array_equal(_encode_quietly(restored, TEXTS)[key], value)
    with pytest.raises(ValueError, match=r"holds \['merges', 'pad_id', 'sequence_length', 'vocabulary'\].*got \['merges'\]"):
        CLIPTokenizer.from_config({"merges": []})


def test_save_is_all_or_nothing(tmp_path, tokenizer, monkeypatch):
    tokenizer.save(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    other = CLIPTokenizer(*_files(tmp_path), pad_id=tokenizer.eos_token_id)

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        other.save(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_bad_training_and_saving(tmp_path, tokenizer):
    for texts in ([], "red circle", None):
        with pytest.raises(ValueError, match="texts must be a non-empty list of str"):
            train_clip_tokenizer(texts)
    with pytest.raises(ValueError, match=r"texts must all be str; found \[3\]"):
        train_clip_tokenizer(["red circle", 3])
    with pytest.raises(ValueError, match="vocabulary_size=513: it must be an int >= 514"):
        train_clip_tokenizer(CORPUS, vocabulary_size=513)
    _write(tmp_path / "file", "")
    with pytest.raises(ValueError, match="it is a file; pass a directory"):
        tokenizer.save(tmp_path / "file")
    _write(tmp_path / "tokenizer.json", "{}")
    with pytest.raises(ValueError, match="holds a tokenizer.json, which transformers would read instead"):
        tokenizer.save(tmp_path)
