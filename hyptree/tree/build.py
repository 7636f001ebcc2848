"""Turning the canonical ``/``-path lines and ``(parent, child)`` edges into tree arrays.

Both builders return ``(names, parent, leaves, display)``: node names in
depth-first pre-order from the root (children in order of first appearance),
parent ids (``-1`` for the root), the classes as node names in label order, and a
``{name: display text}`` mapping. `Taxonomy.from_paths` / `Taxonomy.from_edges`
are thin wrappers that hand these to the `Taxonomy` constructor.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

__all__ = ["ROOT_NAME", "paths_to_arrays", "edges_to_arrays", "check_class_order"]

ROOT_NAME = "root"

TreeArrays = tuple  # (names: list[str], parent: list[int], leaves: list[str], display: dict[str, str])


# ====================================================================== '/'-path lines
def _root_directive(lines: list[str], source: str) -> str | None:
    """The name given by the single ``@root NAME`` line, or ``None``."""
    directives = [
        (n, ln.strip()[len("@root") :].strip())
        for n, ln in enumerate(lines, start=1)
        if ln.strip().startswith("@root ") and " = " not in ln
    ]
    if len(directives) > 1:
        raise ValueError(f"{source}:{directives[1][0]}: a second '@root' line")
    if directives and not directives[0][1]:
        raise ValueError(f"{source}:{directives[0][0]}: '@root' needs a name")
    return directives[0][1] if directives else None


def _is_root_line(line: str) -> bool:
    return line.startswith("@root ") and " = " not in line


def _display_line(raw: str, line: str, lineno: int, source: str) -> tuple[str, str]:
    """``@ NAME = TEXT`` -> ``(NAME, TEXT)``."""
    body = line[1:]
    if " = " not in body:
        raise ValueError(f"{source}:{lineno}: display-name line must read '@ NAME = TEXT': {raw!r}")
    name, text = body.split(" = ", 1)
    name, text = name.strip(), text.strip()
    if not name or not text:
        raise ValueError(f"{source}:{lineno}: empty name or display text in {raw!r}")
    return name, text


def _path_parts(raw: str, line: str, lineno: int, root_name: str, source: str) -> list[str]:
    parts = [p.strip() for p in line.split("/")]
    if any(not p for p in parts):
        raise ValueError(
            f"{source}:{lineno}: empty path component in {raw!r} "
            "(no leading/trailing '/' or '//'; the root is implicit)"
        )
    if len(set(parts)) != len(parts):
        raise ValueError(f"{source}:{lineno}: a name repeats within the path {raw!r} (cycle)")
    if root_name in parts:
        raise ValueError(
            f"{source}:{lineno}: the root {root_name!r} is implicit and must not appear in a path: {raw!r}"
        )
    return parts


class _PathTree:
    """Nodes collected from path lines, with the line numbers errors refer to."""

    def __init__(self, root_name: str, source: str):
        self.root, self.source = root_name, source
        self.parent_of: dict[str, str] = {}
        self.where: dict[str, int] = {}
        self.kids: dict[str, list[str]] = {root_name: []}
        self.leaf_order: list[str] = []
        self.leaf_line: dict[str, int] = {}
        self.internal_line: dict[str, int] = {}

    def add(self, parts: list[str], raw: str, lineno: int) -> None:
        src = self.source
        par = self.root
        for j, name in enumerate(parts):
            self._attach(name, par, lineno)
            if j < len(parts) - 1:
                if name in self.leaf_line:
                    raise ValueError(
                        f"{src}:{lineno}: {name!r} is a class (line {self.leaf_line[name]}) and also has children here"
                    )
                self.internal_line.setdefault(name, lineno)
            par = name
        leaf = parts[-1]
        if leaf in self.internal_line:
            raise ValueError(
                f"{src}:{lineno}: class {leaf!r} is an internal node (has children on line {self.internal_line[leaf]})"
            )
        if leaf in self.leaf_line:
            raise ValueError(f"{src}:{lineno}: class {leaf!r} is listed twice (first on line {self.leaf_line[leaf]})")
        self.leaf_line[leaf] = lineno
        self.leaf_order.append(leaf)

    def _attach(self, name: str, par: str, lineno: int) -> None:
        if name in self.parent_of:
            if self.parent_of[name] != par:
                raise ValueError(
                    f"{self.source}:{lineno}: node with two parents: {name!r} is under "
                    f"{self.parent_of[name]!r} (line {self.where[name]}) and under {par!r}"
                )
            return
        self.parent_of[name] = par
        self.where[name] = lineno
        self.kids[par].append(name)
        self.kids[name] = []


def paths_to_arrays(
    lines: Iterable[str] | str,
    class_order: Sequence[str] | None = None,
    display_names: Mapping[str, str] | None = None,
    root_name: str | None = None,
    source: str = "<paths>",
) -> TreeArrays:
    """Parse the canonical text format (rules in `Taxonomy.from_paths`) into
    ``(names, parent, leaves, display)``; errors name ``source:line``."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    lines = list(lines)
    directive = _root_directive(lines, source)
    if root_name is None:
        root_name = directive if directive is not None else ROOT_NAME
    tree = _PathTree(root_name, source)
    disp: dict[str, str] = {}
    disp_line: dict[str, int] = {}
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#") or _is_root_line(line):
            continue
        if line.startswith("@"):
            name, text = _display_line(raw, line, lineno, source)
            disp[name] = text
            disp_line[name] = lineno
            continue
        tree.add(_path_parts(raw, line, lineno, root_name, source), raw, lineno)
    if not tree.leaf_order:
        raise ValueError(f"{source}: no paths found")
    for name, lineno in disp_line.items():
        if name != root_name and name not in tree.parent_of:
            raise ValueError(f"{source}:{lineno}: display name for unknown node {name!r}")
    if display_names:
        disp.update(display_names)
    check_class_order(tree.leaf_order, class_order, source)
    leaves = list(class_order) if class_order is not None else tree.leaf_order
    return _preorder(root_name, tree.kids, leaves, disp, source)


