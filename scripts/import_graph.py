#!/usr/bin/env python3
"""The import graph of src/, one node per file: a file points at every file whose module it
names in a `crate::` or `super::` path (code or doc links; unit-test modules left out).
Prints the number of files, the 2-file loops (two files importing from each other) and the
arrows from kv/ to anything outside it; `--edges` also prints the whole graph.
Usage: python3 scripts/import_graph.py [SRC_DIR] [--edges]    (an architecture check, not a test)"""
import os, re, sys, itertools
args = [a for a in sys.argv[1:] if not a.startswith('--')]
root = args[0] if args else 'src'
files = {}
for d, _, fs in os.walk(root):
    for f in fs:
        if f.endswith('.rs'):
            p = os.path.join(d, f)
            rel = os.path.relpath(p, root)[:-3]
            mod = rel.replace('/mod', '') if rel.endswith('/mod') else rel
            if mod in ('lib', 'main'): mod = ''
            files[mod] = p
def resolve(path_parts):
    # longest prefix that is a module file
    for n in range(len(path_parts), 0, -1):
        m = '/'.join(path_parts[:n])
        if m in files: return m
    return None
edges = {}
for mod, p in files.items():
    src = open(p).read()
    src = re.sub(r'#\[cfg\(test\)\]\s*mod tests\s*\{.*', '', src, flags=re.S)
    out = set()
    base = mod.split('/') if mod else []
    is_dirmod = p.endswith('mod.rs') or mod == ''
    for m in re.finditer(r'\b(crate|super)((?:::\w+)+)', src):
        kind, rest = m.group(1), m.group(2).split('::')[1:]
        if kind == 'crate':
            parts = rest
        else:
            parent = base if is_dirmod else base[:-1]
            parent = parent[:-1]  # super of the module
            if is_dirmod:
                parts = parent + rest
            else:
                parts = (base[:-1]) + rest
                # super:: from a file module = its parent module
        t = resolve(parts)
        if t is not None and t != mod:
            out.add(t)
    # use super::{a, b} forms
    for m in re.finditer(r'\buse (crate|super)::\{([^}]*)\}', src):
        parent = (base if is_dirmod else base[:-1])
        if m.group(1) == 'super':
            parent = parent[:-1] if is_dirmod else base[:-1]
        else:
            parent = []
        for name in re.split(r'[,\s]+', m.group(2)):
            name = name.split('::')[0].strip()
            if not name: continue
            t = resolve(parent + [name])
            if t and t != mod: out.add(t)
    edges[mod] = out
loops = []
for a, b in itertools.combinations(sorted(edges), 2):
    if b in edges[a] and a in edges[b]:
        loops.append((a, b))
print('files', len(files))
print('2-file loops', len(loops))
for l in loops: print('  ', l[0] or 'lib', '<->', l[1] or 'lib')
kvout = sorted({(a, b) for a in edges for b in edges[a] if a.startswith('kv') and not b.startswith('kv')})
print('arrows from kv out', len(kvout))
for a, b in kvout: print('  ', a, '->', b)
if '--edges' in sys.argv:
    for a in sorted(edges): print(a or 'lib', '->', ' '.join(sorted(x or 'lib' for x in edges[a])))
