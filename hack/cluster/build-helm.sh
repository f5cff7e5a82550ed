#!/usr/bin/env bash
# Builds Helm (used by the packaging tests to render charts/stepwise) from its Go module
# into the same cache as the control plane, like build.sh does for the other binaries.
#
# Prints the path of the helm binary on its last line. Reuses a finished build.
#
#   STEPWISE_HELM       use this helm binary instead (nothing is built)
#   STEPWISE_CACHE      cache root (default: ${XDG_CACHE_HOME:-~/.cache}/stepwise)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HELM_VERSION=v3.22.0
# The Kubernetes version `helm template` assumes (.Capabilities.KubeVersion) unless given
# --kube-version; upstream's Makefile sets it from the client-go it was built with
# (k8s.io/client-go v0.37.0 in hack/cluster/go/helm/go.mod).
HELM_K8S_MAJOR=1
HELM_K8S_MINOR=37

say() { printf 'build-helm: %s\n' "$*" >&2; }
die() { printf 'build-helm: error: %s\n' "$*" >&2; exit 1; }

if [[ -n "${STEPWISE_HELM:-}" ]]; then
  [[ -x "$STEPWISE_HELM" ]] || die "STEPWISE_HELM=$STEPWISE_HELM is not an executable; unset it to build Helm from source"
  echo "$STEPWISE_HELM"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "no Go toolchain on PATH. Install Go 1.26 or newer (https://go.dev/doc/install, or 'apt-get install golang-go' where it is new enough), or point STEPWISE_HELM at a helm binary."
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
[[ "$go_minor" -ge 26 ]] || die "Go $(go env GOVERSION) is too old: Helm $HELM_VERSION needs go1.26 or newer."

cache_root=${STEPWISE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stepwise}
out="$cache_root/bin/helm-$HELM_VERSION"
mkdir -p "$out"

if [[ ! -x "$out/helm" ]]; then
  say "building helm $HELM_VERSION from helm.sh/helm/v3/cmd/helm (about two minutes the first time)"
  start=$SECONDS
  log=$(mktemp)
  flags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    flags+=" -X $pkg.k8sVersionMajor=$HELM_K8S_MAJOR -X $pkg.k8sVersionMinor=$HELM_K8S_MINOR"
  done
  # -p 2 bounds parallel compiles to the two cores; a partial file never looks finished.
  if ! (cd "$here/go/helm" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -p 2 -trimpath -ldflags "$flags" -o "$out/helm.partial" helm.sh/helm/v3/cmd/helm) >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    rm -f "$log" "$out/helm.partial"
    die "go build of helm.sh/helm/v3/cmd/helm failed (output above). Check that the Go module proxy is reachable (go env GOPROXY) and that disk space is free (df -h $cache_root)."
  fi
  rm -f "$log"
  mv "$out/helm.partial" "$out/helm"
  say "built helm in $((SECONDS - start))s"
fi

echo "$out/helm"
