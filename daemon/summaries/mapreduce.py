"""One summary from one transcript, in as many requests as its length needs (pure but
for the `chat` it is given).

A transcript whose lines fit one request is summarised in one. A longer one is cut
into consecutive parts (daemon.summaries.prompt.split_parts), each summarised alone
(map); then the parts' summaries are combined, as many as fit in one request at a
time, until one is left (reduce). Segment numbers are the transcript's own in every
part, so the combined summary cites the whole transcript's lines. The last answer is
read into the summary object (daemon.summaries.answer); an answer that ignored the
format along the way is passed on as its text, and a last one that did is kept as text.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from daemon.summaries.answer import parse_answer
from daemon.summaries.prompt import (
    combine_messages,
    estimate_tokens,
    fit,
    instructions,
    line_budget,
    part_messages,
    segment_lines,
    split_parts,
    summary_text,
)
from daemon.summary_config import SummaryConfig
from daemon.transcript import Transcript

__all__ = ["Chat", "make_summary", "reduce_groups"]

# One request: messages in, the model's answer out (daemon.summaries.client.chat, or a test's).
Chat = Callable[[Sequence[Mapping[str, str]]], str]


def reduce_groups(texts: Sequence[str], budget: int) -> list[list[int]]:
    """The part summaries (by index) combined by each request of one reduce round:
    consecutive, as many as fit in `budget` tokens, and at least two per request (so
    that every round halves what is left, however long the answers)."""
    groups: list[list[int]] = []
    current: list[int] = []
    used = 0
    for index, text in enumerate(texts):
        cost = estimate_tokens(text) + 8  # its label
        if len(current) >= 2 and used + cost > budget:
            groups.append(current)
            current, used = [], 0
        current.append(index)
        used += cost
    if current:
        if len(current) == 1 and groups:
            groups[-1].append(current[0])
        else:
            groups.append(current)
    return groups


def make_summary(settings: SummaryConfig, transcript: Transcript, chat: Chat) -> dict[str, Any]:
    """The summary object of `transcript` (daemon.summaries.answer), with `parts`: how
    many parts the transcript was cut into (1: it fitted one request)."""
    system = instructions(settings)
    budget = line_budget(settings, system)
    parts = split_parts(segment_lines(transcript), budget)
    answers = [chat(part_messages(system, part, parts=len(parts), index=i)) for i, part in enumerate(parts)]
    spans = [(p.first, p.last) for p in parts]
    while len(answers) > 1:
        texts = [summary_text(parse_answer(a, transcript)) for a in answers]
        groups = reduce_groups(texts, budget)
        answers = [chat(combine_messages(system, _pieces(texts, spans, group, budget))) for group in groups]
        spans = [(spans[g[0]][0], spans[g[-1]][1]) for g in groups]
    summary = parse_answer(answers[0], transcript)
    summary["parts"] = len(parts)
    return summary


def _pieces(texts: Sequence[str], spans: Sequence[tuple[int, int]], group: Sequence[int],
            budget: int) -> list[tuple[str, str]]:
    """One combining request's part summaries with their labels; each cut to an equal
    share of the budget when together they do not fit."""
    chosen = [texts[i] for i in group]
    if sum(estimate_tokens(t) + 8 for t in chosen) > budget:
        share = max(1, budget // len(group) - 8)
        chosen = [fit(t, share) for t in chosen]
    return [(f"Summary of lines {spans[i][0]} to {spans[i][1]}", text) for i, text in zip(group, chosen)]
