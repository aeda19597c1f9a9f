"""The model package's manifest as typed, frozen dataclasses: export writes it, every reader reads it.

    m = Manifest.from_dict(json.loads((pkg / "manifest.json").read_text()))
    step = m.fragment("keyframe", "step")          # FragmentSpec
    step.kv_cache.pairs, step.profiles["max"]["tokens"], m.plan.top_k

Fragment names and roles are defined here once (`fragment_name`); the C
library's documentation, the precision builds and `hiergen check` read the
same structure. `to_dict()` gives back exactly the JSON it was read from
(tests round-trip the shipped package). Torch-free.

Layout (format "hiergen-package"):
    format, format_version, opset, source_sha256
    model_config          the transformer's ModelConfig
    vq_config             the VQ-VAE's config (its fields as written by export)
    vocab, frame_rates    the text tokenizer's words and the rate tokens
    plan                  the generation plan (runtime/plan.py)
    weights               the shared weights file: name, SHA-256, bytes
    fragments             name -> FragmentSpec: file, inputs/outputs (name, dtype, shape with symbolic
                          axes), min/opt/max profiles, precision, weight and read bytes, SHA-256,
                          and for transformer graphs the KV-cache pairs and the step's prefill/decode graphs
    quantization          only in a package `hiergen quantize` wrote (QuantizationSpec): its precision, the
                          source package's SHA-256, the method, what stayed float, and the calibration set
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from hiergen.config import ModelConfig
from hiergen.errors import HiergenError
from hiergen.runtime.plan import Plan

MODELS = ("t2i", "keyframe", "interp")
CODEC_ROLES = ("encoder", "decoder")            # the VQ-VAE's fragments
MODEL_ROLES = ("step", "prefill", "decode")     # each transformer's: new tokens through the caches, a whole
                                                # prefix without caches, one image token through the caches
PROFILE_LEVELS = ("min", "opt", "max")


class PrecisionError(HiergenError, ValueError):
    """A precision this hiergen cannot build, or a package that cannot be built at it."""


class Precision(str, Enum):
    """The one precision enum: a fragment's precision in the manifest, and what `hiergen quantize` and
    `hiergen build-engine` make. The runtime learns a package's precision from here, never from a name."""
    FP32 = "fp32"            # the exported reference
    FP16 = "fp16"            # fp16 weights, activations and KV caches; LayerNorm, softmax and the logits in fp32
    INT8_CPU = "int8-cpu"    # the fastest int8 form on ONNX Runtime's CPU provider (calibration/quantize.py)
    INT8_QDQ = "int8-qdq"    # symmetric int8 Q/DQ (zero points 0): TensorRT's explicit quantisation

    @classmethod
    def parse(cls, name: str) -> "Precision":
        """Precision.parse("int8-cpu") -> Precision.INT8_CPU; an unknown name raises PrecisionError."""
        try:
            return cls(name)
        except ValueError:
            built = ", ".join(p.value for p in cls if p is not cls.FP32)
            raise PrecisionError(f"unknown precision {name!r}: choose one of {built}") from None

    @property
    def int8(self) -> bool:
        return self in (Precision.INT8_CPU, Precision.INT8_QDQ)


PRECISIONS = tuple(p.value for p in Precision)


def fragment_name(model: str, role: str) -> str:
    """The one naming rule: "vqvae_encoder", "vqvae_decoder", "<model>_<role>"."""
    if model == "vqvae" and role in CODEC_ROLES or model in MODELS and role in MODEL_ROLES:
        return f"{model}_{role}"
    raise ValueError(f"no fragment for model {model!r} and role {role!r}")


FRAGMENTS = tuple([fragment_name("vqvae", r) for r in CODEC_ROLES]
                  + [fragment_name(m, r) for r in MODEL_ROLES for m in MODELS])


