#!/usr/bin/env python3
"""Dependencies run one way (docs/architecture.md), checked on the source.

Reads every `use` and every qualified path (`crate::…`, `super::…`,
`self::…`, a child module's name) of src/, resolves each to the file that
defines it, and checks:

- a module imports only modules in lower layers (LAYERS below; the leaves
  may import each other, never in a cycle), never one beside it (auth and
  github stay apart) or above it;
- no two files import each other, directly or around a cycle (a mod.rs's
  `pub use` of its children is the module's face, not an import).

Prints the file graph's size and depth, and every violation; exits 1 on any.
"""

import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"

# Lowest first. The leaves hold no domain knowledge; the last layers are the
# binary's edge (the development agent, a program of its own, and the
# command line that offers it).
LAYERS = [
    {"config", "build_info", "backoff", "drain", "shutdown", "tls", "bootstrap",
     "metrics", "trace", "events", "readiness", "ratelimit", "telemetry"},
    {"supervise"},
    {"identity"},
    {"bao"},
    {"db"},
    {"audit"},
    {"auth", "github"},
    {"http"},
    {"app"},
    {"devagent", "internal_check"},
    {"cli"},
]
RANK = {m: i for i, layer in enumerate(LAYERS) for m in layer}
LEAVES = LAYERS[0]


def module_of(path: pathlib.Path) -> list[str]:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    return parts


def file_of(module: list[str]) -> pathlib.Path | None:
    """The deepest file defining a prefix of `module`."""
    for n in range(len(module), 0, -1):
        head = module[:n]
        for candidate in (SRC.joinpath(*head).with_suffix(".rs"), SRC.joinpath(*head, "mod.rs")):
            if candidate.is_file():
                return candidate
    return None


