"""Export a tiny random model package and check it against PyTorch in ONNX Runtime.

The package is exported once per module (the dynamo exporter takes seconds per
graph); every test reads it. Each parity test prints its max difference.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from hiergen.config import Kind, ModelConfig  # noqa: E402
from hiergen.runtime import check  # noqa: E402
from hiergen.export.fragments import step  # noqa: E402
from hiergen.tools.parity import OrtStep  # noqa: E402
from hiergen.export.package import ExportError, build_package, read_bytes  # noqa: E402
from hiergen.runtime.manifest import FRAGMENTS  # noqa: E402
from hiergen.tokenizer import TextTokenizer  # noqa: E402
from hiergen.training.generate import TorchStepModel  # noqa: E402
from hiergen.export.tables import DecodeWeights, LookupTables  # noqa: E402
from hiergen.training.model import DualTransformer  # noqa: E402
from hiergen.training.vqvae import VQVAE, VQVAEConfig  # noqa: E402

LOGIT_TOL, PIXEL_TOL, DECODE_STEPS = 1e-4, 1, 20


def tiny_models(seed: int = 0):
    torch.manual_seed(seed)
    tok = TextTokenizer.default()
    cfg = ModelConfig(text_vocab=len(tok.vocab), image_vocab=16, grid=4, d_model=16, n_layer=2, n_head=2, window=2)
    t2i = DualTransformer(cfg, Kind.T2I).eval()
    models = {Kind.T2I: t2i}
    for k in (Kind.KEYFRAME, Kind.INTERP):
        m = DualTransformer(cfg, k)
        m.load_state_dict(t2i.backbone_state(), strict=False)
        with torch.no_grad():          # give the video parameters values a trained model could have
            for n, p in m.named_parameters():
                if not m.is_backbone(n):
                    p.add_(0.3 * torch.randn_like(p))
        models[k] = m.eval()
    vq_cfg = VQVAEConfig(image_size=16, widths=(8, 16), n_mid=1, res_hidden=8, dec_out_width=8, n_codes=16,
                         code_dim=8, groups=4)
    vq = VQVAE(vq_cfg)
    with torch.no_grad():
        vq.codebook.embed.normal_()
    return models, vq.eval(), tok


def session(path, name) -> "ort.InferenceSession":
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path / f"{name}.onnx"), so, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    models, vq, tok = tiny_models()
    pkg = build_package(models, vq, tok, tmp_path_factory.mktemp("pkg") / "tiny")
    return pkg, models, vq, tok


def _prefill(cfg: ModelConfig, kind: Kind, batch: int, rng) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Text, plus the given frames for interp; returns tokens, codes and the frames to decode, in order."""
    P = cfg.tokens_per_frame
    toks = [rng.integers(0, cfg.text_vocab, (batch, cfg.text_len))]
    codes = [np.arange(cfg.text_len)]
    given, targets = {Kind.T2I: ([], [0]), Kind.KEYFRAME: ([], [0, 1]), Kind.INTERP: ([0, 2, 4], [1, 3])}[kind]
    for f in given:
        toks.append(rng.integers(0, cfg.image_vocab + 1, (batch, P)))
        codes.append(cfg.text_len + f * P + np.arange(P))
    c = np.concatenate(codes)
    return np.concatenate(toks, 1).astype(np.int64), np.tile(c, (batch, 1)).astype(np.int64), targets


