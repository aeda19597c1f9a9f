"""python -m hiergen.tools.chain: the chain cut after each stage, its plan overrides and its error paths."""
import dataclasses

import numpy as np
import pytest

from hiergen.analyze import analyze_clip, score_reports
from hiergen.clip import Clip
from hiergen.errors import UsageError
from hiergen.runtime.pipeline import Pipeline
from hiergen.runtime.plan import Plan
from hiergen.synth import caption_for, render, seeds_for_split
from hiergen.tools import chain


def test_parse_guidance():
    assert chain.parse_guidance([]) == {}
    assert chain.parse_guidance(["t2i=1.5", "keyframe=2"]) == {"t2i": 1.5, "keyframe": 2.0}
    for bad, msg in [("t2i", "STAGE=SCALE"), ("video=2", "STAGE=SCALE"), ("t2i=x", "not a number"),
                     ("interp=0.5", ">= 1")]:
        with pytest.raises(UsageError, match=msg):
            chain.parse_guidance([bad])


def test_plan_with_overrides_only_what_is_given():
    plan = Plan()
    assert chain.plan_with(plan, {}, None) is plan
    p = chain.plan_with(plan, {"t2i": 2.0}, 2)
    assert p.guidance == {**plan.guidance, "t2i": 2.0} and p.top_k == 2
    assert dataclasses.replace(p, guidance=plan.guidance, top_k=plan.top_k) == plan
    assert plan == Plan(), "the package's plan is not changed"


def analysed(pipe, caption, seed, frames, init=None):
    v = pipe.generate(caption, frames=frames, seed=seed, init_image=init)
    return analyze_clip(Clip(frames=v.frames, fps=v.fps, caption=caption))


def test_rows_are_the_pipelines_videos_at_each_length():
    seeds = seeds_for_split("val", 2)
    caps = [str(caption_for(s)) for s in seeds]
    got = chain.run_chain(None, "val", 2, (5, 9), jobs=1)
    pipe = Pipeline.load(backend="cpu", threads=1)
    for n in (5, 9):
        want = score_reports([analysed(pipe, c, s, n) for c, s in zip(caps, seeds)], caps)
        assert got[n].accuracy == want.accuracy and got[n].by_frame == want.by_frame


def same_path(a, b):
    return np.array_equal(a.trajectory, b.trajectory, equal_nan=True)


def test_true_frame1_and_guidance_reach_the_generation():
    seed = seeds_for_split("val", 1)[0]
    cap = str(caption_for(seed))
    pipe = Pipeline.load(backend="cpu", threads=1)
    frame1 = render(cap, seed=seed, size=pipe.codec.image_size).frames[0]
    chain._init(None, {}, None)
    assert same_path(chain._task((cap, seed, (5,), True))[5], analysed(pipe, cap, seed, 5, init=frame1))
    plain = analysed(pipe, cap, seed, 5)
    chain._init(None, {"t2i": 3.0, "keyframe": 3.0}, 1)
    assert chain._PIPE["pipe"].plan.guidance == {"t2i": 3.0, "keyframe": 3.0, "interp": 1.0}
    guided = chain._task((cap, seed, (5,), False))[5]
    pipe.plan = chain.plan_with(pipe.plan, {"t2i": 3.0, "keyframe": 3.0}, 1)
    assert same_path(guided, analysed(pipe, cap, seed, 5))
    assert not same_path(guided, plain), "the overrides change the video"


def test_cli_refuses_bad_input(capsys):
    for argv, msg in [(["--guidance", "t2i"], "STAGE=SCALE"), (["--prompts", "0"], "at least 1"),
                      (["--top-k", "0"], "at least 1")]:
        with pytest.raises(SystemExit) as e:
            chain.main(argv)
        assert e.value.code == 2 and msg in capsys.readouterr().err
