"""KV-cache arenas: one per generation stage, preallocated, bound through IO binding to the graph decode steps
run (the package's *_decode graph, the step graph at new_tokens = 1; the step graph itself for older packages).

Both arenas hold every past tensor of a step graph (the manifest's kv_cache
pairs), bind them, and after each step copy the step's new keys/values into
them at the step's slots. No tensor grows and a decode step allocates nothing.

Two kinds of past tensor (export/fragments/step.py):
- sequence tensors (attention-plus): one slot per position code;
- frame-local tensors (attention-base, kv_cache.frame_local): one block per
  frame, block_len = text_len + tokens_per_frame slots, the text's keys/values
  (written into every block) followed by the frame's. A step is handed the
  block of the frame it writes: when a decode step enters a new frame, the
  arena rebinds those inputs (one pointer per tensor, no copy).
The interpolation model's decode graph reads its attention-plus tensors as
Swin-window blocks (kv_cache.window_local, hiergen/windows.py): the arena keeps
one block per window besides the sequence tensor (which the step graph reads)
and binds the block of the window a decode step is in, per layer parity. A
prefill's keys/values go into both; a decode step's only into the window
blocks, and the host arena copies them into the sequence tensors when a
multi-token step (or host_kv) next reads those: one write less per step.

HostArena (CPU execution provider): numpy blocks; ONNX Runtime reads the
    bound host memory in place, and the new keys/values land in bound host
    buffers that numpy copies into the blocks.
DeviceArena (CUDA / TensorRT execution providers): OrtValues in device memory
    that never leave the device; a decode step's new keys/values are bound
    device outputs, copied into the arena by one strided device-to-device copy
    per past tensor (cudaMemcpy2D). Only tokens and codes go up (bound per
    step: a bound host input is copied at bind time) and only logits come back.

The device path is written against ONNX Runtime's documented Python IO-binding
API and the CUDA runtime's cudaMemcpy2D, and its logic is tested on the CPU
with host memory and a host copier (tests/test_arena.py); it has not been run
on a GPU (docs/runtime.md).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import onnxruntime as ort

from hiergen.runtime.manifest import Manifest
from hiergen.windows import layouts

HOST_TO_DEVICE, DEVICE_TO_DEVICE = 1, 3      # cudaMemcpyKind


class Copier(Protocol):
    def copy2d(self, dst: int, dpitch: int, src: int, spitch: int, width: int, height: int, kind: int) -> None: ...


class HostCopier:
    """copy2d over host memory: the device arena's logic, runnable without a GPU."""

    def copy2d(self, dst, dpitch, src, spitch, width, height, kind):
        for r in range(height):
            ctypes.memmove(dst + r * dpitch, src + r * spitch, width)


class CudaCopier:
    """cudaMemcpy2D from the CUDA runtime that onnxruntime-gpu loads (its pip wheel or the system's)."""

    def __init__(self):
        self.lib = _load_cudart()
        f = self.lib.cudaMemcpy2D
        f.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                      ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int]
        f.restype = ctypes.c_int

    def copy2d(self, dst, dpitch, src, spitch, width, height, kind):
        err = self.lib.cudaMemcpy2D(dst, dpitch, src, spitch, width, height, kind)
        if err:
            raise RuntimeError(f"cudaMemcpy2D failed with CUDA error {err}")


@functools.lru_cache(maxsize=1)
def cuda_copier() -> CudaCopier:
    """One CudaCopier per process: the CUDA runtime is loaded once, not per generation stage."""
    return CudaCopier()


def _load_cudart() -> ctypes.CDLL:
    names = [ctypes.util.find_library("cudart"), "libcudart.so.12", "libcudart.so.13", "libcudart.so"]
    site = os.path.dirname(os.path.dirname(ort.__file__))
    names += sorted(glob.glob(os.path.join(site, "nvidia", "cuda_runtime", "lib", "libcudart.so*")))
    for n in filter(None, names):
        try:
            return ctypes.CDLL(n)
        except OSError:
            continue
    raise RuntimeError("the CUDA runtime (libcudart) was not found: install onnxruntime-gpu with its CUDA "
                       "dependencies (pip install 'hiergen[gpu]') or use --backend cpu")


