#!/usr/bin/env bash
# Stops what scripts/ci/slurm-up.sh started, each daemon by its pid, the job runners first.
set -uo pipefail
D=${XENTLAB_SLURM_DIR:-/tmp/xentlab-slurm}
for pidfile in slurmd.pid slurmctld.pid slurmdbd.pid mariadbd.pid munge/munged.pid; do
  name=$(basename "$pidfile" .pid)
  pid=$(cat "$D/$pidfile" 2>/dev/null) || continue
  kill "$pid" 2>/dev/null || continue
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && { echo "slurm-down: $name ($pid) ignored SIGTERM for 20 s: SIGKILL" >&2; kill -9 "$pid"; }
done
exit 0
