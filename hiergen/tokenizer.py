"""Word-level text tokenizer over the caption grammar (torch-free).

The text prefix of every sequence is fixed-length:
    [rate] w1 w2 ... w9 [boi]        (words padded with <pad> to MAX_WORDS)
so text positions never depend on the caption. The vocabulary travels with
the model (checkpoint config and manifest), and `from_vocab` rebuilds the same
tokenizer in any runtime.
"""
from __future__ import annotations

from dataclasses import dataclass

from hiergen.captions import MAX_WORDS, VOCABULARY, unknown_words
from hiergen.errors import UsageError
from hiergen.rates import RATES

PAD, UNK, BOI = "<pad>", "<unk>", "<boi>"


def rate_token(rate: int) -> str:
    return f"<{rate}fps>"


def default_vocab() -> tuple[str, ...]:
    return (PAD, UNK) + VOCABULARY + tuple(rate_token(r) for r in RATES) + (BOI,)


@dataclass(frozen=True)
class TextTokenizer:
    vocab: tuple[str, ...]
    max_words: int = MAX_WORDS

    def __post_init__(self) -> None:
        missing = [t for t in (PAD, UNK, BOI) if t not in self.vocab]
        if missing or len(set(self.vocab)) != len(self.vocab):
            raise ValueError(f"bad vocabulary: missing {missing} or duplicate entries")

    @classmethod
    def default(cls) -> "TextTokenizer":
        return cls(default_vocab())

    @property
    def prefix_len(self) -> int:
        """Tokens before the first image token: rate + words + boi."""
        return self.max_words + 2

    def id(self, token: str) -> int:
        return self.vocab.index(token)

    @property
    def rates(self) -> tuple[int, ...]:
        return tuple(int(t[1:-4]) for t in self.vocab if t.endswith("fps>"))

    def encode(self, text: str, rate: int, drop_text: bool = False) -> list[int]:
        """Ids of `[rate] words... [boi]`; unknown words map to <unk>. drop_text gives the text-free prompt."""
        if rate_token(rate) not in self.vocab:
            raise UsageError(f"unknown frame rate {rate}; the model knows {', '.join(map(str, self.rates))} fps")
        words = [] if drop_text else text.lower().split()
        if len(words) > self.max_words:
            raise UsageError(f"prompt has {len(words)} words; the model reads at most {self.max_words}: "
                             "shorten it to 'a <size> <colour> <shape> <motion> [<speed>]'")
        index = {t: i for i, t in enumerate(self.vocab)}
        ids = [index.get(w, index[UNK]) for w in words]
        ids += [index[PAD]] * (self.max_words - len(ids))
        return [index[rate_token(rate)]] + ids + [index[BOI]]

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.vocab[i] for i in ids if self.vocab[i] not in (PAD, BOI)
                        and not self.vocab[i].endswith("fps>"))

    def unknown(self, text: str) -> list[str]:
        return unknown_words(text)
