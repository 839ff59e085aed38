"""The floors run one way: each part of the package imports only the parts below it.

model/ is the ground floor and imports nothing else of the package; api/ (HTTP
in and out) is imported only by app.py, which wires everything. Read from the
source, so a new import that breaks a floor fails here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import tasks_server

PACKAGE = Path(tasks_server.__file__).parent

# part of the package -> the other parts it may import (a part is a top-level module or
# package of tasks_server); parts not listed may import nothing of the package
FLOORS: dict[str, set[str]] = {
    "model": set(),
    "observer": set(),
    "logs": set(),
    "config": set(),
    "files": set(),
    "crypto": {"files"},
    "codec": {"crypto", "model"},
    "store": {"model", "config", "files", "observer"},
    "dispatch": {"model", "config"},
    "scheduler": {"model", "store", "dispatch", "codec", "crypto", "observer"},
    "metrics": {"model", "store"},
    "api": {"model", "store", "codec", "crypto", "config", "metrics"},
    "backup": {"model", "store", "config", "crypto", "files"},
    "key_rotation": {"model", "store", "codec", "crypto", "config"},
    "cluster": {"config", "metrics"},
    "retention": {"model", "store"},
    "dashboard": set(),
    "app": {
        "api",
        "dashboard",
        "backup",
        "codec",
        "config",
        "crypto",
        "dispatch",
        "logs",
        "metrics",
        "model",
        "retention",
        "scheduler",
        "store",
    },
    "runtime": {"app", "cluster", "config", "crypto", "logs", "store"},
    "cli": {"runtime", "backup", "key_rotation", "config", "crypto", "store"},
    # the Python client: a caller of the API at the top, reading its structs from both
    "client": {"api", "model"},
}


def part_of(module: str) -> str:
    """`tasks_server.store.sqlite.store` -> `store`."""
    return module.split(".")[1]


def is_part(name: str) -> bool:
    return (PACKAGE / f"{name}.py").is_file() or (PACKAGE / name).is_dir()


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name != "tasks_server":
            yield name, path


def imported(path: Path) -> Iterator[str]:
    """The tasks_server modules `path` imports (`from tasks_server import x` names x)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "tasks_server":  # the package's parts; its __version__ is not one
                names = [
                    f"tasks_server.{alias.name}" for alias in node.names if is_part(alias.name)
                ]
        else:
            continue
        yield from (name for name in names if name.startswith("tasks_server."))


EVERY_IMPORT = [
    (module, target) for module, path in modules() for target in sorted(set(imported(path)))
]


def test_every_part_of_the_package_has_a_floor() -> None:
    assert {part_of(module) for module, _ in modules()} <= set(FLOORS)


@pytest.mark.parametrize(("module", "target"), EVERY_IMPORT)
def test_imports_go_down_the_floors(module: str, target: str) -> None:
    here, there = part_of(module), part_of(target)
    assert here == there or there in FLOORS[here], f"{module} imports {target}"


def test_model_imports_nothing_else_of_the_package() -> None:
    outside = [
        (module, target)
        for module, target in EVERY_IMPORT
        if part_of(module) == "model" and part_of(target) != "model"
    ]
    assert outside == []


def test_only_app_imports_the_api() -> None:
    outside = [
        (module, target)
        for module, target in EVERY_IMPORT
        if part_of(target) == "api" and part_of(module) not in {"api", "app", "client"}
    ]
    assert outside == []


def test_only_the_store_names_its_implementations() -> None:
    naming = [
        module
        for module, path in modules()
        if "SqliteStore" in path.read_text() and not module.startswith("tasks_server.store")
    ]
    assert naming == []
