"""The PyTorch reference generator on tiny random models made inside the test."""
import numpy as np
import pytest
import torch

from hiergen.config import Kind, ModelConfig
from hiergen.runtime.plan import Plan
from hiergen.tokenizer import TextTokenizer
from hiergen.training import checkpoint as ckpt
from hiergen.runtime.pipeline import keyframe_rate
from hiergen.training.generate import ReferencePipeline, TorchCodec, TorchStepModel
from hiergen.training.model import DualTransformer
from hiergen.training.vqvae import VQVAE, VQVAEConfig

TOK = TextTokenizer.default()
CFG = ModelConfig(text_vocab=len(TOK.vocab), image_vocab=16, text_len=TOK.prefix_len, grid=4,
                  d_model=32, n_head=2, n_layer=2, window=2)
VQ = VQVAEConfig(image_size=32, widths=(8, 16, 16), n_mid=0, res_hidden=8, dec_out_width=8, n_codes=16,
                 code_dim=8, groups=4)


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    backbone = DualTransformer(CFG, Kind.T2I)
    models = {}
    for kind in Kind:
        m = DualTransformer(CFG, kind)
        m.load_state_dict(backbone.state_dict(), strict=False)
        models[kind.value] = TorchStepModel(m)
    return ReferencePipeline(models, TorchCodec(VQVAE(VQ)), Plan(), TOK)


def test_reference_makes_frames_and_repeats_with_a_seed(pipe):
    a = pipe.generate("a small red circle moves left slowly", frames=9, seed=4)
    b = pipe.generate("a small red circle moves left slowly", frames=9, seed=4)
    assert a.frames.shape == (9, 32, 32, 3) and a.frames.dtype == np.uint8
    assert a.tokens.shape == (9, 4, 4) and a.fps == 2.0
    assert np.array_equal(a.tokens, b.tokens)
    c = pipe.generate("a small red circle moves left slowly", frames=9, seed=5)
    assert not np.array_equal(a.tokens, c.tokens)


def test_greedy_frames_match_an_uncached_full_forward(pipe):
    """The cached loop's greedy t2i frame equals argmax decoding by full forwards without any cache."""
    video = pipe.generate("a large blue square stays still", frames=5, seed=0, top_k=1)
    model = pipe.models["t2i"].model
    prompt = "a large blue square stays still"
    rate = keyframe_rate(prompt, pipe.plan)
    cond = torch.tensor(TOK.encode(prompt, rate))
    free = torch.tensor(TOK.encode(prompt, rate, drop_text=True))
    codes = torch.arange(CFG.text_len + 16)[None]
    made = []
    with torch.no_grad():
        for w in range(16):
            shifted = torch.tensor([CFG.image_vocab] + made)
            rows = torch.stack([torch.cat([cond, shifted]), torch.cat([free, shifted])])
            logits, _ = model(rows, codes[:, :rows.shape[1]])
            g = logits[1, -1] + pipe.plan.guidance["t2i"] * (logits[0, -1] - logits[1, -1])
            made.append(int(torch.argmax(g)))
    assert video.tokens[0].flatten().tolist() == made


def test_video_save(pipe, tmp_path):
    v = pipe.generate("a small green triangle bounces quickly", frames=5, seed=1)
    for ext in ("mp4", "gif", "png"):
        assert v.save(tmp_path / f"v.{ext}").is_file()


def test_load_from_checkpoints(tmp_path, pipe):
    for name, m in pipe.models.items():
        state = m.model.state_dict() if name == "t2i" else m.model.video_state()
        ckpt.save(tmp_path / f"{name}.safetensors", state, CFG, kind=name, extra={"vocab": list(TOK.vocab)})
    ckpt.save(tmp_path / "vq.safetensors", pipe.codec.vq.state_dict(), VQ, kind="vqvae")
    loaded = ReferencePipeline.load(tmp_path, tmp_path / "vq.safetensors")
    a = loaded.generate("a small red circle moves left slowly", frames=5, seed=2)
    b = pipe.generate("a small red circle moves left slowly", frames=5, seed=2)
    assert np.array_equal(a.tokens, b.tokens)


def test_reference_cli(tmp_path, pipe, capsys):
    from hiergen.cli import main
    for name, m in pipe.models.items():
        state = m.model.state_dict() if name == "t2i" else m.model.video_state()
        ckpt.save(tmp_path / f"{name}.safetensors", state, CFG, kind=name, extra={"vocab": list(TOK.vocab)})
    ckpt.save(tmp_path / "vq.safetensors", pipe.codec.vq.state_dict(), VQ, kind="vqvae")
    out = tmp_path / "v.mp4"
    argv = ["reference", "a", "small", "red", "circle", "moves", "left", "slowly", "-o", str(out), "--sheet",
            "--frames", "5", "--checkpoints", str(tmp_path), "--vqvae", str(tmp_path / "vq.safetensors")]
    assert main(argv) == 0
    assert out.is_file() and out.with_suffix(".png").is_file()
    assert "5 frames at 1 fps" in capsys.readouterr().out
    assert main(argv[:1] + ["a", "small", "red", "blob"] + argv[7:]) == 0
    assert "'blob'" in capsys.readouterr().err
    too_long = ["a"] * 12
    assert main(argv[:1] + too_long + argv[8:]) == 2
    assert "at most 9" in capsys.readouterr().err


def test_shipped_package_matches_its_checkpoints_greedily():
    """The shipped ONNX package and the checkpoints it was exported from make the same greedy video."""
    import json
    from pathlib import Path

    from hiergen.runtime.pipeline import DEFAULT_PACKAGE, Pipeline
    root = Path(DEFAULT_PACKAGE).parents[1]
    manifest = json.loads((DEFAULT_PACKAGE / "manifest.json").read_text())
    torch.set_num_threads(1)
    ref = ReferencePipeline.load(root / "checkpoints/transformer", root / "checkpoints/vqvae/final.safetensors",
                                 plan=Plan.from_dict(manifest["plan"]))
    ort_pipe = Pipeline.load(threads=1)
    prompt = "a small orange triangle moves down then left quickly"          # a held-out colour/shape pair
    a = ort_pipe.generate(prompt, frames=9, seed=0, top_k=1)
    b = ref.generate(prompt, frames=9, seed=0, top_k=1)
    assert np.array_equal(a.tokens, b.tokens)
    assert np.abs(a.frames.astype(int) - b.frames.astype(int)).max() <= 1