@pytest.mark.parametrize("kind", list(Kind), ids=[k.value for k in Kind])
def test_step_parity(tiny, kind):
    pkg, models, _, _ = tiny
    cfg, B = models[kind].cfg, 2
    ref, got = TorchStepModel(models[kind]), OrtStep(pkg, kind.value)
    ref_cache, got_cache = ref.new_cache(B), got.new_cache(B)
    rng = np.random.default_rng(0)
    tokens, codes, frames = _prefill(cfg, kind, B, rng)
    worst = np.abs(ref.prefill(tokens, codes, ref_cache) - got.prefill(tokens, codes, got_cache)).max()
    P = cfg.tokens_per_frame
    slots = [cfg.text_len + f * P + w for f in frames for w in range(P)][:DECODE_STEPS]   # greedy, frame by frame
    prev = np.full((B, 1), cfg.image_vocab, np.int64)
    for i, slot in enumerate(slots):
        if i % P == 0:
            prev = np.full((B, 1), cfg.image_vocab, np.int64)      # <start> at a frame's first slot
        code = np.full((B, 1), slot, np.int64)
        a, b = ref.decode(prev, code, ref_cache), got.decode(prev, code, got_cache)
        worst = max(worst, np.abs(a - b).max())
        prev = a[:, -1].argmax(-1)[:, None].astype(np.int64)
    print(f"{step.name(kind)}: max |logit diff| ORT vs torch over prefill + {len(slots)} decode steps = {worst:.2e}")
    assert worst <= LOGIT_TOL


@pytest.mark.parametrize("kind", list(Kind), ids=[k.value for k in Kind])
def test_text_token_by_token_matches_torch(tiny, kind):
    """The decode graph takes image tokens only: one-token text steps go through the step graph instead.
    The text written a token at a time (interp: then each given frame as one step), then image decode
    steps, give torch's logits."""
    pkg, models, _, _ = tiny
    cfg, B, P = models[kind].cfg, 2, models[kind].cfg.tokens_per_frame
    ref, got = TorchStepModel(models[kind]), OrtStep(pkg, kind.value)
    ref_cache, got_cache = ref.new_cache(B), got.new_cache(B)
    tokens, codes, frames = _prefill(cfg, kind, B, np.random.default_rng(4))
    parts = [slice(i, i + 1) for i in range(cfg.text_len)]
    parts += [slice(i, i + P) for i in range(cfg.text_len, tokens.shape[1], P)]    # interp's given frames
    worst = 0.0
    for part in parts:
        a = ref.step(tokens[:, part], codes[:, part], ref_cache)
        worst = max(worst, np.abs(a - got.step(tokens[:, part], codes[:, part], got_cache)).max())
    assert got_cache.written and not got_cache._unsynced
    prev = np.full((B, 1), cfg.image_vocab, np.int64)
    for w in range(3):
        code = np.full((B, 1), cfg.text_len + frames[0] * P + w, np.int64)
        a = ref.decode(prev, code, ref_cache)
        worst = max(worst, np.abs(a - got.decode(prev, code, got_cache)).max())
        prev = a[:, -1].argmax(-1)[:, None].astype(np.int64)
    print(f"{kind.value}: max |logit diff| ORT vs torch, text token by token then 3 decode steps = {worst:.2e}")
    assert worst <= LOGIT_TOL


@pytest.mark.parametrize("kind", list(Kind), ids=[k.value for k in Kind])
def test_prefill_graph_equals_step_graph_on_an_empty_cache(tiny, kind):
    """The runtime's shortcut: a first step through the cache-free prefill graph gives what the step graph gives."""
    pkg, models, _, _ = tiny
    cfg, B = models[kind].cfg, 2
    ort_step = OrtStep(pkg, kind.value)
    tokens, codes, _ = _prefill(cfg, kind, B, np.random.default_rng(1))
    via_step = ort_step.new_cache(B)
    ort_step.prefill_sess, saved = None, ort_step.prefill_sess           # force the step graph
    if kind == Kind.INTERP:
        # the step graph reads one frame's attention-base block: the given frames, which see each other,
        # are the prefill graph's job, and the arena says so instead of computing something else
        with pytest.raises(ValueError, match="one frame"):
            ort_step.step(tokens, codes, via_step)
        tokens, codes = tokens[:, :cfg.text_len], codes[:, :cfg.text_len]     # what a step may do: the text
    a = ort_step.step(tokens, codes, via_step).copy()
    ort_step.prefill_sess = saved
    via_prefill = ort_step.new_cache(B)
    b = ort_step.step(tokens, codes, via_prefill)
    assert saved is not None and via_prefill.written
    print(f"{kind.value}: max |diff| prefill graph vs step graph: logits {np.abs(a - b).max():.1e}, "
          f"cache {np.abs(via_step.host_kv() - via_prefill.host_kv()).max():.1e}")
    assert np.abs(a - b).max() <= LOGIT_TOL and np.abs(via_step.host_kv() - via_prefill.host_kv()).max() <= LOGIT_TOL


