#!/usr/bin/env bash
# Debian packages the tests use. Installs only what is missing, so a warm machine pays nothing.
set -euo pipefail
want=()
command -v etcd >/dev/null 2>&1 || want+=(etcd-server)
command -v chromium >/dev/null 2>&1 || want+=(chromium)
command -v openssl >/dev/null 2>&1 || want+=(openssl)
if [ ${#want[@]} -gt 0 ]; then
  echo "installing: ${want[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${want[@]}"
fi
