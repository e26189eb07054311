#!/usr/bin/env python3
"""Run from the repository root: .ci/import-cycles.py. Import graph between the server's folders (namespaces Registry.<Folder>): an edge F -> X when a file in F
has `using Registry.X;` or names `Registry.X.` in code. Prints the edges and any cycle (strongly connected
component of more than one folder). The root folder (Program, the wiring) is the composition root and left out."""
import os, re, sys
root = sys.argv[1] if len(sys.argv) > 1 else 'src/Registry.Server'
folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and d not in ('bin', 'obj', 'Properties'))
edges = {f: set() for f in folders}
pat = re.compile(r'\bRegistry\.([A-Z][A-Za-z]+)\b')
for f in folders:
    for dp, _, files in os.walk(os.path.join(root, f)):
        for name in files:
            if not name.endswith('.cs'):
                continue
            text = open(os.path.join(dp, name), encoding='utf-8').read()
            text = re.sub(r'^\s*//.*$', '', text, flags=re.M)  # comments (incl. XML docs) are not imports
            for m in pat.finditer(text):
                target = m.group(1)
                if target in edges and target != f:
                    edges[f].add(target)
index, low, stack, on, sccs, n = {}, {}, [], set(), [], [0]
def strong(v):
    index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
    for w in edges[v]:
        if w not in index:
            strong(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        sccs.append(comp)
for v in folders:
    if v not in index:
        strong(v)
for f in folders:
    print(f"{f:14} -> {', '.join(sorted(edges[f])) or '-'}")
cycles = [c for c in sccs if len(c) > 1]
print('cycles:', cycles if cycles else 'none')
sys.exit(1 if cycles else 0)