@pytest.mark.parametrize("kind", list(Kind), ids=[k.value for k in Kind])
def test_decode_graph_equals_the_step_graph(tiny, kind):
    """Decode steps run the *_decode graph (new_tokens = 1, fewer nodes); it computes what the step graph does."""
    pkg, models, _, _ = tiny
    cfg, B = models[kind].cfg, 2
    m = OrtStep(pkg, kind.value)
    assert m.decode_sess is not m.sess
    cache = m.new_cache(B)
    tokens, codes, frames = _prefill(cfg, kind, B, np.random.default_rng(3))
    m.step(tokens, codes, cache)
    prev = np.full((B, 1), cfg.image_vocab, np.int64)
    for w in range(3):
        code = np.full((B, 1), cfg.text_len + frames[0] * cfg.tokens_per_frame + w, np.int64)
        via_step = cache.run_past(m.sess, prev, code, [m.logits_name])[0]      # reads the arena, writes nothing
        via_decode = m.decode(prev, code, cache)
        assert np.abs(via_step - via_decode).max() <= LOGIT_TOL
        prev = via_decode[:, -1].argmax(-1)[:, None].astype(np.int64)


@pytest.mark.parametrize("kind", list(Kind), ids=[k.value for k in Kind])
def test_gelu_is_one_node(tiny, kind):
    """Opset 20: the MLP's tanh GELU is one Gelu node per layer, not eight (Pow, Tanh, Mul, Add): every
    node costs a decode step ONNX Runtime's fixed per-node time (docs/export.md)."""
    import onnx
    pkg, models, _, _ = tiny
    spec = json.loads((pkg / "manifest.json").read_text())["fragments"][step.decode_name(kind)]
    graph = onnx.load(str(pkg / spec["file"]), load_external_data=False).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("Gelu") == models[kind].cfg.n_layer
    assert "Tanh" not in ops and "Pow" not in ops
    gelu = next(n for n in graph.node if n.op_type == "Gelu")
    assert {a.name: a.s for a in gelu.attribute}.get("approximate") == b"tanh"


def test_decode_steps_run_in_the_arena(tiny):
    """A decode step writes only into the stage's preallocated arena: same buffers, logits returned in place."""
    pkg, models, _, _ = tiny
    cfg, B = models[Kind.KEYFRAME].cfg, 2
    m = OrtStep(pkg, "keyframe")
    arena = m.new_cache(B)
    tokens, codes, _ = _prefill(cfg, Kind.KEYFRAME, B, np.random.default_rng(2))
    m.step(tokens, codes, arena)
    buffers = {k: (v.ctypes.data, v.shape) for k, v in vars(arena).items() if isinstance(v, np.ndarray)}
    slot = int(codes[0, -1]) + 1
    before = arena.host_kv()
    logits = m.decode(np.ones((B, 1), np.int64), np.full((B, 1), slot, np.int64), arena)
    assert np.shares_memory(logits, arena.logits)
    assert {k: (v.ctypes.data, v.shape) for k, v in vars(arena).items() if isinstance(v, np.ndarray)} == buffers
    changed = np.nonzero((arena.host_kv() != before).any(axis=(0, 1, 2, 4)))[0]     # slots that changed
    assert changed.tolist() == [slot]


