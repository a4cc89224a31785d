#!/usr/bin/env bash
# Delete the kind cluster.
set -euo pipefail
# shellcheck source=deploy/kind/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

need_kind
kind delete cluster --name "$CLUSTER"
