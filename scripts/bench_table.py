#!/usr/bin/env python3
"""Markdown table of interleaved benchmark rounds (scripts/bench.sh).

Input: a TSV file of `round, target, row, value, unit` lines, every target measured once per
round, the targets interleaved within each round (ABCABC...), so that the machine's drift
hits them alike. Output: per row and target, the median with its min-max over the rounds,
and per other target a ratio oriented "above 1: snapfs is better", computed per round (the
same round's figures, measured minutes apart) and given as median (min-max). A ratio whose
range crosses 1 is printed with a `~`: no claim either way.

Usage: bench_table.py RESULTS.tsv TITLE TARGET... (the column order)
"""

import statistics
import sys

# Units where a smaller figure is better (times, amplification factors); every other unit is a
# rate.
LOWER_IS_BETTER = {"ms", "s", "x"}


def fmt(v, unit):
    if v is None:
        return "n/a"
    if unit in ("ms", "x", "s"):
        return f"{v:,.2f}" if unit != "s" else f"{v:,.3f}"
    return f"{v:,.1f}" if unit == "MiB/s" else f"{v:,.0f}"


def spread(values, unit):
    if not values:
        return "n/a"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med, unit)
    return f"{fmt(med, unit)} ({fmt(min(values), unit)}-{fmt(max(values), unit)})"


def ratio_cell(pairs, unit):
    """pairs: (snapfs, other) per round. Above 1: snapfs better."""
    ratios = []
    for s, o in pairs:
        if not s or not o:
            continue
        ratios.append(o / s if unit in LOWER_IS_BETTER else s / o)
    if not ratios:
        return "n/a"
    med = statistics.median(ratios)
    if len(ratios) == 1:
        return f"{med:.2f}"
    lo, hi = min(ratios), max(ratios)
    mark = "" if lo > 1 or hi < 1 else " ~"
    return f"{med:.2f} ({lo:.2f}-{hi:.2f}){mark}"


def main():
    path, title, *targets = sys.argv[1:]
    values, units, order = {}, {}, []
    for line in open(path):
        rnd, t, row, value, unit = line.rstrip("\n").split("\t")
        if row not in units:
            order.append(row)
            units[row] = unit
        values.setdefault((t, row), {})[rnd] = float(value)
    others = [o for o in ("host", "fuse-overlayfs", "snapfs-s3") if o in targets]
    others = others if "snapfs" in targets else []
    head = [title] + targets + [f"snapfs vs {o}" for o in others]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    for row in order:
        unit = units[row]
        cells = [f"{row} ({unit})"]
        cells += [spread(list(values.get((t, row), {}).values()), unit) for t in targets]
        mine = values.get(("snapfs", row), {})
        for o in others:
            theirs = values.get((o, row), {})
            pairs = [(mine[r], theirs[r]) for r in mine if r in theirs]
            # snapfs-s3 against snapfs: the other way round (above 1: the object store is better).
            if o == "snapfs-s3":
                pairs = [(b, a) for a, b in pairs]
            cells.append(ratio_cell(pairs, unit))
        out.append("| " + " | ".join(cells) + " |")
    rounds = {r for per in values.values() for r in per}
    out.append("")
    out.append(
        f"Medians (min-max) of {len(rounds)} interleaved round(s). Ratios are computed per "
        "round and oriented so that above 1 snapfs is better (a rate over the other's, or "
        "the other's time over snapfs's; for snapfs-s3, the object store over snapfs); "
        "`~`: the range crosses 1, no claim."
    )
    print("\n".join(out))


if __name__ == "__main__":
    main()
