#!/usr/bin/env sh
# Writes the random secrets deploy/compose.yaml reads (never commit them; .gitignore keeps
# them out). Existing secrets are kept.
set -eu
cd "$(dirname "$0")"
umask 077
[ -s jwt_secret ] || head -c 48 /dev/urandom | base64 | tr -d '\n' > jwt_secret
[ -s grafana_admin_password ] || head -c 24 /dev/urandom | base64 | tr -d '\n/+=' > grafana_admin_password
echo "secrets in $(pwd): jwt_secret, grafana_admin_password (Grafana user: admin)"