def _shape(spec_shape: list, batch: int) -> list[int]:
    """A manifest shape for one decode step: `batch` sequences, one new token."""
    return [batch if d == "batch" else 1 if d == "new_tokens" else d for d in spec_shape]


def _runs(slots: np.ndarray, src: np.ndarray | None = None) -> list[tuple[int, int, int]]:
    """(first slot, first source index, length) of each run of consecutive slots whose source
    indices (default: their index in slots) are consecutive too."""
    src = np.arange(len(slots)) if src is None else src
    out, start = [], 0
    for i in range(1, len(slots) + 1):
        if i == len(slots) or slots[i] != slots[i - 1] + 1 or src[i] != src[i - 1] + 1:
            out.append((int(slots[start]), int(src[start]), i - start))
            start = i
    return out


@dataclass(frozen=True)
class CacheSpec:
    """What an arena needs to know of one transformer's graphs, read from the manifest (CacheSpec.of):
    the step graph's cache pairs and past shapes, the decode graph's tensor names and window-local blocks."""
    text_len: int
    grid: int
    n_frames: int
    window: int
    image_vocab: int
    tokens_name: str
    codes_name: str
    logits_name: str
    pairs: tuple[tuple[str, str], ...]             # (past input, new output) per cache tensor
    frame_local: frozenset[str]                    # past inputs holding one frame's block
    window_local: dict[str, int]                   # decode graph: past input -> layer parity of its window block
    past_shapes: dict[str, tuple]                  # step graph's past inputs, with symbolic "batch"
    window_shapes: dict[str, tuple]                # decode graph's window-block inputs
    new_shape: tuple                               # one new key/value output
    dtype: str = "float32"                         # the caches' element type (fp16 packages: "float16")

    @classmethod
    def of(cls, manifest: Manifest, model: str) -> "CacheSpec":
        step = manifest.fragment(model, "step")
        decode = manifest.fragments[step.decode] if step.decode else step
        cfg, kv = manifest.model_config, step.kv_cache
        shapes = {t.name: t.shape for t in step.inputs + step.outputs}
        window_local = dict(decode.kv_cache.window_local)
        return cls(text_len=cfg.text_len, grid=cfg.grid, n_frames=cfg.n_frames, window=cfg.window,
                   image_vocab=cfg.image_vocab, tokens_name=step.inputs[0].name, codes_name=step.inputs[1].name,
                   logits_name=step.outputs[0].name, pairs=kv.pairs, frame_local=frozenset(kv.frame_local),
                   window_local=window_local, past_shapes={p: shapes[p] for p in kv.past_names},
                   window_shapes={t.name: t.shape for t in decode.inputs if t.name in window_local},
                   new_shape=shapes[kv.pairs[0][1]], dtype=step.input(kv.pairs[0][0]).dtype)


