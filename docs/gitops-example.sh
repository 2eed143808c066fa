#!/usr/bin/env bash
# One GitOps sync step, as a CI job, Argo CD or Flux would run it against PVC:
#   diff -> (dry run, apply, prune) -> wait -> diff again.
#
# Usage: docs/gitops-example.sh MANIFEST_DIR [LABEL_SELECTOR]
#   LABEL_SELECTOR (e.g. app=shop) names the objects this set owns; with it,
#   labelled objects that are no longer in MANIFEST_DIR are deleted (pruned).
# Environment: PVCCTL (default: pvcctl on PATH), PVC_SERVER / PVC_CONTEXT /
#   PVC_TOKEN (where and as whom), WAIT_TIMEOUT (default 120s).
# Exit: 0 in sync (or synced now); anything else fails the pipeline.
set -euo pipefail

dir=${1:?usage: gitops-example.sh MANIFEST_DIR [LABEL_SELECTOR]}
selector=${2:-}
pvcctl=${PVCCTL:-pvcctl}
timeout=${WAIT_TIMEOUT:-120s}
prune=()
if [[ -n $selector ]]; then
    prune=(--prune -l "$selector")
fi

# 1. Drift check. pvcctl diff exits 0 (in sync), 1 (differences), >1 (error).
set +e
"$pvcctl" diff -f "$dir" "${prune[@]}"
rc=$?
set -e
case $rc in
    0) echo "in sync: nothing to apply" ;;
    1) echo "drift found: applying" ;;
    *) echo "diff failed (exit $rc)" >&2; exit "$rc" ;;
esac

if [[ $rc == 1 ]]; then
    # 2. Let the server validate everything first (writes nothing), then apply.
    "$pvcctl" apply -f "$dir" "${prune[@]}" --dry-run=server >/dev/null
    "$pvcctl" apply -f "$dir" "${prune[@]}"
fi

# 3. Wait for the cluster to converge: every VM's spec carried out (running where it is
#    placed, or stopped when its runStrategy is Halted), as computed for its current spec.
#    A timeout exits 1 and fails the job.
"$pvcctl" wait vm --all --for=condition=Converged --timeout="$timeout"

# 4. Verify: the live state now matches the manifests exactly.
"$pvcctl" diff -f "$dir" "${prune[@]}"
echo "synced"
