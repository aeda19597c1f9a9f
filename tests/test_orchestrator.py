"""The generation loop on fake step models: structure, determinism and the cache contract."""
import numpy as np
import pytest

from hiergen.runtime.orchestrator import Request, fill_frames, generate
from hiergen.runtime.plan import FRAME_COUNTS, Plan, stage_batches
from hiergen.runtime.sampler import SamplerOptions
from hiergen.tokenizer import TextTokenizer

TOK = TextTokenizer.default()
# Guidance on two stages (batches of 2) and off on the third (batches of triples).
PLAN = Plan(guidance={"t2i": 3.0, "keyframe": 3.0, "interp": 1.0})


class FakeModel:
    """Logits that depend on everything the step sees: the tokens, codes and cache contents."""
    text_len, grid, image_vocab = TOK.prefix_len, 4, 16

    def __init__(self, name):
        self.name, self.calls, self.batches = name, 0, []

    def new_cache(self, batch):
        return {"tokens": np.full((batch, self.text_len + 5 * 16), -1, np.int64)}

    def prefill(self, tokens, codes, cache):
        assert (cache["tokens"] == -1).all(), "a prefill into a cache already written"
        return self.step(tokens, codes, cache)

    def decode(self, tokens, codes, cache):
        assert tokens.shape == (cache["tokens"].shape[0], 1) and codes.min() >= self.text_len, "not one image token"
        return self.step(tokens, codes, cache)

    def step(self, tokens, codes, cache):
        self.calls += 1
        self.batches.append(tokens.shape[0])
        for b in range(tokens.shape[0]):
            assert (cache["tokens"][b, codes[b]] == -1).all(), "a slot was written twice"
            cache["tokens"][b, codes[b]] = tokens[b]
        seen = cache["tokens"].clip(0).sum(axis=1)                              # (B,)
        v = np.arange(self.image_vocab)
        logits = np.sin(0.37 * v[None, None] + 0.11 * seen[:, None, None] + codes[..., None] * 0.05)
        return logits.astype(np.float32)


def models():
    return {k: FakeModel(k) for k in ("t2i", "keyframe", "interp")}


@pytest.mark.parametrize("frames, rounds", [(5, 0), (9, 1), (17, 2), (33, 3)])
def test_frame_counts_and_batched_rounds(frames, rounds):
    ms = models()
    req = Request("a small red circle moves left slowly", TOK, rate=1, frames=frames, sampler=SamplerOptions(seed=3))
    res = generate(req, ms, PLAN)
    assert res.tokens.shape == (frames, 4, 4)
    assert res.fps == 2 ** rounds
    # guidance 3 -> batch of 2 for t2i and keyframes; interp (guidance 1) batches the triples
    assert set(ms["t2i"].batches) == {2} and set(ms["keyframe"].batches) == {2}
    if rounds:
        assert sorted(set(ms["interp"].batches)) == [2 * 2 ** r for r in range(rounds)]
    # one prefill plus one step per generated token
    assert ms["keyframe"].calls == 1 + 4 * 16
    assert ms["interp"].calls == rounds * (1 + 2 * 16)


@pytest.mark.parametrize("guidance", [PLAN.guidance, {"t2i": 1.0, "keyframe": 1.5, "interp": 2.0}])
@pytest.mark.parametrize("frames", [5, 33])
def test_stage_batches_are_the_batches_the_loop_runs(guidance, frames):
    plan = Plan(guidance=guidance)
    ms = models()
    generate(Request("a small red circle moves left slowly", TOK, rate=1, frames=frames, sampler=SamplerOptions(seed=1)),
             ms, plan)
    expected = stage_batches(plan, frames)
    assert list(expected)[:2] == ["t2i", "keyframe"] and len(expected) == 2 + FRAME_COUNTS.index(frames)
    for model in ms:
        assert sorted(set(ms[model].batches)) == sorted({b for m, b in expected.values() if m == model})


def test_keyframes_are_kept_by_interpolation():
    req5 = Request("a small red circle moves left slowly", TOK, 1, 5, SamplerOptions(seed=1))
    req33 = Request("a small red circle moves left slowly", TOK, 1, 33, SamplerOptions(seed=1))
    k5 = generate(req5, models(), PLAN).tokens
    k33 = generate(req33, models(), PLAN).tokens
    assert np.array_equal(k33[::8], k5)


