"""A scratch copy of the repository and the grader that grades it: what the scripts beside this
one share."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(command, **kwargs):
    return subprocess.run(command, check=False, text=True, capture_output=True, **kwargs)


def labs():
    found = []
    for crate in sorted((ROOT / "solutions").iterdir()):
        if (crate / "Cargo.toml").is_file():
            found.append(crate.name.split("-", 1)[1])
    return found


def solution_dir(root, lab):
    """The lab's reference solution under `root` (`solutions/NN-LAB`)."""
    found = sorted((root / "solutions").glob(f"[0-9]*-{lab}"))
    if not found:
        sys.exit(f"no solution of a lab called {lab}; the labs: {', '.join(labs())}")
    return found[0]


def grader_copy(scratch):
    """The repository's grader, built, and copied into `scratch`: rebuilding the repository's
    during a run changes nothing."""
    built = run(["cargo", "build", "-q", "-p", "ipc-grader", "--bin", "cargo-grade"], cwd=ROOT)
    if built.returncode != 0:
        sys.exit(built.stderr)
    scratch.mkdir(parents=True, exist_ok=True)
    grader = scratch / "cargo-grade"
    shutil.copy2(ROOT / "target" / "debug" / "cargo-grade", grader)
    return str(grader)


def fresh_scratch(scratch):
    """A copy of the repository in `scratch` without its build output (the scratch's own is
    kept)."""
    workspace = scratch / "workspace"
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


def grade(grader, workspace, logs, selection, seed=1, prebuilt=False):
    """The JSON report of grading `selection` (a lab, or a lab/check) of the solutions in the
    scratch copy, with `seed`; `None` if the grader gave none."""
    env = dict(os.environ, IPC_LABS_WORKSPACE=str(workspace))
    if prebuilt:
        env["IPC_LABS_PREBUILT"] = "1"
    else:
        env.pop("IPC_LABS_PREBUILT", None)
    command = [grader, "--solutions", "--format", "json", "--seed", str(seed)]
    command += ["--log-dir", str(logs), selection]
    result = run(command, env=env)
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        return None
