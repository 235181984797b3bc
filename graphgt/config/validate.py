"""Validate a composed config before anything is built or computed.

Every node with a ``_target_`` is bound to the target's signature (torchtune's approach): the
target must import, every key must be a parameter of it, every value must match the parameter's
annotation, and a key that graphgt injects at build time (``dim``, ``spec``...) must not be set in
the config (it would be a second home for a setting that lives elsewhere, e.g. ``model.hidden``).
Errors name the full key path and say how to fix it.

Targets that run code or touch the file system instead of building a model or data object
(``os.rmdir``, ``subprocess.run``, ``builtins.eval``, ``pickle.loads``, ``torch.load`` ...) are
refused *before* they are imported or built (:func:`refused_target`): Hydra's ``instantiate`` would
otherwise call whatever a config or a command-line override names.  The check is a blocklist
(every standard-library module except a few plain value types, plus the known executors and
file writers of the installed libraries), applied to the path as written and to the object it
resolves to, so a re-export (``somepkg.rmtree`` = ``shutil.rmtree``) is refused as well.
"""
from __future__ import annotations

import importlib
import inspect
import sys
import typing
from typing import Any, Dict, Iterable, List, Literal, Mapping, Optional, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

from graphgt.config.keys import OBJECTIVE_KEYS, consumed_for, injected_for
from graphgt.errors import ConfigError

HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}

# ------------------------------------------------------------------------------ refused targets
_RUNS_COMMANDS = "runs shell commands or other programs"
_FILES = "creates, changes or deletes files and folders"
_UNPICKLES = "unpickles data, which runs any code the data names"
_RUNS_CODE = "imports or runs arbitrary Python code given as a name or a string"
_NETWORK = "opens network connections"

