#!/usr/bin/env python3
"""Grades wrong solutions kept outside the repository, as docs/grading-power.md measures the checks.

A wrong solution is a directory holding a `src/` with the files it changes (usually `lib.rs`,
whole). `grade` puts each one over the lab's reference solution in a scratch copy of the
repository and grades it with the lab's checks once per seed (1, 2 and 3 unless `--seeds` says).
It is caught when some check fails in every run. For each run the failing checks and the first
failure's message are printed, to be read: does the message name the bug?

`mutant` prints a wrong solution as the `--- find` / `--- replace` blocks of a mutant of the
suite (grader/tests/mutants/), each find text grown with context until it occurs once. Read them
before adding the header: a doc comment changed since the wrong solution was written shows up as
a block of its own.

usage: grader/scripts/wrong-solutions.py grade [--seeds 1,2,3] LAB DIR...
       grader/scripts/wrong-solutions.py mutant LAB DIR
"""

import difflib
import shutil
import sys
import tempfile
from pathlib import Path

from scratch import ROOT, fresh_scratch, grade, grader_copy, solution_dir

SCRATCH = Path(tempfile.gettempdir()) / "ipc-labs-wrong-solutions"


def put_over(solution, wrong=None):
    """The reference's `src/` in `solution`, then the wrong solution's files over it (if any),
    all with fresh modification times: cargo rebuilds by them."""
    source = solution_dir(ROOT, solution.name.split("-", 1)[1]) / "src"
    shutil.rmtree(solution / "src")
    shutil.copytree(source, solution / "src", copy_function=shutil.copy)
    for path in sorted((wrong / "src").rglob("*")) if wrong else []:
        if path.is_file():
            target = solution / "src" / path.relative_to(wrong / "src")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)


def first_line(text, width=600):
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= width else line[:width] + "..."


def grade_all(lab, directories, seeds):
    grader = grader_copy(SCRATCH)
    workspace = fresh_scratch(SCRATCH)
    solution = solution_dir(workspace, lab)
    caught_all = 0
    try:
        for directory in directories:
            wrong = Path(directory)
            if not (wrong / "src").is_dir():
                sys.exit(f"{wrong} has no src/")
            put_over(solution, wrong)
            caught, lines = 0, []
            for seed in seeds:
                report = grade(grader, workspace, SCRATCH / "logs", lab, seed=seed)
                checks = report["labs"][0]["checks"] if report else []
                failed = [c for c in checks if c["status"] != "passed"]
                if not report:
                    caught += 1
                    lines.append(f"  seed {seed}: no report (the grader failed)")
                elif failed:
                    caught += 1
                    names = ", ".join(f"{c['name']} ({c['status']})" for c in failed)
                    lines.append(f"  seed {seed}: {names}")
                    lines.append(f"    first: {first_line(failed[0]['message'])}")
                else:
                    lines.append(f"  seed {seed}: passed every check")
            caught_all += caught == len(seeds)
            print(f"{wrong.name}: caught in {caught} of {len(seeds)} runs", flush=True)
            print("\n".join(lines), flush=True)
    finally:
        put_over(solution)
    print(f"\n{caught_all} of {len(directories)} caught in every run")


def find_and_replace(reference, wrong):
    """The blocks turning `reference` (a text) into `wrong`."""
    ref, new = reference.split("\n"), wrong.split("\n")
    matcher = difflib.SequenceMatcher(None, ref, new, autojunk=False)
    hunks = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        # Changes a few lines apart make one block.
        if hunks and i1 - hunks[-1][1] <= 4:
            hunks[-1][1], hunks[-1][3] = i2, j2
        else:
            hunks.append([i1, i2, j1, j2])
    text, blocks = reference, []
    for i1, i2, j1, j2 in hunks:
        before = after = 0
        while True:
            start, end = max(0, i1 - before), min(len(ref), i2 + after)
            find = "\n".join(ref[start:end])
            if find.strip() and text.count(find) == 1:
                break
            if (before <= after and start > 0) or end >= len(ref):
                before += 1
            else:
                after += 1
        replace = "\n".join(new[j1 - (i1 - start) : j2 + (end - i2)])
        text = text.replace(find, replace, 1)
        blocks.append(f"--- find\n{find}\n--- replace\n{replace}")
    return blocks


def mutant(lab, directory):
    wrong = Path(directory) / "src"
    source = solution_dir(ROOT, lab) / "src"
    changed = []
    for path in sorted(wrong.rglob("*")):
        if path.is_file():
            reference = source / path.relative_to(wrong)
            original = reference.read_text() if reference.is_file() else ""
            if path.read_text() != original:
                changed.append((path, original))
    if len(changed) != 1:
        names = ", ".join(str(p.relative_to(wrong)) for p, _ in changed) or "none"
        sys.exit(f"a mutant changes one file; {directory} changes {names}")
    path, original = changed[0]
    print(f"file: src/{path.relative_to(wrong)}")
    print("\n".join(find_and_replace(original, path.read_text())))


def main():
    arguments = sys.argv[1:]
    if arguments[:1] == ["mutant"] and len(arguments) == 3:
        mutant(arguments[1], arguments[2])
    elif arguments[:1] == ["grade"]:
        arguments = arguments[1:]
        seeds = [1, 2, 3]
        if arguments[:1] == ["--seeds"] and len(arguments) > 1:
            try:
                seeds = [int(s) for s in arguments[1].split(",")]
            except ValueError:
                sys.exit(f"--seeds takes numbers separated by commas, not {arguments[1]}")
            arguments = arguments[2:]
        if len(arguments) < 2:
            sys.exit(__doc__)
        grade_all(arguments[0], arguments[1:], seeds)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
