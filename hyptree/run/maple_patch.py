"""Install the HypTree plugin into an existing MaPLe / PromptSRC (CoOp-style) checkout.

Used by ``scripts/hyptree/install_into_maple.sh``; the logic lives here so it is tested.

What :func:`install` does to the checkout at ``MAPLE``:

* copies our ``trainers/*.py`` and ``datasets/*.py`` (not ``__init__.py``) into its
  ``trainers/`` and ``datasets/``;
* copies ``configs/trainers/*HypTree*/`` and ``configs/trainers/CoOpHier/`` into its
  ``configs/trainers/``;
* copies our ``configs/datasets/*.yaml`` into ``configs/datasets/hyptree/`` - a folder of
  their own, because MaPLe already has ``sun397.yaml``, ``imagenet.yaml``,
  ``imagenetv2.yaml``... for its non-hierarchical datasets (the scripts look there first);
* copies ``scripts/hyptree/*.sh`` into its ``scripts/hyptree/``;
* patches its ``train.py`` (:func:`patch_train_py`): imports of those trainer and dataset
  modules, and ``hyptree.run.config.add_hyptree_config(cfg)`` right after the
  ``extend_cfg(cfg)`` call in ``setup_cfg`` (it only adds missing keys, so MaPLe's own
  defaults stay as they are).

Safety: a file that exists in the checkout with *different* content is never
overwritten unless ``force=True``; a file with the same content is left alone; a Dassl
class name registered by one of our files that the checkout already registers in
another file is an error (Dassl's registry refuses duplicate names). Running it twice
changes nothing the second time.

Command line::

    python -m hyptree maple install MAPLE [--repo REPO] [--force] [--dry-run]
    python -m hyptree maple uninstall MAPLE [--force]
    python -m hyptree maple patch TRAIN_PY --trainers maple_hyptree ... --datasets ...
"""

from __future__ import annotations

import argparse
import ast
import filecmp
import glob
import hashlib
import json
import os
import re
import shutil
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from hyptree.utils.files import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = [
    "BEGIN",
    "END",
    "CALL_MARK",
    "patch_train_py",
    "registered_names",
    "plan_install",
    "install",
    "uninstall",
    "InstallError",
    "main",
]

BEGIN = "# >>> hyptree plugin (scripts/hyptree/install_into_maple.sh) >>>"
END = "# <<< hyptree plugin <<<"
CALL_MARK = "# hyptree plugin: add TRAINER.HYPTREE.* defaults"
COMPAT_BEGIN = "# >>> hyptree: Dassl 0.6.3 on current PyTorch (scripts/hyptree/install_into_maple.sh) >>>"
COMPAT_END = "# <<< hyptree: Dassl compat <<<"
COMPAT_BLOCK = [
    COMPAT_BEGIN,
    "import hyptree.run.dassl_compat",
    "",
    "hyptree.run.dassl_compat.apply_dassl_compat()  # before the trainers bind dassl.utils.load_checkpoint",
    COMPAT_END,
]
DATASET_CONFIG_SUBDIR = os.path.join("configs", "datasets", "hyptree")
STATE_DIR = ".hyptree"  # in the checkout: what install did (for uninstall) and where it came from
MANIFEST = os.path.join(STATE_DIR, "install.json")
SOURCE_FILE = os.path.join(STATE_DIR, "source")  # read by the copied install_into_maple.sh


class InstallError(RuntimeError):
    """A conflict or a train.py that cannot be patched; the message says what to do."""


# --------------------------------------------------------------------------- train.py


def _module_lines(prefix: str, modules: Sequence[str]) -> list[str]:
    for m in modules:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", m):
            raise ValueError(f"not a module name: {m!r}")
    return [f"import {prefix}.{m}  # noqa: F401" for m in sorted(set(modules))]


def _is_plugin_import(node: ast.stmt) -> bool:
    if isinstance(node, ast.Import):
        return any(a.name.split(".")[0] in ("trainers", "datasets") for a in node.names)
    if isinstance(node, ast.ImportFrom):
        return (node.module or "").split(".")[0] in ("trainers", "datasets")
    return False