def test_seeded_runs_repeat_and_seeds_differ():
    def run(seed):
        return generate(Request("a large blue square bounces quickly", TOK, 4, 9, SamplerOptions(seed=seed)),
                        models(), PLAN).tokens
    assert np.array_equal(run(0), run(0))
    assert not np.array_equal(run(0), run(1))


def test_draws_do_not_depend_on_batch_composition():
    """A sequence gets the same tokens alone or in a batch with others (same stream)."""
    m = FakeModel("interp")
    texts = np.tile(np.array([[TOK.encode("a", 2), TOK.encode("a", 2, drop_text=True)]]), (3, 1, 1))
    given = {0: np.arange(48).reshape(3, 16) % 16, 2: np.ones((3, 16), np.int64), 4: np.zeros((3, 16), np.int64)}
    opts = SamplerOptions(seed=9)
    batch = fill_frames(m, texts, given, [1, 3], 1.0, opts, np.array([5, 6, 7]))
    alone = fill_frames(FakeModel("interp"), texts[1:2], {k: v[1:2] for k, v in given.items()}, [1, 3], 1.0,
                        opts, np.array([6]))
    assert np.array_equal(batch[1][1], alone[1][0]) and np.array_equal(batch[3][1], alone[3][0])


def test_unknown_frame_count():
    with pytest.raises(ValueError, match="5, 9, 17, 33"):
        generate(Request("a small red circle stays still", TOK, 1, 12, SamplerOptions()), models(), PLAN)


def test_user_frames_stand_in_for_the_stages_that_made_them():
    """A run's own frames given back as keyframes (or frame 1) repeat the run; the stages they replace never run."""
    prompt, opts = "a small red circle moves left slowly", SamplerOptions(seed=2)
    full = generate(Request(prompt, TOK, 1, 33, opts), models(), PLAN)
    for step, rounds_left in ((8, 3), (4, 2), (2, 1), (1, 0)):                  # 5, 9, 17, 33 keyframes
        ms = models()
        res = generate(Request(prompt, TOK, 1, 33, opts, keyframes=full.tokens[::step]), ms, PLAN)
        assert np.array_equal(res.tokens, full.tokens) and res.fps == full.fps == 8
        assert ms["t2i"].calls == ms["keyframe"].calls == 0
        assert ms["interp"].calls == rounds_left * (1 + 2 * 16)
    ms = models()
    res = generate(Request(prompt, TOK, 1, 33, opts, first_frame=full.tokens[0]), ms, PLAN)
    assert np.array_equal(res.tokens, full.tokens)
    assert ms["t2i"].calls == 0 and ms["keyframe"].calls == 1 + 4 * 16
    assert "t2i" not in res.timings and "keyframe" in res.timings


def test_other_user_frames_are_kept_in_place():
    keys = np.random.default_rng(0).integers(0, 16, (5, 4, 4))
    res = generate(Request("a small red circle moves left slowly", TOK, 1, 17, SamplerOptions(), keyframes=keys),
                   models(), PLAN)
    assert np.array_equal(res.tokens[::4], keys) and res.tokens.shape == (17, 4, 4)
    res = generate(Request("a small red circle moves left slowly", TOK, 1, 9, SamplerOptions(), first_frame=keys[3]),
                   models(), PLAN)
    assert np.array_equal(res.tokens[0], keys[3]) and res.tokens.shape == (9, 4, 4)


@pytest.mark.parametrize("n, frames, fragment", [
    (4, 9, "give 5 or 9 keyframes"), (9, 5, "give 5 keyframes"), (3, 5, "give 5 keyframes"),
    (17, 9, "give 5 or 9 keyframes"), (0, 33, "give 5, 9, 17 or 33 keyframes")])
def test_keyframe_counts_that_do_not_fit(n, frames, fragment):
    with pytest.raises(ValueError, match=fragment):
        Request("a small red circle stays still", TOK, 1, frames, SamplerOptions(),
                keyframes=np.zeros((n, 4, 4), np.int64))


def test_bad_user_frames():
    zeros = np.zeros((5, 4, 4), np.int64)
    with pytest.raises(ValueError, match="not both"):
        Request("a small red circle stays still", TOK, 1, 9, SamplerOptions(), first_frame=zeros[0], keyframes=zeros)
    with pytest.raises(ValueError, match="4x4 grid"):
        generate(Request("a small red circle stays still", TOK, 1, 5, SamplerOptions(),
                         first_frame=np.zeros((8, 8), np.int64)), models(), PLAN)