# ====================================================================== edges
def edges_to_arrays(
    edges: Iterable[tuple[str, str]],
    class_order: Sequence[str] | None = None,
    display_names: Mapping[str, str] | None = None,
    root: str = ROOT_NAME,
    source: str = "<edges>",
) -> TreeArrays:
    """``(parent_name, child_name)`` pairs (rules in `Taxonomy.from_edges`) ->
    ``(names, parent, leaves, display)``."""
    parent_of: dict[str, str] = {}
    kids: dict[str, list[str]] = {root: []}
    order: list[str] = [root]
    for p, c in edges:
        if not isinstance(p, str) or not isinstance(c, str):
            raise ValueError(f"{source}: edge ({p!r}, {c!r}) must join two names")
        if c == root:
            raise ValueError(f"{source}: the root {root!r} cannot be a child (edge from {p!r})")
        if p == c:
            raise ValueError(f"{source}: node {c!r} is its own parent (cycle)")
        if c in parent_of:
            if parent_of[c] != p:
                raise ValueError(f"{source}: node with two parents: {c!r} is under {parent_of[c]!r} and {p!r}")
            continue
        parent_of[c] = p
        for x in (p, c):
            if x not in kids:
                kids[x] = []
                order.append(x)
        kids[p].append(c)
    _check_connected(root, kids, order, parent_of, source)
    leaf_order = [x for x in order if not kids[x]]
    if class_order is not None:
        check_class_order(leaf_order, class_order, source)
        leaf_order = list(class_order)
    return _preorder(root, kids, leaf_order, dict(display_names or {}), source)


def _check_connected(root, kids, order, parent_of, source) -> None:
    """Everything must hang from the root; names a cycle or the detached top node."""
    reached = set()
    stack = [root]
    while stack:
        x = stack.pop()
        reached.add(x)
        stack.extend(kids[x])
    lost = [x for x in order if x not in reached]
    if not lost:
        return
    cyc = _find_cycle(lost[0], parent_of)
    if cyc:
        raise ValueError(f"{source}: cycle: {' -> '.join(repr(x) for x in cyc)}")
    top = lost[0]
    while top in parent_of:
        top = parent_of[top]
    raise ValueError(
        f"{source}: node {lost[0]!r} is not connected to the root {root!r} (its topmost ancestor {top!r} has no parent)"
    )


def _find_cycle(start, parent_of) -> list | None:
    seen: list = []
    x = start
    while x in parent_of:
        if x in seen:
            return seen[seen.index(x) :] + [x]
        seen.append(x)
        x = parent_of[x]
    return None


# ====================================================================== shared
def _preorder(root, kids, leaf_order, disp, source) -> TreeArrays:
    """Number the nodes depth-first from ``root``, children in ``kids`` order."""
    names: list[str] = []
    parent: list[int] = []
    stack = [(root, -1)]
    while stack:
        name, p = stack.pop()
        i = len(names)
        names.append(name)
        parent.append(p)
        for c in reversed(kids.get(name, [])):
            stack.append((c, i))
    known = set(names)
    unknown = [k for k in disp if k not in known]
    if unknown:
        raise ValueError(f"{source}: display name given for unknown node {unknown[0]!r}")
    return names, parent, leaf_order, disp


def check_class_order(leaf_names: Sequence[str], class_order: Sequence[str] | None, source: str) -> None:
    """Raise ``ValueError`` listing missing, extra and repeated names unless
    ``class_order`` (when given) names exactly ``leaf_names``."""
    if class_order is None:
        return
    class_order = list(class_order)
    have = set(leaf_names)
    want = set(class_order)
    dup = [x for i, x in enumerate(class_order) if x in class_order[:i]]
    missing = [x for x in class_order if x not in have]
    extra = [x for x in leaf_names if x not in want]
    if dup or missing or extra:
        msg = [f"{source}: class_order does not match the tree's classes"]
        if missing:
            msg.append(
                f"{len(missing)} missing from the tree: {', '.join(repr(x) for x in missing[:10])}"
                f"{', ...' if len(missing) > 10 else ''}"
            )
        if extra:
            msg.append(
                f"{len(extra)} in the tree but not in class_order: {', '.join(repr(x) for x in extra[:10])}"
                f"{', ...' if len(extra) > 10 else ''}"
            )
        if dup:
            msg.append(f"repeated in class_order: {', '.join(repr(x) for x in dup[:10])}")
        raise ValueError("; ".join(msg))
