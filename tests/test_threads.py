"""tests/threads.py: an assert inside a thread fails the test that started the thread."""

from __future__ import annotations

import threading

import pytest

from tests.threads import run_in_threads, threads


def test_an_assert_in_a_thread_is_raised_in_the_test() -> None:
    def fails() -> None:
        raise AssertionError("inside a thread")

    with pytest.raises(AssertionError, match="inside a thread"):
        run_in_threads(lambda: 1, fails)


def test_results_come_back_in_order() -> None:
    assert run_in_threads(lambda: "a", lambda: "b") == ["a", "b"]


def test_the_context_joins_and_raises_what_a_thread_raised() -> None:
    with pytest.raises(ValueError, match="late") as raised, threads() as pool:

        def fails_later(ready: threading.Event) -> None:
            assert ready.wait(5)
            raise ValueError("late")

        ready = threading.Event()
        pool.start(fails_later, ready)
        ready.set()
    assert str(raised.value) == "late"


def test_a_second_error_is_noted_on_the_first() -> None:
    def fails(name: str) -> None:
        raise RuntimeError(name)

    with pytest.raises(RuntimeError, match="one") as raised:
        run_in_threads(lambda: fails("one"), lambda: fails("two"))
    assert raised.value.__notes__ == ["another thread also raised: RuntimeError('two')"]


def test_a_hung_thread_fails_the_test() -> None:
    release = threading.Event()
    try:
        with pytest.raises(AssertionError, match="still running"):
            run_in_threads(release.wait, timeout=0.2)
    finally:
        release.set()
