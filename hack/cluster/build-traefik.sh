#!/usr/bin/env bash
# Builds Traefik v3, the tests' data plane (its Kubernetes Gateway API provider routes
# real HTTP requests by the weights of HTTPRoutes), from its Go module into the same cache
# as the control plane, and copies beside it the Gateway API CRDs (standard channel) of
# the version Traefik was built against.
#
# Prints the directory holding `traefik` and `gateway-api-crds/` on its last line.
# Reuses a finished build.
#
#   STEPWISE_TRAEFIK_DIR  use this directory instead (nothing is built); it must hold an
#                         executable `traefik` and `gateway-api-crds/*.yaml`
#   STEPWISE_CACHE        cache root (default: ${XDG_CACHE_HOME:-~/.cache}/stepwise)
set -euo pipefail

TRAEFIK_MODULE=github.com/traefik/traefik/v3
TRAEFIK_VERSION=v3.7.13
# The Gateway API that Traefik $TRAEFIK_VERSION's go.mod requires (its docs: "supports
# Standard version v1.6.1"); checked against that go.mod below, so that bumping Traefik
# alone fails here instead of installing CRDs the provider was not built against.
GATEWAY_API_MODULE=sigs.k8s.io/gateway-api
GATEWAY_API_VERSION=v1.6.1

say() { printf 'build-traefik: %s\n' "$*" >&2; }
die() { printf 'build-traefik: error: %s\n' "$*" >&2; exit 1; }

if [[ -n "${STEPWISE_TRAEFIK_DIR:-}" ]]; then
  [[ -x "$STEPWISE_TRAEFIK_DIR/traefik" ]] || die "STEPWISE_TRAEFIK_DIR=$STEPWISE_TRAEFIK_DIR has no executable 'traefik'; unset it to build Traefik from source"
  compgen -G "$STEPWISE_TRAEFIK_DIR/gateway-api-crds/*.yaml" >/dev/null || die "STEPWISE_TRAEFIK_DIR=$STEPWISE_TRAEFIK_DIR has no gateway-api-crds/*.yaml (the Gateway API $GATEWAY_API_VERSION standard-channel CRDs); unset it to build"
  echo "$STEPWISE_TRAEFIK_DIR"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "no Go toolchain on PATH. Install Go 1.26 or newer (https://go.dev/doc/install, or 'apt-get install golang-go' where it is new enough), or point STEPWISE_TRAEFIK_DIR at a prebuilt traefik and the Gateway API CRDs."
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
[[ "$go_minor" -ge 26 ]] || die "Go $(go env GOVERSION) is too old: Traefik $TRAEFIK_VERSION needs go1.26 or newer."

cache_root=${STEPWISE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stepwise}
out="$cache_root/bin/traefik-$TRAEFIK_VERSION-gateway-api-$GATEWAY_API_VERSION"
mkdir -p "$out"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/stepwise-traefik.XXXXXX")
trap 'chmod -R u+w "$scratch" 2>/dev/null; rm -rf "$scratch"' EXIT

# The module's source directory in the module cache (read-only), downloading it first.
# Run in an empty directory so that no go.mod or go.work around us is consulted.
module_dir() { # module@version
  local json dir
  if ! json=$(cd "$scratch" && GOWORK=off GOFLAGS=-mod=mod go mod download -json "$1" 2>&1); then
    printf '%s\n' "$json" | tail -n 20 >&2
    die "go mod download $1 failed (output above). Check that the Go module proxy is reachable (go env GOPROXY) and that disk space is free (df -h $(go env GOMODCACHE))."
  fi
  dir=$(printf '%s\n' "$json" | sed -nE 's/^[[:space:]]*"Dir": "(.*)",?$/\1/p')
  [[ -n "$dir" && -d "$dir" ]] || die "go mod download $1 did not name a source directory; its answer was: $json"
  echo "$dir"
}

