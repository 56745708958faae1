"""What an RL curve holds, not only what it touched once: the benchmarks' shared summary of a run's
evaluations against a target (scripts/bench_rl.py, scripts/bench_rl_text.py)."""
from __future__ import annotations

LAST_K = 5  # evaluations averaged at the end of a run


def what_holds(evals: list[tuple[int, float]], target: float, last_k: int = LAST_K) -> dict:
    """``evals``: (x, value) per evaluation in order (x: env steps or generated tokens).

    first_success: the x of the first evaluation at or above ``target`` (None: never);
    last_k_mean: the mean of the last ``last_k`` evaluations (fewer if the run had fewer);
    share_at_target_after_first: the share of the evaluations after the first success that are at
    or above the target (None when the first success was the last evaluation, or never came);
    worst_after_first: the lowest of those evaluations (None likewise)."""
    first = next((i for i, (_, value) in enumerate(evals) if value >= target), None)
    after = [value for _, value in evals[first + 1:]] if first is not None else []
    tail = [value for _, value in evals[-last_k:]]
    return {
        "target": target,
        "first_success": evals[first][0] if first is not None else None,
        "last_k": len(tail),
        "last_k_mean": round(sum(tail) / len(tail), 4) if tail else None,
        "evals_after_first": len(after),
        "share_at_target_after_first": round(sum(v >= target for v in after) / len(after), 4) if after else None,
        "worst_after_first": round(min(after), 4) if after else None,
        "final": round(evals[-1][1], 4) if evals else None,
    }


def holds_row(name: str, holds: dict) -> str:
    """One line of a printed table."""
    share = holds["share_at_target_after_first"]
    return (f"{name:24s} first {str(holds['first_success']):>8s}   last-{holds['last_k']} mean "
            f"{holds['last_k_mean']:8.3f}   at target after first "
            f"{'—' if share is None else f'{share:.0%}':>5s}   worst after first "
            f"{'—' if holds['worst_after_first'] is None else holds['worst_after_first']}")
