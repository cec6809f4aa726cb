"""CLIP's byte-level BPE tokenizer, as OWL-ViT's text queries use it.

Built on HuggingFace `tokenizers` with the pipeline of transformers'
`CLIPTokenizer`: NFC, whitespace runs to one space, lowercase; CLIP's word
regex then byte-level pre-tokenization; BPE with a `</w>` end-of-word suffix;
`<|startoftext|> ... <|endoftext|>` around every text. The bos, eos (also the
unknown token) and pad tokens are special tokens, matched verbatim in the text,
as in transformers (so with OWL-ViT's pad token "!", a "!" in a query encodes
to the pad id 0, like `OwlViTProcessor` does).

`train_clip_tokenizer` trains such a BPE on your own texts (to train OWL-ViT
offline); `CLIPTokenizer.save` writes it as transformers reads it.
"""

import contextlib
import json
import os
import warnings

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
from tokenizers.models import BPE

# CLIP's BPE vocabulary: 49,152 merges' worth of tokens plus the start and end ids (end-of-text last).
CLIP_VOCABULARY_SIZE = 49408


BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
# transformers' CLIPTokenizer split pattern: special tokens, contractions, letter runs, single digits, and
# runs of anything else that is not whitespace.
SPLIT_PATTERN = (
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)
VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
TOKENIZER_FILE = "tokenizer.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
CONFIG_FILE = "tokenizer_config.json"
MERGES_HEADER = "#version: 0.2"
# The 256 byte symbols, the same with </w>, then bos and eos: the smallest CLIP-style vocabulary.
MIN_VOCABULARY_SIZE = 2 * 256 + 2
SAVERS = "`processor.save_pretrained(directory)` or `tokenizer.save_pretrained(directory)` (transformers)"


def _normalizer():
    """NFC, whitespace runs to one space, lowercase (transformers' CLIPTokenizer)."""
    return normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])


def _pre_tokenizer():
    """CLIP's word regex, then the byte-level alphabet."""
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])


