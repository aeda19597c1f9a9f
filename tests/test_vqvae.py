"""VQ-VAE tokenizer, checkpoints, trainer resume, token shards: tiny models, a few steps each."""
import json

import numpy as np
import pytest
import torch

from hiergen.training import train_vqvae as tv
from hiergen.training.checkpoint import CheckpointError, load, load_model_state, save
from hiergen.training.quality import evaluate, heldout_frames, measure_quality
from hiergen.training.train_vqvae import TrainOptions, train_vqvae
from hiergen.training.vqvae import load_vqvae
from hiergen.training.vqvae import VQVAE, VQVAEConfig, denormalize, normalize

TINY = VQVAEConfig(image_size=16, widths=(8, 8, 16), n_res=0, n_mid=1, res_hidden=8, dec_out_width=8,
                   n_codes=16, code_dim=4, groups=4, dead_after=5)
TINY_OPTS = TrainOptions(steps=12, batch=8, lr=3e-3, seed=3, warmup=2, frames_per_clip=2,
                         ckpt_every=4, log_every=2, eval_frames=8, precision="fp32")


def _train(out, **kw):
    return train_vqvae(out, TINY, TINY_OPTS, show_progress=False, **kw)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vq")
    _train(out)
    return out


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------ model
def test_normalize_round_trip_is_exact():
    x = torch.randint(0, 256, (2, 16, 16, 3), dtype=torch.uint8)
    y = normalize(x)
    assert y.shape == (2, 3, 16, 16) and y.dtype == torch.float32
    assert float(y.min()) >= -1.0 and float(y.max()) <= 1.0
    assert torch.equal(denormalize(y), x)


def test_encode_decode_shapes_and_input_forms():
    torch.manual_seed(0)
    m = VQVAE(TINY).eval()
    m.codebook.embed.normal_()
    frames = torch.from_numpy(heldout_frames(3, size=16))                    # (3, 16, 16, 3) uint8
    tokens = m.encode(frames)
    assert tokens.shape == (3, 2, 2) and tokens.dtype == torch.int64
    assert torch.equal(tokens, m.encode(normalize(frames)))                 # uint8 and float paths agree
    assert m.decode(tokens).shape == (3, 3, 16, 16)
    out = m.decode_uint8(tokens)
    assert out.shape == (3, 16, 16, 3) and out.dtype == torch.uint8
    with pytest.raises(ValueError, match="image_size=16"):
        m.encode(torch.zeros(1, 32, 32, 3, dtype=torch.uint8))


def test_config_errors_say_what_to_change():
    with pytest.raises(ValueError, match="multiple of the compression"):
        VQVAEConfig(image_size=60)
    with pytest.raises(ValueError, match="groups"):
        VQVAEConfig(widths=(30, 64, 128))
    with pytest.raises(ValueError, match="frames_per_clip"):
        TrainOptions(batch=10, frames_per_clip=4)


def test_codebook_init_and_dead_code_restart():
    cb = VQVAE(TINY).codebook
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(64, 4)
    cb.init_from_data(z, gen)
    assert bool(cb.initialised) and len(torch.unique(cb.embed, dim=0)) == 16    # no duplicate entries
    idx = cb.nearest(z)
    cb.ema_update(z, idx, step=0)
    cb.last_used[:4] = -10                                                     # four codes long unused
    assert cb.restart_dead(z, cb.nearest(z), step=0, gen=gen) == 4
    assert bool((cb.last_used[:4] == 0).all())
    # every restarted entry sits exactly on an encoder output
    assert all(bool(((z - cb.embed[k]).abs().sum(1) == 0).any()) for k in range(4))


# ------------------------------------------------------------ training
def test_tiny_tokenizer_loss_falls(tiny_run):
    hist = json.loads((tiny_run / "history.json").read_text())["history"]
    losses = [h["rec_loss"] for h in hist if "rec_loss" in h]
    assert len(losses) == 6
    assert losses[-1] < 0.5 * losses[0], losses
    assert (tiny_run / "final.safetensors").is_file() and (tiny_run / "last.safetensors").is_file()
    evals = [h["eval"] for h in hist if "eval" in h]
    assert [e["n_frames"] for e in evals] == [8, 8, 8]
    assert {"psnr_db", "perplexity", "codes_used", "usage"} <= evals[-1].keys()


