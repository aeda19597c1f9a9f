"""Next-token agreement of reduced-precision packages with their fp32 source, under teacher forcing.

    hiergen agreement --reference models/default out/fp16 out/int8-cpu --prompts 8 --json out/agreement.json

The fp32 package generates each held-out test prompt's 33-frame video (prompt
and seed as `hiergen eval --prompts` takes them) and every call to its three
transformers is taped: the tokens and codes fed, the logits returned. Each
other package then runs the same calls on its own arenas: the same prefix at
every step, whatever it would have sampled. Per stage (t2i, keyframe, the
three interpolation rounds): the share of positions whose top-1 token equals
fp32's, and the largest absolute logit difference. A guided stage (the plan's
guidance above 1) runs a conditional and a text-free row per video: both
count, each against fp32's own row.
"""
from __future__ import annotations

import warnings

from hiergen.calibration.capture import STAGES, Tape, TapeRecorder, replay


def agreement(reference: str, packages: list[str], n_prompts: int = 8, frames: int = 33, split: str = "test") -> dict:
    """{package: {"precision", "stages": {stage: {"positions", "top1_agree", "top1", "max_logit_diff"}}}}"""
    from hiergen.runtime.pipeline import Pipeline
    from hiergen.synth import caption_for, seeds_for_split

    ref = Pipeline.load(reference, backend="cpu")
    others = {p: Pipeline.load(p, backend="cpu") for p in packages}
    seeds = seeds_for_split(split, n_prompts)
    totals: dict[str, dict[str, dict]] = {p: {} for p in packages}
    for seed in seeds:
        tapes = {k: Tape(k) for k in ref.models}
        inner = ref.models
        ref.models = {k: TapeRecorder(m, tapes[k]) for k, m in inner.items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref.generate(str(caption_for(seed)), frames=frames, seed=seed)
        ref.models = inner
        for p, pipe in others.items():
            for k, tape in tapes.items():
                for stage, s in replay(tape, pipe.models[k]).items():
                    t = totals[p].setdefault(stage, {"positions": 0, "top1_agree": 0, "max_logit_diff": 0.0})
                    t["positions"] += s["positions"]
                    t["top1_agree"] += s["top1_agree"]
                    t["max_logit_diff"] = max(t["max_logit_diff"], s["max_logit_diff"])
    order = [s for k in ref.models for s in STAGES[k]]
    out = {}
    for p, stages in totals.items():
        st = {s: {**stages[s], "top1": stages[s]["top1_agree"] / stages[s]["positions"]} for s in order if s in stages}
        allpos = sum(s["positions"] for s in st.values())
        out[p] = {"precision": others[p].manifest.precision, "stages": st,
                  "top1_all": sum(s["top1_agree"] for s in st.values()) / allpos,
                  "max_logit_diff": max(s["max_logit_diff"] for s in st.values())}
    return {"reference": reference, "prompts": n_prompts, "split": split, "frames": frames, "packages": out}


def markdown(result: dict) -> str:
    from hiergen.synth import prompts_word
    stages = list(next(iter(result["packages"].values()))["stages"])
    lines = [f"Next-token agreement with {result['reference']} (fp32) under teacher forcing: "
             f"{result['prompts']} {prompts_word(result['split'])} prompts, "
             f"{result['frames']} frames; top-1 agreement % "
             "(max |logit difference|)", "",
             "| package | precision | " + " | ".join(stages) + " | all |",
             "|---|---|" + "---:|" * (len(stages) + 1)]
    for p, r in result["packages"].items():
        cells = [f"{100 * r['stages'][s]['top1']:.1f} ({r['stages'][s]['max_logit_diff']:.3f})" for s in stages]
        lines.append(f"| {p} | {r['precision']} | " + " | ".join(cells) + f" | {100 * r['top1_all']:.1f} |")
    return "\n".join(lines) + "\n"
