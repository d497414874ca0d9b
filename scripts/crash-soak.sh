#!/bin/sh
# A long kill -9 soak, for a hand run: tests/crash.rs's harness with many cycles over one data directory
# (the daemon killed at random moments under load, restarted, and checked against every acknowledged
# reply; every seventh cycle kills it during a COMPACT).
#
#     scripts/crash-soak.sh              # 200 cycles, a few minutes on 2 cores
#     scripts/crash-soak.sh 1000         # more
#     KEYPOOL_CRASH_SEED=123 scripts/crash-soak.sh 50   # replay a seed the output printed
#
# Bounded: the harness stops starting new cycles after about two seconds a cycle, and every wait in it
# is bounded; the daemons it starts are killed by their pid. It prints its seed first and a summary last.
set -eu
cycles="${1:-200}"
case "$cycles" in
    ''|*[!0-9]*) echo "usage: $0 [cycles]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
KEYPOOL_CRASH_CYCLES="$cycles" exec cargo test --test crash acknowledged_changes_survive_kill_9_under_load -- --nocapture --exact