def strip(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return re.sub(r"//[^\n]*", "", text)


def without_tests(text: str) -> str:
    """Drops `#[cfg(test)] mod … { … }` blocks: tests are not structure."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)
        if not m:
            return text
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        text = text[: m.start()] + text[i:]


def expand(tree: str) -> list[str]:
    """`a::{b, c::{d, e}}` → ['a::b', 'a::c::d', 'a::c::e']."""
    tree = re.sub(r"\s+", "", tree)
    out: list[str] = []

    def walk(prefix: str, rest: str) -> None:
        i = rest.find("{")
        if i < 0:
            out.append(prefix + rest)
            return
        head, body = rest[:i], rest[i + 1 : rest.rindex("}")]
        depth, start = 0, 0
        for j, ch in enumerate(body + ","):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                item = body[start:j]
                if item:
                    walk(prefix + head, item)
                start = j + 1

    walk("", tree)
    return [re.sub(r"\bas\w+$", "", p).rstrip(":") for p in out]


def resolve(importer: list[str], is_mod: bool, path: str) -> list[str] | None:
    segs = [s for s in path.split("::") if s]
    if not segs:
        return None
    here = importer if is_mod else importer[:-1]
    own = importer
    if segs[0] == "crate":
        return segs[1:]
    if segs[0] == "self":
        return own + segs[1:]
    if segs[0] == "super":
        base = own
        while segs and segs[0] == "super":
            base = base[:-1]
            segs = segs[1:]
        return base + segs
    # A relative path: a child module of this one, else an external crate.
    child = own + segs[:1]
    if file_of(child) and file_of(child) != file_of(own):
        return own + segs
    return None


REEXPORTS: dict[tuple[str, ...], dict[str, list[str]]] = {}


def reexports(module: list[str]) -> dict[str, list[str]]:
    """Names a mod.rs re-exports (`pub use child::Name`) → their source."""
    key = tuple(module)
    if key not in REEXPORTS:
        REEXPORTS[key] = {}
        f = file_of(module)
        if f and f.name == "mod.rs" and module_of(f) == module:
            text = without_tests(strip(f.read_text()))
            for m in re.finditer(r"^\s*pub(?:\([^)]*\))?\s+use\s+([^;]+);", text, re.M):
                for p in expand(m.group(1)):
                    alias = re.search(r"as(\w+)$", p)
                    src = resolve(module, True, re.sub(r"as\w+$", "", p))
                    if src:
                        REEXPORTS[key][alias.group(1) if alias else src[-1]] = src
    return REEXPORTS[key]


def is_module(module: list[str]) -> bool:
    return any(
        p.is_file()
        for p in (SRC.joinpath(*module).with_suffix(".rs"), SRC.joinpath(*module, "mod.rs"))
    )


def through_reexports(target: list[str], hops: int = 0) -> list[str]:
    """`db::GenerationInfo` → `db::generation::GenerationInfo`: a name a
    mod.rs only re-exports is imported from where it is defined."""
    if hops > 8:
        return target
    for n in range(len(target) - 1, 0, -1):
        if is_module(target[: n + 1]):
            continue
        source = reexports(target[:n]).get(target[n])
        if source and source != target[: n + 1]:
            return through_reexports(source + target[n + 1 :], hops + 1)
    return target


def edges_of(path: pathlib.Path):
    text = without_tests(strip(path.read_text()))
    module = module_of(path)
    is_mod = path.name in ("mod.rs", "lib.rs")
    found = []
    for m in re.finditer(r"^\s*(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", text, re.M):
        reexport = m.group(1) is not None and is_mod
        for p in expand(m.group(2)):
            found.append((p, reexport))
    body = re.sub(r"^\s*(pub(?:\([^)]*\))?\s+)?use\s+[^;]+;", "", text, flags=re.M)
    for m in re.finditer(r"(?<![:\w])([a-z_][a-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)+)", body):
        found.append((m.group(1), False))
    for p, reexport in found:
        target = resolve(module, is_mod, p)
        if target is None or not target:
            continue
        yield through_reexports(target), reexport


def main() -> int:
    files = sorted(p for p in SRC.rglob("*.rs") if p.name not in ("main.rs", "lib.rs"))
    problems: list[str] = []
    graph: dict[pathlib.Path, set[pathlib.Path]] = {f: set() for f in files}
    for f in files:
        mod = module_of(f)
        top = mod[0]
        if top not in RANK:
            problems.append(f"{f.relative_to(SRC)}: module {top} has no layer in scripts/check-layers.py")
            continue
        # A file embedded from another module's folder is a hidden import.
        for m in re.finditer(r'include_str!\(\s*"([^"]+)"', f.read_text()):
            embedded = (f.parent / m.group(1)).resolve()
            if embedded.is_relative_to(SRC) and embedded.relative_to(SRC).parts[0] != top:
                problems.append(f"{f.relative_to(SRC)} embeds {m.group(1)} from another module")
        for target, reexport in edges_of(f):
            dep = target[0]
            if dep != top and dep in RANK:
                if RANK[dep] > RANK[top]:
                    problems.append(f"{f.relative_to(SRC)} imports {'::'.join(target)}: {dep} is above {top}")
                elif RANK[dep] == RANK[top] and top not in LEAVES:
                    problems.append(f"{f.relative_to(SRC)} imports {'::'.join(target)}: {dep} is beside {top}")
            dest = file_of(target)
            if dest and dest != f and not reexport and dest in graph:
                graph[f].add(dest)
    # Cycles between files (Tarjan's strongly connected components).
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            sccs.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    for comp in sccs:
        if len(comp) > 1:
            names = ", ".join(sorted(str(c.relative_to(SRC)) for c in comp))
            problems.append(f"import cycle between {len(comp)} files: {names}")
    # Depth of the file graph (longest import chain), when acyclic.
    depth: dict[pathlib.Path, int] = {}

    def deep(v, seen=()):
        if v in depth:
            return depth[v]
        if v in seen:
            return 0
        depth[v] = 1 + max((deep(w, seen + (v,)) for w in graph[v]), default=0)
        return depth[v]

    layers = max((deep(v) for v in graph), default=0)
    imports = sum(len(e) for e in graph.values())
    print(f"layers: {len(files)} files, {imports} imports between them, {layers} layers deep; "
          f"{len(problems)} violation(s)")
    for p in problems:
        print(f"  {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
