"""Each module holds what its name says: the whole answer cache is in rates/cache.py."""

from __future__ import annotations

import rates.app
import rates.cache
import rates.pool


def test_the_answer_cache_has_one_home() -> None:
    assert rates.cache.AnswerCache.__module__ == "rates.cache"
    assert rates.cache.DataVersion.__module__ == "rates.cache"
    assert vars(rates.app)["AnswerCache"] is rates.cache.AnswerCache  # used there, not defined
    assert not hasattr(rates.pool, "DataVersion")
    assert not hasattr(rates.pool, "CHANNEL")