def _split_name(name: str) -> tuple[str, str]:
    model, _, role = name.rpartition("_")
    fragment_name(model, role)
    return model, role


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str                          # "uint8" | "int64" | "float32" | "float16"
    shape: tuple[int | str, ...]        # ints are fixed, strings are symbolic axes ("batch", "new_tokens")

    @classmethod
    def from_dict(cls, d: dict) -> "TensorSpec":
        return cls(d["name"], d["dtype"], tuple(d["shape"]))

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class KVCacheSpec:
    """How a transformer graph's caches work: each (past input, new output) pair is one cache tensor the
    runtime keeps in its arena (batch, heads, slots, head_dim), writing the new output at the step's slots
    along slot_axis. frame_local: past inputs holding one frame's block (text slots, then the frame's);
    window_local: past input -> layer parity, inputs holding one Swin window's block (hiergen/windows.py)."""
    pairs: tuple[tuple[str, str], ...]
    slot_axis: int = 2
    frame_local: tuple[str, ...] = ()
    window_local: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_dict(cls, d: dict) -> "KVCacheSpec":
        return cls(tuple((p, n) for p, n in d["pairs"]), int(d["slot_axis"]), tuple(d.get("frame_local", ())),
                   tuple((k, int(v)) for k, v in d.get("window_local", {}).items()))

    def to_dict(self) -> dict:
        return {"pairs": [list(p) for p in self.pairs], "slot_axis": self.slot_axis,
                "frame_local": list(self.frame_local), "window_local": dict(self.window_local)}

    @property
    def past_names(self) -> list[str]:
        return [p for p, _ in self.pairs]

    @property
    def new_names(self) -> list[str]:
        return [n for _, n in self.pairs]


