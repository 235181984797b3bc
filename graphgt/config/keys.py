"""The one table of config keys that graphgt sets or reads itself, shared by the validator
(:mod:`graphgt.config.validate`) and the composition root (:mod:`graphgt.app`).

* :data:`INJECTED`: parameters graphgt passes when it builds a node; a value in the YAML would be
  a second home for a setting that lives elsewhere (the width is ``model.hidden``, never
  ``attention.dim``), so the validator refuses them.
* :data:`CONSUMED`: keys of a node that the composition root reads itself and removes before it
  builds the node's target (``trainer.resume`` decides which checkpoint the run continues; the
  :class:`~graphgt.train.Trainer` only receives the checkpoint).  The validator checks their type.
* :data:`OBJECTIVE_KEYS`: top-level keys the composition root reads to build the run's
  :class:`~graphgt.train.Objective` (``app.build_objective``); the validator checks their values.
"""
from __future__ import annotations

from typing import Any, Dict, Literal, Mapping, Optional, Set, Union

#: node path pattern (``*`` = any key) -> the parameters graphgt injects, and from where
INJECTED: Dict[str, Dict[str, str]] = {
    "model": {"spec": "the data module", "local": "the local group", "attention": "the attention group",
              "pe": "the pe group"},
    "local": {"dim": "model.hidden", "in_dim": "model.raw_io", "out_dim": "model.raw_io"},
    "attention": {"dim": "model.hidden"},
    "pe.*.encoder": {"pe": "pe.*.compute"},
}

#: node path -> {key: annotation} read by the composition root, not passed to the node's target
CONSUMED: Dict[str, Dict[str, Any]] = {
    "trainer": {"resume": Optional[str]},
}

#: top-level key -> annotation: the regression loss and target standardisation of the objective
OBJECTIVE_KEYS: Dict[str, Any] = {
    "loss": Literal["auto", "l1", "mse", "huber"],
    "huber_delta": Optional[float],
    "target_standardize": Union[bool, Literal["auto"]],
}


def _matches(pattern: str, path: str) -> bool:
    pat, parts = pattern.split("."), path.split(".")
    return len(pat) == len(parts) and all(p == "*" or p == q for p, q in zip(pat, parts))


def injected_for(path: str) -> Set[str]:
    """The parameter names graphgt injects into the node at ``path`` (empty when none)."""
    for pattern, names in INJECTED.items():
        if _matches(pattern, path):
            return set(names)
    return set()


def consumed_for(path: str) -> Mapping[str, Any]:
    """``{key: annotation}`` of the keys the composition root reads from the node at ``path``."""
    return CONSUMED.get(path, {})


def check_injected(path: str, given: Mapping[str, Any]) -> Dict[str, Any]:
    """``given`` unchanged, after checking that every name is in the table for ``path`` (the
    composition root injects exactly what the validator refuses)."""
    extra = set(given) - injected_for(path)
    if extra:
        raise RuntimeError(f"graphgt injects {sorted(extra)} into '{path}' but graphgt.config.keys.INJECTED does not "
                           "list them; add them there")
    return dict(given)
