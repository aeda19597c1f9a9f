import numpy as np
import pytest

from hiergen.runtime.sampler import SamplerOptions, guide, mix64, sample, uniform


def test_generator_matches_its_specification():
    # Reference values from a plain-integer implementation of the spec in the module docstring.
    M = (1 << 64) - 1

    def mix(x):
        x ^= x >> 30
        x = (x * 0xBF58476D1CE4E5B9) & M
        x ^= x >> 27
        x = (x * 0x94D049BB133111EB) & M
        return x ^ (x >> 31)

    def ref(seed, stream, counter):
        key = mix((seed + 0x9E3779B97F4A7C15 * (stream + 1)) & M)
        return (mix(key ^ ((counter * 0xD1B54A32D192ED69) & M)) >> 11) * 2.0 ** -53

    for seed, stream, counter in [(0, 0, 0), (1, 2, 3), (2**40 + 7, 65535, 330), (123, 7, 10**6)]:
        assert uniform(seed, stream, counter) == ref(seed, stream, counter)
    assert int(mix64(np.uint64(1))) == mix(1)


def test_draws_depend_only_on_seed_stream_counter():
    u = uniform(5, np.arange(4)[:, None], np.arange(100)[None, :])
    assert u.shape == (4, 100) and (u >= 0).all() and (u < 1).all()
    assert u[2, 17] == uniform(5, 2, 17)
    assert uniform(5, 2, 17) != uniform(6, 2, 17) != uniform(5, 3, 17)
    big = uniform(0, 0, np.arange(20000))
    assert abs(big.mean() - 0.5) < 0.01 and abs(big.std() - 12 ** -0.5) < 0.01


def test_greedy_takes_the_first_maximum():
    logits = np.array([[0.0, 3.0, 3.0, 1.0], [5.0, 0.0, 0.0, 5.0]], np.float32)
    assert sample(logits, np.zeros(2), SamplerOptions(top_k=1)).tolist() == [1, 0]
    assert sample(logits, np.full(2, 0.99), SamplerOptions(temperature=0)).tolist() == [1, 0]


def test_top_k_and_top_p_restrict_the_candidates():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    seen_k, seen_p = set(), set()
    for u in rng.random(400):
        seen_k.add(int(sample(logits, np.array([u]), SamplerOptions(top_k=2))[0]))
        seen_p.add(int(sample(logits, np.array([u]), SamplerOptions(top_p=0.75))[0]))
    assert seen_k == {0, 1} and seen_p == {0, 1}


def test_sampling_follows_the_distribution():
    p = np.array([0.6, 0.3, 0.1])
    u = uniform(1, 0, np.arange(30000))
    got = sample(np.repeat(np.log(p)[None], len(u), 0), u, SamplerOptions())
    freq = np.bincount(got, minlength=3) / len(u)
    assert np.allclose(freq, p, atol=0.01), freq


def test_guidance_formula():
    c, g = np.array([1.0, 2.0]), np.array([0.5, 3.0])
    assert np.allclose(guide(c, g, 3.0), g + 3.0 * (c - g))


@pytest.mark.parametrize("kw, fragment", [(dict(temperature=-1), "temperature"), (dict(top_k=-2), "top_k"),
                                          (dict(top_p=0), "top_p"), (dict(top_p=1.5), "top_p")])
def test_bad_options(kw, fragment):
    with pytest.raises(ValueError, match=fragment):
        SamplerOptions(**kw)


def test_fast_paths_match_the_specification():
    """The top-k shortcut equals a stable full argsort (ties included); the small-batch RNG equals the array one."""
    from hiergen.runtime import sampler as S
    rng = np.random.default_rng(0)
    for _ in range(400):
        B = int(rng.integers(1, 9))
        z = np.round(rng.normal(size=(B, 512)) * rng.choice([1, 3, 50]), int(rng.integers(0, 3)))   # many ties
        k = int(rng.choice([1, 2, 12, 100, 511]))
        assert np.array_equal(S._top(z, k), np.argsort(-z, axis=-1, kind="stable")[:, :k])
        seed, streams, counter = int(rng.integers(0, 2 ** 63)), rng.integers(0, 2 ** 20, B), int(rng.integers(0, 400))
        slow = S.uniform(seed, streams[:, None], np.array([counter]))[:, 0]       # 2-D: the array path
        assert np.array_equal(S.uniform(seed, streams, counter), slow)