@dataclass(frozen=True)
class FragmentSpec:
    name: str
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    profiles: dict[str, dict[str, tuple[int, ...]]]     # level -> input name -> shape
    precision: str = "fp32"
    weight_bytes: int = 0                 # every initializer of the graph
    read_bytes: dict[str, int] = field(default_factory=dict)   # {"fixed", "per_sequence"}: what one run reads
    sha256: str = ""
    kv_cache: KVCacheSpec | None = None
    prefill: str | None = None            # a step graph's prefill and decode graphs
    decode: str | None = None

    @property
    def model(self) -> str:
        return _split_name(self.name)[0]

    @property
    def role(self) -> str:
        return _split_name(self.name)[1]

    def input(self, name: str) -> TensorSpec:
        return next(t for t in self.inputs if t.name == name)

    @classmethod
    def from_dict(cls, name: str, d: dict) -> "FragmentSpec":
        if d.get("precision", "fp32") not in PRECISIONS:
            raise ValueError(f"fragment {name} has precision {d['precision']!r}; this hiergen reads "
                             f"{', '.join(PRECISIONS)}")
        return cls(name=name, file=d["file"], inputs=tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
                   outputs=tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
                   profiles={lv: {k: tuple(v) for k, v in d["profiles"][lv].items()} for lv in d["profiles"]},
                   precision=d.get("precision", "fp32"), weight_bytes=int(d.get("weight_bytes", 0)),
                   read_bytes=dict(d.get("read_bytes", {})), sha256=d.get("sha256", ""),
                   kv_cache=KVCacheSpec.from_dict(d["kv_cache"]) if "kv_cache" in d else None,
                   prefill=d.get("prefill"), decode=d.get("decode"))

    def to_dict(self) -> dict:
        d = {"file": self.file, "inputs": [t.to_dict() for t in self.inputs],
             "outputs": [t.to_dict() for t in self.outputs],
             "profiles": {lv: {k: list(v) for k, v in p.items()} for lv, p in self.profiles.items()}}
        if self.kv_cache is not None:
            d["kv_cache"] = self.kv_cache.to_dict()
        d.update({"precision": self.precision, "weight_bytes": self.weight_bytes, "read_bytes": dict(self.read_bytes),
                  "sha256": self.sha256})
        for k in ("prefill", "decode"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d


@dataclass(frozen=True)
class WeightsSpec:
    file: str
    sha256: str
    bytes: int
    bytes_referenced: int

    @classmethod
    def from_dict(cls, d: dict) -> "WeightsSpec":
        return cls(d["file"], d["sha256"], int(d["bytes"]), int(d["bytes_referenced"]))

    def to_dict(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "bytes": self.bytes, "bytes_referenced": self.bytes_referenced}


@dataclass(frozen=True)
class CalibrationSpec:
    """The prompts whose generation gave the activations a quantised package was calibrated on."""
    split: str                            # the synthetic split the captions come from: always "train"
    seed: int                             # sampling seed of the first prompt (prompt i: seed + i)
    prompts: tuple[str, ...]
    samples: dict[str, int]               # fragment -> input sets captured

    @classmethod
    def from_dict(cls, d: dict) -> "CalibrationSpec":
        return cls(d["split"], int(d["seed"]), tuple(d["prompts"]), {k: int(v) for k, v in d["samples"].items()})

    def to_dict(self) -> dict:
        return {"split": self.split, "seed": self.seed, "prompts": list(self.prompts), "samples": dict(self.samples)}


@dataclass(frozen=True)
class QuantizationSpec:
    """How a reduced-precision package was made from an fp32 one (`hiergen quantize`)."""
    precision: str                        # PRECISIONS, not "fp32"
    source_package_sha256: str            # SHA-256 of the source package's manifest.json (which hashes every file)
    method: str                           # e.g. "static QDQ, uint8 asymmetric activations, int8 per-channel weights"
    float_ops: tuple[str, ...]            # op types left in float32 on purpose
    calibration: CalibrationSpec | None   # None where the method needs none (fp16)
    tables: dict[str, dict] = field(default_factory=dict)   # fragment -> {"file", "sha256"}: TensorRT EP
                                                            # calibration tables (int8-qdq)

    @classmethod
    def from_dict(cls, d: dict) -> "QuantizationSpec":
        cal = d.get("calibration")
        return cls(d["precision"], d["source_package_sha256"], d["method"], tuple(d["float_ops"]),
                   CalibrationSpec.from_dict(cal) if cal else None, dict(d.get("tables", {})))

    def to_dict(self) -> dict:
        return {"precision": self.precision, "source_package_sha256": self.source_package_sha256,
                "method": self.method, "float_ops": list(self.float_ops),
                "calibration": self.calibration.to_dict() if self.calibration else None, "tables": dict(self.tables)}


@dataclass(frozen=True)
class Manifest:
    format: str
    format_version: int
    model_config: ModelConfig
    vq_config: dict
    vocab: tuple[str, ...]
    plan: Plan
    source_sha256: str
    opset: int
    frame_rates: tuple[int, ...]
    weights: WeightsSpec
    fragments: dict[str, FragmentSpec]
    quantization: QuantizationSpec | None = None      # None: an fp32 package as export writes it

    @property
    def precision(self) -> str:
        """The package's precision: "fp32" for an exported package, else the one `hiergen quantize` gave it."""
        return self.quantization.precision if self.quantization else "fp32"

    def fragment(self, model: str, role: str) -> FragmentSpec:
        return self.fragments[fragment_name(model, role)]

    @property
    def image_size(self) -> int:
        return int(self.vq_config["image_size"])

    @classmethod
    def from_dict(cls, d: dict) -> "Manifest":
        """Raises KeyError/TypeError/ValueError on a malformed manifest (runtime/package.py says what to do)."""
        return cls(format=d["format"], format_version=d["format_version"],
                   model_config=ModelConfig(**d["model_config"]), vq_config=dict(d["vq_config"]),
                   vocab=tuple(d["vocab"]), plan=Plan.from_dict(d["plan"]), source_sha256=d["source_sha256"],
                   opset=int(d["opset"]), frame_rates=tuple(d["frame_rates"]),
                   weights=WeightsSpec.from_dict(d["weights"]),
                   fragments={n: FragmentSpec.from_dict(n, f) for n, f in d["fragments"].items()},
                   quantization=QuantizationSpec.from_dict(d["quantization"]) if "quantization" in d else None)

    def to_dict(self) -> dict:
        return {"format": self.format, "format_version": self.format_version,
                "model_config": self.model_config.to_dict(), "vq_config": dict(self.vq_config),
                "vocab": list(self.vocab), "plan": self.plan.to_dict(), "source_sha256": self.source_sha256,
                "opset": self.opset, "frame_rates": list(self.frame_rates), "weights": self.weights.to_dict(),
                "fragments": {n: f.to_dict() for n, f in self.fragments.items()},
                **({"quantization": self.quantization.to_dict()} if self.quantization else {})}
