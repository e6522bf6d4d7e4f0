"""``dissectkit plugin new NAME [--kinds ...] [--dir DIR]``: write a ready plugin distribution, one
working component per kind with its tests (docs/plugins.md)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from dissectkit.base.errors import DissectkitError, did_you_mean
from dissectkit.host.registry import HOOK_OF_KIND, KINDS

TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "plugin"
CHECKS = {
    "dissector": ("check_dissector", 'check_dissector(dk.create("dissector", "__NAME__-dissector"))'),
    "target": ("check_target", 'check_target(dk.create("target", "__NAME__-target"))'),
    "probe": ("check_probe", 'images, masks = write_png_folder(tmp_path, n=8)\n'
              '    probe = dk.create("probe", "__NAME__-probe", root=str(images), masks=str(masks))\n'
              '    assert check_probe(probe, has_masks=True)["with_masks"] == 8\n'
              '    assert check_probe(dk.create("probe", "__NAME__-probe", root=str(images)))["with_masks"] == 0'),
    "concepts": ("check_concepts", 'assert check_concepts(dk.create("concepts", "__NAME__-concepts", words=["a", "b"]))["n"] == 2'),
    "similarity": ("check_similarity", 'check_similarity(dk.create("similarity", "__NAME__-similarity"))'),
    "method": ("check_method", 'check_method(dk.create("method", "__NAME__-method"))'),
    "reporter": ("check_reporter", 'check_reporter(dk.create("reporter", "__NAME__-reporter"), tmp_path)'),
}
PNG_FOLDER = '''def write_png_folder(root, n):
    """``n`` grey PNGs (a bright disc on noise) and their masks in ``masks/disc/``."""
    import numpy as np
    from PIL import Image

    images, masks = root / "images", root / "masks" / "disc"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    yy, xx = np.mgrid[:48, :48]
    for i in range(n):
        rng = np.random.default_rng(i)
        cy, cx = rng.integers(12, 36, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 64
        image = (rng.random((48, 48)) * 80).astype(np.uint8)
        image[disc] = 220
        Image.fromarray(image).save(images / f"case_{i:03d}.png")
        Image.fromarray(disc.astype(np.uint8) * 255).save(masks / f"case_{i:03d}.png")
    return images, root / "masks"'''
NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")


def parse_kinds(values: list[str] | None) -> list[str]:
    """``--kinds a,b --kinds c`` -> the kinds in canonical order (all of them when none given)."""
    kinds = [k.strip() for v in values or [] for k in v.split(",") if k.strip()]
    for k in kinds:
        if k not in KINDS:
            raise DissectkitError(f"Unknown kind {k!r} in --kinds.{did_you_mean(k, KINDS)} Kinds: {', '.join(KINDS)}.")
    return [k for k in KINDS if k in kinds] if kinds else list(KINDS)


def write_plugin(name: str, kinds: list[str], root: Path) -> list[Path]:
    """Write the distribution ``dissectkit-NAME`` into ``root``; returns the files written."""
    if not NAME_RE.match(name):
        raise DissectkitError(f"Plugin name {name!r} must be lower-case words joined by '-' (e.g. 'my-clip').")
    if root.exists() and any(root.iterdir()):
        raise DissectkitError(f"{root} exists and is not empty; choose another --dir.")
    package = "dissectkit_" + name.replace("-", "_")
    subs = {
        "__DIST__": f"dissectkit-{name}",
        "__PACKAGE__": package,
        "__NAME__": name,
        "__KINDS__": ", ".join(kinds),
        "__COMPONENTS__": ", ".join(f"{k} `{name}-{k}`" for k in kinds),
    }
    files: dict[str, str] = {
        "pyproject.toml": _template("pyproject.toml.tmpl"),
        "README.md": _template("README.md.tmpl"),
        f"{package}/__init__.py": _template("package_init.py.tmpl"),
        f"{package}/plugin.py": _plugin_module(kinds),
        "conftest.py": _template("conftest.py.tmpl"),
        "tests/test_components.py": _tests(kinds),
    }
    for kind in kinds:
        files[f"{package}/{kind}.py"] = _template(f"kinds/{kind}.py.tmpl")
    if {"target", "dissector"} & set(kinds):
        files[f"{package}/image.py"] = _template("kinds/image.py.tmpl")
    written = []
    for rel, text in files.items():
        for key, value in subs.items():
            text = text.replace(key, value)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def _template(rel: str) -> str:
    return (TEMPLATES / rel).read_text()


def _plugin_module(kinds: list[str]) -> str:
    lines = [
        '"""The hooks of __DIST__: each registers one component (its module is imported only here)."""',
        "",
        "from __future__ import annotations",
        "",
        "from dissectkit.plugin import Register, hookimpl",
    ]
    for kind in kinds:
        lines += [
            "", "",
            "@hookimpl",
            f"def {HOOK_OF_KIND[kind]}(register: Register) -> None:",
            f"    from .{kind} import add_to",
            "",
            "    add_to(register)",
        ]
    return "\n".join(lines) + "\n"


def _tests(kinds: list[str]) -> str:
    names = [f"    {n}," for n in sorted(CHECKS[k][0] for k in kinds)]
    lines = [
        '"""Conformance of every component, with the plugin registered in-process (installed or not)."""',
        "",
        "import dissectkit as dk",
        "from dissectkit.testing import (",
        *names,
        ")",
        "",
        "",
        "def test_the_plugin_registers_every_component(dissectkit_plugin):",
        '    record = dissectkit_plugin("__PACKAGE__.plugin")',
        "    assert record.ok, record.error",
        f"    assert sorted(record.components) == {sorted(f'{k}:__NAME__-{k}' for k in kinds)!r}",
    ]
    if "probe" in kinds:
        lines += ["", "", *PNG_FOLDER.splitlines()]
    for kind in kinds:
        arg = ", tmp_path" if kind in ("reporter", "probe") else ""
        lines += [
            "", "",
            f"def test_{kind}(dissectkit_plugin{arg}):",
            '    dissectkit_plugin("__PACKAGE__.plugin")',
            f"    {CHECKS[kind][1]}",
        ]
    return "\n".join(lines) + "\n"


plugin_app = typer.Typer(help="Write and check plugin distributions.", no_args_is_help=True)


@plugin_app.command("new")
def new_command(
    name: Annotated[str, typer.Argument(help="Plugin name, e.g. 'my-clip' (distribution dissectkit-my-clip).", show_default=False)],
    kinds: Annotated[list[str] | None, typer.Option("--kinds", "-k", help="Kinds to include, comma-separated or repeated (default: all seven).")] = None,
    dir_: Annotated[Path | None, typer.Option("--dir", "-d", help="Where to write it (default: ./dissectkit-NAME).")] = None,
) -> None:
    """Write a ready plugin distribution: entry point, one component per kind, tests, README."""
    from rich.console import Console
    from rich.markup import escape

    chosen = parse_kinds(kinds)
    root = dir_ or Path(f"dissectkit-{name}")
    files = write_plugin(name, chosen, root)
    Console().print(
        f"Wrote {len(files)} files of [bold]dissectkit-{name}[/] ({', '.join(chosen)}) into {root}.\n"
        + escape(f"Next: pip install -e '{root}[test]' && pytest {root}   (the test extra brings pytest)")
    )


def register(app: typer.Typer) -> None:
    app.add_typer(plugin_app, name="plugin")
