#!/usr/bin/env bash
# Builds (once) and caches kube-apiserver + kube-scheduler 1.20.2 from Debian bookworm's
# `kubernetes` source package, and installs etcd. Idempotent: a second run with the cache in
# place returns in well under a second. The binaries live outside the repo so fresh clones
# (CI) reuse them; GPU_AUTOSCALER_K8S_BIN overrides the location.
#
# Why from source: Debian ships no kube-apiserver binary package, and nothing but the package
# registries is reachable here.
set -euo pipefail

CACHE="${GPU_AUTOSCALER_K8S_BIN:-$HOME/.cache/gpu-autoscaler/k8s-1.20.2/bin}"
WORK="${GPU_AUTOSCALER_K8S_SRC:-$HOME/.cache/gpu-autoscaler/k8s-src}"

log() { printf '[control-plane] %s\n' "$*" >&2; }

need_apt=()
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)

if [ -x "$CACHE/kube-apiserver" ] && [ -x "$CACHE/kube-scheduler" ] && [ ${#need_apt[@]} -eq 0 ]; then
  log "cached: $CACHE"
  echo "$CACHE"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
SRC_LIST=/etc/apt/sources.list.d/gpu-autoscaler-deb-src.sources
if [ ! -f "$SRC_LIST" ]; then
  log "adding deb-src entries for bookworm"
  cat >"$SRC_LIST" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

apt_updated=0
apt_install() {
  if [ $apt_updated -eq 0 ]; then apt-get update -qq >&2; apt_updated=1; fi
  apt-get install -y -qq --no-install-recommends "$@" >&2
}

if [ ${#need_apt[@]} -gt 0 ]; then apt_install "${need_apt[@]}"; fi

if [ -x "$CACHE/kube-apiserver" ] && [ -x "$CACHE/kube-scheduler" ]; then
  echo "$CACHE"; exit 0
fi

pkgs=()
command -v go >/dev/null 2>&1 || pkgs+=(golang-go)
command -v rsync >/dev/null 2>&1 || pkgs+=(rsync)
[ -d /usr/share/gocode/src/github.com/modern-go/reflect2 ] || pkgs+=(golang-github-modern-go-reflect2-dev)
[ -d /usr/share/gocode/src/github.com/json-iterator/go ] || pkgs+=(golang-github-json-iterator-go-dev)
command -v dpkg-source >/dev/null 2>&1 || pkgs+=(dpkg-dev)
if [ ${#pkgs[@]} -gt 0 ]; then apt_install "${pkgs[@]}"; fi
if [ $apt_updated -eq 0 ]; then apt-get update -qq >&2; apt_updated=1; fi

mkdir -p "$WORK"
cd "$WORK"
tree=$(find . -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
if [ -z "$tree" ]; then
  log "downloading the kubernetes source package"
  apt-get source --download-only kubernetes >&2
  dsc=$(ls kubernetes_*.dsc | head -n1)
  dpkg-source --no-check -x "$dsc" >&2
  tree=$(find . -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
fi
tree=$(cd "$tree" && pwd)
log "source tree: $tree"

# Go >= 1.18 breaks the vendored reflect2 1.0.1 (kube-apiserver segfaults iterating maps):
# swap in Debian's maintained copies of reflect2 and json-iterator.
if [ ! -f "$tree/.reflect2-swapped" ]; then
  rm -rf "$tree/vendor/github.com/modern-go/reflect2" "$tree/vendor/github.com/json-iterator/go"
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$tree/vendor/github.com/modern-go/reflect2"
  cp -r /usr/share/gocode/src/github.com/json-iterator/go "$tree/vendor/github.com/json-iterator/go"
  touch "$tree/.reflect2-swapped"
fi

mkdir -p "$tree/.go/src/k8s.io"
ln -sfn "$tree" "$tree/.go/src/k8s.io/kubernetes"
log "building kube-apiserver and kube-scheduler (about 11 minutes on 2 cores)"
(
  cd "$tree/.go/src/k8s.io/kubernetes"
  GOPATH="$tree/.go" CGO_ENABLED=0 GOFLAGS=-mod=vendor GO111MODULE=off \
    make WHAT="cmd/kube-apiserver cmd/kube-scheduler" >&2
)
mkdir -p "$CACHE"
for b in kube-apiserver kube-scheduler; do
  f=$(find "$tree/_output" -type f -name "$b" -perm -u+x | head -n1)
  [ -n "$f" ] || { log "build produced no $b"; exit 1; }
  cp "$f" "$CACHE/$b.tmp" && mv "$CACHE/$b.tmp" "$CACHE/$b"
done
log "installed into $CACHE"
echo "$CACHE"