def test_resume_after_kill_is_bit_identical(tiny_run, tmp_path, monkeypatch):
    real_batch = tv.FrameSampler.batch

    def killed_at_step_6(self, step):
        if step == 6:
            raise KeyboardInterrupt          # as if killed between checkpoints 4 and 8
        return real_batch(self, step)
    monkeypatch.setattr(tv.FrameSampler, "batch", killed_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path)
    monkeypatch.setattr(tv.FrameSampler, "batch", real_batch)
    assert load(tmp_path / "last.safetensors").extra["step"] == 4
    assert not (tmp_path / "final.safetensors").exists()
    _train(tmp_path)                          # resumes from step 4

    a = load(tiny_run / "last.safetensors")
    b = load(tmp_path / "last.safetensors")
    assert b.extra["step"] == 12
    assert _states_equal(a.model_state, b.model_state)          # weights and codebook EMA state
    assert _states_equal(a.extra["optimizer"]["state"][0], b.extra["optimizer"]["state"][0])
    ha = json.loads((tiny_run / "history.json").read_text())["history"]
    hb = json.loads((tmp_path / "history.json").read_text())["history"]
    strip = lambda h: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in h]  # noqa: E731
    assert strip(ha) == strip(hb)


def test_resume_refuses_other_settings(tiny_run, tmp_path):
    import shutil
    shutil.copy(tiny_run / "last.safetensors", tmp_path / "last.safetensors")
    with pytest.raises(CheckpointError, match="different config"):
        train_vqvae(tmp_path, VQVAEConfig(**{**TINY.__dict__, "n_codes": 32}), TINY_OPTS, show_progress=False)
    with pytest.raises(CheckpointError, match="other options"):
        train_vqvae(tmp_path, TINY, TINY_OPTS, show_progress=False, lr=1e-2)


# ------------------------------------------------------------ checkpoints
def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    m = VQVAE(TINY)
    opt = torch.optim.Adam(m.parameters(), betas=(0.9, 0.99))
    m(normalize(torch.from_numpy(heldout_frames(4, size=16))), 0, torch.Generator().manual_seed(0))["loss"].backward()
    opt.step()
    extra = {"step": 7, "optimizer": opt.state_dict(), "rng": {"torch": torch.get_rng_state()}, "note": None}
    path = save(tmp_path / "m.safetensors", m.state_dict(), TINY, extra, kind="vqvae")
    ck = load(path, VQVAEConfig, kind="vqvae")
    assert ck.config == TINY and ck.extra["step"] == 7 and ck.extra["note"] is None
    assert _states_equal(ck.model_state, m.state_dict())
    assert ck.extra["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.99)     # tuples survive
    assert _states_equal(ck.extra["optimizer"]["state"][0], opt.state_dict()["state"][0])  # int keys survive
    assert torch.equal(ck.extra["rng"]["torch"], torch.get_rng_state())
    m2 = VQVAE(ck.config)
    load_model_state(m2, ck)
    opt2 = torch.optim.Adam(m2.parameters())
    opt2.load_state_dict(ck.extra["optimizer"])
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]        # no temporary file left