def _byte_symbols():
    """GPT-2/CLIP's printable stand-in of each byte, in CLIP's vocabulary order ("!" first, id 0)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


def _load_vocabulary(vocabulary):
    source = "vocabulary"
    if isinstance(vocabulary, (str, os.PathLike)):
        source = os.fspath(vocabulary)
        try:
            with open(source, encoding="utf-8") as f:
                vocabulary = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"Cannot read the CLIP vocabulary {source!r} ({e}): it must be a JSON object "
                             "token -> id, the vocab.json a transformers CLIP checkpoint ships.") from None
    if not isinstance(vocabulary, dict) or not vocabulary:
        raise ValueError(f"The CLIP vocabulary {source!r} must be a non-empty dict token -> id (vocab.json); "
                         f"got {type(vocabulary).__name__}.")
    bad = [(k, v) for k, v in vocabulary.items()
           if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, int) or v < 0][:3]
    if bad:
        raise ValueError(f"The CLIP vocabulary {source!r} must map str tokens to non-negative int ids; "
                         f"found {bad}. Pass the vocab.json of a transformers CLIP checkpoint.")
    if len(set(vocabulary.values())) != len(vocabulary):
        raise ValueError(f"The CLIP vocabulary {source!r} gives the same id to several tokens; "
                         "each token needs its own id.")
    missing = [t for t in (BOS_TOKEN, EOS_TOKEN) if t not in vocabulary]
    if missing:
        raise ValueError(f"The CLIP vocabulary {source!r} lacks {missing}: CLIP's vocab.json ends with "
                         f"{BOS_TOKEN!r} and {EOS_TOKEN!r}.")
    return dict(vocabulary)


def _load_merges(merges):
    source = "merges"
    if isinstance(merges, (str, os.PathLike)):
        source = os.fspath(merges)
        try:
            with open(source, encoding="utf-8") as f:
                merges = f.read().split("\n")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"Cannot read the CLIP merges {source!r} ({e}): pass the merges.txt of a "
                             "transformers CLIP checkpoint.") from None
        if merges and merges[0].startswith("#version"):
            merges = merges[1:]
        merges = [line for line in merges if line.strip()]
    pairs = []
    for merge in merges:
        pair = merge.split(" ") if isinstance(merge, str) else merge
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(p, str) and p for p in pair):
            raise ValueError(f"Bad BPE merge {merge!r} in {source!r}: each merge is 'left right' "
                             "(one line of merges.txt) or a (left, right) pair of tokens.")
        pairs.append(tuple(pair))
    return pairs


def _special_token(value):
    """A special token as tokenizer_config.json / special_tokens_map.json store it: str, dict or null."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class CLIPTokenizer:
    """CLIP's byte-level BPE (vocab.json + merges.txt as a transformers checkpoint ships them).

    Encodes like transformers' `CLIPTokenizer(..., pad_token=<token of pad_id>)` called with
    `padding="max_length", max_length=sequence_length, truncation=True`.

    Args:
        vocabulary: dict token -> id, or the path of a vocab.json.
        merges: list of "left right" strings or (left, right) pairs, or the path of
            a merges.txt (its "#version" line is skipped).
        sequence_length: int >= 2, the length every text is padded or cut to
            (16 for OWL-ViT).
        pad_id: the id padding fills in (0, "!", for OWL-ViT; OWL-ViT reads a
            query whose first id is 0 as a padding query).

    Example:
    >>> tokenizer = CLIPTokenizer.from_directory("owlvit-base-patch32")
    >>> tokenizer(["a photo of a cat", "a dog"])["input_ids"].shape
    (2, 16)
    """

    def __init__(self, vocabulary, merges, *, sequence_length=16, pad_id=0):
        if isinstance(sequence_length, bool) or not isinstance(sequence_length, int) or sequence_length < 2:
            raise ValueError(f"sequence_length={sequence_length!r}: it must be an int >= 2, room for "
                             f"{BOS_TOKEN} and {EOS_TOKEN} (OWL-ViT uses 16).")
        vocabulary = _load_vocabulary(vocabulary)
        merges = _load_merges(merges)
        id_to_token = {i: t for t, i in vocabulary.items()}
        if isinstance(pad_id, bool) or not isinstance(pad_id, (int, np.integer)) or int(pad_id) not in id_to_token:
            raise ValueError(f"pad_id={pad_id!r} is not an id of the vocabulary ({len(vocabulary)} tokens); "
                             "OWL-ViT pads with 0 ('!').")
        try:
            model = BPE(vocab=vocabulary, merges=merges, dropout=None, continuing_subword_prefix="",
                        end_of_word_suffix=END_OF_WORD, fuse_unk=False, unk_token=EOS_TOKEN)
        except Exception as e:  # tokenizers raises its own Exception type for merges outside the vocabulary.
            raise ValueError(f"The CLIP vocabulary and merges do not match ({e}); pass the vocab.json and "
                             "merges.txt of the same checkpoint.") from None
        tokenizer = Tokenizer(model)
        tokenizer.normalizer = _normalizer()
        tokenizer.pre_tokenizer = _pre_tokenizer()
        tokenizer.decoder = decoders.ByteLevel()
        self._pad_id = int(pad_id)
        self._pad_token = id_to_token[self._pad_id]
        tokenizer.add_special_tokens([
            AddedToken(token, single_word=False, lstrip=False, rstrip=False, normalized=False, special=True)
            for token in dict.fromkeys((BOS_TOKEN, EOS_TOKEN, self._pad_token))
        ])
        self._bos_id = vocabulary[BOS_TOKEN]
        self._eos_id = vocabulary[EOS_TOKEN]
        tokenizer.post_processor = processors.RobertaProcessing(
            (EOS_TOKEN, self._eos_id), (BOS_TOKEN, self._bos_id), trim_offsets=False, add_prefix_space=False)
        self._tokenizer = tokenizer
        self._sequence_length = sequence_length
        self._vocabulary = vocabulary
        self._merges = merges

    @classmethod
    def from_directory(cls, directory, sequence_length=16):
        """Loads a transformers `save_pretrained` directory of a CLIP or OWL-ViT tokenizer.

        Reads vocab.json + merges.txt (hub checkpoints, transformers 4), else the BPE
        model of tokenizer.json (transformers 5 writes only that), and the pad token
        from special_tokens_map.json / tokenizer_config.json (default id 0, OWL-ViT's).
        """
        directory = os.fspath(directory)
        if not os.path.isdir(directory):
            raise ValueError(f"{directory!r} is not a directory; pass the folder {SAVERS} wrote.")
        names = (VOCAB_FILE, MERGES_FILE, TOKENIZER_FILE, SPECIAL_TOKENS_FILE, CONFIG_FILE)
        path = {name: os.path.join(directory, name) for name in names}
        if os.path.isfile(path[VOCAB_FILE]) and os.path.isfile(path[MERGES_FILE]):
            vocabulary, merges = path[VOCAB_FILE], path[MERGES_FILE]
        elif os.path.isfile(path[TOKENIZER_FILE]):
            vocabulary, merges = cls._read_tokenizer_json(path[TOKENIZER_FILE])
        else:
            missing = [name for name in (VOCAB_FILE, MERGES_FILE) if not os.path.isfile(path[name])]
            raise ValueError(f"{directory!r} has no {' or '.join(missing)} (nor a {TOKENIZER_FILE}): the CLIP "
                             f"tokenizer needs vocab.json and merges.txt, which {SAVERS} writes.")
        pad_token = None
        for name in (SPECIAL_TOKENS_FILE, CONFIG_FILE):
            if pad_token is None and os.path.isfile(path[name]):
                try:
                    with open(path[name], encoding="utf-8") as f:
                        config = json.load(f)
                except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise ValueError(f"Cannot read {path[name]!r} ({e}); re-save it with {SAVERS}.") from None
                pad_token = _special_token(config.get("pad_token")) if isinstance(config, dict) else None
        pad_id = 0
        if pad_token is not None:
            vocabulary = _load_vocabulary(vocabulary)
            if pad_token not in vocabulary:
                raise ValueError(f"The pad token {pad_token!r} of {directory!r} is not in its vocabulary; "
                                 "OWL-ViT pads with '!' (id 0).")
            pad_id = vocabulary[pad_token]
        return cls(vocabulary, merges, sequence_length=sequence_length, pad_id=pad_id)

    @staticmethod
    def _read_tokenizer_json(filename):
        try:
            with open(filename, encoding="utf-8") as f:
                model = json.load(f)["model"]
            if model.get("type") != "BPE":
                raise ValueError(f"a {model.get('type')} model, not BPE")
            return model["vocab"], model["merges"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError,
                ValueError) as e:
            raise ValueError(f"Cannot read CLIP's BPE vocabulary and merges from {filename!r} ({e}); "
                             f"re-save it with {SAVERS}.") from None

    def get_config(self):
        """The constructor's arguments as JSON-serializable values (to store the tokenizer with a model)."""
        return {
            "vocabulary": dict(self._vocabulary),
            "merges": [f"{left} {right}" for left, right in self._merges],
            "sequence_length": self._sequence_length,
            "pad_id": self._pad_id,
        }

    @classmethod
    def from_config(cls, config):
        """The tokenizer `get_config()` describes."""
        keys = {"vocabulary", "merges", "sequence_length", "pad_id"}
        if not isinstance(config, dict) or set(config) != keys:
            given = sorted(config) if isinstance(config, dict) else type(config).__name__
            raise ValueError(f"A CLIPTokenizer config holds {sorted(keys)}, as get_config() returns; got {given}.")
        return cls(**config)

    def save(self, directory):
        """Writes vocab.json, merges.txt, special_tokens_map.json and tokenizer_config.json to `directory`.

        The files transformers' `CLIPTokenizer.save_pretrained` writes (pad token and
        `model_max_length` included), so `CLIPTokenizer.from_directory(directory,
        sequence_length)` and transformers' `CLIPTokenizer.from_pretrained(directory)` read
        it back. All four are written to temporary files beside them first, then each is
        renamed over its file: an error while writing leaves the old files as they were.
        """
        from keras_vit.data.files import atomic_path  # Here: keras_vit.data imports TensorFlow.

        directory = os.fspath(directory)
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise ValueError(f"Cannot save the tokenizer to {directory!r}: it is a file; pass a directory.")
        if os.path.exists(os.path.join(directory, TOKENIZER_FILE)):
            raise ValueError(f"{directory!r} holds a {TOKENIZER_FILE}, which transformers would read instead of "
                             "the files saved here; save to another directory or delete it first.")
        special = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "unk_token": EOS_TOKEN,
                   "pad_token": self._pad_token}
        config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": self._sequence_length, **special}
        contents = {
            VOCAB_FILE: json.dumps(self._vocabulary, indent=2, sort_keys=True, ensure_ascii=False),
            MERGES_FILE: "\n".join([MERGES_HEADER, *(f"{left} {right}" for left, right in self._merges)]),
            SPECIAL_TOKENS_FILE: json.dumps(special, indent=2),
            CONFIG_FILE: json.dumps(config, indent=2),
        }
        with contextlib.ExitStack() as stack:  # Renames (or removes) the temporary files once all are written.
            for name, text in contents.items():
                temporary = stack.enter_context(atomic_path(os.path.join(directory, name)))
                with open(temporary, "w", encoding="utf-8") as f:
                    f.write(text + "\n")

    @property
    def vocabulary_size(self):
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def sequence_length(self):
        return self._sequence_length

    @property
    def bos_token_id(self):
        return self._bos_id

    @property
    def eos_token_id(self):
        return self._eos_id

    @property
    def pad_token_id(self):
        return self._pad_id

    def __call__(self, texts):
        """Encodes `texts` (a str or a non-empty list of str).

        Returns:
            {"input_ids", "attention_mask"}: int32 arrays `(N, sequence_length)`,
            `<|startoftext|> tokens <|endoftext|>` then `pad_token_id`s (mask 0).
            A text of more tokens is cut to `sequence_length`, keeping
            `<|endoftext|>` last, with a warning.
        """
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, (list, tuple)) or not texts:
            raise ValueError(f"Expected a non-empty list of query strings, got {texts!r}; "
                             "pass e.g. ['a photo of a cat'].")
        for text in texts:
            if not isinstance(text, str):
                raise ValueError(f"Query {text!r} is a {type(text).__name__}, not a str; pass text queries "
                                 "such as 'a photo of a cat'.")
        length = self._sequence_length
        input_ids = np.full((len(texts), length), self._pad_id, dtype="int32")
        attention_mask = np.zeros((len(texts), length), dtype="int32")
        cut = []
        for row, text in enumerate(texts):
            ids = self._tokenizer.encode(text).ids
            if len(ids) <= 2:
                raise ValueError(f"Query {text!r} is empty once tokenized (only whitespace); "
                                 "give each query some text, e.g. 'a photo of a cat'.")
            if len(ids) > length:
                cut.append((text, len(ids)))
                ids = ids[:length - 1] + [self._eos_id]
            input_ids[row, :len(ids)] = ids
            attention_mask[row, :len(ids)] = 1
        if cut:
            listed = ", ".join(f"{text!r} ({n} tokens)" for text, n in cut)
            warnings.warn(f"CLIPTokenizer cut {len(cut)} quer{'y' if len(cut) == 1 else 'ies'} longer than "
                          f"sequence_length={length} tokens (with {BOS_TOKEN} and {EOS_TOKEN}) to {length}: "
                          f"{listed}. Shorten them to keep their ends.", stacklevel=2)
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def batch_queries(self, queries_per_image):
        """Encodes one list of text queries per image, as OWL-ViT batches them.

        Args:
            queries_per_image: a non-empty list (one per image) of non-empty lists of str.

        Returns:
            {"input_ids", "attention_mask"}: int32 arrays `(B, Q, sequence_length)`
            with Q the most queries an image has; an image with fewer queries
            gets all-zero rows (OWL-ViT reads a query whose first id is 0 as
            padding and masks its logits).
        """
        if not isinstance(queries_per_image, (list, tuple)) or not queries_per_image:
            raise ValueError(f"Expected a non-empty list with one list of queries per image, got "
                             f"{queries_per_image!r}; pass e.g. [['a cat', 'a dog'], ['a car']].")
        for index, queries in enumerate(queries_per_image):
            if not isinstance(queries, (list, tuple)) or not queries:
                raise ValueError(f"Image {index}'s queries are {queries!r}: each image needs a non-empty list "
                                 "of str, e.g. [['a cat', 'a dog'], ['a car']].")
        encoded = [self(list(queries)) for queries in queries_per_image]
        shape = (len(encoded), max(len(e["input_ids"]) for e in encoded), self._sequence_length)
        batch = {key: np.zeros(shape, dtype="int32") for key in ("input_ids", "attention_mask")}
        for index, e in enumerate(encoded):
            for key in batch:
                batch[key][index, :len(e[key])] = e[key]
        return batch

    def decode(self, ids, skip_special_tokens=True):
        """Text of `ids` (1-D: a str; N-D: nested lists of str), for debugging.

        With `skip_special_tokens`, drops a leading `<|startoftext|>` and
        everything from the first `<|endoftext|>` on (or trailing padding).
        """
        ids = np.asarray(ids)
        if ids.ndim > 1:
            return [self.decode(row, skip_special_tokens) for row in ids]
        ids = [int(i) for i in ids.reshape(-1)]
        if skip_special_tokens:
            if ids and ids[0] == self._bos_id:
                ids = ids[1:]
            if self._eos_id in ids:
                ids = ids[:ids.index(self._eos_id)]
            else:
                while ids and ids[-1] == self._pad_id:
                    ids.pop()
        text = self._tokenizer.decode(ids, skip_special_tokens=False)
        return text.replace(END_OF_WORD, " ").strip()


