"""DistributedDataParallel: two CPU processes on the gloo backend train one model in step."""
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import sys
    import torch.distributed as dist
    sys.path.insert(0, {tests!r})
    from test_train_transformer import CFG, fake_clips
    from hiergen.config import Kind
    from hiergen.training.train_transformer import Recipe, train
    path = train(Kind.T2I, CFG, fake_clips(), fake_clips(), {out!r},
                 Recipe(steps=6, batch=8, warmup=1, ckpt_every=3, eval_every=3), show_progress=False)
    # one write per rank: the two processes share stdout, and print() may interleave them mid-line
    sys.stdout.write(f"rank {{dist.get_rank()}} world {{dist.get_world_size()}} backend {{dist.get_backend()}}\\n")
    sys.stdout.flush()
""")


@pytest.mark.slow
def test_two_gloo_processes(tmp_path):
    out = tmp_path / "ckpt"
    script = tmp_path / "run.py"
    tests_dir = str(__import__("pathlib").Path(__file__).parent)
    script.write_text(SCRIPT.format(tests=tests_dir, out=str(out)))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(script)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "rank 0 world 2 backend gloo" in r.stdout and "rank 1 world 2 backend gloo" in r.stdout
    from hiergen.training import checkpoint as ckpt
    history = ckpt.load(out / "t2i.safetensors").extra["history"]
    assert history["step"] == list(range(1, 7))     # one history, written by rank 0
