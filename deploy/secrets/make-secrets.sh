#!/usr/bin/env sh
# Writes the random secrets deploy/compose.yaml reads (never commit them; .gitignore keeps
# them out). Existing secrets are kept.
set -eu
cd "$(dirname "$0")"
umask 077
[ -s jwt_secret ] || head -c 48 /dev/urandom | base64 | tr -d '\n' > jwt_secret
[ -s grafana_admin_password ] || head -c 24 /dev/urandom | base64 | tr -d '\n/+=' > grafana_admin_password
# PostgreSQL's password (hex: safe inside a URL) and the URL bunko connects with.
[ -s postgres_password ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > postgres_password
[ -s database_url ] || printf 'postgres://bunko:%s@postgres:5432/bunko\n' "$(cat postgres_password)" > database_url
# Redis's password and the URL bunko connects with.
[ -s redis_password ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > redis_password
[ -s redis_url ] || printf 'redis://:%s@redis:6379/0\n' "$(cat redis_password)" > redis_url
echo "secrets in $(pwd): jwt_secret, grafana_admin_password (Grafana user: admin), postgres_password, database_url, redis_password, redis_url"
