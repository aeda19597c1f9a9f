"""KV-cache arenas: the device arena's logic, run on the CPU with host memory and a host copier."""
import numpy as np
import pytest

from hiergen.runtime.arena import DeviceArena, HostArena, HostCopier, _runs
from hiergen.runtime.backend import OrtStepModel
from hiergen.runtime.package import load_manifest
from hiergen.runtime.pipeline import DEFAULT_PACKAGE


@pytest.fixture(scope="module")
def keyframe():
    m = load_manifest(DEFAULT_PACKAGE)
    return OrtStepModel(DEFAULT_PACKAGE, m, "keyframe", ["CPUExecutionProvider"], threads=1)


def test_runs_of_consecutive_slots():
    assert _runs(np.array([0, 1, 2, 7, 8, 20])) == [(0, 0, 3), (7, 3, 2), (20, 5, 1)]
    assert _runs(np.array([5])) == [(5, 0, 1)]
    # a run also needs consecutive sources
    assert _runs(np.array([3, 4, 5]), np.array([0, 1, 7])) == [(3, 0, 2), (5, 7, 1)]


def _drive(model, arena, steps=6):
    """A prefill of the text and frame 1, then greedy decode steps of frame 2; every logits array."""
    rng = np.random.default_rng(0)
    B, P, L = arena.batch, model.grid ** 2, model.text_len
    text = rng.integers(1, 20, (B, L))
    frame = np.concatenate([np.full((B, 1), model.image_vocab), rng.integers(0, model.image_vocab, (B, P - 1))], 1)
    tokens = np.concatenate([text, frame], 1).astype(np.int64)
    codes = np.tile(np.arange(L + P), (B, 1)).astype(np.int64)
    out = [model.prefill(tokens, codes, arena).copy()]
    prev = np.full((B, 1), model.image_vocab, np.int64)
    for w in range(steps):
        logits = model.decode(prev, np.full((B, 1), L + P + w, np.int64), arena)
        out.append(logits.copy())
        prev = logits[:, -1].argmax(-1)[:, None].astype(np.int64)
    return out


def test_device_arena_matches_the_host_arena(keyframe):
    host = HostArena(keyframe, 2)
    dev = DeviceArena(keyframe, 2, device="cpu", copier=HostCopier())
    a, b = _drive(keyframe, host), _drive(keyframe, dev)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert np.array_equal(dev.host_kv(), host.host_kv())
    assert np.abs(host.host_kv()).sum() > 0          # the steps did write


def test_device_arena_writes_only_the_decoded_slot(keyframe):
    dev = DeviceArena(keyframe, 1, device="cpu", copier=HostCopier())
    _drive(keyframe, dev, steps=1)
    before = dev.host_kv()
    slot = keyframe.text_len + keyframe.grid ** 2 + 1
    keyframe.decode(np.ones((1, 1), np.int64), np.full((1, 1), slot, np.int64), dev)
    changed = np.nonzero((dev.host_kv() != before).any(axis=(0, 1, 2, 4)))[0]
    assert changed.tolist() == [slot]


def test_attention_base_blocks_hold_the_text_and_one_frame_each(keyframe):
    """Frame-local attention-base: the text in every frame's block, each frame's keys/values in its own."""
    host = HostArena(keyframe, 2)
    steps = 6
    _drive(keyframe, host, steps=steps)                 # text + frame 1 prefilled, then frame 2 decoded
    L = keyframe.text_len
    blocks = host.blocks                                # (n_local, n_frames, B, H, block_len, hd)
    assert blocks.shape[1] == keyframe.cache_spec.n_frames and blocks.shape[4] == L + keyframe.grid ** 2
    assert np.abs(blocks[:, 0, :, :, :L]).sum() > 0
    assert all(np.array_equal(blocks[:, 0, :, :, :L], blocks[:, f, :, :, :L]) for f in range(keyframe.cache_spec.n_frames))
    written = np.abs(blocks[..., L:, :]).sum(axis=(0, 2, 3, 5)) > 0     # (n_frames, slots of a frame)
    assert written[0].all()                             # frame 1: the prefill
    assert written[1].tolist() == [True] * steps + [False] * (keyframe.grid ** 2 - steps)
    assert not written[2:].any()
    assert host.frame == 1                              # the block bound for the steps of frame 2


@pytest.mark.parametrize("arena", ["host", "device"])
def test_a_step_through_the_step_graph_writes_one_frame(keyframe, arena):
    cache = HostArena(keyframe, 1) if arena == "host" else DeviceArena(keyframe, 1, device="cpu", copier=HostCopier())
    L, P = keyframe.text_len, keyframe.grid ** 2
    codes = np.concatenate([np.arange(L), L + np.arange(2 * P)])[None]     # text, frames 1 and 2
    tokens = np.ones_like(codes)
    keyframe.step(tokens[:, :L], codes[:, :L], cache)   # the text (through the prefill graph)
    with pytest.raises(ValueError, match="one frame"):
        keyframe.step(tokens[:, L:], codes[:, L:], cache)


