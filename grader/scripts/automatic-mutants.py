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
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRATCH = Path(tempfile.gettempdir()) / "ipc-labs-automatic-mutants"
CLEANUP = "cleanup"


def run(command, **kwargs):
    return subprocess.run(command, check=False, text=True, capture_output=True, **kwargs)


def labs():
    found = []
    for crate in sorted((ROOT / "solutions").iterdir()):
        if (crate / "Cargo.toml").is_file():
            found.append(crate.name.split("-", 1)[1])
    return found


def fresh_scratch():
    """A copy of the repository without its build output (the scratch's own is kept)."""
    workspace = SCRATCH / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    for entry in ROOT.iterdir():
        if entry.name in ("target", ".git"):
            continue
        destination = workspace / entry.name
        if destination.exists():
            shutil.rmtree(destination) if destination.is_dir() else destination.unlink()
        # Fresh modification times (shutil.copy, not copy2): the scratch's build may be of a
        # mutant, and cargo must not take it for the build of these sources.
        if entry.is_dir():
            shutil.copytree(
                entry,
                destination,
                ignore=shutil.ignore_patterns("target"),
                copy_function=shutil.copy,
            )
        else:
            shutil.copy(entry, destination)
    # Start from the repository's build of the solutions, if any: the dependencies are the same.
    built = ROOT / "target" / "grade" / "solutions"
    scratch_built = workspace / "target" / "grade" / "solutions"
    if built.is_dir() and not scratch_built.exists():
        shutil.copytree(built, scratch_built, symlinks=True)
    return workspace


def grade(grader, workspace, selection, prebuilt=False):
    """The JSON report of grading `selection` (a lab, or a lab/check) in the scratch copy."""
    env = dict(os.environ, IPC_LABS_WORKSPACE=str(workspace))
    if prebuilt:
        env["IPC_LABS_PREBUILT"] = "1"
    else:
        env.pop("IPC_LABS_PREBUILT", None)
    command = [grader, "--solutions", "--format", "json", "--seed", "1"]
    command += ["--log-dir", str(SCRATCH / "logs"), selection]
    result = run(command, env=env)
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        return None


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
    built = run(["cargo", "build", "-q", "-p", "ipc-grader", "--bin", "cargo-grade"], cwd=ROOT)
    if built.returncode != 0:
        sys.exit(built.stderr)
    workspace = fresh_scratch()
    # A copy of the grader, so that rebuilding the repository's during a run changes nothing.
    grader = str(SCRATCH / "cargo-grade")
    shutil.copy2(ROOT / "target" / "debug" / "cargo-grade", grader)
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
