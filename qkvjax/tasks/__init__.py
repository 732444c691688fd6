"""Tasks: one module per language, all implementing ``base.Task``.

- ``selection``: a verb selects a noun; predict that noun's colour.
- ``relations``: ``match`` (a symmetric control: a probe noun finds the other
  noun of its category) and ``two_relations`` (the selectional relation and
  the previous-token relation, answered at once).
- ``context``: ambiguous words ("apple": fruit or company) whose sense only
  the context reveals.
- ``spelling``: English spelling -> pronunciation (CMU Pronouncing
  Dictionary), for the encoder-decoder.
- ``induction``: Bietti et al.'s bigram sequences (the prose's characters)
  with in-context trigger -> output pairs, and Olsson et al.'s repeated
  random sequences, for induction heads.
- ``text``: real English prose (CPython's documentation topics) as
  ``causal_text`` (next-token prediction) or ``masked_text`` (masked-token
  prediction).

``make(name, config)`` builds a task from a whole experiment config (its
``task`` or ``data`` block and its ``seed``).
"""

from __future__ import annotations

from typing import Callable

from qkvjax import config as config_lib
from qkvjax.tasks import context, induction, relations, selection, spelling, text
from qkvjax.tasks.base import Task

BUILDERS: dict[str, Callable] = {
    "selection": lambda c: selection.make_selection_task(c.task, c.seed),
    "match": lambda c: relations.make_match_task(c.task, c.seed),
    "two_relations": lambda c: relations.make_two_relation_task(c.task, c.seed),
    "context": lambda c: context.make_context_task(c.task),
    "spelling": lambda c: spelling.load(c.data.min_word_len, c.data.max_word_len,
                                        c.data.n_train, c.data.n_heldout,
                                        c.data.heldout_fraction),
    "causal_text": lambda c: text.make_text_task(c.task, "causal"),
    "masked_text": lambda c: text.make_text_task(c.task, "masked"),
    "induction": lambda c: induction.make_induction_task(c.task),
}


def _validate_match(c) -> None:
  selection.validate(c)
  config_lib.require(c.task.nouns_per_category >= 2, "task.nouns_per_category",
                     c.task.nouns_per_category, "an integer >= 2 (the match task)")


def _validate_two_relations(c) -> None:
  selection.validate(c)
  config_lib.require_at_least(c, ("task.n_adverbs", "task.n_manners"))


# Checks of the config blocks each task reads (ConfigError on bad input).
VALIDATORS: dict[str, Callable] = {
    "selection": selection.validate,
    "match": _validate_match,
    "two_relations": _validate_two_relations,
    "context": lambda c: context.validate(c),  # pylint: disable=unnecessary-lambda
    "spelling": lambda c: spelling.validate(c),  # pylint: disable=unnecessary-lambda
    "causal_text": lambda c: text.validate(c),  # pylint: disable=unnecessary-lambda
    "masked_text": lambda c: text.validate(c),  # pylint: disable=unnecessary-lambda
    "induction": lambda c: induction.validate(c),  # pylint: disable=unnecessary-lambda
}


def validate(name: str, config) -> None:
  """Checks ``config`` for task ``name``; ConfigError naming the bad value."""
  VALIDATORS[name](config)


def make(name: str, config) -> Task:
  """The task ``name`` (a key of ``BUILDERS``) for an experiment config."""
  return BUILDERS[name](config)


__all__ = ["BUILDERS", "Task", "VALIDATORS", "context", "induction", "make", "relations",
           "selection",
           "spelling", "text", "validate"]
