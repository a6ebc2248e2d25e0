#!/usr/bin/env bash
# scripts/lint.sh — the static checks of `make lint` (part of `make test`):
#
#   - ShellCheck over scripts/*.sh, bench/*.sh, deploy/images/*/*.sh and .ci/run
#   - Cppcheck over src/
#
# Both must report nothing. A finding that is wrong for its case is silenced
# where it is: `# shellcheck disable=SCxxxx # reason` on the line before, or
# `// cppcheck-suppress id` in C; a class of cppcheck false positives goes into
# scripts/cppcheck-suppressions.txt with a one-line reason. Exits 1 on any
# finding, 2 when a tool is missing (scripts/deps.sh installs both).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'lint: %s\n' "$*"; }

for tool in shellcheck cppcheck; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    say "$tool is missing: run make deps (scripts/deps.sh)" >&2
    exit 2
  fi
done

rc=0

# --- shellcheck --------------------------------------------------------------
# Every severity, style included: the scripts start and stop servers, and the
# notes (quoting, A && B || C) are the ones that bite there.
shell_files=(scripts/*.sh bench/*.sh deploy/images/*/*.sh .ci/run)
if shellcheck --severity=style --format=gcc "${shell_files[@]}"; then
  say "shellcheck: ${#shell_files[@]} files ok"
else
  say "shellcheck: findings above" >&2
  rc=1
fi

# --- cppcheck ----------------------------------------------------------------
# --enable=warning,style,performance,portability: everything but `information`
#   (which reports cppcheck's own configuration, not the code) and
#   `unusedFunction` (src/ is a library whose callers are main.c, the unit
#   tests and other modules: whole-program use, false positives by design).
# -I src, --std=c11 -D_GNU_SOURCE: how CMake compiles src/ (C17 is C11 with
#   defect fixes; cppcheck 2.10 knows no c17). Giving -D also keeps cppcheck
#   to that one configuration instead of guessing at every #ifdef.
# --library=posix,gnu: what cppcheck knows of the libc calls we make (which
#   never return, which allocate), in place of reading the system headers:
#   those are not given to it (missingIncludeSystem, in the suppressions file),
#   as parsing glibc's headers is slow and yields findings in glibc.
# No compile_commands.json: lint runs before the builds in `make test`, and
#   the flags above are all that the builds would tell it about src/.
# --inline-suppr: a `// cppcheck-suppress id` on the line before a finding.
# --error-exitcode=1: any finding fails the run.
c_files=$(find src -name '*.c' | wc -l)
if cppcheck --quiet --error-exitcode=1 \
  --enable=warning,style,performance,portability \
  --library=posix --library=gnu --platform=unix64 \
  --std=c11 -D_GNU_SOURCE -I src \
  --inline-suppr --suppressions-list=scripts/cppcheck-suppressions.txt \
  --template='{file}:{line}: {severity}: {message} [{id}]' \
  src/; then
  say "cppcheck: $c_files files in src/ ok"
else
  say "cppcheck: findings above" >&2
  rc=1
fi

exit $rc
