#!/usr/bin/env python3
"""Calls and inclusive instruction counts of functions, from a callgrind output file.

    callgrind_calls.py CALLGRIND.OUT [LABEL=]REGEX...

Prints "total IR" (every instruction of the run), then one line "LABEL CALLS IR" per REGEX
(LABEL: letters, digits, _; it defaults to the REGEX): how many times the functions whose name matches REGEX
(Python `re.search`) were called, and the instructions spent in them and everything they
called. Summed over their call sites
(callgrind's `calls=` lines), so a function that calls itself, or two matching functions of
which one calls the other, are counted twice: give patterns that match one function, or
functions that do not call each other.
"""
import re
import sys


def main():
    path, args = sys.argv[1], sys.argv[2:]
    split = [re.match(r"(\w+)=(.*)$", a) or re.match(r"((.*))$", a) for a in args]
    labels = [m.group(1) for m in split]
    regexes = [re.compile(m.group(2)) for m in split]
    names = {}
    calls = [0] * len(regexes)
    cost = [0] * len(regexes)
    total = 0
    callee = None
    pending = None  # (matching pattern indexes, number of calls) for the next cost line
    with open(path, errors="replace") as f:
        for line in f:
            if pending is not None:
                fields = line.split()
                ir = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0
                for k in pending[0]:
                    calls[k] += pending[1]
                    cost[k] += ir
                pending = None
                continue
            if line.startswith(("fn=", "cfn=")):
                # fn= and cfn= share one table of compressed names: "(id) name", then "(id)".
                key, _, rest = line.rstrip("\n").partition("=")
                m = re.match(r"\((\d+)\)(?: (.*))?$", rest)
                name = rest
                if m:
                    if m.group(2) is not None:
                        names[m.group(1)] = m.group(2)
                    name = names.get(m.group(1), "")
                if key == "cfn":
                    callee = name
            elif line.startswith("calls="):
                n = int(line[6:].split()[0])
                hits = [k for k, r in enumerate(regexes) if callee and r.search(callee)]
                pending = (hits, n)
            elif line.startswith(("summary:", "totals:")):
                total = max(total, int(line.split()[1]))
    print("total", total)
    for label, c, ir in zip(labels, calls, cost):
        print(label, c, ir)


if __name__ == "__main__":
    main()
