#!/usr/bin/env bash
# Builds the local test control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok) from their Go modules into a cache outside the repo,
# one binary at a time so that two cores and little memory suffice.
#
# Prints the directory holding the binaries on its last line. Reuses a finished build.
#
#   STEPWISE_BIN_DIR    use these prebuilt binaries instead (nothing is built)
#   KUBEBUILDER_ASSETS  envtest's directory: etcd, kube-apiserver (and kubectl) are taken
#                       from it when present; the rest is still built
#   STEPWISE_CACHE      cache root (default: ${XDG_CACHE_HOME:-~/.cache}/stepwise)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KUBE_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok)

say() { printf 'build: %s\n' "$*" >&2; }
die() { printf 'build: error: %s\n' "$*" >&2; exit 1; }

if [[ -n "${STEPWISE_BIN_DIR:-}" ]]; then
  for b in "${BINARIES[@]}"; do
    [[ -x "$STEPWISE_BIN_DIR/$b" ]] || die "STEPWISE_BIN_DIR=$STEPWISE_BIN_DIR has no executable '$b'; unset it to build from source"
  done
  echo "$STEPWISE_BIN_DIR"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "no Go toolchain on PATH. Install Go 1.26 or newer (https://go.dev/doc/install, or 'apt-get install golang-go' where it is new enough), or point STEPWISE_BIN_DIR at prebuilt binaries."
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
[[ "$go_minor" -ge 26 ]] || die "Go $(go env GOVERSION) is too old: Kubernetes $KUBE_VERSION needs go1.26 or newer."

cache_root=${STEPWISE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stepwise}
out="$cache_root/bin/k8s-$KUBE_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION"
mkdir -p "$out"

# Binaries a user already has (envtest) are linked in rather than built.
if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  for b in etcd kube-apiserver kubectl; do
    if [[ -x "$KUBEBUILDER_ASSETS/$b" && ! -e "$out/$b" ]]; then
      ln -s "$KUBEBUILDER_ASSETS/$b" "$out/$b"
      say "using $b from KUBEBUILDER_ASSETS"
    fi
  done
fi

ldflags_kube="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=36 -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"

build() { # name module-dir package ldflags
  local name=$1 dir=$2 pkg=$3 flags=$4
  if [[ -x "$out/$name" ]]; then return 0; fi
  say "building $name from $pkg (one at a time; the first build of kube-apiserver takes several minutes)"
  local start=$SECONDS log
  log=$(mktemp)
  # -p 2 bounds parallel compiles to the two cores; a partial file never looks finished.
  if ! (cd "$here/go/$dir" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -p 2 -trimpath -ldflags "$flags" -o "$out/$name.partial" "$pkg") >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    rm -f "$log" "$out/$name.partial"
    die "go build of $pkg failed (output above). Check that the Go module proxy is reachable (go env GOPROXY) and that disk space is free (df -h $cache_root)."
  fi
  rm -f "$log"
  mv "$out/$name.partial" "$out/$name"
  say "built $name in $((SECONDS - start))s"
}

build etcd etcd go.etcd.io/etcd/server/v3 "-s -w"
build kube-apiserver kube k8s.io/kubernetes/cmd/kube-apiserver "$ldflags_kube"
build kube-controller-manager kube k8s.io/kubernetes/cmd/kube-controller-manager "$ldflags_kube"
build kube-scheduler kube k8s.io/kubernetes/cmd/kube-scheduler "$ldflags_kube"
build kubectl kube k8s.io/kubernetes/cmd/kubectl "$ldflags_kube"
build kwok kwok sigs.k8s.io/kwok/cmd/kwok "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"

echo "$out"