def _find_extend_call(tree: ast.Module):
    """The ``extend_cfg(...)`` expression statement to put our call after (prefer ``setup_cfg``)."""

    def calls_in(nodes):
        for node in nodes:
            for sub in ast.walk(node):
                if (
                    isinstance(sub, ast.Expr)
                    and isinstance(sub.value, ast.Call)
                    and isinstance(sub.value.func, ast.Name)
                    and sub.value.func.id == "extend_cfg"
                ):
                    yield sub

    setup = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "setup_cfg"]
    for scope in (setup, tree.body):
        found = list(calls_in(scope))
        if found:
            return found[0]
    return None


def patch_train_py(
    text: str, trainer_modules: Sequence[str] = (), dataset_modules: Sequence[str] = (), filename: str = "train.py"
) -> str:
    """Return ``text`` with our imports and the ``add_hyptree_config`` call added (idempotent).

    The imports go in one marked block after the file's last ``import trainers.*`` /
    ``import datasets.*`` line (after its last top-level import when it has none); an
    existing block is replaced, so re-running with the same modules changes nothing.
    The call goes on the line after ``extend_cfg(cfg)`` inside ``setup_cfg``, with the
    same indentation and argument, unless the file already calls ``add_hyptree_config``.
    Raises ``InstallError`` when the file has no ``extend_cfg(...)`` call or does not parse.
    """
    newline = "\r\n" if "\r\n" in text else "\n"
    trailing_newline = text.endswith(newline)
    lines = (text[: -len(newline)] if trailing_newline else text).split(newline)
    block = [
        BEGIN,
        "import hyptree.run.config  # noqa: F401",
        *_module_lines("datasets", dataset_modules),
        *_module_lines("trainers", trainer_modules),
        END,
    ]

    # 1. imports: replace an existing block, else insert one
    if BEGIN in lines:
        start = lines.index(BEGIN)
        try:
            stop = lines.index(END, start)
        except ValueError:
            raise InstallError(
                f"{filename}: found {BEGIN!r} but not its end marker {END!r}; remove the partial block and run again"
            ) from None
        lines[start : stop + 1] = block
    else:
        try:
            tree = ast.parse(text, filename=filename)
        except SyntaxError as e:
            raise InstallError(f"{filename}: does not parse ({e}); cannot patch it") from None
        plugin = [n for n in tree.body if _is_plugin_import(n)]
        imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        anchor = plugin[-1] if plugin else (imports[-1] if imports else None)
        at = anchor.end_lineno if anchor is not None else 0
        lines[at:at] = ["", *block] if at else [*block, ""]

    # 2. the call after extend_cfg(cfg)
    joined = newline.join(lines) + (newline if trailing_newline else "")
    if "add_hyptree_config(" not in "\n".join(ln for ln in lines if not ln.lstrip().startswith("#")):
        try:
            tree = ast.parse(joined, filename=filename)
        except SyntaxError as e:
            raise InstallError(f"{filename}: does not parse ({e}); cannot patch it") from None
        call = _find_extend_call(tree)
        if call is None:
            raise InstallError(
                f"{filename}: no extend_cfg(...) call found; add "
                f"'hyptree.run.config.add_hyptree_config(cfg)' by hand after the config is created "
                f"and before cfg.merge_from_file(...)"
            )
        arg = ast.unparse(call.value.args[0]) if call.value.args else "cfg"
        indent = " " * call.col_offset
        lines.insert(call.end_lineno, f"{indent}hyptree.run.config.add_hyptree_config({arg})  {CALL_MARK}")
        joined = newline.join(lines) + (newline if trailing_newline else "")
    if COMPAT_BEGIN not in lines:
        joined = _insert_compat_block(joined, newline, trailing_newline, filename)
    try:
        compile(joined, filename, "exec")
    except SyntaxError as e:  # pragma: no cover - guards against a wrong insertion point
        raise InstallError(f"{filename}: patching produced invalid Python ({e}); patch it by hand") from None
    return joined