def test_bad_checkpoints_give_clear_errors(tiny_run, tmp_path):
    good = (tiny_run / "final.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match="does not exist"):
        load_vqvae(tmp_path / "missing.safetensors")
    (tmp_path / "trunc.safetensors").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_vqvae(tmp_path / "trunc.safetensors")
    flipped = bytearray(good)
    flipped[-5] ^= 0xFF                                                       # a bit flip in the weights
    (tmp_path / "flip.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="corrupted"):
        load_vqvae(tmp_path / "flip.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError):
        load_vqvae(tmp_path / "junk.safetensors")

    @__import__("dataclasses").dataclass(frozen=True)
    class OtherConfig:
        width: int = 3
    save(tmp_path / "other.safetensors", {"w": torch.zeros(3)}, OtherConfig(), kind="vqvae")
    with pytest.raises(CheckpointError, match="carries a OtherConfig config"):
        load_vqvae(tmp_path / "other.safetensors")
    save(tmp_path / "kind.safetensors", {"w": torch.zeros(3)}, TINY, kind="transformer")
    with pytest.raises(CheckpointError, match="expected 'vqvae'"):
        load_vqvae(tmp_path / "kind.safetensors")
    ck = load(tiny_run / "final.safetensors", VQVAEConfig)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_model_state(VQVAE(VQVAEConfig(**{**TINY.__dict__, "code_dim": 8})), ck)


# ------------------------------------------------------------ quality and tokens
def test_quality_report(tiny_run, tmp_path):
    res = measure_quality(tiny_run / "final.safetensors", n_frames=20, json_path=tmp_path / "q.json")
    assert res["n_frames"] == 20 and 0 < res["usage"] <= 1 and res["perplexity"] >= 1
    assert json.loads((tmp_path / "q.json").read_text())["psnr_db"] == res["psnr_db"]
    frames = heldout_frames(20, size=16)
    assert np.array_equal(frames, heldout_frames(20, size=16))               # the same frames every time
    assert evaluate(load_vqvae(tiny_run / "final.safetensors"), frames)["psnr_db"] == res["psnr_db"]


def test_tokenize_cache_key(tiny_run, tmp_path, monkeypatch):
    from hiergen.data import open_dataset, write_synth_dataset
    from hiergen.training import tokenize as tk

    write_synth_dataset(tmp_path / "ds", 20, size=16, show_progress=False)   # seeds 0-19: all three splits
    ckpt = tiny_run / "final.safetensors"
    m1 = tk.tokenize_dataset(tmp_path / "ds", ckpt, tmp_path / "tok", show_progress=False)
    shards = tk.open_tokens(tmp_path / "tok")
    assert set(shards) == {"train", "val", "test"}
    ds, model = open_dataset(tmp_path / "ds"), load_vqvae(ckpt)
    rec = [r for r in ds.records if r.split == "val"][0]
    val = shards["val"]
    assert val.tokens.dtype == np.int16 and val.tokens.shape[1:] == (2, 2)
    assert np.array_equal(val.clip(0), model.encode(torch.from_numpy(ds.load(rec).frames)).numpy())
    assert val.captions[0] == rec.caption and val.seeds[0] == rec.seed

    # same key, intact shards: reused without loading the tokenizer
    def no_encoding(*a, **k):
        raise AssertionError("re-encoded although the cache key matched")
    import hiergen.training.vqvae as vq_module
    monkeypatch.setattr(vq_module, "load_vqvae", no_encoding)
    assert tk.tokenize_dataset(tmp_path / "ds", ckpt, tmp_path / "tok", show_progress=False) == m1
    monkeypatch.undo()

    # worker processes give the same shards
    tk.tokenize_dataset(tmp_path / "ds", ckpt, tmp_path / "tok2", show_progress=False, jobs=2)
    assert tk._read_manifest(tmp_path / "tok2")["splits"] == m1["splits"]

    # keyframes only: five tokens per clip, the clip's length kept, another key
    mk = tk.tokenize_dataset(tmp_path / "ds", ckpt, tmp_path / "kf", show_progress=False, keyframes_only=True)
    kf = tk.open_tokens(tmp_path / "kf")["val"]
    assert mk["key"] != m1["key"] and mk["keyframes_only"]
    assert kf.n_frames[0] == len(val.clip(0)) and len(kf.clip(0)) == 5
    assert np.array_equal(kf.clip(0), val.clip(0)[np.round(np.linspace(0, len(val.clip(0)) - 1, 5)).astype(int)])

    # a damaged shard under the same key is rebuilt, not trusted
    (tmp_path / "tok" / "val.npz").write_bytes(b"garbage")
    with pytest.raises(tk.TokensError, match="re-run"):
        tk.open_tokens(tmp_path / "tok")
    assert tk.tokenize_dataset(tmp_path / "ds", ckpt, tmp_path / "tok", show_progress=False) == m1

    # another tokenizer -> another key -> rebuilt
    ck = load(ckpt, VQVAEConfig)
    state = dict(ck.model_state)
    state["codebook.embed"] = state["codebook.embed"].flip(0)
    other = save(tmp_path / "other.safetensors", state, ck.config, ck.extra, kind="vqvae")
    m2 = tk.tokenize_dataset(tmp_path / "ds", other, tmp_path / "tok", show_progress=False)
    assert m2["key"] != m1["key"]
    assert np.array_equal(tk.open_tokens(tmp_path / "tok")["val"].tokens, TINY.n_codes - 1 - val.tokens)


def test_training_on_a_dataset_folder(tmp_path):
    from hiergen.data import write_synth_dataset

    write_synth_dataset(tmp_path / "ds", 20, size=16, show_progress=False)
    res = train_vqvae(tmp_path / "run", TINY, TINY_OPTS, data=tmp_path / "ds", show_progress=False, steps=4)
    assert res["step"] == 4 and res["eval"]["n_frames"] == 8
    sampler = tv.FrameSampler(TINY_OPTS, 16, tmp_path / "ds")
    assert np.array_equal(sampler.batch(3), sampler.batch(3))               # a pure function of (seed, step)
    with pytest.raises(CheckpointError, match="data="):                      # resuming on other data is refused
        train_vqvae(tmp_path / "run", TINY, TINY_OPTS, show_progress=False, steps=4)
    write_synth_dataset(tmp_path / "ds32", 20, size=32, show_progress=False)
    with pytest.raises(ValueError, match="--size 16"):
        train_vqvae(tmp_path / "run32", TINY, TINY_OPTS, data=tmp_path / "ds32", show_progress=False)
