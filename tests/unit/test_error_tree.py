"""The error tree of app/errors.py: every exception class under app/ is in it, drawn where it is."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import app
from app import errors
from app.errors import (
    ClientRefusal,
    ErrorCode,
    InternalError,
    OnnxServeError,
    ServingError,
    Unavailable,
)

BRANCHES = (ClientRefusal, Unavailable, InternalError)
#: the codes of "try again later" (and "not in this server's present state")
LATER = {ErrorCode.UNAVAILABLE, ErrorCode.OVERLOADED, ErrorCode.DEADLINE_EXCEEDED,
         ErrorCode.FAILED_PRECONDITION}


def exception_classes() -> list[type[BaseException]]:
    """Every exception class defined at the top level of a module under app/."""
    found: list[type[BaseException]] = []
    for info in pkgutil.walk_packages(app.__path__, "app."):
        if "protos_gen" in info.name:
            continue
        module = importlib.import_module(info.name)
        found += [obj for obj in vars(module).values() if inspect.isclass(obj)
                  and issubclass(obj, BaseException) and obj.__module__ == info.name]
    return found


def drawn_parents() -> dict[str, str | None]:
    """class name -> the name it is drawn under in app/errors.py's docstring."""
    assert errors.__doc__
    lines = errors.__doc__.splitlines()
    root = lines.index("    OnnxServeError")
    parents: dict[str, str | None] = {"OnnxServeError": None}
    stack = ["OnnxServeError"]  # stack[d] is the latest node at depth d
    for line in lines[root + 1:]:
        marker = max(line.find("├── "), line.find("└── "))
        if marker < 0:
            continue  # a node's note that runs on
        depth = (marker - 4) // 4 + 1
        name = line[marker + 4:].split()[0]
        del stack[depth:]
        parents[name] = stack[depth - 1]
        stack.append(name)
    return parents


CLASSES = exception_classes()


def test_the_walk_finds_the_classes_of_every_package() -> None:
    modules = {cls.__module__ for cls in CLASSES}
    assert {"app.errors", "app.shm.errors"} <= modules
    assert len(CLASSES) > 30


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_every_exception_derives_from_the_root(cls: type[BaseException]) -> None:
    assert issubclass(cls, OnnxServeError)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_the_docstring_draws_each_class_under_its_base(cls: type[BaseException]) -> None:
    parents = drawn_parents()
    assert cls.__name__ in parents, f"{cls.__name__} is missing from app/errors.py's tree"
    ours = [base.__name__ for base in cls.__bases__ if issubclass(base, OnnxServeError)]
    assert len(ours) <= 1, "one base inside the tree; others (ValueError, OSError) outside"
    assert parents[cls.__name__] == (ours[0] if ours else None)


def test_the_docstring_draws_no_class_that_is_gone() -> None:
    assert set(drawn_parents()) == {cls.__name__ for cls in CLASSES}


SERVING = [cls for cls in CLASSES if issubclass(cls, ServingError)
           and cls not in (ServingError, *BRANCHES)]


@pytest.mark.parametrize("cls", SERVING, ids=lambda c: c.__name__)
def test_each_serving_error_has_its_own_code_on_one_branch(cls: type[ServingError]) -> None:
    """A request's error states its ErrorCode (never ServingError's default by accident)
    and sits on the branch its code belongs to."""
    branch = next(b for b in BRANCHES if issubclass(cls, b))
    setter = next(k for k in cls.__mro__ if "code" in vars(k))
    assert isinstance(cls.code, ErrorCode)
    assert setter not in (ServingError, ClientRefusal, Unavailable), "no code of its own"
    if branch is Unavailable:
        assert cls.code in LATER
    elif branch is InternalError:
        assert cls.code is ErrorCode.INTERNAL
    else:
        assert cls.code not in LATER | {ErrorCode.INTERNAL}


def test_every_error_code_is_carried_by_a_class() -> None:
    assert {cls.code for cls in SERVING} == set(ErrorCode)


@pytest.mark.parametrize("cls", [c for c in CLASSES if not issubclass(c, ServingError)],
                         ids=lambda c: c.__name__)
def test_what_is_not_a_request_error_has_no_code(cls: type[BaseException]) -> None:
    """Load and startup failures reach clients only as a version's reason or a CLI exit:
    a ServingError handler must never catch them."""
    assert not hasattr(cls, "code")
    assert issubclass(cls, errors.LoadFailure | errors.StartupFailure) or cls in (
        OnnxServeError, errors.WireError)


def test_the_extra_bases_callers_catch_remain() -> None:
    """`except ValueError` / `except OSError` sites rely on these."""
    values = (errors.KeysError, errors.TritonConfigError, errors.TritonFlagError,
              errors.NotOnnx, errors.GraphError, errors.WireError)
    assert all(issubclass(cls, ValueError) for cls in values)
    assert all(issubclass(cls, OSError) for cls in (errors.ObjectStoreError,
                                                     errors.CredentialError))
