"""bench_pipeline's rate search: doubling until a step fails, then halving the gap until the best
sustained rate is known to within 10 %."""

from __future__ import annotations

from load_tests.bench_pipeline import Search, Step


def run(limit: float, start: float = 250.0, max_steps: int = 20) -> Search:
    search = Search(start, fixed=False, max_steps=max_steps)
    while search.rate is not None:
        rate = search.rate
        search.record(Step(rate), rate <= limit)
    return search


def test_the_search_ends_within_ten_percent_of_the_limit() -> None:
    for limit in (90.0, 333.0, 800.0, 1_234.0, 5_000.0):
        search = run(limit)
        assert search.good is not None
        assert search.bad is not None
        assert search.good <= limit < search.bad
        assert search.bad / search.good <= 1.1


def test_a_fixed_rate_is_one_step_and_max_steps_bounds_the_search() -> None:
    fixed = Search(500.0, fixed=True, max_steps=9)
    fixed.record(Step(500.0), True)
    assert fixed.rate is None
    assert len(run(1_234.0, max_steps=4).steps) == 4


def test_nothing_sustained_halves_down_to_the_floor() -> None:
    search = run(0.0)
    assert search.good is None
    assert search.steps[-1].rate <= 10.0
