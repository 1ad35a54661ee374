#!/usr/bin/env python3
"""Lists the import cycles among proxy/src's modules: every `crate::a::b` a file names is an edge
from that file's module to the module `a::b` resolves to. Prints each strongly connected group of
more than one module; exits 1 if there is any. Run from the repository root."""
import os, re, sys

ROOT = os.path.join(os.path.dirname(__file__), "..", "proxy", "src")
mods = {}
for dirpath, _, files in os.walk(ROOT):
    for f in files:
        if not f.endswith(".rs"):
            continue
        rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3]
        parts = rel.split(os.sep)
        if parts[-1] in ("mod", "lib", "main"):
            parts = parts[:-1]
        mods["::".join(parts)] = os.path.join(dirpath, f)

def resolve(path):
    parts = path.split("::")
    while parts:
        name = "::".join(parts)
        if name in mods:
            return name
        parts = parts[:-1]
    return None

def strip_tests(text):
    i = text.find("#[cfg(test)]\nmod tests")
    return text if i < 0 else text[:i]

edges = {m: set() for m in mods}
for m, path in mods.items():
    text = strip_tests(open(path).read())
    text = re.sub(r"//[^\n]*", "", text)
    for use in re.finditer(r"use crate::\{([^;]*)\};", text, re.S):
        for item in re.split(r",\s*", use.group(1)):
            item = re.sub(r"\{.*", "", item.strip(), flags=re.S).strip(":")
            target = resolve(item)
            if target and target != m and not target.startswith(m + "::") and not m.startswith(target + "::"):
                edges[m].add(target)
    for ref in re.finditer(r"crate::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)", text):
        target = resolve(ref.group(1))
        if target and target != m and not target.startswith(m + "::") and not m.startswith(target + "::"):
            edges[m].add(target)
    if "" in edges[m]:
        edges[m].discard("")

# Tarjan's strongly connected components.
index, low, stack, on, out, n = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)
def visit(v):
    index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
    for w in edges[v]:
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            out.append(sorted(comp))
for v in sorted(mods):
    if v not in index and v:
        visit(v)
if "-v" in sys.argv:
    for m in sorted(edges):
        print(f"{m or '(root)'} -> {', '.join(sorted(edges[m]))}")
for comp in out:
    print("cycle:", " ".join(comp))
    for m in comp:
        print(f"  {m} -> {', '.join(sorted(e for e in edges[m] if e in comp))}")
sys.exit(1 if out else 0)
