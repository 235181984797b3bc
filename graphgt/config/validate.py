"""Validate a composed config before anything is built or computed.

Every node with a ``_target_`` is bound to the target's signature (torchtune's approach): the
target must import, every key must be a parameter of it, every value must match the parameter's
annotation, and a key that graphgt injects at build time (``dim``, ``spec``...) must not be set in
the config (it would be a second home for a setting that lives elsewhere, e.g. ``model.hidden``).
Errors name the full key path and say how to fix it.
"""
from __future__ import annotations

import importlib
import inspect
import typing
from typing import Any, Dict, List, Literal, Mapping, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

from graphgt.config.keys import consumed_for, injected_for
from graphgt.errors import ConfigError

HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}

def import_target(path: str, key: str) -> Any:
    """Import ``a.b.C`` (the value of ``<key>._target_``) or raise a ConfigError that says which key."""
    module_name, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(f"{key}._target_: cannot import '{path}' ({e}). Check the spelling of the class path.") from None


def _signature(target: Any) -> inspect.Signature:
    return inspect.signature(target.__init__ if inspect.isclass(target) else target)


def _type_hints(target: Any) -> Dict[str, Any]:
    try:
        return typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # unresolvable annotations (e.g. third-party): skip type checks
        return {}


def _matches(value: Any, annotation: Any) -> bool:
    """Does a config value fit a (simple) annotation? Unknown annotations count as a match."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Union:
        return any(_matches(value, a) for a in args)
    if origin is Literal:
        return value in args
    if annotation is type(None):
        return value is None
    if isinstance(value, Mapping) and "_target_" in value:
        return True  # a nested object: validated on its own
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation in (list, tuple) or origin in (list, tuple, typing.Sequence, __import__("collections.abc").abc.Sequence):
        return isinstance(value, (list, tuple, ListConfig))
    if annotation is dict or origin in (dict, typing.Mapping, __import__("collections.abc").abc.Mapping):
        return isinstance(value, (dict, DictConfig))
    return True


def _describe(annotation: Any) -> str:
    """``int``, ``one of 'batch', 'layer'``, ``int or None``..."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is Union:
        return " or ".join("None" if a is type(None) else _describe(a) for a in args)
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def validate_node(node: Mapping, path: str, errors: List[str]) -> None:
    target = import_target(str(node["_target_"]), path)
    sig = _signature(target)
    params = {n: p for n, p in sig.parameters.items() if n != "self"}
    has_var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    hints = _type_hints(target)
    injected = injected_for(path)
    consumed = consumed_for(path)
    for key, value in node.items():
        if key in HYDRA_KEYS:
            continue
        full = f"{path}.{key}"
        if key in consumed:
            if not _matches(value, consumed[key]):
                errors.append(f"{full}={value!r}: expected {_describe(consumed[key])}")
            continue
        if key in injected:
            errors.append(f"{full}: is set by graphgt when it builds '{path}' (from another key); remove it")
            continue
        if key not in params:
            if not has_var_kw:
                valid = sorted(k for k in params if k not in injected and params[k].kind not in
                               (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD))
                errors.append(f"{full}: unknown key for {node['_target_']}; valid keys: {', '.join(valid)}")
            continue
        annotation = hints.get(key, params[key].annotation)
        if not _matches(value, annotation):
            errors.append(f"{full}={value!r}: expected {_describe(annotation)}")
    if not node.get("_partial_", False):
        for name, p in params.items():
            if (p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                    and name not in node and name not in injected):
                errors.append(f"{path}.{name}: required by {node['_target_']} but not set")


def _walk(node: Any, path: str, errors: List[str]) -> None:
    if isinstance(node, Mapping):
        if "_target_" in node:
            try:
                validate_node(node, path, errors)
            except ConfigError as e:
                errors.append(str(e))
        for key, value in node.items():
            if key not in HYDRA_KEYS:
                _walk(value, f"{path}.{key}" if path else str(key), errors)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            _walk(value, f"{path}[{i}]", errors)


REQUIRED_TOP = ("data", "model", "trainer", "seed")


def validate_config(cfg: DictConfig) -> None:
    """Raise one :class:`ConfigError` listing every problem of ``cfg`` (resolves interpolations)."""
    try:
        container = OmegaConf.to_container(cfg, resolve=True)
    except Exception as e:  # an interpolation that does not resolve
        raise ConfigError(f"the config does not resolve: {e}") from None
    errors: List[str] = []
    for key in REQUIRED_TOP:
        if container.get(key) in (None, {}):
            errors.append(f"{key}: must be set")
    if not isinstance(container.get("seed"), int) or isinstance(container.get("seed"), bool):
        errors.append(f"seed={container.get('seed')!r}: expected an integer")
    for name, entry in (container.get("pe") or {}).items():
        if isinstance(entry, Mapping) and "_target_" not in (entry.get("compute") or {}):
            continue  # a preset's leftover after pe=none (run() names and ignores it)
        if not isinstance(entry, Mapping) or set(entry) != {"compute", "encoder"}:
            errors.append(f"pe.{name}: must hold exactly 'compute' and 'encoder' (see configs/pe/rwse.yaml)")
    _walk(container, "", errors)
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
