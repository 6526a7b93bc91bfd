"""Register the package's Keras classes as soon as Keras is imported.

``keras.models.load_model("m.keras")`` finds a class of ours only once it is registered, which
happens when :mod:`eegdino_tf.models` is imported; but that imports TensorFlow (seconds), and
``import eegdino_tf`` stays fast by importing nothing heavy. :func:`register_on_keras_import`
closes the gap: if Keras is already imported it registers now, otherwise it registers right
after the first ``import keras`` finishes (``import tensorflow`` imports Keras too), through a
finder on ``sys.meta_path`` that only wraps Keras' own loader and removes itself once used.
When Keras arrives from inside one of our own modules (``import eegdino_tf.layers`` first),
the classes register as soon as that module has finished (a second finder wraps our modules'
loaders until then): importing the models earlier would meet it half made.

A process that never imports ``eegdino_tf`` cannot load our ``.keras`` files: Keras imports the
module a config names only for its own packages, so ``keras.models.load_model`` ends in "Could
not locate class 'EEGDinoClassifier'" (the config it quotes names ``eegdino_tf.models``).
``import eegdino_tf`` first, before or after Keras, or load with :func:`eegdino_tf.load_keras`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Any


def register_on_keras_import() -> None:
    """Import :mod:`eegdino_tf.models` now if Keras is loaded, else once it is."""
    if "keras" in sys.modules:
        _register_when_ready()
    elif not any(isinstance(f, _KerasImportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _KerasImportFinder())
        sys.meta_path.insert(0, _PackageImportFinder())


#: Set when Keras arrived while a module of this package was still being imported
#: (``import eegdino_tf.layers`` first imports Keras from inside ``layers``): importing the
#: models then would meet that module half made, so they register once it has finished.
_pending = False


def _register_when_ready(finishing: str | None = None) -> None:
    """Register now, unless a module of this package other than ``finishing`` (the one whose
    import is just ending) is still being imported: then once the last of them has."""
    global _pending
    if _importing_package_modules() - {finishing}:
        _pending = True
        return
    _pending = False
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _PackageImportFinder)]
    _register()


def _importing_package_modules() -> set[str]:
    """This package's modules whose import is under way (their code not finished)."""
    return {
        name
        for name, module in list(sys.modules.items())
        if name.startswith("eegdino_tf.")
        and getattr(getattr(module, "__spec__", None), "_initializing", False)
    }


#: The modules that define the package's Keras classes (the fine-tuning optimizer and loss too).
KERAS_MODULES = ("eegdino_tf.models", "eegdino_tf.finetune.recipe", "eegdino_tf.resampling")


def _register() -> None:
    try:
        for module in KERAS_MODULES:
            importlib.import_module(module)
    except Exception as err:  # never break the user's own import of Keras
        warnings.warn(
            f"eegdino_tf could not register its Keras classes ({err}); import "
            "eegdino_tf.models before keras.models.load_model",
            stacklevel=2,
        )


class _WrappingFinder(importlib.abc.MetaPathFinder):
    """Finds the modules it :meth:`wraps` with the other finders and wraps their loaders in
    :meth:`wrapped`."""

    def wraps(self, name: str) -> bool:
        raise NotImplementedError

    def wrapped(self, loader: importlib.abc.Loader) -> importlib.abc.Loader:
        raise NotImplementedError

    def find_spec(self, name: str, path: Any = None, target: Any = None):
        if not self.wraps(name):
            return None
        others = [f for f in sys.meta_path if not isinstance(f, _WrappingFinder)]
        for finder in others:
            spec = getattr(finder, "find_spec", lambda *a: None)(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = self.wrapped(spec.loader)
                return spec
        return None


class _KerasImportFinder(_WrappingFinder):
    """Wraps Keras' loader in :class:`_ThenRegister`."""

    def wraps(self, name: str) -> bool:
        return name == "keras"

    def wrapped(self, loader: importlib.abc.Loader) -> importlib.abc.Loader:
        return _ThenRegister(loader)


class _PackageImportFinder(_WrappingFinder):
    """Wraps this package's modules' loaders in :class:`_ThenRegisterIfPending`, until the
    classes are registered."""

    def wraps(self, name: str) -> bool:
        return name.startswith("eegdino_tf.")

    def wrapped(self, loader: importlib.abc.Loader) -> importlib.abc.Loader:
        return _ThenRegisterIfPending(loader)


class _ThenRegister(importlib.abc.Loader):
    """Keras' own loader; after Keras has run, the finder goes and our classes register."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _KerasImportFinder)]
        _register_when_ready()


class _ThenRegisterIfPending(_ThenRegister):
    """A module of ours; once it has run, the classes register if Keras arrived meanwhile."""

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        if _pending:
            _register_when_ready(finishing=module.__name__)