def _insert_compat_block(text: str, newline: str, trailing_newline: bool, filename: str) -> str:
    """The Dassl compat call goes first, after a docstring and ``from __future__`` imports:
    the trainers the file imports bind Dassl's functions at import time."""
    tree = ast.parse(text, filename=filename)
    at = 0
    for i, node in enumerate(tree.body):
        docstring = i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
        if not (docstring or future):
            break
        at = node.end_lineno
    lines = (text[: -len(newline)] if trailing_newline else text).split(newline)
    lines[at:at] = [*COMPAT_BLOCK, ""]
    return newline.join(lines) + (newline if trailing_newline else "")


# --------------------------------------------------------------------------- files


_REGISTERED = re.compile(r"@\w*REGISTRY\.register\(\s*\)\s*\n\s*class\s+(\w+)")


def registered_names(text: str) -> set[str]:
    """Class names a file registers with a Dassl registry (``@X_REGISTRY.register()``)."""
    return set(_REGISTERED.findall(text))


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def _write(path: str, data: bytes, mode_from: str) -> None:
    """Atomically write ``data`` to ``path`` with the permission bits of ``mode_from``
    (the temporary file of an atomic write is private; a script must stay executable)."""
    mode = stat.S_IMODE(os.stat(mode_from).st_mode)
    atomic_write_bytes(path, data)
    os.chmod(path, mode)


@dataclass
class Plan:
    copies: list = field(default_factory=list)  # (src, dst) to write
    same: list = field(default_factory=list)  # dst already identical
    conflicts: list = field(default_factory=list)  # dst differs (needs force)
    trainer_modules: list = field(default_factory=list)
    dataset_modules: list = field(default_factory=list)


def _sources(repo: str) -> list[tuple[str, str]]:
    """(source file, path relative to the checkout) for everything we install."""
    pairs = []
    for sub in ("trainers", "datasets"):
        for src in sorted(glob.glob(os.path.join(repo, sub, "*.py"))):
            if os.path.basename(src) != "__init__.py":
                pairs.append((src, os.path.join(sub, os.path.basename(src))))
    cfg_tr = os.path.join(repo, "configs", "trainers")
    dirs = sorted(set(glob.glob(os.path.join(cfg_tr, "*HypTree*")) + glob.glob(os.path.join(cfg_tr, "CoOpHier"))))
    for d in dirs:
        for src in sorted(glob.glob(os.path.join(d, "**", "*"), recursive=True)):
            if os.path.isfile(src):
                pairs.append((src, os.path.relpath(src, repo)))
    for src in sorted(glob.glob(os.path.join(repo, "configs", "datasets", "*.yaml"))):
        pairs.append((src, os.path.join(DATASET_CONFIG_SUBDIR, os.path.basename(src))))
    for src in sorted(glob.glob(os.path.join(repo, "scripts", "hyptree", "*.sh"))):
        pairs.append((src, os.path.join("scripts", "hyptree", os.path.basename(src))))
    return pairs


