"""Resilience gates: what protects the systems jobs call, before a job runs.

    @app.worker(rate_limit=RateLimit(limit=10, window=1.0, algorithm="gcra"),
                circuit_breaker=CircuitBreaker(failure_threshold=0.5, wait=30.0))
    async def call_api(url: str) -> dict: ...

The options are checked where they are written (`options`); the algorithms behind them
are plain objects fed with the time (`rate_limits`, `breaker`), so that their behaviour
can be proven on its own, whatever clock a node runs on.
"""

from shigoto.features.resilience.options import CircuitBreaker, LoadShedding, RateLimit

__all__ = ["CircuitBreaker", "LoadShedding", "RateLimit"]
