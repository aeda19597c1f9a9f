"""Masks against the rules, enumerated for small grids with a reference written as plain loops."""
import itertools

import pytest
import torch

from hiergen.config import Kind, ModelConfig
from hiergen.training.masks import base_visible, plus_visible, sequence_codes

CFG = ModelConfig(text_vocab=10, image_vocab=16, text_len=3, grid=4, n_frames=5, d_model=16, n_head=2,
                  n_layer=2, window=2)
P = CFG.tokens_per_frame


def meta(code):
    if code < CFG.text_len:
        return ("text", code)
    rel = code - CFG.text_len
    f, w = divmod(rel, P)
    return ("image", f, w, *divmod(w, CFG.grid))


def ref_base(q, k, kind):
    mq, mk = meta(q), meta(k)
    if mq[0] == "text":
        return mk[0] == "text" and k <= q
    if mk[0] == "text":
        return True
    if mk[1] != mq[1]:
        return False                       # own frame only
    if kind == Kind.INTERP and mq[1] in (0, 2, 4):
        return True                        # given frames: whole own frame
    return mk[2] <= mq[2]                  # causal in raster order


def ref_plus(q, k, kind, layer):
    mq, mk = meta(q), meta(k)
    if mq[0] == "text":
        return mk[0] == "text" and k <= q
    if mk[0] == "text":
        return True
    if kind == Kind.KEYFRAME:
        return (mk[1], mk[2]) <= (mq[1], mq[2])
    s = CFG.window // 2 if layer % 2 else 0
    window = lambda r, c: ((r + s) // CFG.window, (c + s) // CFG.window)  # noqa: E731
    if window(mq[3], mq[4]) != window(mk[3], mk[4]):
        return False
    fq, fk = mq[1], mk[1]
    given = (0, 2, 4)
    if fq in given:
        return fk in given
    if fk in given:
        return True
    if fq == 1:
        return fk == 1 and mk[2] <= mq[2]
    return fk == 1 or (fk == 3 and mk[2] <= mq[2])     # fq == 3


ALL = torch.arange(CFG.seq_len)


@pytest.mark.parametrize("kind", [Kind.T2I, Kind.KEYFRAME, Kind.INTERP])
def test_base_mask_matches_the_rules(kind):
    got = base_visible(ALL, ALL, CFG, kind)
    want = torch.tensor([[ref_base(q, k, kind) for k in range(CFG.seq_len)] for q in range(CFG.seq_len)])
    assert torch.equal(got, want), torch.nonzero(got != want)[:10]


@pytest.mark.parametrize("kind, layer", [(Kind.KEYFRAME, 0), (Kind.KEYFRAME, 1), (Kind.INTERP, 0), (Kind.INTERP, 1)])
def test_plus_mask_matches_the_rules(kind, layer):
    got = plus_visible(ALL, ALL, CFG, kind, layer)
    want = torch.tensor([[ref_plus(q, k, kind, layer) for k in range(CFG.seq_len)] for q in range(CFG.seq_len)])
    assert torch.equal(got, want), torch.nonzero(got != want)[:10]


def code(f, r, c):
    return CFG.text_len + f * P + r * CFG.grid + c


def test_interp_spot_checks():
    m0 = plus_visible(ALL, ALL, CFG, Kind.INTERP, 0)
    m1 = plus_visible(ALL, ALL, CFG, Kind.INTERP, 1)
    for r, c, r2, c2 in itertools.product(range(4), repeat=4):
        assert not m0[code(1, r, c), code(3, r2, c2)], "frame 2 never sees frame 4"
        assert not m0[code(0, r, c), code(1, r2, c2)], "given frames never see generated ones"
    # frame 4 sees all of frame 2 in its window, even tokens later in raster order
    assert m0[code(3, 0, 0), code(1, 1, 1)]
    # windows: (0,1) and (0,2) are in different windows unshifted, the same window when shifted
    assert not m0[code(2, 0, 1), code(0, 0, 2)] and m1[code(2, 0, 1), code(0, 0, 2)]
    assert m0[code(2, 0, 1), code(0, 1, 0)] and not m1[code(2, 0, 1), code(0, 1, 0)]
    # given frames see each other in both directions
    assert m0[code(0, 0, 0), code(4, 1, 1)] and m0[code(4, 1, 1), code(0, 0, 0)]
    # generated frames: causal inside their own frame and window
    assert m0[code(1, 1, 1), code(1, 0, 0)] and not m0[code(1, 0, 0), code(1, 1, 1)]


def test_keyframe_is_causal_over_frames_and_base_is_frame_local():
    m = plus_visible(ALL, ALL, CFG, Kind.KEYFRAME, 0)
    assert torch.equal(m, torch.tril(torch.ones_like(m)))
    b = base_visible(ALL, ALL, CFG, Kind.KEYFRAME)
    assert not b[code(2, 0, 0), code(1, 3, 3)] and b[code(2, 0, 0), 0]


def test_every_query_sees_something_in_sequence_order():
    for kind in Kind:
        codes = sequence_codes(CFG, kind)
        assert base_visible(codes, codes, CFG, kind).any(-1).all()
        if kind != Kind.T2I:
            assert plus_visible(codes, codes, CFG, kind, 1).any(-1).all()


def test_interp_sequence_order_keeps_temporal_positions():
    codes = sequence_codes(CFG, Kind.INTERP)
    frames = [(int(c) - CFG.text_len) // P for c in codes[CFG.text_len::P]]
    assert frames == [0, 2, 4, 1, 3]


@pytest.mark.parametrize("kw, fragment", [
    (dict(window=3), "window 3 does not divide"),
    (dict(d_model=30, n_head=4), "not divisible"),
    (dict(text_len=2), "no room"),
])
def test_bad_configs_name_the_fix(kw, fragment):
    args = dict(text_vocab=10, image_vocab=16, grid=4, d_model=16, n_head=2) | kw
    with pytest.raises(ValueError, match=fragment):
        ModelConfig(**args)
