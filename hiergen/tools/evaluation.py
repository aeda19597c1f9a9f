"""`hiergen eval` on clips: the analyzer against the captions, with the shuffled-caption floor.

The JSON report has the analyzer's keys at the top level (n, accuracy,
one_object_rate, by_frame, ...) for the clips as captioned, plus
`shuffled_captions` (the same keys for the same clips under a permutation of
the captions: the chance floor) and `source` (what was evaluated).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterator

from hiergen.analyze import EvalReport, analyze_clip, evaluate, format_table, shuffled_captions
from hiergen.clip import Clip
from hiergen.data import DatasetError, open_dataset
from hiergen.errors import HiergenError
from hiergen.fileio import write_json, write_text
from hiergen.progress import progress
from hiergen.synth import caption_for, check_size, render, seeds_for_split


class EvalError(HiergenError, ValueError):
    """Bad eval input; the message says what to do."""


def synth_test_clips(n: int, size: int = 64, textured: bool = False) -> Iterator[Clip]:
    for seed in seeds_for_split("test", n):
        yield render(caption_for(seed), seed=seed, size=size, textured=textured)


def dataset_clips(path: str, split: str = "all") -> Iterator[Clip]:
    ds = open_dataset(path)
    for _, clip in ds.iter_clips(None if split == "all" else split):
        yield clip


def roundtrip_mp4(clip: Clip, folder: Path) -> Clip:
    """The clip after writing it as MP4 and reading it back (lossy codec)."""
    from hiergen.video import read_video, write_mp4
    path = write_mp4(clip.frames, folder / "roundtrip.mp4", fps=clip.fps)
    frames, _ = read_video(path)
    return Clip(frames=frames, fps=clip.fps, caption=clip.caption)


def reconstruct(clips: list[Clip], vqvae: str) -> list[Clip]:
    """Clips after encoding and decoding every frame with a VQ-VAE checkpoint (imports torch)."""
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        raise EvalError("--vqvae needs PyTorch: pip install 'hiergen[train]'")
    from hiergen.training.checkpoint import CheckpointError
    from hiergen.training.vqvae import load_vqvae
    try:
        vq = load_vqvae(vqvae)
    except CheckpointError as e:
        raise EvalError(str(e)) from None
    import torch
    out = []
    with torch.no_grad():
        for c in progress(clips, "reconstruct", unit="clip"):
            frames = vq.decode_uint8(vq.encode(torch.from_numpy(c.frames))).numpy()
            out.append(Clip(frames=frames, fps=c.fps, caption=c.caption))
    return out


def score(clips: list[Clip]) -> dict[str, EvalReport]:
    """Ground truth and shuffled-caption reports, analysing each clip once."""
    reports = [analyze_clip(c) for c in progress(clips, "analyze", unit="clip")]
    caps = [c.caption for c in clips]
    return {"captions": evaluate(clips, reports=reports),
            "shuffled captions": evaluate(clips, shuffled_captions(caps), reports=reports)}


def run_clip_eval(clips_dir: str | None, n_synth: int | None, split: str = "all", mp4_roundtrip: bool = False,
                  size: int = 64, textured: bool = False, json_path: str | None = None,
                  plot_path: str | None = None, markdown_path: str | None = None, vqvae: str | None = None) -> int:
    from hiergen.video import VideoError, check_writable
    for out in (json_path, plot_path, markdown_path):
        if out:
            try:
                check_writable(out)
            except VideoError as e:
                raise EvalError(str(e)) from None
    mp4 = mp4_roundtrip
    if n_synth is not None:
        if n_synth < 1:
            raise EvalError(f"--synth needs a positive number of clips, got {n_synth}")
        try:
            check_size(size)
        except ValueError as e:
            raise EvalError(str(e)) from None
        source = {"synth": n_synth, "split": "test", "size": size, "textured": textured}
        clips_iter = synth_test_clips(n_synth, size, textured)
    else:
        try:
            clips_iter = dataset_clips(clips_dir, split)
            source = {"clips": str(clips_dir), "split": split}
            clips = list(clips_iter)
        except DatasetError as e:
            raise EvalError(str(e)) from None
        if not clips:
            raise EvalError(f"{clips_dir} has no clips in split {split!r}; try --split all")
        clips_iter = iter(clips)
    source["mp4_roundtrip"] = mp4
    if mp4:
        with tempfile.TemporaryDirectory() as tmp:
            clips = [roundtrip_mp4(c, Path(tmp)) for c in clips_iter]
    else:
        clips = list(clips_iter)

    if vqvae:
        source["vqvae"] = str(vqvae)
        clips = reconstruct(clips, vqvae)
    reports = score(clips)
    main = reports["captions"]
    table = format_table(reports)
    print(table)
    if main.two_phase_motion is not None:
        print(f"\ntwo-phase motions, both phases in order: {100 * main.two_phase_motion:.1f}%")
    if main.held_out is not None:
        held = ", ".join(f"{k} {100 * v:.1f}%" for k, v in main.held_out.items())
        print(f"held-out colour/shape pairs: {held}")
    if json_path:
        write_json(json_path, {**main.to_json(), "shuffled_captions": reports["shuffled captions"].to_json(),
                               "source": source})
        print(f"wrote {json_path}")
    if markdown_path:
        write_text(markdown_path, table + "\n")
        print(f"wrote {markdown_path}")
    if plot_path:
        from hiergen.plots import line_plot
        series = {name: (list(range(1, len(r.by_frame) + 1)), list(r.by_frame)) for name, r in reports.items()}
        xlabel = "frame" if main.by_frame_basis == "index" else "position in clip (33 bins of normalised time)"
        line_plot(series, plot_path, "per-frame accuracy (one object, colour, shape, size)", xlabel,
                  "fraction correct", ylim=(0.0, 1.0))
        print(f"wrote {plot_path}")
    return 0
