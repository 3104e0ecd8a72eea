"""Arrows only downward: every import in every Python file (read with ast: at module level, inside functions and under
`if TYPE_CHECKING:` alike) goes to its own package or to a lower layer, and no modules import each other in a circle.

Layers, bottom to top: the remote code and the metric module < model and dataset cards < the knowledge base library <
the toolkit and its entry scripts < recipes < benchmarks and tests. The toolkit's CLI reaches the recipes' commands
only through installed entry points (`paircap.commands`), never by an import.
"""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = (
    ("modeling_paircap", "metrics"),
    ("hub_cards",),
    ("datasets_scripts",),
    ("paircap", "train_accelerate", "app"),
    ("recipes",),
    ("benchmarks", "tests"),
)
LAYER = {name: index for index, names in enumerate(LAYERS) for name in names}


def module_files() -> dict[str, Path]:
    """Every Python file of the layers, by module name (`paircap/cli.py`: `paircap.cli`; `paircap/__init__.py`:
    `paircap`; `app.py`: `app`)."""
    files = {}
    for top in LAYER:
        paths = [REPO / f"{top}.py"] if (REPO / f"{top}.py").is_file() else sorted((REPO / top).rglob("*.py"))
        for path in paths:
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imported_names(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of everything the file imports; `from a import b` gives `a.b`, relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            names += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return names


def import_graph() -> dict[str, dict[str, int]]:
    """Module -> the modules of ours it imports, each with the line of its first import."""
    files = module_files()
    graph = {}
    for module, path in files.items():
        edges = {}
        for line, name in imported_names(module, path):
            while name and name not in files:  # `hub_cards.render_model_card`: the package `hub_cards`
                name = name.rpartition(".")[0]
            if name and name != module:
                edges.setdefault(name, line)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is None:
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
            elif target not in index:
                index[target] = low[target] = len(index)
                stack.append(target)
                on_stack.add(target)
                work.append((target, iter(graph[target])))
            elif target in on_stack:
                low[node] = min(low[node], index[target])
    return found


def test_the_layers_cover_every_python_file_and_their_imports_are_read():
    graph = import_graph()
    assert {"paircap.cli", "recipes.mini.run", "modeling_paircap.modeling_paircap", "train_accelerate"} <= set(graph)
    assert "hub_cards.evaluation_tables" in graph["hub_cards.model_card"]  # a module-level import
    assert "recipes.mini.run" in graph["recipes.mini"]  # inside a function
    assert "modeling_paircap.configuration_paircap" in graph["modeling_paircap.modeling_paircap"]  # `from .x import y`


def test_no_package_imports_a_higher_layer():
    files = module_files()
    upward = [
        f"{files[module].relative_to(REPO)}:{line} imports {target}, a layer above: "
        f"{' / '.join(LAYERS[LAYER[target.split('.')[0]]])} over {' / '.join(LAYERS[LAYER[module.split('.')[0]]])}"
        for module, edges in import_graph().items()
        for target, line in edges.items()
        if LAYER[target.split(".")[0]] > LAYER[module.split(".")[0]]
    ]
    assert not upward, "\n".join(upward)


def test_no_modules_import_each_other_in_a_circle():
    graph = import_graph()
    circles = [describe(ordered_cycle(component, graph), graph) for component in cycles(graph)]
    assert not circles, "\n".join(circles)


def describe(circle: list[str], graph: dict[str, dict[str, int]]) -> str:
    """`a (line 3) -> b (line 9) -> a`: each module, the line where it imports the next, back to the first."""
    steps = zip(circle, [*circle[1:], circle[0]], strict=True)
    return " -> ".join(f"{module} (line {graph[module][target]})" for module, target in steps) + f" -> {circle[0]}"


def ordered_cycle(component: list[str], graph: dict[str, dict[str, int]]) -> list[str]:
    """One circle through the first module of a strongly connected component, as the modules import each other."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:  # breadth first, inside the component, back to the start
        node = frontier.pop(0)
        for target in graph[node]:
            if target == start:
                return paths[node]
            if target in members and target not in paths:
                paths[target] = [*paths[node], target]
                frontier.append(target)
    raise AssertionError(f"no circle through {start} in {component}")
