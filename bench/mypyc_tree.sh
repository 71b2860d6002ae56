#!/usr/bin/env bash
# A copy of the tree at a git ref with ingest's per-record modules compiled by mypyc, OUTSIDE this
# repository: mypyc writes each module's extension (.so) beside its source and Python imports that
# instead of the .py. For measuring only (bench/RESULTS.md, "ingest8: mypyc, measured").
#
#   bench/mypyc_tree.sh [DIR] [REF]        # default /tmp/ingest8-mypyc and HEAD
#   MODULES="protocols/derive.py ..." bench/mypyc_tree.sh      # another selection of modules
#   MYPYC_OPT_LEVEL=0..3 (mypyc's; default 3)
#
# Then, from this repository (old = the same ref, plain):
#   BENCH_CODE=DIR PYTHONPATH=DIR .venv/bin/python DIR/bench/ingest_stages.py      # and BENCH_CODE=$PWD
#   PYTHONPATH=DIR .venv/bin/python DIR/bench/ingest_drain.py --agents 20 --days 100 --old-ref REF
#   PYTHONPATH=DIR .venv/bin/pytest -q -p no:cacheprovider --rootdir DIR DIR/tests/protocols
# Prints the compile's wall and CPU time (a cold mypy cache: what an install or a CI run would pay).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-/tmp/ingest8-mypyc}"
REF="${2:-HEAD}"
VENV="${VENV:-$REPO/.venv}"
[[ -x "$VENV/bin/mypyc" ]] || VENV=/work/main/.venv
# the per-record Python of `jishi-server ingest` (bench/ingest_stages.py --profile): open thread, then
# database thread
MODULES="${MODULES:-protocols/canonical.py protocols/chain.py protocols/validate.py protocols/fastcheck.py
server/ingest/verify.py protocols/derive.py server/ingest/book.py server/ingest/store.py
server/derive/incremental.py}"

case "$DIR" in "$REPO"|"$REPO"/*) echo "mypyc_tree: $DIR is inside the repository" >&2; exit 1;; esac
rm -rf "$DIR"
mkdir -p "$DIR"
git -C "$REPO" archive "$REF" | tar -x -C "$DIR"
cd "$DIR"
ln -s "$REPO/sim/oidc/node_modules" sim/oidc/node_modules 2>/dev/null || true
# what mypyc refuses: "Cannot access instance attribute "__slots__" through class object" (derive.py);
# the same field names, from the dataclass (the copy only: the repository's source is not changed)
sed -i 's/^_CARRY_FIELDS = tuple(f for f in _State.__slots__)$/_CARRY_FIELDS = tuple(f.name for f in fields(_State))/;
        s/^from dataclasses import dataclass, field, replace$/from dataclasses import dataclass, field, fields, replace/' \
  protocols/derive.py
grep -q "fields(_State)" protocols/derive.py || { echo "mypyc_tree: derive.py patch did not apply" >&2; exit 1; }
echo "mypyc_tree: $REF -> $DIR; $("$VENV/bin/mypy" --version); $(gcc --version | head -1)"
echo "mypyc_tree: load average $(cut -d' ' -f1-3 /proc/loadavg); modules:" $MODULES
TIMEFORMAT="mypyc_tree: compile took %R s wall, %U s user + %S s system CPU"
# shellcheck disable=SC2086
time "$VENV/bin/mypyc" $MODULES >build.log 2>&1 || { tail -n 60 build.log >&2; exit 1; }
echo "mypyc_tree: load average $(cut -d' ' -f1-3 /proc/loadavg)"
find . -name '*.so' -newer pyproject.toml -printf 'mypyc_tree: %p %s bytes\n' | sort
grep -E "^(error|warning)|: error:|: note:" build.log | head -20 || true
