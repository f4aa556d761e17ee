#!/usr/bin/env bash
# Install the Debian packages the local stack and its tests run, only those missing.
# On a minimal Debian 12 (make, git and ca-certificates) it brings everything
# else, Python and its venv module included. Services are not started by the
# packages (policy-rc.d): the stack starts its own processes on its own ports
# and never touches the system's.
#
#   install-packages.sh                     install what is missing (as root)
#   install-packages.sh --test              and what only `make test` needs (chromium,
#                                           which Playwright drives to open the local
#                                           dashboards; Playwright's own browser
#                                           download is not used)
#   install-packages.sh --check [--root D]  print what is missing (under D), install nothing
set -euo pipefail

# Package -> the files that say it is installed (globs; any one of them will do).
declare -A need=(
  [python3]=/usr/bin/python3
  # `python3 -m venv` needs ensurepip, which Debian ships apart from python3.
  [python3-venv]='/usr/lib/python3.*/ensurepip/__init__.py'
  [postgresql]='/usr/lib/postgresql/*/bin/postgres'
  [pgbouncer]=/usr/sbin/pgbouncer
  [nginx-light]=/usr/sbin/nginx
  [libnginx-mod-http-js]=/usr/lib/nginx/modules/ngx_http_js_module.so
  [gettext-base]=/usr/bin/envsubst
  [prometheus]=/usr/bin/prometheus
  [prometheus-postgres-exporter]=/usr/bin/prometheus-postgres-exporter
  [mtail]=/usr/bin/mtail
  [prometheus-nginx-exporter]=/usr/bin/prometheus-nginx-exporter
  [prometheus-alertmanager]=/usr/bin/prometheus-alertmanager
  [util-linux]='/usr/bin/setpriv /bin/setpriv'
  # ss: the tests check which addresses the stack listens on.
  [iproute2]='/usr/bin/ss /bin/ss'
  # The README's first example after `make up`.
  [curl]=/usr/bin/curl
)

check=0
root=
while [ $# -gt 0 ]; do
  case $1 in
    --check) check=1 ;;
    --root) root=${2:?--root needs a directory}; shift ;;
    --test) need[chromium]=/usr/bin/chromium ;;
    *) echo "usage: $0 [--test] [--check [--root DIR]]" >&2; exit 2 ;;
  esac
  shift
done

installed() {
  local pattern
  for pattern in $1; do
    compgen -G "$root$pattern" >/dev/null && return 0
  done
  return 1
}

missing=()
for pkg in $(printf '%s\n' "${!need[@]}" | sort); do
  installed "${need[$pkg]}" || missing+=("$pkg")
done
if [ $check -eq 1 ]; then
  [ ${#missing[@]} -eq 0 ] || printf '%s\n' "${missing[@]}"
  exit 0
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod +x "$policy"
  created_policy=1
fi
trap '[ $created_policy -eq 1 ] && rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || true
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
