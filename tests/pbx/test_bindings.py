"""The registrar's per-AOR locks (`edge.pbx.bindings.KeyedLocks`): one holder per key at a
time, waiters served in arrival order, nothing left behind, cancellation handled."""

from __future__ import annotations

import asyncio

import pytest

from edge.pbx.bindings import KeyedLocks


def run(coroutine: object) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 5))  # type: ignore[arg-type]


def test_free_keys_are_held_at_once_and_forgotten_on_release() -> None:
    async def scenario() -> None:
        locks = KeyedLocks()
        async with locks.hold("a"), locks.hold("b"):
            assert len(locks) == 2
        assert len(locks) == 0

    run(scenario())


def test_holders_of_one_key_take_turns_in_arrival_order() -> None:
    async def scenario() -> None:
        locks = KeyedLocks()
        order: list[str] = []
        inside = 0

        async def worker(name: str) -> None:
            nonlocal inside
            async with locks.hold("aor"):
                inside += 1
                assert inside == 1  # alone with the key
                order.append(name)
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                inside -= 1

        await asyncio.gather(*(worker(str(n)) for n in range(5)))
        assert order == ["0", "1", "2", "3", "4"]
        assert len(locks) == 0

    run(scenario())


def test_a_waiter_cancelled_while_waiting_leaves_the_line() -> None:
    async def scenario() -> None:
        locks = KeyedLocks()
        order: list[str] = []
        gate = asyncio.Event()

        async def worker(name: str) -> None:
            async with locks.hold("aor"):
                order.append(name)
                await gate.wait()

        first = asyncio.create_task(worker("first"))
        await asyncio.sleep(0)
        second = asyncio.create_task(worker("second"))
        third = asyncio.create_task(worker("third"))
        await asyncio.sleep(0)
        second.cancel()
        await asyncio.sleep(0)
        gate.set()
        await first
        await third
        with pytest.raises(asyncio.CancelledError):
            await second
        assert order == ["first", "third"]
        assert len(locks) == 0

    run(scenario())


def test_a_waiter_cancelled_after_the_key_was_handed_to_it_passes_it_on() -> None:
    async def scenario() -> None:
        locks = KeyedLocks()
        order: list[str] = []

        async def worker(name: str) -> None:
            async with locks.hold("aor"):
                order.append(name)

        held = locks.hold("aor")
        await held.__aenter__()
        second = asyncio.create_task(worker("second"))
        third = asyncio.create_task(worker("third"))
        await asyncio.sleep(0)  # both wait
        await held.__aexit__(None, None, None)  # the key goes to "second"...
        second.cancel()  # ...which is cancelled before it runs again
        await asyncio.gather(second, third, return_exceptions=True)
        assert second.cancelled()
        assert order == ["third"]
        assert len(locks) == 0

    run(scenario())