class _Layout:
    """Slot bookkeeping shared by both arenas: which pairs are frame-local, and where a code lands."""

    def __init__(self, model, batch: int):
        self.model, self.batch, self.written = model, batch, False
        self.spec = spec = model.cache_spec
        self.L, self.P = spec.text_len, spec.grid * spec.grid
        self.n_blocks = spec.n_frames
        self.local = [i for i, (past, _) in enumerate(spec.pairs) if past in spec.frame_local]
        self.frame = 0                                  # the block bound to the frame-local inputs
        wl = spec.window_local
        self.windowed = {i: wl[past] for i, (past, _) in enumerate(spec.pairs) if past in wl}   # pair -> parity
        # sequence tensors: the plain ones first, then each parity's window-local ones together, so that a
        # parity's new keys/values are one slice of a step's outputs
        self.seq = sorted((i for i in range(len(spec.pairs)) if i not in self.local),
                          key=lambda i: self.windowed.get(i, -1))
        self.n_plain = sum(i not in self.windowed for i in self.seq)
        self.layouts = layouts(self.L, spec.grid, self.n_blocks, spec.window) if self.windowed else ()
        self.window = [0, 0]                            # the block bound per layer parity
        # per parity: (window, block slot) of every code, as lists for a decode step's scalar lookups
        self._place = [tuple(a.tolist() for a in lay.place(np.arange(lay.seq_len))) for lay in self.layouts]
        self.wpairs = [[i for i, p in self.windowed.items() if p == parity] for parity in range(len(self.layouts))]

    def _windows_at(self, code: int) -> list[tuple[int, int]]:
        """Per layer parity (window, block slot) of a decode step (an image token) at `code`; rebinds the
        window-local inputs of a parity whose window is new."""
        out = []
        for parity, (windows, slots) in enumerate(self._place):
            w, slot = windows[code], slots[code]
            if w != self.window[parity]:
                self._bind_window(parity, w)
            out.append((w, slot))
        return out

    def window_placements(self, parity: int, slots: np.ndarray) -> list[tuple[list[int], np.ndarray, np.ndarray]]:
        """Where keys/values at `slots` go in a parity's window blocks: (windows, block slots, indices into
        slots); text slots go to every window."""
        lay = self.layouts[parity]
        window, at = lay.place(slots)
        idx = np.arange(len(slots))
        out = [(list(range(lay.n_windows)), at[window < 0], idx[window < 0])] if (window < 0).any() else []
        for w in np.unique(window[window >= 0]):
            out.append(([int(w)], at[window == w], idx[window == w]))
        return out

    def frame_of(self, codes: np.ndarray) -> int:
        """The one frame the image codes of a step are in (the bound frame for a text-only step)."""
        image = codes[codes >= self.L]
        if not len(image):
            return self.frame
        frames = np.unique((image - self.L) // self.P)
        if len(frames) > 1:
            raise ValueError(f"a step through the step graph writes one frame; got frames {frames.tolist()} "
                             "(split the step by frame, or use the prefill graph on an empty cache)")
        return int(frames[0])

    def _decode_at(self, code: int) -> tuple[int, int]:
        """Where a decode step (an image token: the decode graphs take no text) at `code` writes in the
        frame-local blocks: (its frame's block, block slot). Rebinds the inputs when the frame is new."""
        f = (code - self.L) // self.P
        if f != self.frame:
            self._bind_frame(f)
        return f, self.L + (code - self.L) % self.P

    def placements(self, slots: np.ndarray) -> list[tuple[list[int], np.ndarray, np.ndarray]]:
        """Where keys/values at `slots` go in the frame-local blocks: (blocks, block slots, indices into slots).
        Text slots go to every block, an image slot to its frame's block."""
        slots = np.asarray(slots)
        idx = np.arange(len(slots))
        text = slots < self.L
        out = [(list(range(self.n_blocks)), slots[text], idx[text])] if text.any() else []
        frames = (slots - self.L) // self.P
        for f in np.unique(frames[~text]):
            sel = ~text & (frames == f)
            out.append(([int(f)], self.L + (slots[sel] - self.L) % self.P, idx[sel]))
        return out

    def full(self, seq: list[np.ndarray], blocks: list[list[np.ndarray]]) -> np.ndarray:
        """(n_pairs, B, H, seq_len, hd): every pair in sequence layout (frame-local blocks reassembled)."""
        out = [None] * len(self.spec.pairs)
        for i, arr in zip(self.seq, seq):
            out[i] = arr
        for i, per_frame in zip(self.local, blocks):
            text = per_frame[0][:, :, :self.L]
            out[i] = np.concatenate([text] + [b[:, :, self.L:] for b in per_frame], axis=2)
        return np.stack(out)


class HostArena(_Layout):
    """Arena in host memory (CPU execution provider): sequence tensors (n_seq, *past shape) and
    frame-local blocks (n_local, n_frames, *block shape), each one contiguous numpy array, bound to
    `sess`, the decode graph's session the model picked for the batch (OrtStepModel.decode_session)."""

    def __init__(self, model, batch: int, sess: ort.InferenceSession | None = None):
        super().__init__(model, batch)
        spec = self.spec
        self.sess = sess or model.decode_sess             # the decode graph's session these buffers are bound to
        shapes = [_shape(spec.past_shapes[past], batch) for past, _ in spec.pairs]
        new = _shape(spec.new_shape, batch)
        dt = np.dtype(spec.dtype)                       # the manifest's: float32, or float16 for fp16 packages
        self.kv = np.zeros((len(self.seq), *(shapes[self.seq[0]] if self.seq else new)), dt)  # may be empty
        self.blocks = np.zeros((len(self.local), self.n_blocks, *(shapes[self.local[0]] if self.local else new)), dt)
        self.new_seq = np.zeros((len(self.seq), *new), dt)
        self.new_local = np.zeros((len(self.local), *new), dt)
        self.logits = np.zeros((batch, 1, spec.image_vocab), np.float32)
        self.tokens = np.zeros((batch, 1), np.int64)
        self.codes = np.zeros((batch, 1), np.int64)
        io = self.sess.io_binding()
        for arr, name in ((self.tokens, spec.tokens_name), (self.codes, spec.codes_name)):
            _bind_host(io.bind_input, name, arr)
        _bind_host(io.bind_output, spec.logits_name, self.logits)
        for j, i in enumerate(self.seq):
            if i not in self.windowed:
                _bind_host(io.bind_input, spec.pairs[i][0], self.kv[j])
            _bind_host(io.bind_output, spec.pairs[i][1], self.new_seq[j])
        for j, i in enumerate(self.local):
            _bind_host(io.bind_output, spec.pairs[i][1], self.new_local[j])
        # window blocks per layer parity, one array for its pairs: (n_pairs, n_windows, B, H, block_len, hd)
        self.wblocks = [np.zeros((len(pairs), lay.n_windows,
                                  *_shape(spec.window_shapes[spec.pairs[pairs[0]][0]], batch)), dt)
                        for lay, pairs in zip(self.layouts, self.wpairs)]
        # each parity's window-local pairs as a slice of the sequence tensors (contiguous: see _Layout)
        starts = [self.seq.index(pairs[0]) for pairs in self.wpairs]
        self.wseq = [slice(j, j + len(pairs)) for j, pairs in zip(starts, self.wpairs)]
        assert all(self.seq[sl] == pairs for sl, pairs in zip(self.wseq, self.wpairs))
        self._unsynced: list[int] = []                  # decoded codes whose window-local keys/values are not in kv
        # OrtValues over each block (sharing its memory): rebinding one costs a sixth of a bind_input
        self.wvalues = [[[ort.OrtValue.ortvalue_from_numpy(b[k, w]) for w in range(b.shape[1])]
                         for k in range(b.shape[0])] for b in self.wblocks]
        self.io = io
        self._bind_frame(0)
        for parity in range(len(self.layouts)):
            self._bind_window(parity, 0)

    def _bind_frame(self, f: int) -> None:
        for j, i in enumerate(self.local):
            _bind_host(self.io.bind_input, self.spec.pairs[i][0], self.blocks[j, f])
        self.frame = f

    def _bind_window(self, parity: int, w: int) -> None:
        for k, i in enumerate(self.wpairs[parity]):
            self.io.bind_ortvalue_input(self.spec.pairs[i][0], self.wvalues[parity][k][w])
        self.window[parity] = w

    def decode(self, tokens: np.ndarray, codes: np.ndarray) -> np.ndarray:
        code = int(codes[0, 0])
        f, slot = self._decode_at(code)
        wins = self._windows_at(code) if self.windowed else ()
        self.tokens[...] = tokens
        self.codes[...] = codes
        self.sess.run_with_iobinding(self.io)
        self.written = True
        if self.n_plain:
            self.kv[:self.n_plain, :, :, code] = self.new_seq[:self.n_plain, :, :, 0]
        if self.windowed:               # kept in the window blocks only; kv catches up when a step reads it
            self._unsynced.append(code)
        self.blocks[:, f, :, :, slot] = self.new_local[:, :, :, 0]
        for parity, (w, at) in enumerate(wins):
            self.wblocks[parity][:, w, :, :, at] = self.new_seq[self.wseq[parity], :, :, 0]   # (n_pairs, B, H, hd)
        return self.logits

    def _sync(self) -> None:
        """Copy the keys/values that decode steps left in the window blocks only into the sequence
        tensors (what the step graph reads): a decode step skips that write, a multi-token step needs it."""
        if not self._unsynced:
            return
        codes = np.array(self._unsynced)
        self._unsynced.clear()
        for parity, lay in enumerate(self.layouts):
            w, at = lay.place(codes)
            src = self.wblocks[parity][:, w, :, :, at]                      # decoded codes: image tokens
            self.kv[self.wseq[parity], :, :, codes] = src.transpose(1, 2, 3, 0, 4)    # -> (pairs, B, H, n, hd)

    def step_inputs(self, tokens: np.ndarray, codes: np.ndarray) -> dict[str, np.ndarray]:
        """The step graph's inputs for new tokens at `codes` (image tokens in one frame), arena views."""
        self._sync()
        f = self.frame_of(codes[0])
        past = {self.spec.pairs[i][0]: self.kv[j] for j, i in enumerate(self.seq)}
        past.update({self.spec.pairs[i][0]: self.blocks[j, f] for j, i in enumerate(self.local)})
        return {self.spec.tokens_name: tokens, self.spec.codes_name: codes, **past}

    def run_past(self, sess, tokens: np.ndarray, codes: np.ndarray, names: list[str]) -> list[np.ndarray]:
        """A multi-token step over the arena (a prefill into a non-empty cache); its image tokens in one frame."""
        return sess.run(names, self.step_inputs(tokens, codes))

    def decode_inputs(self, tokens: np.ndarray, codes: np.ndarray) -> dict[str, np.ndarray]:
        """Copies of what the decode graph reads for a decode step at codes[0, 0], before it runs (the
        calibration builds capture them): tokens, codes and the bound frame / window blocks."""
        code = int(codes[0, 0])
        f, _ = self._decode_at(code)
        wins = self._windows_at(code) if self.windowed else ()
        pairs = self.spec.pairs
        out = {self.spec.tokens_name: np.array(tokens, np.int64), self.spec.codes_name: np.array(codes, np.int64)}
        out.update({pairs[i][0]: self.kv[j].copy() for j, i in enumerate(self.seq) if i not in self.windowed})
        out.update({pairs[i][0]: self.blocks[j, f].copy() for j, i in enumerate(self.local)})
        for parity, (w, _) in enumerate(wins):
            out.update({pairs[i][0]: self.wblocks[parity][k, w].copy() for k, i in enumerate(self.wpairs[parity])})
        return out

    def store(self, slots: np.ndarray, new: list[np.ndarray]) -> None:
        """Host new keys/values of a prefill (one per pair, T on the slot axis) -> the arena at `slots`."""
        slots = np.asarray(slots)
        runs = _runs(slots)                             # slice copies: a prefill's slots are a few runs
        for j, i in enumerate(self.seq):
            for first, src, n in runs:
                self.kv[j, :, :, first:first + n] = new[i][:, :, src:src + n]
        for frames, at, idx in self.placements(slots):
            for first, src, n in _runs(at, idx):
                for j, i in enumerate(self.local):
                    part = new[i][:, :, src:src + n]
                    for f in frames:
                        self.blocks[j, f, :, :, first:first + n] = part
        for parity, pairs in enumerate(self.wpairs):
            for windows, at, idx in self.window_placements(parity, slots):
                part = np.stack([new[i][:, :, idx] for i in pairs])       # (n_pairs, B, H, n, hd)
                if len(windows) == 1:    # one window's view first: an int and an array index would move axes
                    self.wblocks[parity][:, windows[0]][..., at, :] = part
                else:
                    self.wblocks[parity][..., at, :] = part[:, None]
        self.written = True

    def host_kv(self) -> np.ndarray:
        """Every pair in sequence layout, (n_pairs, B, H, seq_len, hd): for tests and debugging."""
        self._sync()
        return self.full(list(self.kv), [list(b) for b in self.blocks])

    def host_windows(self) -> dict[int, np.ndarray]:
        """The window blocks of the window-local pairs, pair index -> (n_windows, B, H, block_len, hd)."""
        return {i: self.wblocks[p][k].copy() for p, pairs in enumerate(self.wpairs) for k, i in enumerate(pairs)}


class DeviceArena(_Layout):
    """Arena in device memory (CUDA / TensorRT execution providers); see the module docstring."""

    def __init__(self, model, batch: int, device: str = "cuda", device_id: int = 0, copier: Copier | None = None):
        super().__init__(model, batch)
        spec = self.spec
        self.copier = copier or cuda_copier()
        new = _shape(spec.new_shape, batch)
        self.dtype = dt = np.dtype(spec.dtype)                          # the manifest's cache element type
        self._host = []                                                 # on "cpu" the OrtValues wrap these

        def zeros(past: str):
            self._host.append(np.zeros(_shape(spec.past_shapes[past], batch), dt))
            return ort.OrtValue.ortvalue_from_numpy(self._host[-1], device, device_id)
        self.kv = [zeros(spec.pairs[i][0]) for i in self.seq]
        self.blocks = [[zeros(spec.pairs[i][0]) for _ in range(self.n_blocks)] for i in self.local]
        self.new = [ort.OrtValue.ortvalue_from_shape_and_type(new, dt, device, device_id)
                    for _ in spec.pairs]
        self.logits = np.zeros((batch, 1, spec.image_vocab), np.float32)
        io = model.decode_sess.io_binding()
        _bind_host(io.bind_output, spec.logits_name, self.logits)          # logits come back to the host
        for j, i in enumerate(self.seq):
            if i not in self.windowed:
                io.bind_ortvalue_input(spec.pairs[i][0], self.kv[j])
        for (_, new_name), nv in zip(spec.pairs, self.new):
            io.bind_ortvalue_output(new_name, nv)
        self.wblocks = {}                                   # window-local pairs: one block per window
        for i, p in self.windowed.items():
            shape = _shape(spec.window_shapes[spec.pairs[i][0]], batch)
            self._host += [np.zeros(shape, dt) for _ in range(self.layouts[p].n_windows)]
            self.wblocks[i] = [ort.OrtValue.ortvalue_from_numpy(h, device, device_id)
                               for h in self._host[-self.layouts[p].n_windows:]]
        self.io = io
        self._bind_frame(0)
        for parity in range(len(self.layouts)):
            self._bind_window(parity, 0)
        self.rows = new[0] * new[1]                         # B * n_head: one row per (sequence, head)
        self.item = new[3] * dt.itemsize                    # bytes of one slot (head_dim elements)
        self.n_slots = {i: spec.past_shapes[spec.pairs[i][0]][2] for i in range(len(spec.pairs))}
        self.window_slots = self.layouts[0].block_len if self.layouts else 0

    def _bind_frame(self, f: int) -> None:
        for j, i in enumerate(self.local):
            self.io.bind_ortvalue_input(self.spec.pairs[i][0], self.blocks[j][f])
        self.frame = f

    def _bind_window(self, parity: int, w: int) -> None:
        for i, p in self.windowed.items():
            if p == parity:
                self.io.bind_ortvalue_input(self.spec.pairs[i][0], self.wblocks[i][w])
        self.window[parity] = w

    def _copy(self, i: int, dst, slot: int, src: int, src_slot: int, src_slots: int, n: int, kind: int,
              dst_slots: int | None = None) -> None:
        """n consecutive slots of pair i: src (src_slots per row, from src_slot) -> dst (dst_slots per row,
        default pair i's past tensor's, from slot)."""
        self.copier.copy2d(dst.data_ptr() + slot * self.item, (dst_slots or self.n_slots[i]) * self.item,
                           src + src_slot * self.item, src_slots * self.item, n * self.item, self.rows, kind)

    def decode(self, tokens: np.ndarray, codes: np.ndarray) -> np.ndarray:
        m = self.model
        code = int(codes[0, 0])
        f, slot = self._decode_at(code)
        wins = self._windows_at(code) if self.windowed else ()
        self.io.bind_cpu_input(self.spec.tokens_name, np.ascontiguousarray(tokens))   # copied up at bind time
        self.io.bind_cpu_input(self.spec.codes_name, np.ascontiguousarray(codes))
        m.decode_sess.run_with_iobinding(self.io)
        self.io.synchronize_outputs()
        self.written = True
        for j, i in enumerate(self.seq):
            self._copy(i, self.kv[j], code, self.new[i].data_ptr(), 0, 1, 1, DEVICE_TO_DEVICE)
        for j, i in enumerate(self.local):
            self._copy(i, self.blocks[j][f], slot, self.new[i].data_ptr(), 0, 1, 1, DEVICE_TO_DEVICE)
        for i, parity in self.windowed.items():
            w, at = wins[parity]
            self._copy(i, self.wblocks[i][w], at, self.new[i].data_ptr(), 0, 1, 1, DEVICE_TO_DEVICE, self.window_slots)
        return self.logits

    def run_past(self, sess, tokens: np.ndarray, codes: np.ndarray, names: list[str]) -> list[np.ndarray]:
        """A multi-token step over the arena (a prefill into a non-empty cache): outputs come back to the host."""
        f = self.frame_of(codes[0])
        io = sess.io_binding()
        io.bind_cpu_input(self.spec.tokens_name, np.ascontiguousarray(tokens))
        io.bind_cpu_input(self.spec.codes_name, np.ascontiguousarray(codes))
        for j, i in enumerate(self.seq):
            io.bind_ortvalue_input(self.spec.pairs[i][0], self.kv[j])
        for j, i in enumerate(self.local):
            io.bind_ortvalue_input(self.spec.pairs[i][0], self.blocks[j][f])
        for n in names:
            io.bind_output(n, "cpu")
        sess.run_with_iobinding(io)
        return io.copy_outputs_to_cpu()

    def store(self, slots: np.ndarray, new: list[np.ndarray]) -> None:
        """Host new keys/values of a prefill (one per pair, T on the slot axis) -> device arena at `slots`."""
        slots = np.asarray(slots)
        T = len(slots)
        for j, i in enumerate(self.seq):
            arr = np.ascontiguousarray(new[i], self.dtype)
            for first, at, n in _runs(slots):
                self._copy(i, self.kv[j], first, arr.ctypes.data, at, T, n, HOST_TO_DEVICE)
        for j, i in enumerate(self.local):
            arr = np.ascontiguousarray(new[i], self.dtype)
            for frames, at, idx in self.placements(slots):
                for first, src, n in _runs(at, idx):
                    for g in frames:
                        self._copy(i, self.blocks[j][g], first, arr.ctypes.data, src, T, n, HOST_TO_DEVICE)
        for i, parity in self.windowed.items():
            arr = np.ascontiguousarray(new[i], self.dtype)
            for windows, at, idx in self.window_placements(parity, slots):
                for first, src, n in _runs(at, idx):
                    for w in windows:
                        self._copy(i, self.wblocks[i][w], first, arr.ctypes.data, src, T, n, HOST_TO_DEVICE,
                                   self.window_slots)
        self.written = True

    def host_windows(self) -> dict[int, np.ndarray]:
        """The window blocks copied to the host, pair index -> (n_windows, B, H, block_len, hd)."""
        return {i: np.stack([b.numpy() for b in blocks]) for i, blocks in self.wblocks.items()}

    def host_kv(self) -> np.ndarray:
        """The arena copied to the host, every pair in sequence layout (n_pairs, B, H, seq_len, hd)."""
        return self.full([kv.numpy() for kv in self.kv], [[b.numpy() for b in per] for per in self.blocks])


def _bind_host(bind, name: str, arr: np.ndarray) -> None:
    assert arr.flags.c_contiguous, name
    bind(name, "cpu", 0, arr.dtype, list(arr.shape), arr.ctypes.data)