#: dotted prefixes that are refused, with the reason given in the error.  A prefix matches itself
#: and everything below it (``os`` matches ``os.path.join``).  Standard-library modules that are not
#: listed here are refused too (:data:`STDLIB_ALLOWED` aside), with a generic reason.
REFUSED_TARGETS: Dict[str, str] = {
    # the standard library: processes, files, code, interpreter state
    "os": f"{_RUNS_COMMANDS}, and {_FILES}", "posix": f"{_RUNS_COMMANDS}, and {_FILES}",
    "nt": f"{_RUNS_COMMANDS}, and {_FILES}", "subprocess": _RUNS_COMMANDS, "_posixsubprocess": _RUNS_COMMANDS,
    "pty": _RUNS_COMMANDS, "pipes": _RUNS_COMMANDS, "webbrowser": _RUNS_COMMANDS,
    "sys": "changes the interpreter itself (exit, import path, hooks, recursion limit)",
    "shutil": _FILES, "pathlib": _FILES, "io": _FILES, "_io": _FILES, "tempfile": _FILES,
    "fileinput": _FILES, "tarfile": _FILES, "zipfile": _FILES, "gzip": _FILES, "bz2": _FILES, "lzma": _FILES,
    "sqlite3": _FILES, "dbm": _FILES, "mmap": _FILES, "fcntl": _FILES, "py_compile": _FILES, "compileall": _FILES,
    "builtins": "holds eval, exec, compile and __import__ (code from a string), open (any file) and getattr "
                "(any object)",
    "importlib": _RUNS_CODE, "runpy": _RUNS_CODE, "code": _RUNS_CODE, "codeop": _RUNS_CODE,
    "pkgutil": _RUNS_CODE, "pydoc": _RUNS_CODE, "zipimport": _RUNS_CODE, "imp": _RUNS_CODE,
    "timeit": _RUNS_CODE, "cProfile": _RUNS_CODE, "profile": _RUNS_CODE, "trace": _RUNS_CODE,
    "pdb": _RUNS_CODE, "bdb": _RUNS_CODE, "doctest": _RUNS_CODE, "inspect": _RUNS_CODE, "operator": _RUNS_CODE,
    "_operator": _RUNS_CODE, "functools": _RUNS_CODE, "types": _RUNS_CODE, "logging": f"{_RUNS_CODE} "
    "(logging.config) and writes files (handlers)", "pickle": _UNPICKLES, "_pickle": _UNPICKLES,
    "marshal": _UNPICKLES, "shelve": _UNPICKLES, "copyreg": _UNPICKLES,
    "ctypes": "calls arbitrary machine code", "_ctypes": "calls arbitrary machine code",
    "socket": _NETWORK, "_socket": _NETWORK, "ssl": _NETWORK, "http": _NETWORK, "urllib": _NETWORK,
    "ftplib": _NETWORK, "smtplib": _NETWORK, "socketserver": _NETWORK, "xmlrpc": _NETWORK,
    "signal": "sends or intercepts process signals", "_signal": "sends or intercepts process signals",
    "multiprocessing": "starts processes that run code", "_multiprocessing": "starts processes that run code",
    "threading": "starts threads that run code", "_thread": "starts threads that run code",
    "concurrent": "starts processes or threads that run code",
    # libraries: targets that look up other targets by name, unpickle, compile or write files
    "hydra": "looks up and builds other targets by name, which would bypass this check",
    "omegaconf": "evaluates resolvers and reads or writes config files",
    "torch.load": _UNPICKLES, "torch.serialization": f"{_UNPICKLES}, or writes files",
    "torch.save": _FILES, "torch.from_file": _FILES, "torch.hub": f"downloads and {_RUNS_CODE}",
    "torch.jit.load": "loads compiled code from a file", "torch.jit._serialization": "loads compiled code from a file",
    "torch.package": _RUNS_CODE, "torch.utils.cpp_extension": "compiles and loads native code",
    "torch.ops": "loads native libraries", "torch._ops": "loads native libraries",
    "torch.library": "registers native operators", "torch.multiprocessing": "starts processes that run code",
    "torch.distributed.run": _RUNS_COMMANDS, "torch.distributed.launch": _RUNS_COMMANDS,
    "torch.distributed.elastic": _RUNS_COMMANDS, "torch._dynamo": "compiles and runs code",
    "torch._inductor": "compiles and runs code",
    "numpy.load": _UNPICKLES, "numpy.lib.npyio": f"{_UNPICKLES}, or writes files", "numpy.save": _FILES,
    "numpy.savez": _FILES, "numpy.savez_compressed": _FILES, "numpy.savetxt": _FILES, "numpy.memmap": _FILES,
    "numpy.fromfile": "reads any file", "numpy.lib.format": _FILES,
    "numpy.ctypeslib": "loads native libraries", "numpy.f2py": "compiles and runs native code",
    "numpy.distutils": "compiles and runs native code", "numpy.testing": _RUNS_CODE,
    "pandas.read_pickle": _UNPICKLES, "pandas.io.pickle": _UNPICKLES, "pandas.to_pickle": _FILES,
    "pandas.eval": _RUNS_CODE, "pandas.core.computation": _RUNS_CODE,
    "torch_geometric.io": _FILES, "torch_geometric.data.download": f"downloads into and {_FILES}",
    "torch_geometric.data.extract": _FILES, "torch_geometric.data.makedirs": _FILES,
    "torch_geometric.graphgym": _RUNS_CODE, "ogb.utils.url": f"downloads into and {_FILES}",
    "dill": _UNPICKLES, "cloudpickle": _UNPICKLES, "joblib": f"{_UNPICKLES}, or starts processes",
    "yaml": "constructs arbitrary Python objects from YAML tags", "numba": "compiles and runs code",
    "llvmlite": "compiles and runs native code", "cffi": "calls arbitrary machine code",
    "Cython": "compiles and runs native code", "pyximport": "compiles and runs native code",
    "IPython": _RUNS_CODE, "pip": "installs packages (runs their setup code)",
    "setuptools": "builds and installs packages (runs their setup code)", "fsspec": _FILES,
    "requests": _NETWORK, "urllib3": _NETWORK, "psutil": "kills or changes other processes",
    # graphgt's own writers: a config builds objects that write where graphgt decides, never these
    "graphgt.io": _FILES, "graphgt.cli": "starts another run", "graphgt.app": "starts another run",
    "graphgt.data.common.writable_copy": _FILES, "graphgt.data.store.core.write_store": _FILES,
    "graphgt.data.store.core.add_arrays": _FILES, "graphgt.data.store.core.write_derived": _FILES,
    "graphgt.data.store.core.update_meta": _FILES, "graphgt.data.store.core.StoreWriter": _FILES,
    "graphgt.data.store.core.NpyAppender": _FILES,
}

#: standard-library modules whose callables only build plain values (the rest of the standard
#: library is refused: none of it is a model, data or training object)
STDLIB_ALLOWED = frozenset({"collections", "datetime", "decimal", "fractions", "math", "numbers"})

#: top-level names of the standard library (Python >= 3.10, as graphgt requires)
_STDLIB = frozenset(sys.stdlib_module_names)


