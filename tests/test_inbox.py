"""The dispatcher's inbox (procpool._inbox): commands from any thread, in order, and runs of
joinable ones handed over as one."""

from __future__ import annotations

from procpool import _inbox


def _joined(run: list[str]) -> str:
    return "+".join(run)


def test_a_run_of_joinable_commands_is_handed_over_as_one_in_order() -> None:
    inbox: _inbox.Inbox[str] = _inbox.Inbox(lambda command: command.startswith("s"), _joined)
    try:
        for command in ("s1", "s2", "s3", "close", "s4", "t", "s5"):
            inbox.post(command)
        assert list(inbox.take()) == ["s1+s2+s3", "close", "s4", "t", "s5"]
        inbox.post("s6")
        assert list(inbox.take()) == ["s6"]  # a run of one is left as it is
    finally:
        inbox.close()


def test_without_a_rule_nothing_is_joined() -> None:
    inbox: _inbox.Inbox[str] = _inbox.Inbox()
    try:
        for command in ("s1", "s2"):
            inbox.post(command)
        assert list(inbox.take()) == ["s1", "s2"]
    finally:
        inbox.close()


def test_what_was_joined_and_not_handled_is_handed_back_at_close() -> None:
    # A dispatcher that ends half-way through a batch still answers the rest (close()).
    inbox: _inbox.Inbox[str] = _inbox.Inbox(lambda command: command.startswith("s"), _joined)
    for command in ("close", "s1", "s2"):
        inbox.post(command)
    taken = inbox.take()
    assert next(taken) == "close"
    inbox.post("s3")
    assert inbox.close() == ["s1+s2", "s3"]
