#!/usr/bin/env python3
"""Classroom 50 autograder of the ipc-labs: grades the student's checkout with `cargo grade`.

The Classroom 50 runner starts it in the student's checkout, with the submission's identity in
the environment (CLASSROOM, ASSIGNMENT, SUBMISSION_TAG, USERNAME or OWNER, COMMIT_URL,
RELEASE_URL, REVIEW_URL). `cargo grade --write classroom50=result.json` writes ./result.json from
them. The labs graded are listed in the file `labs` beside this one. The exit status is non-zero
only when grading could not happen (an infrastructure error); a submission that fails checks, or
does not compile, still gets a result.json with score and messages.
"""

import json
import os
import subprocess
import sys

RESULT = "result.json"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "labs")) as f:
        labs = f.read().split()
    # A result.json committed by the student must never count.
    if os.path.lexists(RESULT):
        os.remove(RESULT)
    command = ["cargo", "grade", "--write", "classroom50=" + RESULT] + labs
    print("$ " + " ".join(command), flush=True)
    env = dict(os.environ, NO_COLOR="1")
    try:
        status = subprocess.run(command, env=env).returncode
    except OSError as error:
        print(f"autograder.py: cannot run cargo: {error}", file=sys.stderr)
        return 3
    # 0: every check passed, 1: some did not; anything else stopped the grading.
    if status not in (0, 1):
        print(f"autograder.py: cargo grade exited with {status}", file=sys.stderr)
        return 3
    try:
        with open(RESULT) as f:
            result = json.load(f)
    except (OSError, ValueError) as error:
        print(f"autograder.py: cargo grade wrote no readable {RESULT}: {error}", file=sys.stderr)
        return 3
    print(f"score: {result['score']}/{result['max-score']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