def train_clip_tokenizer(texts, vocabulary_size=CLIP_VOCABULARY_SIZE, sequence_length=16):
    """Trains a byte-level BPE on `texts` with CLIP's pipeline and lays it out as CLIP's vocab.json.

    Ids: the 256 byte symbols (0 is "!", OWL-ViT's pad), the same with `</w>`
    (256-511), one token per merge in merge order, then `<|startoftext|>` and
    `<|endoftext|>`, the largest id (CLIP and OWL-ViT pool the text there).

    Args:
        texts: a non-empty list of str, e.g. every caption and query to encode.
        vocabulary_size: the most ids, >= 514; merges stop there or when no pair
            of symbols is left to merge (a small corpus gives fewer ids).
        sequence_length: of the returned tokenizer (16 for OWL-ViT).

    Returns:
        A `CLIPTokenizer` padding with id 0; `save` writes it.

    Example:
    >>> tokenizer = train_clip_tokenizer(["red circle", "blue star"])
    >>> tokenizer.decode(tokenizer("Blue circle")["input_ids"][0])
    'blue circle'
    """
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or not texts:
        raise ValueError(f"texts must be a non-empty list of str to train on, got {texts!r}; "
                         "pass e.g. ['red circle', 'blue star'].")
    wrong = [text for text in texts if not isinstance(text, str)][:3]
    if wrong:
        raise ValueError(f"texts must all be str; found {wrong}. Pass the captions and queries as text.")
    if isinstance(vocabulary_size, bool) or not isinstance(vocabulary_size, int) or vocabulary_size < MIN_VOCABULARY_SIZE:
        raise ValueError(f"vocabulary_size={vocabulary_size!r}: it must be an int >= {MIN_VOCABULARY_SIZE}, the "
                         f"256 byte symbols twice (with and without {END_OF_WORD}) plus {BOS_TOKEN} and {EOS_TOKEN}.")
    model = Tokenizer(BPE(continuing_subword_prefix="", end_of_word_suffix=END_OF_WORD))
    model.normalizer = _normalizer()
    model.pre_tokenizer = _pre_tokenizer()
    trainer = trainers.BpeTrainer(vocab_size=vocabulary_size, end_of_word_suffix=END_OF_WORD, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    model.train_from_iterator(texts, trainer)
    merges = json.loads(model.to_str())["model"]["merges"]
    merges = [tuple(m.split(" ") if isinstance(m, str) else m) for m in merges]
    merges = merges[:vocabulary_size - MIN_VOCABULARY_SIZE]  # A prefix of BPE merges is a valid BPE.
    symbols = _byte_symbols()
    tokens = [*symbols, *(s + END_OF_WORD for s in symbols), *(left + right for left, right in merges)]
    vocabulary = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    vocabulary[BOS_TOKEN] = len(vocabulary)
    vocabulary[EOS_TOKEN] = len(vocabulary)
    return CLIPTokenizer(vocabulary, merges, sequence_length=sequence_length)
