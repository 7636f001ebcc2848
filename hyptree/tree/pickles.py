"""Reading pickles without trusting them (ProTeCt ``tree.npy``, CIFAR-100 pickles, cut files).

Pickles are never loaded with plain ``pickle.load``. Each kind of file has an explicit
allow-list of exact ``(module, name)`` globals (:data:`KINDS`):

* *real* globals - basic containers and the few numpy functions that rebuild arrays
  (``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``, ...) - are
  imported and called as usual;
* *stand-in* globals - ProTeCt's ``treelibs.Tree`` / ``treelibs.TreeNode`` - are never
  imported: they become inert `StandIn` classes that only record their attributes;
* any other global is refused with a ``ValueError`` naming the file and the global, before
  anything is imported (a crafted ``tree.npy`` naming ``os.system`` or
  ``numpy.f2py.__main__`` does nothing but fail).
"""

from __future__ import annotations

import io
import pickle

import numpy as np

__all__ = ["StandIn", "KINDS", "loads_permissive", "load_pickle_file"]


class StandIn:
    """Inert replacement for a class a pickle refers to. Keeps constructor arguments
    in ``_args``, state in ``__dict__`` and list/dict contents in ``_items``/``_map``."""

    _pickle_module = "?"
    _pickle_name = "?"

    def __init__(self, *args, **kwargs):
        self.__dict__["_args"] = args
        self.__dict__.update(kwargs)

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update({k.decode() if isinstance(k, bytes) else k: v for k, v in state.items()})
        else:
            self.__dict__["_state"] = state

    def append(self, x):
        self.__dict__.setdefault("_items", []).append(x)

    def extend(self, xs):
        self.__dict__.setdefault("_items", []).extend(xs)

    def __setitem__(self, k, v):
        self.__dict__.setdefault("_map", {})[k] = v

    def __repr__(self):
        return f"<stand-in {self._pickle_module}.{self._pickle_name}>"


_standins: dict = {}

_BASIC = frozenset(
    {
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "list"),
        ("builtins", "dict"),
        ("builtins", "tuple"),
        ("builtins", "object"),
        ("builtins", "slice"),
        ("builtins", "complex"),
        ("builtins", "bytearray"),
        ("builtins", "bytes"),
        ("builtins", "str"),
        ("builtins", "int"),
        ("builtins", "float"),
        ("builtins", "bool"),
        ("builtins", "range"),
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
        ("copyreg", "_reconstructor"),
        ("_codecs", "encode"),
    }
)
_NUMPY = frozenset(
    {
        (core, name)
        for core in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    }
    | {("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}
    | {("numpy", "ndarray"), ("numpy", "dtype")}
)
KINDS: dict[str, tuple[frozenset, frozenset]] = {
    # ProTeCt's tree.npy: a pickled treelibs.Tree of treelibs.TreeNode objects (the official
    # Rare Species tree is a treelibs.TreeForRareSpecies, a Tree subclass with the same state)
    "protect_tree": (
        _BASIC | _NUMPY,
        frozenset({("treelibs", "Tree"), ("treelibs", "TreeForRareSpecies"), ("treelibs", "TreeNode")}),
    ),
    # ProTeCt's treecut files: lists / dicts / sets of names, flags or index arrays
    "cuts": (_BASIC | _NUMPY, frozenset()),
    # the CIFAR-100 python archive's meta / train / test: dicts of bytes, lists, uint8 arrays
    "cifar100": (_BASIC | _NUMPY, frozenset()),
}
"""``kind -> (real globals, stand-in globals)``: the exact ``(module, name)`` pairs a file of
that kind may name (Python 2 names ``__builtin__`` / ``copy_reg`` are read as ``builtins`` /
``copyreg``)."""
_PY2_BUILTINS = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, kind: str, source: str, **kwargs):
        super().__init__(file, **kwargs)
        if kind not in KINDS:
            raise ValueError(f"unknown pickle kind {kind!r}; known: {', '.join(KINDS)}")
        self.real, self.standin = KINDS[kind]
        self.kind, self.source = kind, source

    def find_class(self, module, name):
        module = _PY2_BUILTINS.get(module, module)
        key = (module, name)
        if key in self.real:
            if module.startswith("numpy.core") and int(np.__version__.split(".")[0]) >= 2:
                module = "numpy._core" + module[len("numpy.core") :]
            return super().find_class(module, name)
        if key in self.standin:
            if key not in _standins:
                _standins[key] = type(name, (StandIn,), {"_pickle_module": module, "_pickle_name": name})
            return _standins[key]
        raise _Refused(
            f"{self.source}: refusing to unpickle the global {module}.{name}: not on the allow-list "
            f"of {self.kind} files (hyptree.tree.pickles.KINDS); the file is not what it claims "
            f"or was crafted"
        )

    def persistent_load(self, pid):
        return StandIn(pid)


class _Refused(pickle.UnpicklingError):
    pass


def loads_permissive(data: bytes, source: str = "<pickle>", kind: str = "cuts", encoding: str = "latin1"):
    """Unpickle ``data`` under the allow-list of ``kind`` (:data:`KINDS`); ``ValueError`` naming
    ``source`` on a refused global or any other failure."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data), kind, source, encoding=encoding).load()
    except _Refused as e:
        raise ValueError(str(e)) from None
    except Exception as e:
        raise ValueError(f"{source}: cannot unpickle ({type(e).__name__}: {e})") from None


def load_pickle_file(path: str, kind: str = "protect_tree", encoding: str = "latin1"):
    """Load a pickle, or an ``.npy`` file holding a pickled object array, under the
    allow-list of ``kind``. A 0-d object array is unwrapped to its element."""
    with open(path, "rb") as f:
        head = f.read(6)
        f.seek(0)
        if head == b"\x93NUMPY":
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            if not dtype.hasobject:
                raise ValueError(f"{path}: a plain {dtype} array of shape {shape}, not a pickled object tree")
            data = f.read()
        else:
            data = f.read()
    obj = loads_permissive(data, source=path, kind=kind, encoding=encoding)
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    return obj
