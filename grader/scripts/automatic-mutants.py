#!/usr/bin/env python3
"""Grades the automatic mutants of the reference solutions, with the grader's checks as the oracle.

cargo-mutants (`cargo install cargo-mutants`) lists the mutants of a lab's solution (replaced
function bodies, flipped operators, ...); this script applies each one to a scratch copy of the
repository, grades the lab with `cargo grade --solutions`, and reports which mutants no check
caught. Too slow for CI: run it by hand, then record a decision for each survivor in
docs/automatic-mutants.md.

usage: grader/scripts/automatic-mutants.py [LAB ...]   (all labs with a solution if none)
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
        if entry.is_dir():
            shutil.copytree(entry, destination, ignore=shutil.ignore_patterns("target"))
        else:
            shutil.copy2(entry, destination)
    return workspace


def grade(grader, workspace, lab):
    env = dict(os.environ, IPC_LABS_WORKSPACE=str(workspace))
    result = run([grader, "--solutions", "--format", "json", "--seed", "1", lab], env=env)
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        return None


def main():
    selected = sys.argv[1:] or labs()
    built = run(["cargo", "build", "-q", "-p", "ipc-grader", "--bin", "cargo-grade"], cwd=ROOT)
    if built.returncode != 0:
        sys.exit(built.stderr)
    grader = str(ROOT / "target" / "debug" / "cargo-grade")
    workspace = fresh_scratch()
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
        for mutant in mutants:
            name = mutant.get("name") or f"{mutant['file']}: {mutant.get('replacement', '?')}"
            patch = ["patch", "-s", "-p0", "-d", str(workspace / "solutions")]
            applied = run(patch, input=mutant["diff"])
            if applied.returncode != 0:
                print(f"  could not apply: {name}", flush=True)
                continue
            try:
                report = grade(grader, workspace, lab)
            finally:
                run(patch + ["-R"], input=mutant["diff"])
            checks = report["labs"][0]["checks"] if report else []
            if any("does not compile" in c["message"] for c in checks):
                totals["unviable"] += 1
                outcome = "unviable"
            elif any(c["status"] != "passed" for c in checks):
                totals["caught"] += 1
                caught_by = [c["name"] for c in checks if c["status"] != "passed"]
                outcome = "caught by " + ", ".join(caught_by)
            else:
                totals["missed"] += 1
                outcome = "MISSED"
                survivors.append((lab, name))
            print(f"  {outcome}: {name}", flush=True)
    print(f"\n{totals['caught']} caught, {totals['missed']} missed, {totals['unviable']} unviable")
    if survivors:
        print("\nsurvivors (record a decision for each in docs/automatic-mutants.md):")
        for lab, name in survivors:
            print(f"| {lab} | `{name}` | |")


if __name__ == "__main__":
    main()
