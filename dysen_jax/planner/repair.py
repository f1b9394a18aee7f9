"""Ask an LLM many questions at once, check every answer, and re-ask with the error fed back.

Shared by step I (action planning), step III (scene imagination) and global polishing: each item
is a conversation plus a `check(answer_text) -> value` that raises DSGError naming what is wrong.
A bad answer is sent back with that message up to `max_repairs` times; a failed request (the
client already retried it) or a last bad answer leaves the item without a value, for the caller's
fallback. Answers are only parsed, never executed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from dysen_jax.dsg.schema import DSGError
from dysen_jax.planner.llm_client import Completion, LLMClient, Messages


@dataclasses.dataclass
class Answer:
    """The checked value (None if none was obtained), how many re-asks it took, and the errors met."""

    value: Any = None
    repairs: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.value is not None


def repair_messages(messages: Messages, answer: str, error: str, reminder: str) -> Messages:
    """The conversation extended with the bad answer and the complaint, asking again."""
    return messages + [
        {"role": "assistant", "content": answer},
        {"role": "user", "content": f"That answer is invalid: {error}. Answer again. {reminder}"},
    ]


def ask_with_repair(client: LLMClient, conversations: Sequence[Messages],
                    checks: Sequence[Callable[[str], Any]], max_repairs: int, reminder: str,
                    response_format: dict[str, Any] | None = None) -> list[Answer]:
    """One Answer per conversation, in order; each round's requests run concurrently."""
    pending = dict(enumerate(conversations))
    answers = [Answer() for _ in conversations]
    for attempt in range(max_repairs + 1):
        if not pending:
            break
        order = sorted(pending)
        replies = client.complete_many([pending[i] for i in order], response_format=response_format)
        for i, reply in zip(order, replies):
            if not isinstance(reply, Completion):
                answers[i].errors.append(f"request failed: {reply}")
                del pending[i]  # the client already retried; re-asking would not help
                continue
            try:
                answers[i].value = checks[i](reply.text)
            except DSGError as err:
                answers[i].errors.append(str(err))
                pending[i] = repair_messages(pending[i], reply.text, str(err), reminder)
                continue
            answers[i].repairs = attempt
            del pending[i]
    return answers
