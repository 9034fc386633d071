"""`TurnHandler`: the lines of one event loop turn leave in one write, in order, and none is
lost when a loop stops, a thread logs, or the process exits."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator

import pytest

from core.logs import HumanFormatter, TurnHandler


class Recorder:
    """A stream that keeps each write apart."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def lines(self) -> list[str]:
        return "".join(self.writes).splitlines()


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, Recorder, TurnHandler]]:
    stream = Recorder()
    handler = TurnHandler(stream)
    handler.setFormatter(HumanFormatter())
    logger = logging.getLogger("payops.test.turns")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield logger, stream, handler
    logger.removeHandler(handler)
    logger.propagate = True


def test_one_turns_lines_leave_in_one_write_in_order(
    logged: tuple[logging.Logger, Recorder, TurnHandler],
) -> None:
    log, stream, _ = logged

    async def requests() -> list[str]:
        for n in range(5):
            log.info("request %d", n)
        during = list(stream.writes)  # nothing yet: the turn has not ended
        await asyncio.sleep(0)  # the turn ends
        await asyncio.sleep(0)
        log.info("next turn")
        await asyncio.sleep(0)
        return during

    assert asyncio.run(requests()) == []
    assert stream.lines() == [f"payops: info: request {n}" for n in range(5)] + [
        "payops: info: next turn"
    ]
    assert len(stream.writes) == 2


def test_without_a_running_loop_each_line_is_written_at_once(
    logged: tuple[logging.Logger, Recorder, TurnHandler],
) -> None:
    log, stream, _ = logged
    log.info("one")
    assert stream.lines() == ["payops: info: one"]
    log.warning("two")
    assert stream.lines() == ["payops: info: one", "payops: warning: two"]


def test_lines_of_a_loop_that_stopped_mid_turn_are_written_first(
    logged: tuple[logging.Logger, Recorder, TurnHandler],
) -> None:
    log, stream, _ = logged
    loop = asyncio.new_event_loop()

    def last_words() -> None:
        log.info("stopping")
        loop.stop()

    # The loop ends with the line's turn: the write it scheduled never runs.
    loop.call_soon(last_words)
    loop.run_forever()
    loop.close()
    assert stream.writes == []

    async def later() -> None:
        log.info("a new loop")

    asyncio.run(later())
    assert stream.lines() == ["payops: info: stopping", "payops: info: a new loop"]


def test_a_thread_logging_mid_turn_writes_after_the_turns_lines(
    logged: tuple[logging.Logger, Recorder, TurnHandler],
) -> None:
    log, stream, _ = logged

    async def turn() -> None:
        log.info("in the loop")
        worker = threading.Thread(target=log.info, args=("from a thread",))
        worker.start()
        worker.join()
        log.info("in the loop again")
        await asyncio.sleep(0)

    asyncio.run(turn())
    assert stream.lines() == [
        "payops: info: in the loop",
        "payops: info: from a thread",
        "payops: info: in the loop again",
    ]


def test_flush_at_exit_writes_what_is_waiting(
    logged: tuple[logging.Logger, Recorder, TurnHandler],
) -> None:
    log, stream, handler = logged

    async def exiting_mid_turn() -> None:
        log.info("last line")
        handler.flush()  # what logging.shutdown does for every handler at exit
        assert stream.lines() == ["payops: info: last line"]

    asyncio.run(exiting_mid_turn())
    assert stream.lines() == ["payops: info: last line"]


def test_a_broken_stream_is_reported_not_raised(
    logged: tuple[logging.Logger, Recorder, TurnHandler],
    capsys: pytest.CaptureFixture[str],
) -> None:
    log, stream, _ = logged

    def broken(text: str) -> int:
        raise BrokenPipeError("reader gone")

    stream.write = broken  # type: ignore[method-assign]
    log.info("lost")  # no loop: written at once, and the write fails
    assert "reader gone" in capsys.readouterr().err


def test_a_stream_closed_mid_turn_is_reported_and_the_loop_goes_on(
    logged: tuple[logging.Logger, Recorder, TurnHandler],
    capsys: pytest.CaptureFixture[str],
) -> None:
    log, stream, _ = logged
    failures: list[dict[str, object]] = []

    def closed(text: str = "") -> int:
        raise ValueError("I/O operation on closed file.")

    async def turn() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda _, context: failures.append(context)
        )
        stream.write = closed  # type: ignore[method-assign]
        stream.flush = closed  # type: ignore[method-assign,assignment]
        log.info("to a closed stream")
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(turn())
    assert failures == []  # nothing raised into the loop
    assert "closed file" in capsys.readouterr().err


def test_the_service_batches_its_json_lines_and_a_command_writes_each_at_once() -> None:
    from core.logs import JsonFormatter, configure

    root = logging.getLogger()
    kept, level = list(root.handlers), root.level
    try:
        configure("INFO")
        [service] = [h for h in root.handlers if isinstance(h.formatter, JsonFormatter)]
        assert isinstance(service, TurnHandler)
        configure("INFO", human=True)
        [command] = [h for h in root.handlers if isinstance(h.formatter, HumanFormatter)]
        assert not isinstance(command, TurnHandler)  # a warning stays in order with stdout
    finally:
        root.handlers[:] = kept
        root.setLevel(level)
