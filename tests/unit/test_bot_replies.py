"""Slack's text limit: one helper cuts every reply, visibly."""

from __future__ import annotations

from bot.replies import SLACK_TEXT_LIMIT, TRUNCATED, slack_text


def test_text_that_fits_is_left_whole() -> None:
    text = "x" * SLACK_TEXT_LIMIT
    assert slack_text(text) == text


def test_longer_text_is_cut_to_the_limit_and_says_so() -> None:
    text = "".join(f"line {i}\n" for i in range(1000))
    cut = slack_text(text)
    assert len(cut) == SLACK_TEXT_LIMIT
    assert cut.endswith(TRUNCATED)
    assert text.startswith(cut.removesuffix(TRUNCATED))
