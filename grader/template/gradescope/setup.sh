#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image. It installs a Rust
# toolchain the unprivileged user can run, creates that user, and builds the grader and the
# labs' dependencies in the grading workspace, so that grading a submission compiles only the
# student's crates.
#
# Environment (for trying the autograder outside Gradescope):
#   AUTOGRADER_ROOT      where source/, submission/ and results/ are (default /autograder)
#   IPC_LABS_GRADE_USER  the user the student's code runs as (default student); empty grades
#                        as the current user, without isolation: for testing only
set -euo pipefail
root="${AUTOGRADER_ROOT:-/autograder}"
user="${IPC_LABS_GRADE_USER-student}"
source="$root/source"
work="$root/work"

# A toolchain outside /root, so that the unprivileged user can run it (run_autograder does the same).
if [ -x /usr/local/cargo/bin/cargo ]; then
  export RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo
  export PATH="$CARGO_HOME/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "== installing Rust (stable) under /usr/local"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends ca-certificates curl gcc libc6-dev python3
  export RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo
  export PATH="$CARGO_HOME/bin:$PATH"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
    | sh -s -- -y --profile minimal --default-toolchain stable --no-modify-path
  chmod -R a+rX "$RUSTUP_HOME" "$CARGO_HOME"
fi
command -v python3 >/dev/null || { echo "setup.sh: run_autograder needs python3" >&2; exit 1; }

if [ -n "$user" ] && ! id -u "$user" >/dev/null 2>&1; then
  echo "== creating the user $user"
  useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
fi

echo "== building the grader in $work"
rm -rf "$work"
cp -a "$source/template" "$work"
chmod -R a+rX,go-w "$work"
cd "$work"
# Everything is downloaded now: the student's code is built offline.
cargo fetch --locked
cargo build --locked --package ipc-grader --bin cargo-grade
# The grader where run_autograder finds it, wherever cargo built it (an image may set
# CARGO_TARGET_DIR).
install -D -m 755 "${CARGO_TARGET_DIR:-$work/target}/debug/cargo-grade" "$work/bin/cargo-grade"

echo "== building the labs' dependencies (grading the skeletons once)"
run_as=()
[ -n "$user" ] && run_as=(--run-as "$user")
read -r -a labs <"$source/labs"
status=0
IPC_LABS_WORKSPACE="$work" "$work/bin/cargo-grade" "${run_as[@]}" --format json "${labs[@]}" \
  >/dev/null || status=$?
# 1: the skeletons do not pass, as expected; anything else is a broken image.
if [ "$status" != 1 ]; then
  echo "setup.sh: grading the skeletons exited with $status instead of 1" >&2
  exit 1
fi
echo "== the autograder is ready"
