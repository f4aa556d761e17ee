#!/bin/sh
# Render every *.template under a directory with envsubst, the way the official
# nginx image's 20-envsubst-on-templates.sh does: only variables whose names
# match the filter are substituted, so nginx's own $variables survive.
#
#   render-templates.sh <template-dir> <output-dir> [name-filter-regex]
#
# Used by the local-stack launcher and by the compose `config` service, so
# both deployment shapes render the same files the same way.
set -eu

template_dir=$1
output_dir=$2
filter=${3:-^(SLUICE|NGINX|PGBOUNCER|POSTGRES|PROMETHEUS|ALERTMANAGER|GRAFANA)_}

defined_envs=$(printf '${%s} ' $(env | cut -d= -f1 | grep -E "$filter"))

find "$template_dir" -follow -type f -name '*.template' -print | while read -r template; do
  relative=${template#"$template_dir/"}
  output="$output_dir/${relative%.template}"
  mkdir -p "$(dirname "$output")"
  case $output in
    # The exporters' password files (no password on a command line) are
    # created 0600: libpq ignores a pgpass file that others can read.
    *pgpass | *password)
      rm -f "$output"
      (umask 077 && envsubst "$defined_envs" < "$template" > "$output") ;;
    *) envsubst "$defined_envs" < "$template" > "$output" ;;
  esac
  # Any ${VAR} left means a setting was never defined: fail loudly, not at runtime.
  if grep -nE '\$\{(SLUICE|NGINX|PGBOUNCER|POSTGRES|PROMETHEUS|ALERTMANAGER|GRAFANA)_[A-Z0-9_]+\}' "$output" >&2; then
    echo "render-templates: undefined variables left in $output (see lines above)" >&2
    exit 1
  fi
done
