import pytest
import torch

from hiergen.config import Kind, ModelConfig
from hiergen.training.masks import sequence_codes
from hiergen.training.model import DualTransformer, KVCache, shift_frames

CFG = ModelConfig(text_vocab=12, image_vocab=32, text_len=4, grid=4, d_model=32, n_head=4, n_layer=2, window=2)


def sample_batch(cfg, kind, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = sequence_codes(cfg, kind)
    n_img_frames = (len(codes) - cfg.text_len) // cfg.tokens_per_frame
    text = torch.randint(0, cfg.text_vocab, (batch, cfg.text_len), generator=g)
    frames = torch.randint(0, cfg.image_vocab, (batch, n_img_frames, cfg.tokens_per_frame), generator=g)
    tokens = torch.cat([text, shift_frames(frames, cfg.image_vocab).flatten(1)], dim=1)
    return tokens, codes.expand(batch, -1), frames


@pytest.mark.parametrize("kind", [Kind.KEYFRAME, Kind.INTERP])
def test_only_plus_gate_and_time_table_get_gradients(kind):
    torch.manual_seed(0)
    model = DualTransformer(CFG, kind)
    model.freeze_backbone()
    tokens, codes, _ = sample_batch(CFG, kind)
    logits, _ = model(tokens, codes)
    logits.square().mean().backward()
    for name, p in model.named_parameters():
        trainable = name == "pos_time" or ".plus." in name or name.endswith(".w")
        assert p.requires_grad == trainable, name
        if trainable:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_plus_starts_as_a_copy_of_base_with_random_projection():
    torch.manual_seed(0)
    model = DualTransformer(CFG, Kind.KEYFRAME)
    for b in model.blocks:
        assert torch.equal(b.plus.qkv.weight, b.base.qkv.weight)
        assert not torch.equal(b.plus.proj.weight, b.base.proj.weight)
        assert 0.01 < float(b.plus.proj.weight.detach().std()) < 0.03
        assert torch.equal(b.w, torch.zeros_like(b.w))
    assert torch.equal(model.pos_time, torch.zeros_like(model.pos_time))


@pytest.mark.parametrize("kind", [Kind.KEYFRAME, Kind.INTERP])
def test_dual_layer_with_plus_zeroed_and_a_forced_to_one_equals_the_backbone(kind):
    torch.manual_seed(0)
    backbone = DualTransformer(CFG, Kind.T2I)
    video = DualTransformer(CFG, kind)
    video.load_state_dict(backbone.state_dict(), strict=False)
    with torch.no_grad():
        for b in video.blocks:
            b.plus.proj.weight.zero_()
            b.plus.proj.bias.zero_()
            b.w.fill_(1e4)           # sigmoid(w) = 1
    # Text + the second frame: a generated frame in both video models (the interpolation model's
    # given frames read their own frame bidirectionally in attention-base, by design).
    tokens, codes, _ = sample_batch(CFG, Kind.T2I)
    codes = torch.where(codes >= CFG.text_len, codes + CFG.tokens_per_frame, codes)
    got, _ = video(tokens, codes)
    want, _ = backbone(tokens, codes)
    print("max |diff|", float((got - want).abs().max()))
    assert torch.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("kind", list(Kind))
def test_cached_decoding_equals_the_full_forward(kind):
    """Prefill part of the sequence, then feed the rest one token at a time through the static cache."""
    torch.manual_seed(1)
    model = DualTransformer(CFG, kind).eval()
    tokens, codes, _ = sample_batch(CFG, kind, batch=2)
    with torch.no_grad():
        full, _ = model(tokens, codes)
        cache = KVCache.empty(CFG, kind, batch=2)
        split = CFG.text_len + (3 * CFG.tokens_per_frame if kind == Kind.INTERP else 5)
        split = min(split, tokens.shape[1] - 3)
        outs = []
        for lo, hi in [(0, split)] + [(t, t + 1) for t in range(split, tokens.shape[1])]:
            logits, new_kv = model(tokens[:, lo:hi], codes[:, lo:hi], cache)
            outs.append(logits)
            slots = codes[0, lo:hi]
            for i, kv in enumerate(new_kv):
                cache.k_base[i][:, :, slots], cache.v_base[i][:, :, slots] = kv[0]
                if cache.k_plus is not None:
                    cache.k_plus[i][:, :, slots], cache.v_plus[i][:, :, slots] = kv[1]
        stepped = torch.cat(outs, dim=1)
    diff = float((stepped - full).abs().max())
    print(kind, "max |logit diff| cached vs full:", diff)
    assert diff < 1e-5


@pytest.mark.parametrize("kind", list(Kind))
def test_whole_sequence_attention_by_blocks_equals_the_dense_masks(kind):
    """Training runs attention-base as per-frame blocks and the keyframe model's attention-plus as plain
    causal attention: the same logits and gradients as the dense masks of masks.py."""
    torch.manual_seed(2)
    model = DualTransformer(CFG, kind)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)               # away from the initial near-zero projections
    tokens, codes, _ = sample_batch(CFG, kind, batch=3)
    structured = model.training_masks(codes)
    assert structured is not None and model.training_masks(codes[:, :-1]) is None
    results = []
    for masks in (structured, model.masks(codes, codes)):
        model.zero_grad()
        x, is_text = model.embed(tokens, codes)
        logits, _ = model._run(x, is_text, masks, [None] * CFG.n_layer)
        logits.square().mean().backward()
        results.append((logits.detach(), [p.grad.clone() for p in model.parameters()]))
    (a, ga), (b, gb) = results
    diff = float((a - b).abs().max())
    grad_diff = max(float((x - y).abs().max()) for x, y in zip(ga, gb))
    print(kind, "max |logit diff|", diff, "max |grad diff|", grad_diff)
    assert diff < 1e-5 and grad_diff < 1e-5
