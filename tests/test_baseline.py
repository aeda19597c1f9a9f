"""The frame-by-frame baseline on fake step models: frame counts, what each window is given, determinism."""
import numpy as np
import pytest

from hiergen.runtime.baseline import WINDOW, generate_frame_by_frame
from hiergen.runtime.orchestrator import Request, generate, slot_codes
from hiergen.runtime.sampler import SamplerOptions
from test_orchestrator import PLAN, TOK, FakeModel

PROMPT = "a small red circle moves left quickly"


class RecordingModel(FakeModel):
    """A FakeModel that keeps every prefill (tokens, codes) and the slots each window decodes."""

    def __init__(self, name):
        super().__init__(name)
        self.prefills, self.decoded = [], []

    def step(self, tokens, codes, cache):
        if tokens.shape[1] > 1:
            self.prefills.append((tokens.copy(), codes.copy()))
            self.decoded.append(set())
        else:
            self.decoded[-1].add(int((codes[0, 0] - self.text_len) // (self.grid * self.grid)))
        return super().step(tokens, codes, cache)


def recording_models():
    return {k: RecordingModel(k) for k in ("t2i", "keyframe", "interp")}


def run(overlap, seed=0, ms=None):
    ms = ms if ms is not None else recording_models()
    req = Request(PROMPT, TOK, rate=16, frames=33, sampler=SamplerOptions(seed=seed))
    return generate_frame_by_frame(req, ms, PLAN, overlap), ms


def windows_needed(overlap, frames=33):
    """Counted by hand: the first window makes 4 frames after frame 1, each later one WINDOW - overlap."""
    have, n = 1 + (WINDOW - 1), 1
    while have < frames:
        have, n = have + WINDOW - overlap, n + 1
    return n


@pytest.mark.parametrize("overlap, windows", [(1, 8), (2, 11)])
def test_frame_and_window_counts(overlap, windows):
    # overlap 2: 5 + 3 * 10 = 35 frames made, trimmed to 33
    assert windows_needed(overlap) == windows
    res, ms = run(overlap)
    assert res.tokens.shape == (33, 4, 4) and res.fps == 16.0
    assert res.steps["windows"] == windows
    P = 16
    assert ms["t2i"].calls == 1 + P
    assert ms["keyframe"].calls == windows + P * (4 + (windows - 1) * (WINDOW - overlap))
    assert ms["interp"].calls == 0
    assert set(res.timings) == {"t2i", "windows"}


@pytest.mark.parametrize("overlap", [1, 2, 3, 4])
def test_each_window_is_given_the_previous_frames_in_its_first_slots(overlap):
    res, ms = run(overlap)
    key = ms["keyframe"]
    P, L, start = key.grid * key.grid, key.text_len, key.image_vocab
    frames = res.tokens.reshape(33, P)
    made = 1                                              # frames that exist before the window runs
    for w, ((tokens, codes), decoded) in enumerate(zip(key.prefills, key.decoded)):
        n_given = 1 if w == 0 else overlap
        given = list(range(made - n_given, made))         # indices into the video
        assert tokens.shape == (2, L + n_given * P), f"window {w}"   # guidance 3: conditional + text-free
        want_codes = np.concatenate([np.arange(L)] + [slot_codes(L, key.grid, s) for s in range(n_given)])
        assert (codes == want_codes).all(), f"window {w}: given frames are not at slots 0..{n_given - 1}"
        for slot, f in enumerate(given):
            got = tokens[:, L + slot * P:L + (slot + 1) * P]
            shifted = np.concatenate([[start], frames[f, :-1]])        # each slot holds its previous token
            assert (got == shifted).all(), f"window {w} slot {slot} is not frame {f}"
        assert decoded == set(range(n_given, WINDOW)), f"window {w}"
        made += WINDOW - n_given
    assert len(key.prefills) == res.steps["windows"]
    assert made - (WINDOW - overlap) < 33 <= made, "one window too many or too few"


def test_first_window_is_the_hierarchical_keyframe_stage_at_16_fps():
    """Frame 1 and the first window use the keyframe stage's random streams: overlap does not change them."""
    one, _ = run(1, seed=5)
    two, _ = run(2, seed=5)
    assert np.array_equal(one.tokens[:5], two.tokens[:5])
    assert not np.array_equal(one.tokens, two.tokens)
    hier = generate(Request(PROMPT, TOK, rate=16, frames=5, sampler=SamplerOptions(seed=5)),
                    {k: FakeModel(k) for k in ("t2i", "keyframe", "interp")}, PLAN)
    assert np.array_equal(one.tokens[:5], hier.tokens)


@pytest.mark.parametrize("overlap", [1, 2])
def test_same_seed_same_tokens(overlap):
    a, _ = run(overlap, seed=7)
    b, _ = run(overlap, seed=7)
    c, _ = run(overlap, seed=8)
    assert np.array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, c.tokens)


def test_rate_reaches_the_text_prefix():
    ms4, ms16 = recording_models(), recording_models()
    req = Request(PROMPT, TOK, rate=16, frames=33, sampler=SamplerOptions(seed=0))
    r4 = generate_frame_by_frame(req, ms4, PLAN, 1, rate=4)
    generate_frame_by_frame(req, ms16, PLAN, 1, rate=16)
    L = TOK.prefix_len
    assert r4.fps == 4.0
    assert (ms4["keyframe"].prefills[0][0][0, :L] == TOK.encode(PROMPT, 4)).all()
    assert (ms16["keyframe"].prefills[0][0][0, :L] == TOK.encode(PROMPT, 16)).all()


class NoSteps(FakeModel):
    def step(self, tokens, codes, cache):
        raise AssertionError("a step ran before the overlap was checked")


@pytest.mark.parametrize("overlap", [0, 5, -1])
def test_bad_overlap_fails_before_any_step(overlap):
    ms = {k: NoSteps(k) for k in ("t2i", "keyframe", "interp")}
    with pytest.raises(ValueError, match="overlap must be 1..4"):
        run(overlap, ms=ms)