def _prefixes(dotted: str) -> Iterable[str]:
    """``a.b.c`` -> ``a.b.c``, ``a.b``, ``a`` (longest first)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        yield ".".join(parts[:i])


def _why_refused(dotted: str) -> Optional[str]:
    """Why the dotted name ``dotted`` may not be a target, or None if it may."""
    for prefix in _prefixes(dotted):
        if prefix in REFUSED_TARGETS:
            return f"'{prefix}' {REFUSED_TARGETS[prefix]}"
    top = dotted.split(".")[0]
    if top in _STDLIB and top not in STDLIB_ALLOWED:
        return (f"'{top}' is a standard-library module; none of it is a model, data or training object, "
                f"and much of it runs code or touches files")
    return None


def _resolved_names(obj: Any) -> List[str]:
    """The name ``obj`` is known by where it is defined (``os.rmdir`` -> ``posix.rmdir``); for a
    callable instance, the name of its class."""
    if isinstance(obj, type(sys)):
        return [obj.__name__]
    if not (inspect.isclass(obj) or inspect.isroutine(obj)):
        obj = type(obj)
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module:
        return []
    return [f"{module}.{qualname}" if qualname else str(module)]


def refused_target(path: str, target: Any = None) -> Optional[str]:
    """Why ``path`` (a ``_target_`` value) may not be built, or None if it may.

    Checks the path as written (before anything is imported, so a refused module never runs its
    import-time code) and, when ``target`` is given, the names of the object it resolved to.
    """
    why = _why_refused(path)
    if why is None and target is not None:
        if isinstance(target, type(sys)):
            return f"'{path}' is a module, not a class or function"
        for name in _resolved_names(target):
            why = _why_refused(name)
            if why is not None:
                return f"it is {name}: {why}"
    return why


def _refuse(key: str, path: str, why: str) -> ConfigError:
    return ConfigError(f"{key}._target_: '{path}' is refused: {why}. A config may only name the classes and "
                       f"functions that build model, data and training objects (graphgt, torch.nn/optim, "
                       f"torch_geometric datasets, your own classes); do the rest outside graphgt.")


def import_target(path: str, key: str) -> Any:
    """Import ``a.b.C`` (the value of ``<key>._target_``) or raise a ConfigError that says which key.

    A target that runs code or touches files (:func:`refused_target`) is refused with the reason,
    before its module is imported.
    """
    why = refused_target(path)
    if why is not None:
        raise _refuse(key, path, why)
    module_name, _, attr = path.rpartition(".")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except ConfigError:  # the module itself says what is missing (e.g. logger=tensorboard without tensorboard)
        raise
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(f"{key}._target_: cannot import '{path}' ({e}). Check the spelling of the class path.") from None
    why = refused_target(path, target)
    if why is not None:
        raise _refuse(key, path, why)
    return target


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

#: the results.json keys a sweep may optimise (``objective=``): validation-side scores only
OBJECTIVES = {"best_val": "the run's best validation score, at the epoch whose weights are kept"}
#: the default ``objective``
DEFAULT_OBJECTIVE = "best_val"


def check_objective(value: Any) -> str:
    """The ``objective`` key (what a ``--multirun`` job returns to the sweeper): a validation-side
    results key, never a test score.  Returns it, or raises a ConfigError naming the bad value."""
    if value is None:
        return DEFAULT_OBJECTIVE
    valid = "; ".join(f"{k}: {why}" for k, why in OBJECTIVES.items())
    if isinstance(value, str) and value in OBJECTIVES:
        return value
    if isinstance(value, str) and "test" in value.lower():
        raise ConfigError(f"objective={value}: a sweep may not optimise a test score: choosing hyper-parameters "
                          "by the test set leaks it into model selection, and the test figure is then no longer "
                          f"an unbiased estimate. Use a validation score (valid: {valid}); the test score at the "
                          "best validation epoch stays in each run's results.json")
    raise ConfigError(f"objective={value!r}: not a validation score graphgt can return to a sweeper (valid: {valid})")


def check_objective_keys(container: Mapping[str, Any], errors: List[str]) -> None:
    """``loss``, ``huber_delta`` and ``target_standardize`` (:data:`OBJECTIVE_KEYS`): known values
    only.  Whether they suit the task (a regression loss on a classification task) is checked by
    the composition root once the data names its task (``app.build_objective``)."""
    for key, annotation in OBJECTIVE_KEYS.items():
        if key in container and not _matches(container[key], annotation):
            errors.append(f"{key}={container[key]!r}: expected {_describe(annotation)}")
    delta = container.get("huber_delta")
    if isinstance(delta, (int, float)) and not isinstance(delta, bool):
        if not delta > 0:
            errors.append(f"huber_delta={delta!r}: must be > 0 (the error at which Huber's loss turns from "
                          "quadratic to linear)")
        elif container.get("loss") != "huber":
            errors.append(f"huber_delta={delta!r}: applies to loss=huber only (loss={container.get('loss')}); "
                          "set loss=huber or remove huber_delta")


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
    if "objective" in container:
        try:
            check_objective(container["objective"])
        except ConfigError as e:
            errors.append(str(e))
    check_objective_keys(container, errors)
    _walk(container, "", errors)
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
