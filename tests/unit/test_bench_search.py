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


def run_goal(limit: float, goal: float, goal_steps: int = 3, start: float = 250.0) -> Search:
    search = Search(start, fixed=False, max_steps=9, goal_steps=goal_steps)
    while search.rate is not None:
        rate = search.rate
        search.record(Step(rate), rate <= limit, rate <= goal)
    return search


def within(search: Search) -> list[float]:
    return [s.rate for s, g in zip(search.steps, search.in_goal, strict=True) if g]


def test_after_the_search_the_best_rate_within_the_goal_is_refined() -> None:
    plain = run_goal(1_234.0, 600.0, goal_steps=0)
    assert max(within(plain)) == 500.0  # the steps tried: 250, 500, 1000, 2000, 1500, ...
    refined = run_goal(1_234.0, 600.0)
    assert len(refined.steps) == len(plain.steps) + 3
    assert 550.0 <= max(within(refined)) <= 600.0
    assert (refined.good, refined.bad) == (plain.good, plain.bad)  # the first search as it was


def test_no_step_within_the_goal_halves_down_from_the_lowest() -> None:
    search = run_goal(1_234.0, 100.0)
    assert [s.rate for s in search.steps][-3:] == [125.0, 62.5, 93.75]  # down, then refined
    assert max(within(search)) == 93.75
    assert len(run_goal(1_234.0, 5_000.0).steps) == len(run_goal(1_234.0, 5_000.0, 0).steps)