def test_vqvae_parity(tiny):
    pkg, _, vq, _ = tiny
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, vq.cfg.n_codes, (3, vq.cfg.grid, vq.cfg.grid)).astype(np.int64)   # 3: not the trace size
    with torch.no_grad():
        ref = vq.decode_uint8(torch.as_tensor(tokens)).numpy()
    got = session(pkg, "vqvae_decoder").run(None, {"tokens": tokens})[0]
    pix = np.abs(ref.astype(int) - got.astype(int)).max()
    print(f"vqvae_decoder: max |pixel diff| = {pix} / 255")
    assert got.dtype == np.uint8 and got.shape == ref.shape and pix <= PIXEL_TOL

    # Encoder tokens may differ at near-ties of the codebook distance: compare what they decode to.
    frames = ref
    enc = session(pkg, "vqvae_encoder").run(None, {"frames": frames})[0]
    with torch.no_grad():
        ref_tok = vq.encode(torch.as_tensor(frames))
        ref_img, got_img = vq.decode_uint8(ref_tok).numpy(), vq.decode_uint8(torch.as_tensor(enc)).numpy()
    same = (enc == ref_tok.numpy()).mean()
    pix = np.abs(ref_img.astype(int) - got_img.astype(int)).max()
    print(f"vqvae_encoder: {same:.1%} tokens equal, max |pixel diff| of their decodings = {pix} / 255")
    assert enc.dtype == np.int64 and enc.shape == tokens.shape and (same == 1.0 or pix <= PIXEL_TOL)


def test_backbone_stored_once(tiny):
    pkg, models, vq, _ = tiny
    nbytes = lambda state: sum(t.numel() * t.element_size() for t in state.values())  # noqa: E731
    backbone = nbytes(models[Kind.T2I].state_dict())
    plus = sum(nbytes(models[k].video_state()) for k in (Kind.KEYFRAME, Kind.INTERP))
    codec = sum(p.numel() * 4 for p in vq.encoder.parameters()) + sum(p.numel() * 4 for p in vq.decoder.parameters()) \
        + vq.codebook.embed.numel() * 4
    # the decode graphs' own tensors: refolded QKV and mixed output projections (DecodeWeights), and
    # additive mask tables (LookupTables.decode_biases), each distinct table once
    refolded = sum(b.numel() * 4 for k in Kind for b in DecodeWeights(models[k]).buffers())
    refolded += sum(len(t) for t in {b.numpy().tobytes() for k in Kind
                                     for n, b in LookupTables(models[k]).named_buffers() if n.startswith("decode_")})
    weights = (pkg / "weights.bin").stat().st_size
    once = backbone + plus + codec + refolded
    print(f"weights.bin {weights} B; backbone {backbone} + plus {plus} + codec {codec} + refolded {refolded} = {once} B; "
          f"3x backbone would be {3 * backbone + plus + codec} B")
    # folded constants (transposed weights, small tables) add a little; a second backbone copy would add 100%
    assert weights < once + 0.5 * backbone
    for name in FRAGMENTS:
        session(pkg, name)      # every graph loads its share of the one weights file


