"""Reading pickles without trusting them (ProTeCt ``tree.npy``, CIFAR-100 ``meta``, cut files).

Pickles are never loaded with plain ``pickle.load``: a restricted unpickler builds
only basic containers and numpy arrays, and turns every other class it meets into
an inert `StandIn` object that just records its attributes.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

__all__ = ["StandIn", "loads_permissive", "load_pickle_file"]


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

_SAFE_GLOBALS = {
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
_PY2_BUILTINS = {"__builtin__": "builtins", "copy_reg": "copyreg"}
_NUMPY_OK = {
    "_reconstruct",
    "ndarray",
    "dtype",
    "scalar",
    "_frombuffer",
}


class _PermissiveUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        module = _PY2_BUILTINS.get(module, module)
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        if module.split(".")[0] == "numpy" and name in _NUMPY_OK:
            if module.startswith("numpy.core") and int(np.__version__.split(".")[0]) >= 2:
                module = "numpy._core" + module[len("numpy.core") :]
            return super().find_class(module, name)
        key = (module, name)
        if key not in _standins:
            _standins[key] = type(name, (StandIn,), {"_pickle_module": module, "_pickle_name": name})
        return _standins[key]

    def persistent_load(self, pid):
        return StandIn(pid)


def loads_permissive(data: bytes, source: str = "<pickle>"):
    """Unpickle ``data`` with stand-ins for unknown classes; ``ValueError`` naming ``source`` on failure."""
    try:
        return _PermissiveUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:
        raise ValueError(f"{source}: cannot unpickle ({type(e).__name__}: {e})") from None


def load_pickle_file(path: str):
    """Load a pickle, or an ``.npy`` file holding a pickled object array, safely.
    A 0-d object array is unwrapped to its element."""
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
    obj = loads_permissive(data, source=path)
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    return obj
