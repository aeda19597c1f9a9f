import pytest

from hiergen.captions import (COLOURS, MOTIONS, SHAPES, SIZES, TWO_PHASE_MOTIONS, Caption, CaptionError,
                              all_captions, parse, unknown_words)


def test_round_trip_every_caption():
    caps = all_captions()
    # 2 sizes x 8 colours x 3 shapes x (12 moving motions x 2 speeds + still)
    assert len(caps) == 2 * 8 * 3 * (13 * 2 + 1)
    for cap in caps:
        assert parse(cap.text) == cap


def test_two_phase_motions_are_the_eight_perpendicular_pairs():
    assert len(TWO_PHASE_MOTIONS) == 8
    for m in TWO_PHASE_MOTIONS:
        a, b = m.split()[1], m.split()[3]
        assert {a, b} & {"left", "right"} and {a, b} & {"up", "down"}


def test_parse_attributes_and_phases():
    cap = parse("a large cyan triangle moves up then left slowly")
    assert (cap.size, cap.colour, cap.shape, cap.motion, cap.speed) == ("large", "cyan", "triangle",
                                                                       "moves up then left", "slowly")
    assert cap.phases == ("up", "left")
    assert parse("A small white square stays still").phases == ()
    assert parse("a small white square bounces quickly").phases == ("up", "down", "up", "down")


@pytest.mark.parametrize("text, fragment", [
    ("a small red hexagon moves left quickly", "'hexagon'"),
    ("a tiny red circle moves left quickly", "'tiny'"),
    ("", "empty caption"),
    ("a small red circle moves left then right quickly", "perpendicular"),
    ("a small red circle stays still quickly", "takes no speed"),
    ("a small red circle moves left", "needs a speed"),
    ("a small red", "too short"),
])
def test_bad_captions_name_the_problem_and_list_the_vocabulary(text, fragment):
    with pytest.raises(CaptionError) as e:
        parse(text)
    assert fragment in str(e.value)
    if "'" in fragment:
        assert "circle|square|triangle" in str(e.value)


def test_unknown_words_in_order():
    assert unknown_words("a big red blob moves left") == ["big", "blob"]


def test_caption_validates_fields():
    with pytest.raises(CaptionError, match="unknown colour"):
        Caption("small", "pink", "circle", "bounces", "quickly")
    assert set(COLOURS) and set(SHAPES) and set(SIZES) and "bounces" in MOTIONS
