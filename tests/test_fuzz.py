"""Property-based fuzzing (issue 11): mutated files of every supported format, scanned through the
engine with the static tier, never crash a check, never raise, never PASS a malicious file whose
payload a loader still reaches, render a clean text report, and stay within time and memory.

Short profile here (CI); `python bench/fuzz.py` runs the long one and prints figures.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testing.fuzz import deep_cases, mutated, run_one
from testing.fuzz_seeds import build_seeds, pickle_reaches_global

EXAMPLES = int(os.environ.get("HFGUARD_FUZZ_EXAMPLES", "3"))   # per seed (27 seeds)


class _Env(tuple):
    def __repr__(self) -> str:   # hypothesis prints its arguments: not the seeds' bytes
        return "fuzz_env"


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    mark = folder / "payload-ran"
    seeds = {s.name: s for s in build_seeds(mark)}
    yield _Env((folder, mark, seeds))
    assert not mark.exists(), "a payload ran"




def test_every_seed_is_scanned_as_built(fuzz_env):
    """The oracle agrees with the scanner on the unmutated seeds: malicious ones BLOCK."""
    folder, _mark, seeds = fuzz_env
    for seed in seeds.values():
        outcome = run_one(seed, seed.data, "seed" + seed.suffix, folder)
        assert not outcome.problems, (seed.name, outcome.problems)
        assert outcome.verdict == ("BLOCK" if seed.malicious else "PASS"), seed.name
        if seed.malicious:
            assert seed.payload_reachable(seed.data), seed.name


# derandomized: CI runs the same examples every time (bench/fuzz.py explores at random)
@settings(max_examples=EXAMPLES * 27, deadline=timedelta(seconds=20), database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_mutated_seeds_hold_every_property(fuzz_env, data):
    folder, _mark, seeds = fuzz_env
    seed = seeds[data.draw(st.sampled_from(sorted(seeds)), label="seed")]
    mutated_bytes, name = data.draw(mutated(seed), label="mutation")
    outcome = run_one(seed, mutated_bytes, name, folder)
    assert not outcome.problems, outcome.problems


@pytest.mark.parametrize("case", sorted(deep_cases(b"").keys()))
def test_deep_structures_are_bounded(fuzz_env, case):
    folder, _mark, seeds = fuzz_env
    seed = seeds["pickle-p4-evil"]
    data, suffix = deep_cases(seed.data, seeds["pickle-p0-evil"].data)[case]
    outcome = run_one(seed, data, "deep" + suffix, folder)
    assert not outcome.problems, outcome.problems
    if case.endswith(("-marks", "-in-zip", "-in-gzip", "-in-tar")):   # the payload is still inside
        assert pickle_reaches_global(data) or not case.endswith("-marks")
        assert outcome.verdict in ("BLOCK", "ERROR"), outcome
