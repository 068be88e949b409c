"""Read the package's layout from its source files, without importing them."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "ctvoco"


def module_path(module: str) -> Path | None:
    """The source file of ``module`` (``ctvoco.x.y``), or ``None`` when there is none."""
    parts = module.split(".")[1:]
    base = PACKAGE.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def package_modules(package: str) -> list[str]:
    """``package`` and every module below it, by dotted name."""
    folder = PACKAGE.joinpath(*package.split(".")[1:])
    names = []
    for path in sorted(folder.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
        names.append(".".join(parts))
    return names


def imports_of_source(source: str, module: str) -> set[str]:
    """Every module ``source`` (the text of ``module``) imports, anywhere in the file.

    Lazy imports inside functions and ``TYPE_CHECKING`` blocks count; ``from a import b``
    counts as ``a`` and as ``a.b``; relative imports are resolved against ``module``.
    """
    found: set[str] = set()
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def imports_of(module: str) -> set[str]:
    """Every module that the source file of ``module`` imports (see :func:`imports_of_source`)."""
    path = module_path(module)
    if path is None:
        raise FileNotFoundError(f"no source file for {module}")
    return imports_of_source(path.read_text(encoding="utf-8"), module)


def imports_any(module: str, forbidden: str) -> bool:
    """Whether ``module`` imports ``forbidden`` or a module below it."""
    return any(i == forbidden or i.startswith(forbidden + ".") for i in imports_of(module))


def defined_names(module: str) -> set[str]:
    """The functions, classes and assigned names at the top level of ``module``."""
    path = module_path(module)
    if path is None:
        return set()
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def definitions(name: str) -> list[str]:
    """The modules of the package that define ``name`` at their top level."""
    return [m for m in package_modules("ctvoco") if name in defined_names(m)]