def plan_install(repo: str, maple: str) -> Plan:
    """What :func:`install` would do; raises ``InstallError`` for unusable inputs."""
    if not os.path.isfile(os.path.join(maple, "train.py")):
        raise InstallError(f"{maple}: no train.py here; pass the root of a MaPLe/PromptSRC checkout")
    for sub in ("trainers", "datasets"):
        if not os.path.isdir(os.path.join(maple, sub)):
            raise InstallError(f"{maple}: no {sub}/ folder; pass the root of a MaPLe/PromptSRC checkout")
    if not os.path.isfile(os.path.join(repo, "hyptree", "__init__.py")):
        raise InstallError(
            f"{repo}: not a HypTree repository (no hyptree/__init__.py); pass --repo (HYPTREE_REPO=) "
            f"the HypTree checkout to install from"
        )
    pairs = _sources(repo)
    if not any(rel.startswith(("trainers", "datasets")) for _, rel in pairs):
        raise InstallError(f"{repo}: no trainers/*.py or datasets/*.py to install")
    if os.path.realpath(repo) == os.path.realpath(maple):
        raise InstallError("the checkout to install into is this repository itself")

    plan = Plan()
    ours = {}  # registered class -> our file
    for src, rel in pairs:
        dst = os.path.join(maple, rel)
        if os.path.exists(dst):
            (plan.same if filecmp.cmp(src, dst, shallow=False) else plan.conflicts).append((src, dst))
        else:
            plan.copies.append((src, dst))
        if rel.endswith(".py"):
            for name in registered_names(_read(src)):
                ours[name] = rel
            module = os.path.splitext(os.path.basename(rel))[0]
            (plan.trainer_modules if rel.startswith("trainers") else plan.dataset_modules).append(module)

    # Dassl registry names: ours must not be registered by another file of the checkout
    ours_rel = {rel for _, rel in pairs}
    for sub in ("trainers", "datasets"):
        for path in sorted(glob.glob(os.path.join(maple, sub, "*.py"))):
            rel = os.path.relpath(path, maple)
            if rel in ours_rel:
                continue
            clash = registered_names(_read(path)) & set(ours)
            if clash:
                name = sorted(clash)[0]
                raise InstallError(
                    f"{path} already registers {name!r}, which our {ours[name]} registers too; "
                    f"Dassl refuses duplicate names - rename one of them"
                )
    return plan


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _new_dirs(maple: str, rels: Sequence[str]) -> list[str]:
    """Folders (relative) that writing ``rels`` creates, deepest first."""
    made = set()
    for rel in rels:
        d = os.path.dirname(rel)
        while d and not os.path.isdir(os.path.join(maple, d)):
            made.add(d)
            d = os.path.dirname(d)
    return sorted(made, key=lambda d: (-d.count(os.sep), d))


def _read_manifest(maple: str) -> dict | None:
    path = os.path.join(maple, MANIFEST)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def install(repo: str, maple: str, force: bool = False, dry_run: bool = False, log=print) -> Plan:
    """Copy our files into ``maple`` and patch its ``train.py`` (see the module docstring).

    Records in ``MAPLE/.hyptree/`` what it wrote (with the SHA-256 of each file), a copy of
    every file it replaced (``train.py``; with ``force`` the overwritten ones) and the HypTree
    source folder, so that :func:`uninstall` restores the checkout byte for byte."""
    plan = plan_install(repo, maple)
    if plan.conflicts and not force:
        listing = "\n".join(f"  {dst}" for _, dst in plan.conflicts)
        raise InstallError(
            f"these files exist in {maple} with different content:\n{listing}\n"
            f"nothing was changed; rerun with FORCE=1 (--force) to overwrite them"
        )
    train_py = os.path.join(maple, "train.py")
    old = _read(train_py)
    new = patch_train_py(old, plan.trainer_modules, plan.dataset_modules, filename=train_py)
    writes = plan.copies + (plan.conflicts if force else [])
    manifest = _read_manifest(maple) or {"files": {}, "replaced": [], "dirs": []}
    rels = [os.path.relpath(dst, maple) for _, dst in writes]
    if not dry_run:
        for d in _new_dirs(maple, [*rels, MANIFEST]):
            if d not in manifest["dirs"]:
                manifest["dirs"].append(d)
    for (src, dst), rel in zip(writes, rels):
        log(f"{'would copy' if dry_run else 'copy'} {rel}")
        if dry_run:
            continue
        if os.path.exists(dst) and rel not in manifest["replaced"] and rel not in manifest["files"]:
            _write(os.path.join(maple, STATE_DIR, "replaced", rel), open(dst, "rb").read(), mode_from=dst)
            manifest["replaced"].append(rel)
        with open(src, "rb") as f:
            _write(dst, f.read(), mode_from=src)
        manifest["files"][rel] = _sha256(dst)
    if plan.same:
        log(f"{len(plan.same)} file(s) already up to date")
    if new != old:
        log(f"{'would patch' if dry_run else 'patch'} train.py (Dassl compat, imports, add_hyptree_config)")
        if not dry_run:
            if "train.py" not in manifest["replaced"]:
                _write(os.path.join(maple, STATE_DIR, "replaced", "train.py"), old.encode("utf-8"), train_py)
                manifest["replaced"].append("train.py")
            _write(train_py, new.encode("utf-8"), mode_from=train_py)
            manifest["files"]["train.py"] = _sha256(train_py)
    else:
        log("train.py already patched")
    if not dry_run:
        manifest["source"] = os.path.abspath(repo)
        atomic_write_text(os.path.join(maple, SOURCE_FILE), manifest["source"] + "\n")
        atomic_write_json(os.path.join(maple, MANIFEST), manifest, sort_keys=True)
    return plan