# --- the Gateway API CRDs (standard channel), from the module's config/crd/standard ------
if ! compgen -G "$out/gateway-api-crds/*.yaml" >/dev/null; then
  gw_dir=$(module_dir "$GATEWAY_API_MODULE@$GATEWAY_API_VERSION")
  compgen -G "$gw_dir/config/crd/standard/*.yaml" >/dev/null \
    || die "$GATEWAY_API_MODULE@$GATEWAY_API_VERSION has no config/crd/standard/*.yaml in its module source ($gw_dir)"
  rm -rf "$out/gateway-api-crds.partial"
  mkdir "$out/gateway-api-crds.partial"
  cp "$gw_dir"/config/crd/standard/*.yaml "$out/gateway-api-crds.partial/"
  chmod -R u+w "$out/gateway-api-crds.partial"
  mv "$out/gateway-api-crds.partial" "$out/gateway-api-crds"
  say "copied the Gateway API $GATEWAY_API_VERSION standard-channel CRDs"
fi

# --- traefik -----------------------------------------------------------------------------
# What this build changes in Traefik's source, and why. The Go module proxy this project
# relies on (a fresh machine may reach nothing else) does not serve three things that
# `go build ./cmd/traefik` needs; each is worked around in the temporary copy only, and
# each edit fails the build loudly if it no longer fits the source:
#
# 1. github.com/traefik/traefik/dynamic/ext: a nested module (pkg/config/dynamic/ext, with
#    its own go.mod, which is why the module zip leaves it out) that go.mod replaces with
#    that directory. It holds two extension points of the dynamic configuration, empty
#    structs in the open-source build; they are written back as such.
# 2. github.com/containous/go-http-auth, Traefik's fork of github.com/abbot/go-http-auth
#    (BasicAuth/DigestAuth middlewares): not served at all. Upstream abbot/go-http-auth is
#    used instead; it lacks the fork's DigestAuth.RequireAuthStale, so a stale digest nonce
#    gets the ordinary challenge (without stale=true). The tests use no auth middleware.
# 3. Seven DNS-provider SDKs that lego's providers/dns imports (huaweicloud, oci, sacloud,
#    ucloud, yandex-cloud, akamai edgegrid): not served, or not in the versions lego needs.
#    Traefik imports that package only to look up an ACME DNS-challenge provider by name;
#    the lookup is replaced by an error, so ACME DNS challenges are unavailable (HTTP and
#    TLS challenges are untouched). The tests use no ACME.
#
# This binary is for local tests, not for serving production traffic.
ABBOT_HTTP_AUTH_VERSION=v0.4.1-0.20220112235402-e1cee1c72f2f

replace_in() { # file old new: replace a literal text that must be present
  local file=$1 old=$2 new=$3 content
  content=$(<"$file")
  [[ "$content" == *"$old"* ]] || die "adapting Traefik's source: ${file#"$scratch/traefik/"} no longer contains '$old'; the adaptations in this script fit Traefik $TRAEFIK_VERSION"
  printf '%s\n' "${content//"$old"/"$new"}" >"$file"
}

adapt_source() { # dir
  local dir=$1
  mkdir -p "$dir/pkg/config/dynamic/ext"
  printf 'module github.com/traefik/traefik/dynamic/ext\n\ngo 1.26\n' >"$dir/pkg/config/dynamic/ext/go.mod"
  cat >"$dir/pkg/config/dynamic/ext/ext.go" <<'EOF'
// Package ext holds the extension points of Traefik's dynamic configuration
// (written by Stepwise's hack/cluster/build-traefik.sh; the module zip lacks it).
package ext

// HTTP extends dynamic.HTTPConfiguration; empty in the open-source build.
type HTTP struct{}

// Router extends dynamic.Router; empty in the open-source build.
type Router struct{}
EOF
  replace_in "$dir/go.mod" \
    "github.com/abbot/go-http-auth => github.com/containous/go-http-auth" \
    "github.com/abbot/go-http-auth => github.com/abbot/go-http-auth $ABBOT_HTTP_AUTH_VERSION // was: github.com/containous/go-http-auth"
  replace_in "$dir/pkg/middlewares/auth/digest_auth.go" \
    "d.auth.RequireAuthStale(rw, req)" "d.auth.RequireAuth(rw, req)"
  replace_in "$dir/pkg/provider/acme/provider.go" \
    $'\t"github.com/go-acme/lego/v5/providers/dns"\n' ""
  replace_in "$dir/pkg/provider/acme/provider.go" \
    "dns.NewDNSChallengeProviderByName(p.DNSChallenge.Provider)" \
    'nil, fmt.Errorf("ACME DNS challenge provider %q: not built into this Traefik (see Stepwise'"'"'s hack/cluster/build-traefik.sh)", p.DNSChallenge.Provider)'
}

if [[ ! -x "$out/traefik" ]]; then
  src_dir=$(module_dir "$TRAEFIK_MODULE@$TRAEFIK_VERSION")
  required=$(awk -v m="$GATEWAY_API_MODULE" '$1 == m { print $2; exit }' "$src_dir/go.mod")
  [[ "$required" == "$GATEWAY_API_VERSION" ]] \
    || die "Traefik $TRAEFIK_VERSION requires $GATEWAY_API_MODULE ${required:-(none)}, this script installs $GATEWAY_API_VERSION: set GATEWAY_API_VERSION to the version its go.mod names"

  # Traefik's go.mod has replace directives (one to a directory inside the module), which
  # `go install module@version` refuses; so build inside a writable copy of its source.
  say "building traefik $TRAEFIK_VERSION from its module source (several minutes the first time)"
  start=$SECONDS
  cp -r "$src_dir" "$scratch/traefik"
  chmod -R u+w "$scratch/traefik"
  adapt_source "$scratch/traefik"
  # webui/embed.go embeds webui/static, which upstream fills by building the web UI with
  # Node; the module zip carries only a placeholder file there. `go:embed` needs at least
  # one file, so one is created if a future zip has none. The dashboard is not served
  # (the tests configure api.dashboard=false), so nothing else is needed.
  static="$scratch/traefik/webui/static"
  if ! compgen -G "$static/*" >/dev/null; then
    mkdir -p "$static"
    printf 'Placeholder: the web UI is not built for the tests.\n' >"$static/placeholder.txt"
  fi
  log="$scratch/build.log"
  flags="-s -w -X $TRAEFIK_MODULE/pkg/version.Version=$TRAEFIK_VERSION"
  # -mod=mod records the go.sum lines of the replacement above; -p 2 bounds parallel
  # compiles to the two cores; a partial file never looks finished.
  if ! (cd "$scratch/traefik" && CGO_ENABLED=0 GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" go build -p 2 -trimpath -ldflags "$flags" -o "$out/traefik.partial" ./cmd/traefik) >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    rm -f "$out/traefik.partial"
    die "go build of $TRAEFIK_MODULE/cmd/traefik failed (output above). Check that the Go module proxy is reachable (go env GOPROXY) and that disk space is free (df -h $cache_root)."
  fi
  mv "$out/traefik.partial" "$out/traefik"
  say "built traefik in $((SECONDS - start))s"
fi

echo "$out"
