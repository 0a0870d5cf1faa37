"""Type annotations on the public surface: every public function and method of the modules
listed in MODULES annotates each parameter (self/cls aside) and its return, and every
annotation names something that exists. Nothing here runs JAX."""
import importlib
import inspect
import os
import typing

import pytest

import imnn

PACKAGE = os.path.dirname(os.path.abspath(imnn.__file__)) + os.sep

# The modules whose public functions, classes and methods must be fully annotated. A module
# with __all__ is checked on those names, otherwise on its public functions and classes.
MODULES = ("imnn.lfi", "imnn.simulators", "imnn.utils", "imnn.plotting", "imnn.optimisers",
           "imnn._factory", "imnn._models", "imnn._checks", "imnn._compilation",
           "imnn.contracts", "imnn.nn", "imnn.tfrecords", "imnn.datasets", "imnn.persistence",
           "imnn._fitted")

# Methods a class inherits from object or typing, and those it must annotate when it
# writes them itself.
DUNDERS = ("__init__", "__call__")


def _defined_in_imnn(function) -> bool:
    """Written in a file of the imnn package (not generated, e.g. by NamedTuple or dataclass)."""
    code = getattr(function, "__code__", None)
    return code is not None and os.path.abspath(code.co_filename).startswith(PACKAGE)


def public_names(module):
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [name for name, value in vars(module).items()
            if not name.startswith("_") and (inspect.isfunction(value) or inspect.isclass(value))
            and value.__module__ == module.__name__]


def functions_of(obj):
    """(qualified name, function) for a public function, or a class's constructor and public
    methods and properties written in imnn (generated ones, e.g. a NamedTuple's, left out)."""
    if inspect.isfunction(obj):
        if _defined_in_imnn(obj):
            yield obj.__qualname__, obj
        return
    if not inspect.isclass(obj):
        return
    for klass in obj.__mro__:
        if not klass.__module__.startswith("imnn"):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") and name not in DUNDERS:
                continue
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            elif isinstance(value, property):
                value = value.fget
            elif hasattr(value, "func") and hasattr(value, "attrname"):  # cached_property
                value = value.func
            if inspect.isfunction(value) and _defined_in_imnn(value):
                yield value.__qualname__, value


def unannotated(function) -> list[str]:
    """The parameters (self and cls aside) and the return that ``function`` leaves without
    an annotation."""
    signature = inspect.signature(function)
    parameters = list(signature.parameters.values())
    if parameters and parameters[0].name in ("self", "cls") and "." in function.__qualname__:
        parameters = parameters[1:]
    missing = [p.name for p in parameters if p.annotation is inspect.Parameter.empty]
    if signature.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


def type_checking_names() -> dict:
    """What the modules import under ``if TYPE_CHECKING:`` only, to resolve their annotations."""
    import matplotlib.figure
    import optax

    from imnn._base import BaseIMNN
    from imnn._fitting import Problem, Runner
    return {"Figure": matplotlib.figure.Figure, "optax": optax, "BaseIMNN": BaseIMNN,
            "Problem": Problem, "Runner": Runner}


def public_functions() -> dict:
    found = {}
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in public_names(module):
            for qualified, function in functions_of(getattr(module, name)):
                found.setdefault(f"{function.__module__}.{qualified}", function)
    return found


PUBLIC = public_functions()


def test_the_surface_is_found():
    # Guards against a collector that silently finds nothing.
    assert len(PUBLIC) > 60
    for name in ("imnn.lfi._abc.ApproximateBayesianComputation.__call__",
                 "imnn.lfi._priors.Uniform.sample", "imnn._factory.IMNN",
                 "imnn.simulators.GaussianRandomField.fisher", "imnn.contracts.Runtime.executor",
                 "imnn.optimisers.FitRecipe.model"):
        assert name in PUBLIC


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_function_is_fully_annotated(name):
    missing = unannotated(PUBLIC[name])
    assert not missing, f"{name}: no annotation on {missing}"


def test_every_annotation_resolves():
    """Annotations are strings (``from __future__ import annotations``): each must evaluate
    in its module, so a renamed or misspelt type fails here and not in a user's type checker."""
    extra = type_checking_names()
    failures = []
    for name, function in PUBLIC.items():
        try:
            typing.get_type_hints(function, localns=extra)
        except Exception as error:  # noqa: BLE001 - report every failure together
            failures.append(f"{name}: {type(error).__name__}: {error}")
    assert not failures, "\n".join(failures)


def test_the_check_catches_what_it_should():
    def partly(a: int, b, *args: int, c: str = "", **kwargs) -> None: ...

    def no_return(a: int): ...

    class Methods:
        def method(self, x: int) -> int: ...

        @classmethod
        def build(cls, y) -> "Methods": ...

    assert unannotated(partly) == ["b", "kwargs"]
    assert unannotated(no_return) == ["return"]
    assert unannotated(Methods.method) == []
    assert unannotated(Methods.build.__func__) == ["y"]
