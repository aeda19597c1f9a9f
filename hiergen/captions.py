"""The caption grammar: `a <size> <colour> <shape> <motion> [<speed>]`.

Every caption hiergen renders, trains on or evaluates is a sentence of this
grammar, so the renderer, the text tokenizer and the clip analyzer all lean on
the attributes defined here. Torch-free.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from hiergen.errors import HiergenError

SIZES = ("small", "large")
# Fixed RGB values, far apart in hue (white is the one unsaturated colour).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (235, 225, 30),
    "green": (40, 200, 60),
    "cyan": (30, 205, 225),
    "blue": (45, 85, 245),
    "purple": (165, 55, 225),
    "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = ("left", "right", "up", "down")
SPEEDS = ("slowly", "quickly")

_HORIZONTAL = ("left", "right")
_VERTICAL = ("up", "down")
# Unit vectors in image coordinates (y grows downwards).
DIRECTION_VECTORS: dict[str, tuple[int, int]] = {
    "left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1),
}

# Motion classes, spelled as they appear in captions.
SINGLE_MOTIONS = tuple(f"moves {d}" for d in DIRECTIONS)
TWO_PHASE_MOTIONS = tuple(
    f"moves {a} then {b}"
    for a in DIRECTIONS for b in DIRECTIONS
    if (a in _HORIZONTAL) != (b in _HORIZONTAL)
)
MOTIONS = SINGLE_MOTIONS + TWO_PHASE_MOTIONS + ("bounces", "stays still")

# Every word a caption may contain, in a fixed order (the text tokenizer's
# vocabulary is built from this tuple, so its order is part of the format).
VOCABULARY = (("a",) + SIZES + tuple(COLOURS) + SHAPES
              + ("moves", "then", "bounces", "stays", "still") + DIRECTIONS + SPEEDS)
MAX_WORDS = 9  # a large red circle moves left then up quickly

# (colour, shape) pairs never shown in training: the generalisation test set.
HELD_OUT_PAIRS = (("orange", "triangle"), ("cyan", "circle"),
                  ("purple", "square"), ("white", "triangle"))


class CaptionError(HiergenError, ValueError):
    """A caption that is not a sentence of the grammar."""


@dataclass(frozen=True)
class Caption:
    size: str
    colour: str
    shape: str
    motion: str          # one of MOTIONS
    speed: str | None    # one of SPEEDS; None exactly when motion is "stays still"

    def __post_init__(self) -> None:
        for value, allowed, what in ((self.size, SIZES, "size"), (self.colour, COLOURS, "colour"),
                                     (self.shape, SHAPES, "shape"), (self.motion, MOTIONS, "motion")):
            if value not in allowed:
                raise CaptionError(f"unknown {what} {value!r}; choose one of: {', '.join(allowed)}")
        if self.motion == "stays still":
            if self.speed is not None:
                raise CaptionError("'stays still' takes no speed; drop 'slowly'/'quickly'")
        elif self.speed not in SPEEDS:
            raise CaptionError(f"motion {self.motion!r} needs a speed: {' or '.join(SPEEDS)}")

    @property
    def text(self) -> str:
        words = ["a", self.size, self.colour, self.shape, self.motion]
        if self.speed:
            words.append(self.speed)
        return " ".join(words)

    @property
    def phases(self) -> tuple[str, ...]:
        """Directions of travel in order: () for still, ("up", "down", ...) for a bounce."""
        if self.motion == "stays still":
            return ()
        if self.motion == "bounces":
            return ("up", "down", "up", "down")
        return tuple(w for w in self.motion.split() if w in DIRECTIONS)

    @property
    def held_out(self) -> bool:
        return (self.colour, self.shape) in HELD_OUT_PAIRS

    def __str__(self) -> str:
        return self.text


def _vocabulary_help() -> str:
    return ("captions read 'a <size> <colour> <shape> <motion> [<speed>]' with size "
            f"{'|'.join(SIZES)}, colour {'|'.join(COLOURS)}, shape {'|'.join(SHAPES)}, motion "
            "'moves left|right|up|down', 'moves X then Y' (X, Y perpendicular), 'bounces' or "
            f"'stays still', speed {'|'.join(SPEEDS)} (none for 'stays still')")


def unknown_words(text: str) -> list[str]:
    """Words of `text` that are not in the vocabulary, in order of appearance."""
    return [w for w in text.lower().split() if w not in VOCABULARY]


def parse(text: str) -> Caption:
    """Parse a caption; raises CaptionError naming what is wrong and how to fix it."""
    words = text.lower().replace(",", " ").split()
    if not words:
        raise CaptionError("empty caption; " + _vocabulary_help())
    unknown = unknown_words(" ".join(words))
    if unknown:
        raise CaptionError(f"unknown word(s) {', '.join(map(repr, unknown))}; " + _vocabulary_help())
    if words[0] == "a":
        words = words[1:]
    if len(words) < 4:
        raise CaptionError(f"caption {text!r} is too short; " + _vocabulary_help())
    size, colour, shape, *rest = words
    speed = rest[-1] if rest and rest[-1] in SPEEDS else None
    motion = " ".join(rest[:-1] if speed else rest)
    if motion not in MOTIONS:
        hint = ""
        if motion.startswith("moves") and "then" in motion:
            hint = " ('moves X then Y' needs X and Y perpendicular, e.g. 'moves left then up')"
        raise CaptionError(f"unknown motion {motion!r}{hint}; " + _vocabulary_help())
    try:
        return Caption(size=size, colour=colour, shape=shape, motion=motion, speed=speed)
    except CaptionError as e:
        raise CaptionError(f"{e} (in caption {text!r})") from None


def all_captions() -> list[Caption]:
    """Every caption of the grammar, in a fixed order."""
    out = []
    for size, colour, shape, motion in itertools.product(SIZES, COLOURS, SHAPES, MOTIONS):
        for speed in ((None,) if motion == "stays still" else SPEEDS):
            out.append(Caption(size, colour, shape, motion, speed))
    return out
