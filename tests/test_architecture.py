"""The package's layers, stated once, and a check that its imports keep to them (issue 35).

LAYERS is the single statement of the layers (docs/architecture.md draws them and points here):
from the bottom up, each names the modules it holds, as files or as folders of modules. A module
may import modules of its own layer and of the layers below it, never of a layer above; no
modules import each other, directly or around a circle (imports inside functions count too);
the package never imports data_prep, whose converters sit on top and depend on the package.
main.py and benchmarks/ stand above all of it and are not checked.

The imports are read from the source text with ast: nothing is imported, so the check is fast.
"""
import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("sifa_synthmix", "data_prep")

# From the bottom up: (layer, what it holds). A folder ends in "/" and holds every module below it;
# a module belongs to the layer of the longest entry that holds it.
LAYERS = (
    ("base", ("sifa_synthmix/__init__.py", "sifa_synthmix/errors.py", "sifa_synthmix/config.py",
              "sifa_synthmix/files.py", "sifa_synthmix/command_errors.py", "sifa_synthmix/cpu_features.py",
              "sifa_synthmix/tensorflow_start.py", "sifa_synthmix/tensorflow_paths.py",
              "sifa_synthmix/visualize.py")),
    ("data in", ("sifa_synthmix/data/",)),
    ("models", ("sifa_synthmix/models/",)),
    ("run folders", ("sifa_synthmix/runs/",)),
    ("prediction", ("sifa_synthmix/prediction/",)),
    ("evaluation", ("sifa_synthmix/evaluation/",)),
    ("training", ("sifa_synthmix/training/",)),
    ("commands", ("sifa_synthmix/experiment.py", "sifa_synthmix/flags.py")),
    ("converters", ("data_prep/",)),
)


@pytest.fixture(autouse=True)
def op_determinism_off_after_each_test():
    """Overrides conftest's fixture of that name, which imports TensorFlow after each test: nothing
    here imports it."""
    yield


def module_name(path, root):
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def find_modules(root, packages=PACKAGES):
    """{dotted module name: path} of every module of `packages` under `root`."""
    return {module_name(path, root): path for package in packages for path in sorted((root / package).rglob("*.py"))}


def imported_modules(name, path, modules):
    """{(line, module)} of the project modules `name` (at `path`) imports, anywhere in its text."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(filter(None, [*package.split(".")[:len(package.split(".")) - node.level + 1], base]))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add((node.lineno, target))
    return found


def import_graph(root, packages=PACKAGES):
    """{module: {(line, imported module)}} of the project's modules."""
    modules = find_modules(root, packages)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}, modules


def layer_of(path, root, layers=LAYERS):
    """The index in `layers` of the layer holding the module at `path`, or None."""
    relative = path.relative_to(root).as_posix()
    holding = [(len(entry), index) for index, (_, entries) in enumerate(layers) for entry in entries
               if relative == entry or (entry.endswith("/") and relative.startswith(entry))]
    return max(holding)[1] if holding else None


def circles(graph):
    """The import circles of `graph`: its strongly connected components of two or more modules
    (Tarjan's algorithm, iterative), each sorted."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    edges = {name: sorted({target for _, target in targets}) for name, targets in graph.items()}
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def against_the_layers(graph, modules, root, layers=LAYERS):
    """'module:line imports module (layer -> higher layer)' for every import of a higher layer."""
    found = []
    for name, targets in sorted(graph.items()):
        own = layer_of(modules[name], root, layers)
        for line, target in sorted(targets):
            other = layer_of(modules[target], root, layers)
            if own is not None and other is not None and other > own:
                found.append(f"{name}:{line} imports {target} ({layers[own][0]} -> {layers[other][0]})")
    return found


def test_every_module_has_a_layer():
    _, modules = import_graph(REPO)
    found = [name for name, path in modules.items() if layer_of(path, REPO) is None]
    assert not found, f"modules in no layer (add them to LAYERS): {found}"


def test_no_import_circles():
    graph, _ = import_graph(REPO)
    found = circles(graph)
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(circle) for circle in found)


def test_imports_only_go_down_the_layers():
    graph, modules = import_graph(REPO)
    found = against_the_layers(graph, modules, REPO)
    assert not found, "imports against the layers:\n" + "\n".join(found)


def test_the_package_never_imports_data_prep():
    graph, _ = import_graph(REPO)
    found = [f"{name}:{line}" for name, targets in graph.items() if name.startswith("sifa_synthmix")
             for line, target in targets if target.split(".")[0] == "data_prep"]
    assert not found, f"sifa_synthmix imports data_prep at {found}"


def test_the_checks_find_a_circle_and_an_import_against_the_layers(tmp_path):
    """On a small tree: an import up the layers, and a circle made by an import inside a function."""
    files = {"pkg/__init__.py": "", "pkg/low/__init__.py": "", "pkg/high/__init__.py": "",
             "pkg/low/a.py": "from pkg.high import b\n",
             "pkg/high/b.py": "def f():\n    from pkg.high import c\n",
             "pkg/high/c.py": "import pkg.high.b\n"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    layers = (("low", ("pkg/__init__.py", "pkg/low/")), ("high", ("pkg/high/",)))
    graph, modules = import_graph(tmp_path, ("pkg",))
    assert circles(graph) == [["pkg.high.b", "pkg.high.c"]]
    assert against_the_layers(graph, modules, tmp_path, layers) == ["pkg.low.a:1 imports pkg.high.b (low -> high)"]