@pytest.fixture(scope="module")
def interp():
    m = load_manifest(DEFAULT_PACKAGE)
    return OrtStepModel(DEFAULT_PACKAGE, m, "interp", ["CPUExecutionProvider"], threads=1)


def _interp_drive(model, arena, steps=10):
    """An interpolation prefill (text, given frames 1, 3, 5), then greedy decode steps of frame 2 across
    window borders; per step the decode logits and the step graph's on the same arena, before the write."""
    rng = np.random.default_rng(1)
    B, P, L = arena.batch, model.grid ** 2, model.text_len
    codes = np.concatenate([np.arange(L)] + [L + f * P + np.arange(P) for f in (0, 2, 4)])
    tokens = np.concatenate([rng.integers(1, 20, (B, L))] + [
        np.concatenate([np.full((B, 1), model.image_vocab), rng.integers(0, model.image_vocab, (B, P - 1))], 1)
        for _ in range(3)], 1)
    model.prefill(tokens.astype(np.int64), np.tile(codes, (B, 1)).astype(np.int64), arena)
    prev, pairs = np.full((B, 1), model.image_vocab, np.int64), []
    names = [model.logits_name, *model.new_names]
    for w in range(steps):
        code = np.full((B, 1), L + P + w, np.int64)
        through_step = arena.run_past(model.sess, prev, code, names)[0]
        logits = model.decode(prev, code, arena).copy()
        pairs.append((logits, through_step))
        prev = logits[:, -1].argmax(-1)[:, None].astype(np.int64)
    return pairs


def test_interp_decode_reads_window_blocks(interp):
    """The interpolation model's decode graph reads attention-plus from Swin-window blocks (91 slots, not
    331): the same logits as the step graph over the whole sequence; every block holds the text and its
    window's keys/values, copied from the sequence tensor the step graph reads."""
    from hiergen.windows import layouts
    spec = interp.cache_spec
    assert set(spec.window_local.values()) == {0, 1}
    assert all("_plus_" in past for past in spec.window_local)
    lays = layouts(spec.text_len, spec.grid, spec.n_frames, spec.window)
    assert all(shape[2] == lays[0].block_len < spec.past_shapes[past][2]
               for past, shape in spec.window_shapes.items())
    host = HostArena(interp, 2)
    for logits, through_step in _interp_drive(interp, host):
        assert np.allclose(logits, through_step, atol=1e-5)
    full = host.host_kv()
    for i, blocks in host.host_windows().items():
        held = lays[host.windowed[i]].block_codes()                     # (n_windows, block_len)
        assert blocks.shape[0] == len(held)
        for w, codes in enumerate(held):
            assert np.array_equal(blocks[w][:, :, codes >= 0], full[i][:, :, codes[codes >= 0]])
            assert not blocks[w][:, :, codes < 0].any()                 # slots outside the grid stay empty
    assert np.abs(full).sum() > 0


@pytest.mark.parametrize("arena", ["host", "device"])
def test_a_decoded_text_token_lands_in_every_window_block(interp, arena):
    cache = HostArena(interp, 1) if arena == "host" else DeviceArena(interp, 1, device="cpu", copier=HostCopier())
    interp.step(np.ones((1, 1), np.int64), np.zeros((1, 1), np.int64), cache)       # text slot 0, one token
    full = cache.host_kv()
    for i, blocks in cache.host_windows().items():
        assert np.abs(full[i][:, :, 0]).sum() > 0
        assert all(np.array_equal(b[:, :, 0], full[i][:, :, 0]) for b in blocks)
        assert not blocks[:, :, :, 1:].any()


def test_interp_device_arena_matches_the_host_arena(interp):
    host = HostArena(interp, 2)
    dev = DeviceArena(interp, 2, device="cpu", copier=HostCopier())
    a, b = _interp_drive(interp, host), _interp_drive(interp, dev)
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a, b))
    assert np.array_equal(dev.host_kv(), host.host_kv())
    hw, dw = host.host_windows(), dev.host_windows()
    assert hw.keys() == dw.keys() and all(np.array_equal(hw[i], dw[i]) for i in hw)


def test_cuda_copier_copies_or_reports_the_cuda_error():
    """Where a CUDA runtime exists, cudaMemcpy2D is called with the right signature: a host-to-host copy
    either lands (a GPU is present) or fails with CUDA's error number (no device); without one, the
    error says what to install."""
    from hiergen.runtime import arena
    try:
        copier = arena.CudaCopier()
    except RuntimeError as e:
        assert "onnxruntime-gpu" in str(e) and "--backend cpu" in str(e)
        return
    src = np.arange(12, dtype=np.float32).reshape(3, 4)
    dst = np.zeros((3, 6), np.float32)
    try:
        copier.copy2d(dst.ctypes.data + 8, 24, src.ctypes.data, 16, 16, 3, 0)     # 0 = cudaMemcpyHostToHost
    except RuntimeError as e:
        assert "CUDA error" in str(e)
    else:
        assert np.array_equal(dst[:, 2:], src) and not dst[:, :2].any()