def uninstall(maple: str, force: bool = False, log=print) -> None:
    """Undo :func:`install`: delete what it wrote, put back what it replaced, remove the
    folders it created. A file changed since the install is an error unless ``force``."""
    manifest = _read_manifest(maple)
    if manifest is None:
        raise InstallError(f"{maple}: no HypTree install recorded ({MANIFEST} is missing); nothing to undo")
    changed = [
        rel
        for rel, digest in sorted(manifest["files"].items())
        if os.path.exists(os.path.join(maple, rel)) and _sha256(os.path.join(maple, rel)) != digest
    ]
    if changed and not force:
        listing = "\n".join(f"  {rel}" for rel in changed)
        raise InstallError(
            f"these installed files were changed since the install:\n{listing}\n"
            f"nothing was removed; rerun with FORCE=1 (--force) to remove or restore them anyway"
        )
    for rel in sorted(manifest["files"]):
        path = os.path.join(maple, rel)
        if rel in manifest["replaced"]:
            saved = os.path.join(maple, STATE_DIR, "replaced", rel)
            with open(saved, "rb") as f:
                _write(path, f.read(), mode_from=saved)
            log(f"restore {rel}")
        elif os.path.exists(path):
            os.remove(path)
            log(f"remove {rel}")
        if rel.endswith(".py"):  # the byte code Python wrote for our modules
            stem = os.path.splitext(os.path.basename(rel))[0]
            for pyc in glob.glob(os.path.join(os.path.dirname(path), "__pycache__", f"{stem}.*.pyc")):
                os.remove(pyc)
    shutil.rmtree(os.path.join(maple, STATE_DIR))
    for d in manifest["dirs"]:
        path = os.path.join(maple, d)
        cache = os.path.join(path, "__pycache__")
        if os.path.isdir(cache) and not os.listdir(cache):
            os.rmdir(cache)
        if os.path.isdir(path) and not os.listdir(path):
            os.rmdir(path)
    log(f"uninstalled HypTree from {maple}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hyptree maple", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_inst = sub.add_parser("install", help="copy our trainers/datasets/configs/scripts and patch train.py")
    p_inst.add_argument("maple", help="root of the MaPLe / PromptSRC checkout")
    p_inst.add_argument(
        "--repo",
        default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        help="this repository's root (default: the one holding this hyptree package)",
    )
    p_inst.add_argument("--force", action="store_true", help="overwrite files that differ")
    p_inst.add_argument("--dry-run", action="store_true", help="only say what would change")
    p_un = sub.add_parser("uninstall", help="undo install: the checkout as it was before")
    p_un.add_argument("maple", help="root of the MaPLe / PromptSRC checkout")
    p_un.add_argument("--force", action="store_true", help="also when installed files were changed since")
    p_patch = sub.add_parser("patch", help="patch one train.py in place")
    p_patch.add_argument("train_py")
    p_patch.add_argument("--trainers", nargs="*", default=[])
    p_patch.add_argument("--datasets", nargs="*", default=[])
    args = parser.parse_args(argv)
    try:
        if args.cmd == "install":
            install(args.repo, args.maple, force=args.force, dry_run=args.dry_run)
        elif args.cmd == "uninstall":
            uninstall(args.maple, force=args.force)
        else:
            old = _read(args.train_py)
            new = patch_train_py(old, args.trainers, args.datasets, filename=args.train_py)
            if new != old:
                _write(args.train_py, new.encode("utf-8"), mode_from=args.train_py)
                print(f"patched {args.train_py}")
            else:
                print(f"{args.train_py} already patched")
    except (InstallError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
