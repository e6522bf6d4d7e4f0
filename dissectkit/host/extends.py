"""Recipe files: YAML with key positions, ``extends:`` (paths and ``preset:<name>``) and its merge rule
(docs/architecture.md, "extends")."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from dissectkit.base.errors import RecipeError, did_you_mean

Position = tuple[str, int, int]  # file, line (1-based), column (1-based)
Key = tuple[Any, ...]  # a path of keys (and list indices) into a recipe
Positions = dict[Key, Position]

PRESET = "preset:"
PRESETS = Path(__file__).resolve().parents[1] / "presets"
LISTS: dict[Key, tuple[tuple[str | None, str], ...]] = {
    (): (("dissector", "dissectors"), ("target", "targets"), ("method", "methods")),
    ("output",): ((None, "reporters"),),
}
"""Where component lists are, and their single forms."""
COMPONENTS = {("probe",), ("concepts",)}


def read_yaml(path: Path) -> tuple[Any, Positions]:
    """Plain data of a YAML file (safe constructors only) and the position of each key."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"Recipe file not found: {path}. Check the path (relative paths start from {Path.cwd()}).") from None
    except OSError as exc:
        raise RecipeError(f"Cannot read recipe {path}: {exc}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"YAML syntax error at {where}: {problem}. Fix the YAML (indentation, colons, quotes).") from None
    positions: Positions = {}
    if node is None:
        return {}, positions
    twice: list[str] = []
    data = _construct(node, (), str(path), positions, yaml.SafeLoader(""), twice)
    if twice:
        raise RecipeError(f"Recipe {path} gives a key twice (YAML keeps only the last, silently):\n" + "\n".join(twice)
                          + "\nKeep one of each.")
    return data, positions


def _construct(node: yaml.Node, path: Key, file: str, positions: Positions, loader: yaml.SafeLoader,
               twice: list[str]) -> Any:
    """Plain data of ``node``, recording each key's position; a key given twice in one mapping is
    added to ``twice`` (``file:line``, both lines)."""
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            here = (file, key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key in out:
                first = positions[path + (key,)]
                name = ".".join(str(p) for p in (*path, key))
                twice.append(f"  {file}:{here[1]}:{here[2]}: '{name}' is given again (first at line {first[1]}).")
            positions[path + (key,)] = here
            out[key] = _construct(value_node, path + (key,), file, positions, loader, twice)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            positions[path + (i,)] = (file, item.start_mark.line + 1, item.start_mark.column + 1)
            items.append(_construct(item, path + (i,), file, positions, loader, twice))
        return items
    return loader.construct_object(node, deep=True)


def preset_path(name: str) -> Path:
    """The packaged recipe fragment ``preset:<name>``."""
    path = PRESETS / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PRESETS.glob("*.yaml"))
        raise RecipeError(f"Unknown preset '{name}'.{did_you_mean(name, known)} Presets: {', '.join(known)}.")
    return path


def load_merged(path: Path, stack: tuple[Path, ...] = (),
                edit: Callable[[dict[str, Any]], None] | None = None) -> tuple[dict[str, Any], Positions]:
    """A recipe file (its data changed by ``edit`` first) with its ``extends:`` bases merged in."""
    path = path.resolve() if path.exists() else path
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise RecipeError(f"`extends` cycle: {chain}. Remove one of the `extends:` entries.")
    data, positions = read_yaml(path)
    if not isinstance(data, dict):
        raise RecipeError(f"Recipe {path} must be a mapping of keys (dissector, target, probe, ...), got {type(data).__name__}.")
    parents = data.pop("extends", None) or []
    if edit is not None:
        edit(data)
    merged: dict[str, Any] = {}
    merged_pos: Positions = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        if not isinstance(parent, str):
            raise RecipeError(f"{path}: `extends` takes recipe paths or preset:<name>, got {parent!r}.")
        if parent.startswith(PRESET):
            parent_path = preset_path(parent[len(PRESET):])
        else:
            parent_path = Path(parent) if Path(parent).is_absolute() else path.parent / parent
        if not parent_path.exists():
            where = positions.get(("extends",))
            raise RecipeError(f"{':'.join(map(str, where)) if where else path}: extended recipe {parent_path} not found.")
        parent_data, parent_pos = load_merged(parent_path, (*stack, path))
        merged, merged_pos = merge(merged, parent_data, merged_pos, parent_pos)
    return merge(merged, data, merged_pos, positions)


def merge(base: dict[str, Any], over: dict[str, Any], base_pos: Positions | None = None,
          over_pos: Positions | None = None) -> tuple[dict[str, Any], Positions]:
    """``over`` merged onto ``base`` by the rule above, with the positions of the result's keys."""
    merger = _Merger(base_pos or {}, over_pos or {})
    return merger.mapping(base, over, (), (), ()), merger.pos


def _name(item: Any) -> Any:
    return item if isinstance(item, str) else item.get("name") if isinstance(item, dict) else None


class _Merger:
    """Merges two recipes; ``path`` is a key's place in the result, ``bp`` / ``op`` in each source
    (list items move: an extending item ``j`` merged into base item ``i``)."""

    def __init__(self, base_pos: Positions, over_pos: Positions) -> None:
        self.base_pos, self.over_pos = base_pos, over_pos
        self.pos: Positions = {}

    def keep(self, positions: Positions, src: Key, dst: Key) -> None:
        """Copy the positions at and under ``src`` to ``dst``."""
        n = len(src)
        self.pos.update({dst + k[n:]: v for k, v in positions.items() if k[:n] == src})

    def own(self, path: Key, bp: Key, op: Key) -> None:
        """The position of a merged key: where the extending recipe says it, else the base."""
        if p := self.over_pos.get(op) or self.base_pos.get(bp):
            self.pos[path] = p

    def copy(self, value: Any, positions: Positions, src: Key, dst: Key) -> Any:
        self.keep(positions, src, dst)
        return copy.deepcopy(value)

    def mapping(self, base: dict[str, Any], over: dict[str, Any], path: Key, bp: Key, op: Key) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for single, plural in LISTS.get(path, ()):
            keys = {k for k in (single, plural) if k is not None}
            given = {k for k in keys if over.get(k) is not None}
            if not given or len(given) > 1:  # not given, or both forms (an error pass 1 reports)
                continue
            key, items = self.components(base, over, single, plural, path, bp, op)
            out[key] = items
            base, over = {k: v for k, v in base.items() if k not in keys}, {k: v for k, v in over.items() if k not in keys}
        for key, value in base.items():
            if key not in over:
                out[key] = self.copy(value, self.base_pos, bp + (key,), path + (key,))
        for key, value in over.items():
            if value is None:
                continue  # null removes the base's key
            sub = (path + (key,), bp + (key,), op + (key,))
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                self.own(*sub)
                out[key] = self.component(base[key], value, *sub) if sub[0] in COMPONENTS else self.mapping(base[key], value, *sub)
            else:
                out[key] = self.copy(value, self.over_pos, sub[2], sub[0])
        return out

    def component(self, base: Any, over: Any, path: Key, bp: Key, op: Key) -> Any:
        """One component: merged into the base's when the names agree, else the extending one."""
        base, over = ({"name": x} if isinstance(x, str) else x for x in (base, over))
        if not isinstance(base, dict) or not isinstance(over, dict) or _name(over) not in (None, _name(base)):
            return self.copy(over, self.over_pos, op, path)
        self.own(path, bp, op)
        return self.mapping(base, over, path, bp, op)

    def components(self, base: dict[str, Any], over: dict[str, Any], single: str | None, plural: str,
                   path: Key, bp: Key, op: Key) -> tuple[str, Any]:
        """A component list: the extending recipe's items, each merged into its base item."""
        def items(data: dict[str, Any], at: Key) -> list[tuple[Any, Key]]:
            if single is not None and data.get(single) is not None:
                return [(data[single], at + (single,))]
            given = data.get(plural)
            return [(x, at + (plural, i)) for i, x in enumerate(given)] if isinstance(given, list) else []

        key = plural if over.get(plural) is not None else str(single)
        if key == plural and not isinstance(over[plural], list):
            return key, self.copy(over[plural], self.over_pos, op + (plural,), path + (plural,))  # pass 1 reports it
        bases, overs = items(base, bp), items(over, op)
        self.own(path + (key,), bp + (key,), op + (key,))
        merged = []
        for j, (item, item_op) in enumerate(overs):
            dst = path + ((key,) if key == single else (plural, j))
            i = self.template(bases, item, j)
            merged.append(self.copy(item, self.over_pos, item_op, dst) if i is None
                          else self.component(bases[i][0], item, dst, bases[i][1], item_op))
        return key, merged[0] if key == single else merged

    @staticmethod
    def template(bases: list[tuple[Any, Key]], item: Any, j: int) -> int | None:
        """The base item ``item`` merges into (``None``: a new component)."""
        name = _name(item)
        if name is None:
            return j if j < len(bases) else None
        same = [i for i, (b, _) in enumerate(bases) if _name(b) == name]
        if len(same) > 1:
            label = item.get("label") if isinstance(item, dict) else None
            same = [i for i in same if isinstance(bases[i][0], dict) and bases[i][0].get("label") == label]
        return same[0] if same else None
