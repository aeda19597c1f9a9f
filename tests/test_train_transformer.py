import numpy as np
import pytest
import torch

from hiergen.config import Kind, ModelConfig
from hiergen.synth import caption_for
from hiergen.tokenizer import TextTokenizer
from hiergen.training import checkpoint as ckpt
from hiergen.training.sequences import IGNORE, TokenClip, make_batch
from hiergen.training.model import load_model
from hiergen.training.train_transformer import Recipe, TrainError, train

TOK = TextTokenizer.default()
CFG = ModelConfig(text_vocab=len(TOK.vocab), image_vocab=16, text_len=TOK.prefix_len, grid=4,
                  d_model=32, n_head=2, n_layer=2, window=2)


def fake_clips(n=12, seed=0):
    """Token clips with a caption-dependent background and a cell that moves over time:
    the backbone can learn the background, only the video models can place the cell."""
    rng = np.random.default_rng(seed)
    out = []
    for s in range(n):
        cap = caption_for(s)
        length = int(rng.integers(20, 80))
        tokens = np.full((length, 4, 4), len(cap.colour) % 8, np.int64)
        start = int(rng.integers(16))
        for t in range(length):
            tokens[t].flat[(start + t // 2) % 16] = 15
        out.append(TokenClip(cap.text, tokens))
    return out


def test_batches_put_loss_on_the_right_frames():
    rng = np.random.default_rng(0)
    for kind, n_loss in [(Kind.T2I, 16), (Kind.KEYFRAME, 64), (Kind.INTERP, 32)]:
        b = make_batch(fake_clips(), kind, CFG, TOK, rng, batch=3)
        assert b.tokens.shape == b.targets.shape and b.codes.shape == (1, b.tokens.shape[1])
        assert int((b.targets[0] != IGNORE).sum()) == n_loss
        assert torch.all(b.targets[:, :CFG.text_len] == IGNORE)


@pytest.mark.slow
def test_three_models_train_with_falling_loss_and_resume_bit_exactly(tmp_path):
    clips = fake_clips()
    r = Recipe(steps=16, batch=8, lr=3e-3, warmup=2, ckpt_every=8, eval_every=8)
    t2i = train(Kind.T2I, CFG, clips, clips, tmp_path, r, show_progress=False)
    key = train(Kind.KEYFRAME, CFG, clips, clips, tmp_path, r, backbone=t2i, show_progress=False)
    interp = train(Kind.INTERP, CFG, clips, clips, tmp_path, r, backbone=t2i, show_progress=False)
    for path in (t2i, key, interp):
        val = ckpt.load(path).extra["history"]["val_loss"]    # fixed validation batches
        print(path.name, "validation loss", val)
        assert val[-1] < val[0] - 0.01
        model = load_model(path)
        assert model.kind.value == ckpt.load(path).kind
    # Backbone untouched by video training:
    base = ckpt.load(t2i).model_state
    assert all(torch.equal(load_model(key).state_dict()[n], t) for n, t in base.items())

    # Kill the same run right after its step-8 checkpoint, resume: identical weights.
    import hiergen.training.train_transformer as tt

    def killing_lr_at(step, recipe):
        if step == 8:
            raise KeyboardInterrupt("killed")
        return real_lr_at(step, recipe)
    real_lr_at = tt.lr_at
    other = tmp_path / "resumed"
    tt.lr_at = killing_lr_at
    try:
        with pytest.raises(KeyboardInterrupt):
            train(Kind.KEYFRAME, CFG, clips, clips, other, r, backbone=t2i, show_progress=False)
    finally:
        tt.lr_at = real_lr_at
    assert not (other / "keyframe.safetensors").exists()
    resumed = train(Kind.KEYFRAME, CFG, clips, clips, other, r, backbone=t2i, show_progress=False)
    a, b = ckpt.load(key).model_state, ckpt.load(resumed).model_state
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_bad_setups_fail_before_training(tmp_path):
    clips = fake_clips(4)
    with pytest.raises(TrainError, match="needs the trained backbone"):
        train(Kind.KEYFRAME, CFG, clips, clips, tmp_path, Recipe(steps=1), show_progress=False)
    bad = ModelConfig(**{**CFG.to_dict(), "text_len": 5})
    with pytest.raises(TrainError, match="set text_len=11"):
        train(Kind.T2I, bad, clips, clips, tmp_path, Recipe(steps=1), show_progress=False)
    with pytest.raises(TrainError, match="no clip can give"):
        train(Kind.T2I, CFG, [TokenClip("a small red circle stays still", np.zeros((3, 4, 4), np.int64))], [],
              tmp_path, Recipe(steps=1), show_progress=False)
    with pytest.raises(ValueError, match="unknown frame rate 3"):
        TOK.encode("a small red circle stays still", 3)
    assert not list(tmp_path.iterdir())


def test_fixed_rate_and_random_backbone_variants(tmp_path):
    """The ablation's models: a sequential model at one rate (frame-by-frame baseline) and a video model
    trained whole from random weights, which owns its backbone instead of sharing the t2i one."""
    clips = fake_clips()
    r = Recipe(steps=4, batch=4, lr=3e-3, warmup=1, ckpt_every=4, eval_every=4)
    t2i = train(Kind.T2I, CFG, clips, clips, tmp_path / "t2i", r, show_progress=False)
    base = train(Kind.KEYFRAME, CFG, clips, clips, tmp_path / "fbf", Recipe(**{**vars(r), "fixed_rate": 16}),
                 backbone=t2i, show_progress=False)
    model = load_model(base, t2i)
    assert torch.equal(model.blocks[0].base.qkv.weight, load_model(t2i).blocks[0].base.qkv.weight)
    # It holds only what trained: completed by another backbone it would be another model, so loading refuses.
    assert ckpt.load(base).extra["backbone_sha256"] == ckpt.model_digest(ckpt.load(t2i).model_state)
    other = train(Kind.T2I, CFG, clips, clips, tmp_path / "t2i_b", Recipe(**{**vars(r), "seed": 1}), show_progress=False)
    with pytest.raises(ckpt.CheckpointError, match="trained on another backbone"):
        load_model(base, other)
    with pytest.raises(TrainError, match="fixed rate"):
        train(Kind.INTERP, CFG, clips, clips, tmp_path / "bad", Recipe(**{**vars(r), "fixed_rate": 16}),
              backbone=t2i, show_progress=False)

    rand = train(Kind.KEYFRAME, CFG, clips, clips, tmp_path / "rand", Recipe(**{**vars(r), "pretrained_backbone": False}),
                 show_progress=False)
    owned = load_model(rand, t2i)        # the t2i backbone offered here must not replace its own
    saved = ckpt.load(rand).model_state
    assert torch.equal(owned.blocks[0].base.qkv.weight, saved["blocks.0.base.qkv.weight"])
    assert not torch.equal(owned.blocks[0].base.qkv.weight, load_model(t2i).blocks[0].base.qkv.weight)


def test_warm_start_begins_where_the_checkpoint_ended(tmp_path):
    clips = fake_clips()
    r = Recipe(steps=4, batch=4, lr=3e-3, warmup=1, ckpt_every=4, eval_every=4)
    t2i = train(Kind.T2I, CFG, clips, clips, tmp_path / "a", r, show_progress=False)
    first = train(Kind.INTERP, CFG, clips, clips, tmp_path / "a", r, backbone=t2i, show_progress=False)
    again = train(Kind.INTERP, CFG, clips, clips, tmp_path / "b", Recipe(**{**vars(r), "init_from": str(first)}),
                  backbone=t2i, show_progress=False)
    h_first, h_again = (ckpt.load(p).extra["history"] for p in (first, again))
    assert h_again["val_loss"][0] == pytest.approx(h_first["val_loss"][-1])     # starts from the trained weights


def test_every_weight_trains_from_the_backbone_and_the_checkpoint_holds_the_whole_model(tmp_path):
    clips = fake_clips()
    r = Recipe(steps=4, batch=4, lr=3e-3, warmup=1, ckpt_every=4, eval_every=4)
    t2i = train(Kind.T2I, CFG, clips, clips, tmp_path / "t2i", r, show_progress=False)
    path = train(Kind.KEYFRAME, CFG, clips, clips, tmp_path / "all", Recipe(**{**vars(r), "weights": "all"}),
                 backbone=t2i, show_progress=False)
    saved = ckpt.load(path).model_state
    assert "backbone_sha256" not in ckpt.load(path).extra, "a whole model needs no backbone"
    model = load_model(path, t2i)
    backbone = load_model(t2i)
    assert set(saved) == set(model.state_dict())                # the whole model, not only the video part
    for name in ("blocks.0.mlp.fc.weight", "blocks.1.base.qkv.weight", "head.weight"):
        assert not torch.equal(model.state_dict()[name], backbone.state_dict()[name]), name
        assert torch.equal(model.state_dict()[name], saved[name])


def test_backbone_weights_get_their_own_learning_rate():
    from hiergen.training.model import DualTransformer
    from hiergen.training.train_transformer import param_groups
    model = DualTransformer(CFG, Kind.INTERP)
    groups = param_groups(model, Recipe(weights="all", backbone_lr=0.25))
    names = {id(p): n for n, p in model.named_parameters()}
    for g in groups:
        backbone = {model.is_backbone(names[id(p)]) for p in g["params"]}
        assert len(backbone) == 1
        assert g["lr_scale"] == (0.25 if backbone.pop() else 1.0)
        assert {p.dim() >= 2 for p in g["params"]} == {g["weight_decay"] > 0}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_wsd_schedule_holds_then_decays_and_raising_steps_before_the_decay_continues_the_run():
    from hiergen.training.train_transformer import lr_at
    r = Recipe(steps=100, lr=1.0, warmup=10, schedule="wsd", decay_frac=0.2, min_lr_frac=0.1)
    assert lr_at(4, r) == pytest.approx(0.5)
    assert lr_at(10, r) == lr_at(79, r) == 1.0
    assert lr_at(90, r) == pytest.approx(0.55) and lr_at(100, r) == pytest.approx(0.1)
    longer = Recipe(**{**vars(r), "steps": 200})
    assert all(lr_at(s, longer) == lr_at(s, r) for s in range(80))


def test_resume_may_run_longer_and_probe_but_not_change_the_recipe(tmp_path):
    clips = fake_clips()
    r = Recipe(steps=4, batch=4, lr=3e-3, warmup=1, ckpt_every=2, eval_every=2, schedule="wsd")
    t2i = train(Kind.T2I, CFG, clips, clips, tmp_path, r, show_progress=False)
    train(Kind.INTERP, CFG, clips, clips, tmp_path, r, backbone=t2i, show_progress=False)
    longer = train(Kind.INTERP, CFG, clips, clips, tmp_path, Recipe(**{**vars(r), "steps": 6, "ckpt_every": 3}),
                   backbone=t2i, show_progress=False)
    assert ckpt.load(longer).extra["history"]["step"] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(TrainError, match="another recipe"):
        train(Kind.INTERP, CFG, clips, clips, tmp_path, Recipe(**{**vars(r), "steps": 8, "lr": 1e-3}),
              backbone=t2i, show_progress=False)


def test_a_wsd_run_keeps_its_resume_point_from_the_end_of_the_stable_phase(tmp_path):
    """The decayed model ships; a copy of the stable-phase resume point continues at the peak rate later."""
    import shutil
    clips = fake_clips()
    r = Recipe(steps=5, batch=4, lr=3e-3, warmup=1, ckpt_every=10, eval_every=10, schedule="wsd", decay_frac=0.4)
    t2i = train(Kind.T2I, CFG, clips, clips, tmp_path / "t2i", r, show_progress=False)
    train(Kind.INTERP, CFG, clips, clips, tmp_path, r, backbone=t2i, show_progress=False)
    stable = ckpt.load(tmp_path / "interp.stable.safetensors")
    assert stable.extra["step"] == 3 and stable.extra["history"]["lr"] == [3e-3] * 3
    branch = tmp_path / "branch"
    branch.mkdir()
    shutil.copy(tmp_path / "interp.stable.safetensors", branch / "interp.last.safetensors")
    longer = train(Kind.INTERP, CFG, clips, clips, branch, Recipe(**{**vars(r), "steps": 10}),
                   backbone=t2i, show_progress=False)
    assert ckpt.load(longer).extra["history"]["lr"][:6] == [3e-3] * 6


def test_resume_points_by_the_clock(tmp_path, monkeypatch):
    """ckpt_minutes writes a resume point when the time is up, whatever ckpt_every says."""
    import hiergen.training.train_transformer as tt
    clips = fake_clips()
    r = Recipe(steps=6, batch=4, lr=3e-3, warmup=1, ckpt_every=1000, eval_every=1000, ckpt_minutes=1e-9)
    real_lr_at = tt.lr_at

    def killing_lr_at(step, recipe):
        if step == 3:
            raise KeyboardInterrupt("killed")
        return real_lr_at(step, recipe)
    monkeypatch.setattr(tt, "lr_at", killing_lr_at)
    with pytest.raises(KeyboardInterrupt):
        train(Kind.T2I, CFG, clips, clips, tmp_path, r, show_progress=False)
    assert ckpt.load(tmp_path / "t2i.last.safetensors").extra["step"] == 3


class CountingProbe:
    """Stands in for a MotionProbe: records the steps it ran at and whether the model was in eval mode."""

    def __init__(self):
        self.calls = []

    def run(self, model):
        self.calls.append(model.training)
        return {"motion": 0.5, "colour": 1.0, "shape": 1.0, "size": 1.0, "two_phase_motion": 0.0,
                "one_object": 1.0}


def test_motion_probes_are_logged_at_the_start_every_n_steps_and_at_the_end(tmp_path):
    clips = fake_clips()
    r = Recipe(steps=5, batch=4, lr=3e-3, warmup=1, ckpt_every=5, eval_every=5, probe_every=2)
    t2i = train(Kind.T2I, CFG, clips, clips, tmp_path, Recipe(steps=2, batch=4), show_progress=False)
    probe = CountingProbe()
    path = train(Kind.KEYFRAME, CFG, clips, clips, tmp_path, r, backbone=t2i, show_progress=False, probe=probe)
    rows = ckpt.load(path).extra["history"]["probe"]
    assert [row["step"] for row in rows] == [0, 2, 4, 5]
    assert [row["samples"] for row in rows] == [0, 8, 16, 20]
    assert all(row["motion"] == 0.5 for row in rows)
    minutes = [row["minutes"] for row in rows]
    assert minutes == sorted(minutes) and minutes[0] >= 0


def test_sigterm_writes_a_resume_point_and_stops(tmp_path, monkeypatch):
    """A session that must end sends SIGTERM: the step finishes, a resume point is written, the run stops,
    and the same call continues it to the same weights as an uninterrupted run."""
    import os
    import signal

    import hiergen.training.train_transformer as tt
    clips = fake_clips()
    r = Recipe(steps=6, batch=4, lr=3e-3, warmup=1, ckpt_every=1000, eval_every=1000)
    whole = train(Kind.T2I, CFG, clips, clips, tmp_path / "whole", r, show_progress=False)
    real_lr_at = tt.lr_at

    def terminating_lr_at(step, recipe):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_lr_at(step, recipe)
    monkeypatch.setattr(tt, "lr_at", terminating_lr_at)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(tt.TrainingStopped, match="stopped at step 3 of 6"):
        train(Kind.T2I, CFG, clips, clips, tmp_path / "cut", r, show_progress=False)
    assert signal.getsignal(signal.SIGTERM) is before                    # the trainer's handler is gone again
    assert ckpt.load(tmp_path / "cut" / "t2i.last.safetensors").extra["step"] == 3
    monkeypatch.setattr(tt, "lr_at", real_lr_at)
    resumed = train(Kind.T2I, CFG, clips, clips, tmp_path / "cut", r, show_progress=False)
    a, b = ckpt.load(whole).model_state, ckpt.load(resumed).model_state
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_keyframes_only_clips_give_the_same_keyframe_batches_and_no_interp_windows():
    full = fake_clips()
    kf = [TokenClip(c.caption, c.keyframes(), len(c.tokens)) for c in full]
    assert all(c.keyframes_only and c.tokens.shape == (5, 4, 4) for c in kf)
    for kind in (Kind.KEYFRAME, Kind.T2I):
        a = make_batch(full, kind, CFG, TOK, np.random.default_rng(3), batch=6)
        b = make_batch(kf, kind, CFG, TOK, np.random.default_rng(3), batch=6)
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.targets, b.targets)   # rate token included
    from hiergen.training.sequences import usable
    assert usable(kf, Kind.INTERP) == [] and usable(kf, Kind.KEYFRAME, fixed_rate=16) == []
    assert len(usable(kf, Kind.KEYFRAME)) == len(kf)
