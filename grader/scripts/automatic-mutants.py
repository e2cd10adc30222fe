#!/usr/bin/env python3
"""Grades the automatic mutants of the reference solutions, with the grader's checks as the oracle.

cargo-mutants (`cargo install cargo-mutants`) lists the mutants of a lab's solution (replaced
function bodies, flipped operators, ...); this script applies each one to a scratch copy of the
repository, grades it with `cargo grade --solutions`, and reports which mutants no check
caught. Too slow for CI: run it by hand, then record a decision for each survivor in
docs/automatic-mutants.md.

A mutant is caught as soon as one check fails, so the checks are graded one at a time, the
cheapest first (as measured on the unmutated solution, which must pass them all), and the
first failure stops its grading. A check that passes but leaves an IPC object behind (its log
says `left behind:`) catches the mutant as `cleanup` would. Only the first check of a mutant
builds it; the others use that build.

usage: grader/scripts/automatic-mutants.py [--match TEXT] [LAB ...]
       (all labs with a solution if none; --match: only the mutants whose name contains TEXT)
"""

import json
import sys
import tempfile
from pathlib import Path

from scratch import ROOT, fresh_scratch, grader_copy, labs, run
from scratch import grade as grade_in_scratch

SCRATCH = Path(tempfile.gettempdir()) / "ipc-labs-automatic-mutants"
CLEANUP = "cleanup"


def grade(grader, workspace, selection, prebuilt=False):
    """The JSON report of grading `selection` (a lab, or a lab/check) in the scratch copy."""
    return grade_in_scratch(grader, workspace, SCRATCH / "logs", selection, prebuilt=prebuilt)


def left_behind(lab, check):
    """Whether the log of `lab/check` lists an object the check left behind."""
    log = SCRATCH / "logs" / lab / f"{check}.log"
    try:
        return any(line.startswith("left behind:") for line in log.read_text().splitlines())
    except OSError:
        return False


def cheapest_first(grader, workspace, lab):
    """The lab's checks (not cleanup) by their duration on the unmutated solution."""
    report = grade(grader, workspace, lab)
    if not report:
        sys.exit(f"grading the solution of {lab} gave no report")
    checks = report["labs"][0]["checks"]
    failing = [c["name"] for c in checks if c["status"] != "passed"]
    if failing:
        sys.exit(f"the solution of {lab} does not pass {', '.join(failing)}: no oracle")
    graded = [c for c in checks if c["name"] != CLEANUP]
    return [c["name"] for c in sorted(graded, key=lambda c: c["duration_ms"])]


def outcome_of(grader, workspace, lab, order):
    """`unviable`, `caught by CHECK` or `MISSED` for the mutant now applied to the scratch."""
    for position, check in enumerate(order):
        report = grade(grader, workspace, f"{lab}/{check}", prebuilt=position > 0)
        results = report["labs"][0]["checks"] if report else []
        if any("does not compile" in c["message"] for c in results):
            return "unviable"
        if not results or any(c["status"] != "passed" for c in results):
            return f"caught by {check}"
        if left_behind(lab, check):
            return f"caught by {CLEANUP}"
    return "MISSED"


def main():
    arguments = sys.argv[1:]
    only = None
    if arguments[:1] == ["--match"]:
        if len(arguments) < 2:
            sys.exit(__doc__)
        only, arguments = arguments[1], arguments[2:]
    selected = arguments or labs()
    grader = grader_copy(SCRATCH)
    workspace = fresh_scratch(SCRATCH)
    survivors = []
    totals = {"caught": 0, "missed": 0, "unviable": 0}
    for lab in selected:
        listing = run(
            ["cargo", "mutants", "--list", "--json", "--dir", "solutions", "--package", lab],
            cwd=ROOT,
        )
        if listing.returncode != 0:
            sys.exit(f"cargo mutants --list failed for {lab}: {listing.stderr}")
        mutants = [m for m in json.loads(listing.stdout) if m["file"].endswith("lib.rs")]
        print(f"{lab}: {len(mutants)} mutants of src/lib.rs", flush=True)
        order = cheapest_first(grader, workspace, lab)
        print(f"  checks, cheapest first: {', '.join(order)}", flush=True)
        for mutant in mutants:
            name = mutant.get("name") or f"{mutant['file']}: {mutant.get('replacement', '?')}"
            if only is not None and only not in name:
                continue
            patch = ["patch", "-s", "-p0", "-d", str(workspace / "solutions")]
            applied = run(patch, input=mutant["diff"])
            if applied.returncode != 0:
                print(f"  could not apply: {name}", flush=True)
                continue
            try:
                outcome = outcome_of(grader, workspace, lab, order)
            finally:
                run(patch + ["-R"], input=mutant["diff"])
            if outcome == "unviable":
                totals["unviable"] += 1
            elif outcome == "MISSED":
                totals["missed"] += 1
                survivors.append((lab, name))
            else:
                totals["caught"] += 1
            print(f"  {outcome}: {name}", flush=True)
    print(f"\n{totals['caught']} caught, {totals['missed']} missed, {totals['unviable']} unviable")
    if survivors:
        print("\nsurvivors (record a decision for each in docs/automatic-mutants.md):")
        for lab, name in survivors:
            print(f"| {lab} | `{name}` | |")


if __name__ == "__main__":
    main()
