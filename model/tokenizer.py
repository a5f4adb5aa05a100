"""The review tokenizer: HF `tokenizers` BPE trained on the training text, saved as `tokenizer.json`.

Normalisation turns the `<br />` tags that IMDB reviews are full of into spaces, applies NFKC and lower-cases
(lower-casing measured better on validation than keeping case at this vocabulary size). The pre-tokenizer
splits words from punctuation, so "great!!!" keeps "!!!" as its own signal, and offsets map every token back
to the original characters (explanations use them).
"""

from __future__ import annotations

from typing import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

PAD, UNK = "[PAD]", "[UNK]"
PAD_ID, UNK_ID = 0, 1


def build_tokenizer(texts: Iterable[str], vocab_size: int = 30000, min_frequency: int = 3,
                    lowercase: bool = True) -> Tokenizer:
    steps = [normalizers.Replace(Regex(r"<br\s*/?>"), " "), normalizers.NFKC()]
    if lowercase:
        steps.append(normalizers.Lowercase())
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.BPEDecoder()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[PAD, UNK],
                                  show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    assert tokenizer.token_to_id(PAD) == PAD_ID and tokenizer.token_to_id(UNK) == UNK_ID
    return tokenizer


def load_tokenizer(path: str) -> Tokenizer:
    tokenizer = Tokenizer.from_file(path)
    if tokenizer.token_to_id(PAD) != PAD_ID:
        raise ValueError(f"{path}: tokenizer has no {PAD} token at id {PAD_ID}")
    # The model reads whole reviews: make sure no truncation or padding was saved into the file.
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer
