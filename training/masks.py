"""Who may attend to whom, as pure functions of position codes.

Every token carries one integer position code:
    text token p (0 <= p < text_len)           -> p
    image token of frame f, row r, column c    -> text_len + f * grid^2 + r * grid + c
Codes are also the slots of the static KV caches, so the same functions give
the mask of a training sequence (queries and keys are the whole sequence) and
of an exported step graph (queries are the new tokens, keys the cache slots).
Training evaluates them; export evaluates the same functions once into tables
indexed by code (model.LookupTables) that the graphs look up, so training and
inference cannot disagree.

Rules (docs/model.md, 'Masks'):
- text queries see earlier-or-equal text in both channels;
- attention-base: an image token sees the text and its own frame, causally in
  raster order; in the interpolation model the given frames (1, 3, 5) see
  their own frame bidirectionally, since they are known in full;
- attention-plus, keyframe model: causal over everything (frame-major order);
- attention-plus, interpolation model: text, plus keys in the same 3-D Swin
  window (window side `window`, shifted by window // 2 on odd layers, spanning
  all frames) allowed by the frame rule: given frames see all given frames and
  nothing generated; frame 2 sees the given frames and itself causally (never
  frame 4); frame 4 sees the given frames, all of frame 2, and itself causally.
"""
from __future__ import annotations

import torch

from hiergen.config import Kind, ModelConfig


def decode(code: torch.Tensor, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Split position codes into is_text, frame, in-frame index, row, column."""
    is_text = code < cfg.text_len
    rel = torch.clamp(code - cfg.text_len, min=0)
    frame = torch.div(rel, cfg.tokens_per_frame, rounding_mode="floor")
    within = rel - frame * cfg.tokens_per_frame
    row = torch.div(within, cfg.grid, rounding_mode="floor")
    return {"text": is_text, "frame": frame, "within": within, "row": row, "col": within - row * cfg.grid}


def _pair(q_code: torch.Tensor, k_code: torch.Tensor, cfg: ModelConfig):
    """Decoded queries as (..., Tq, 1) and keys as (..., 1, Tk) for broadcasting."""
    q = {n: t.unsqueeze(-1) for n, t in decode(q_code, cfg).items()}
    k = {n: t.unsqueeze(-2) for n, t in decode(k_code, cfg).items()}
    return q, k, q_code.unsqueeze(-1), k_code.unsqueeze(-2)


def _select(cond: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch.where for bool tensors, as logic: exports as And/Or/Not, which every ONNX backend runs
    (ONNX Runtime's CPU Where has no bool kernel)."""
    return (cond & a) | (~cond & b)


def _given(frame: torch.Tensor) -> torch.Tensor:
    return torch.remainder(frame, 2) == 0   # frames 1, 3, 5 (0-based 0, 2, 4)


def base_visible(q_code: torch.Tensor, k_code: torch.Tensor, cfg: ModelConfig, kind: Kind) -> torch.Tensor:
    """Bool (..., Tq, Tk): may query q see key k in attention-base."""
    q, k, qc, kc = _pair(q_code, k_code, cfg)
    text_q = k["text"] & (kc <= qc)
    same_frame = ~k["text"] & (k["frame"] == q["frame"])
    in_frame = same_frame & (k["within"] <= q["within"])
    if kind == Kind.INTERP:
        in_frame = in_frame | (same_frame & _given(q["frame"]))
    return _select(q["text"], text_q, k["text"] | in_frame)


def plus_visible(q_code: torch.Tensor, k_code: torch.Tensor, cfg: ModelConfig, kind: Kind,
                 layer: int) -> torch.Tensor:
    """Bool (..., Tq, Tk): may query q see key k in attention-plus of `layer`."""
    if kind == Kind.T2I:
        raise ValueError("the text-to-image backbone has no attention-plus")
    q, k, qc, kc = _pair(q_code, k_code, cfg)
    text_q = k["text"] & (kc <= qc)
    if kind == Kind.KEYFRAME:
        image_q = k["text"] | (kc <= qc)
    else:
        shift = cfg.window // 2 if layer % 2 else 0

        def win(t: torch.Tensor) -> torch.Tensor:
            return torch.div(t + shift, cfg.window, rounding_mode="floor")

        same_window = (win(q["row"]) == win(k["row"])) & (win(q["col"]) == win(k["col"]))
        qf, kf = q["frame"], k["frame"]
        k_given = _given(kf)
        causal_self = (kf == qf) & (k["within"] <= q["within"])
        frame_rule = _select(
            _given(qf), k_given,
            _select(qf == 1, k_given | causal_self,
                        k_given | (kf == 1) | causal_self))   # qf == 3
        image_q = k["text"] | (~k["text"] & same_window & frame_rule)
    return _select(q["text"], text_q, image_q)


def sequence_codes(cfg: ModelConfig, kind: Kind) -> torch.Tensor:
    """Position codes of a training sequence, in the order tokens are fed.

    t2i: text + frame 1; keyframe: text + frames 1..5; interp: text, then frames
    1, 3, 5 (given), then 2, 4 (generated), temporal positions kept.
    """
    text = torch.arange(cfg.text_len)
    frames_codes = [cfg.text_len + f * cfg.tokens_per_frame + torch.arange(cfg.tokens_per_frame)
                    for f in frame_order(kind, cfg.n_frames)]
    return torch.cat([text] + frames_codes)


def frame_order(kind: Kind, n_frames: int = 5) -> list[int]:
    """Frames (0-based) in the order a training sequence of `kind` holds them."""
    if kind == Kind.T2I:
        return [0]
    if kind == Kind.KEYFRAME:
        return list(range(n_frames))
    return [f for f in range(n_frames) if f % 2 == 0] + [f for f in range(n_frames) if f % 2]
