#!/usr/bin/env bash
# Install the Debian packages the local stack runs, only those missing.
# Services are not started by the packages (policy-rc.d): the stack starts its
# own processes on its own ports and never touches the system's.
#
#   install-packages.sh          what `make up` needs
#   install-packages.sh --test   and what `make test` needs besides (chromium,
#                                which Playwright drives to open the local
#                                dashboards; Playwright's own browser download
#                                is not used)
set -euo pipefail

declare -A need=(
  [postgresql]=/usr/lib/postgresql
  [pgbouncer]=/usr/sbin/pgbouncer
  [nginx-light]=/usr/sbin/nginx
  [gettext-base]=/usr/bin/envsubst
  [prometheus]=/usr/bin/prometheus
  [prometheus-postgres-exporter]=/usr/bin/prometheus-postgres-exporter
  [mtail]=/usr/bin/mtail
  [prometheus-nginx-exporter]=/usr/bin/prometheus-nginx-exporter
  [prometheus-alertmanager]=/usr/bin/prometheus-alertmanager
  [util-linux]=/usr/bin/setpriv
)
if [ "${1:-}" = "--test" ]; then
  need[chromium]=/usr/bin/chromium
fi
missing=()
for pkg in "${!need[@]}"; do
  [ -e "${need[$pkg]}" ] || missing+=("$pkg")
done
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