def test_read_bytes_counts_a_lookup_table_as_rows():
    from onnx import TensorProto, helper, numpy_helper
    table = numpy_helper.from_array(np.zeros((100, 8), np.float32), "table")      # Gathers only: 8 floats a use
    w = numpy_helper.from_array(np.zeros((8, 8), np.float32), "w")                # MatMul: read whole
    both = numpy_helper.from_array(np.zeros((8, 8), np.float32), "both")          # a Gather and a MatMul: whole
    nodes = [helper.make_node("Gather", ["table", "i"], ["e"]), helper.make_node("Gather", ["table", "i"], ["e2"]),
             helper.make_node("Add", ["e", "e2"], ["s"]), helper.make_node("MatMul", ["s", "w"], ["m"]),
             helper.make_node("Gather", ["both", "i"], ["g"]), helper.make_node("MatMul", ["m", "both"], ["m2"]),
             helper.make_node("Add", ["m2", "g"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("i", TensorProto.INT64, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [table, w, both])
    assert read_bytes(helper.make_model(graph)) == {"fixed": 2 * 8 * 8 * 4, "per_sequence": 2 * 8 * 4}


def test_package_checks(tiny):
    pkg = tiny[0]
    check.check_package(pkg)
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert set(manifest["fragments"]) == set(FRAGMENTS)
    assert manifest["model_config"] == tiny[1][Kind.T2I].cfg.to_dict()
    assert manifest["vocab"] == list(tiny[3].vocab)


def _copy(pkg, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(pkg, dst)
    return dst


def test_check_tampered_file(tiny, tmp_path):
    pkg = _copy(tiny[0], tmp_path)
    with open(pkg / "weights.bin", "r+b") as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(check.PackageError, match="rebuild the package with `hiergen export`"):
        check.check_package(pkg)


def test_check_wrong_format_version(tiny, tmp_path):
    pkg = _copy(tiny[0], tmp_path)
    m = json.loads((pkg / "manifest.json").read_text())
    m["format_version"] = 999
    (pkg / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(check.PackageError, match="format version"):
        check.check_package(pkg)


def test_check_missing_fragment(tiny, tmp_path):
    pkg = _copy(tiny[0], tmp_path)
    (pkg / "interp_step.onnx").unlink()
    with pytest.raises(check.PackageError, match="interp_step"):
        check.check_package(pkg)
    m = json.loads((pkg / "manifest.json").read_text())
    del m["fragments"]["interp_step"]
    (pkg / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(check.PackageError, match="interp_step"):
        check.check_package(pkg)


def test_refuses_to_overwrite_a_different_package(tiny, tmp_path):
    pkg = _copy(tiny[0], tmp_path)
    models, vq, tok = tiny_models(seed=1)
    before = (pkg / "manifest.json").read_text()
    with pytest.raises(ExportError, match="--force"):
        build_package(models, vq, tok, pkg)
    assert (pkg / "manifest.json").read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]     # no temp folder left behind
    build_package(models, vq, tok, pkg, force=True)
    assert (pkg / "manifest.json").read_text() != before
    check.check_package(pkg)


def test_refuses_a_folder_that_is_not_a_package(tmp_path):
    out = tmp_path / "pkg"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    models, vq, tok = tiny_models()
    with pytest.raises(ExportError, match="not a model package.*--force"):
        build_package(models, vq, tok, out)
    assert (out / "notes.txt").read_text() == "mine"


def test_export_names_missing_checkpoints(tmp_path):
    from hiergen.export.package import export_package
    with pytest.raises(ExportError, match="keyframe.safetensors.*train them first"):
        export_package(tmp_path, tmp_path / "vq.safetensors", tmp_path / "out")


def test_commands_share_one_error_style_and_exit_status(tiny, tmp_path, capsys):
    """check and export fail like every command: `hiergen: error: ...` on stderr, exit status 2."""
    from hiergen.cli import main
    assert main(["check", str(tiny[0]), "--no-onnx-checker"]) == 0
    pkg = _copy(tiny[0], tmp_path)
    (pkg / "t2i_step.onnx").write_bytes(b"garbage")
    assert main(["check", str(pkg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hiergen: error: ") and "rebuild the package with `hiergen export`" in err
    assert main(["export", "--checkpoints", str(tmp_path / "none"), "--vqvae", str(tmp_path / "vq"),
                 "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("hiergen: error: missing checkpoint")


def test_whole_greedy_video_is_token_for_token_the_same(tiny):
    """33 frames through the shared orchestrator: ONNX Runtime step graphs vs the PyTorch reference."""
    from hiergen.runtime.orchestrator import Request, generate
    from hiergen.runtime.plan import Plan
    from hiergen.runtime.sampler import SamplerOptions

    pkg, models, _, tok = tiny
    ort_models = {k.value: OrtStep(pkg, k.value) for k in Kind}
    torch_models = {k.value: TorchStepModel(models[k]) for k in Kind}
    req = Request("a small red circle moves left slowly", tok, rate=1, frames=33, sampler=SamplerOptions(top_k=1))
    a = generate(req, ort_models, Plan()).tokens
    b = generate(req, torch_models, Plan()).tokens
    print(f"33-frame greedy video: {int((a != b).sum())} of {a.size} tokens differ")
    assert a.shape == (33, 4, 4) and np.array_equal(a, b)
