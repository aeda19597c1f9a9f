import numpy as np
import pytest

from hiergen.config import Kind
from hiergen.training.model import DualTransformer
from hiergen.training.motion_probe import MotionProbe
from test_train_transformer import CFG, fake_clips


class CellCodec:
    """Decodes a 4x4 token grid to a 32x32 frame: a white 8x8 square on every cell holding token 15."""
    image_size = 32

    def decode(self, tokens):
        frames = np.full((len(tokens), 32, 32, 3), 18, np.uint8)
        for i, grid in enumerate(tokens):
            for r, c in zip(*np.nonzero(grid == 15)):
                frames[i, 8 * r:8 * r + 8, 8 * c:8 * c + 8] = 255
        return frames

    def encode(self, frames):
        raise NotImplementedError


@pytest.mark.parametrize("kind, frames", [(Kind.KEYFRAME, 5), (Kind.INTERP, 17)])
def test_probe_samples_from_the_true_frames_and_restores_training_mode(kind, frames):
    clips = fake_clips(6)
    probe = MotionProbe.build(clips, kind, CellCodec(), n=3)
    assert probe.captions == tuple(c.caption for c in clips[:3])
    model = DualTransformer(CFG, kind).train()
    videos = probe.videos(model)
    for (tokens, fps), clip in zip(videos, clips):
        keys = clip.keyframes()
        assert tokens.shape == (frames, 4, 4)
        if kind == Kind.KEYFRAME:
            assert np.array_equal(tokens[0], keys[0])               # the true first frame, then sampled ones
        else:
            assert np.array_equal(tokens[::4], keys)               # the true keyframes stay where they were
    result = probe.run(model)
    assert model.training
    assert set(result) >= {"motion", "colour", "shape", "two_phase_motion"}
    assert all(0.0 <= result[k] <= 1.0 for k in ("motion", "colour", "shape", "size", "one_object"))


def test_probe_refuses_the_backbone_and_an_empty_split():
    with pytest.raises(ValueError, match="video models"):
        MotionProbe.build(fake_clips(2), Kind.T2I, CellCodec())
    with pytest.raises(ValueError, match="validation clips"):
        MotionProbe.build([], Kind.KEYFRAME, CellCodec())


def test_probe_samples_with_its_plans_settings():
    """The sampling sweep (`--top-k`, `--temperature`, `--guidance`) reaches the sampler through the plan."""
    import dataclasses

    import torch

    from hiergen.runtime.plan import Plan
    clips = fake_clips(4)
    torch.manual_seed(0)
    model = DualTransformer(CFG, Kind.INTERP).eval()

    def tokens(**settings):
        plan = dataclasses.replace(Plan(), **settings)
        return [t for t, _ in MotionProbe.build(clips, Kind.INTERP, CellCodec(), n=2, plan=plan).videos(model)]
    greedy, also_greedy = tokens(top_k=1), tokens(temperature=0.0)
    assert all(np.array_equal(a, b) for a, b in zip(greedy, also_greedy))
    assert not all(np.array_equal(a, b) for a, b in zip(greedy, tokens(top_k=0, temperature=2.0)))
    guided = tokens(top_k=1, guidance={**Plan().guidance, "interp": 3.0})
    assert not all(np.array_equal(a, b) for a, b in zip(greedy, guided))
