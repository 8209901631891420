#!/bin/sh
# The services' runtime roles for docker compose, created once, when the database is first
# initialised (the postgres image runs /docker-entrypoint-initdb.d/* then, never again): each may
# log in with its own password (POSTGRES_<SERVICE>_PASSWORD from deploy/.env) and owns nothing.
# `agriportal migrate` (the owner, with AGRIPORTAL_DB_RUNTIME_ROLES=true) then lets each use its
# own schema only; the services connect as these roles (their DATABASE_URL in compose.yaml).
# Kubernetes does the same with CloudNativePG's managed roles (k8s/base/postgres.yaml).
set -eu
for service in marketplace gateway web indicators; do
  var="POSTGRES_$(echo "$service" | tr '[:lower:]' '[:upper:]')_PASSWORD"
  password="$(printenv "$var")" || { echo "$var is not set" >&2; exit 1; }
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v role="agriportal_$service" -v password="$password" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
SQL
done
