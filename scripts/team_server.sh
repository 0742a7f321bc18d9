#!/usr/bin/env bash
# The team's MLflow server: `mlflow server` with a PostgreSQL backend store, proxied artifact storage and
# MLflow's basic-auth app (users; READ / EDIT / MANAGE per experiment and per registered model).
# See the README, "Teams". Settings come from the environment, never from params.yaml:
#   SSLFLOW_TEAM_DB          SQLAlchemy URI of the tracking store, e.g. postgresql+psycopg://mlflow@127.0.0.1:5432/mlflow
#                            (a password goes in ~/.pgpass or PGPASSWORD, not in this URI)
#   SSLFLOW_TEAM_AUTH_DB     the users and permissions store (default: database <name>_auth on the same server)
#   SSLFLOW_TEAM_ARTIFACTS   where artifacts and models go (default $SSLFLOW_TEAM_HOME/artifacts; or s3://bucket/path)
#   SSLFLOW_TEAM_HOME        this server's own files: auth config, secret key (default ~/.sslflow/team)
#   SSLFLOW_TEAM_HOST / _PORT   where it listens (default 127.0.0.1:5000; 0.0.0.0 only behind TLS, see README)
#   SSLFLOW_TEAM_AUTH_CACHE_S   seconds a password check that passed is remembered (default 60; 0: check every request)
#   MLFLOW_AUTH_ADMIN_PASSWORD, or SSLFLOW_TEAM_ADMIN_PASSWORD_FILE (a file outside the repo): the admin's
#                            password, used once, when the user store is empty
# Extra arguments go to `mlflow server`, e.g. --workers 4.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd -P)
fail() { echo "error: $*" >&2; exit 2; }

[ -n "${SSLFLOW_TEAM_DB:-}" ] || fail "SSLFLOW_TEAM_DB is not set: the PostgreSQL URI of the tracking store, e.g. postgresql+psycopg://mlflow@127.0.0.1:5432/mlflow"
case "$SSLFLOW_TEAM_DB" in
  postgresql://* | postgresql+psycopg://*) ;;
  *) fail "SSLFLOW_TEAM_DB must be a PostgreSQL URI (postgresql+psycopg://user@host:port/db), got '${SSLFLOW_TEAM_DB%%://*}://…'" ;;
esac
case "$SSLFLOW_TEAM_DB" in
  *://*:*@*) fail "SSLFLOW_TEAM_DB holds a password: put it in ~/.pgpass (or PGPASSWORD) instead, so it stays out of process lists and logs" ;;
esac
db=${SSLFLOW_TEAM_DB/#postgresql:/postgresql+psycopg:}
auth_db=${SSLFLOW_TEAM_AUTH_DB:-${db%%\?*}_auth}
home=${SSLFLOW_TEAM_HOME:-$HOME/.sslflow/team}
artifacts=${SSLFLOW_TEAM_ARTIFACTS:-$home/artifacts}
host=${SSLFLOW_TEAM_HOST:-127.0.0.1}
port=${SSLFLOW_TEAM_PORT:-5000}

case "$(realpath -m "$home")/" in
  "$repo"/*) fail "SSLFLOW_TEAM_HOME ($home) is inside the repository: the secret key and auth config must live outside it" ;;
esac
mkdir -p "$home"
chmod 700 "$home"

if [ -z "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ] && [ -n "${SSLFLOW_TEAM_ADMIN_PASSWORD_FILE:-}" ]; then
  [ -r "$SSLFLOW_TEAM_ADMIN_PASSWORD_FILE" ] || fail "SSLFLOW_TEAM_ADMIN_PASSWORD_FILE: cannot read $SSLFLOW_TEAM_ADMIN_PASSWORD_FILE"
  case "$(realpath -m "$SSLFLOW_TEAM_ADMIN_PASSWORD_FILE")" in
    "$repo"/*) fail "SSLFLOW_TEAM_ADMIN_PASSWORD_FILE ($SSLFLOW_TEAM_ADMIN_PASSWORD_FILE) is inside the repository" ;;
  esac
  MLFLOW_AUTH_ADMIN_PASSWORD=$(head -n 1 "$SSLFLOW_TEAM_ADMIN_PASSWORD_FILE")
fi
admin_pw=${MLFLOW_AUTH_ADMIN_PASSWORD:-}
[ -n "$admin_pw" ] || fail "no admin password: set MLFLOW_AUTH_ADMIN_PASSWORD or SSLFLOW_TEAM_ADMIN_PASSWORD_FILE (a file outside the repo)"
# MLflow's basic-auth app shipped "password1234" as the admin password until 3.x: refuse it, and short ones.
[ "$admin_pw" != "password1234" ] || fail "the admin password is MLflow's old default (password1234): choose another"
[ "${#admin_pw}" -ge 12 ] || fail "the admin password has ${#admin_pw} characters: use at least 12"
export MLFLOW_AUTH_ADMIN_PASSWORD=$admin_pw

# The auth app's settings (no password in it: the admin's comes from the environment above, once).
cat >"$home/basic_auth.ini" <<EOF
[mlflow]
default_permission = READ
database_uri = $auth_db
admin_username = ${SSLFLOW_TEAM_ADMIN:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
# Each request carries the password, and checking its hash costs tens of milliseconds: a stage logging every
# step would pay that per step. A check that passed is remembered for this long, per worker; a password changed
# or a user deleted through the API takes effect at once on the worker that handled it, on others within it.
auth_cache_ttl_seconds = ${SSLFLOW_TEAM_AUTH_CACHE_S:-60}
EOF
export MLFLOW_AUTH_CONFIG_PATH=$home/basic_auth.ini
# The CSRF key of the server's forms: made once, kept beside the config (every server of the team shares it).
if [ ! -s "$home/secret_key" ]; then
  (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$home/secret_key")
fi
MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat "$home/secret_key")
export MLFLOW_FLASK_SERVER_SECRET_KEY
# The server's job runner (a pool of workers for GenAI features) is not needed to track and register models.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}

[ -x .venv/bin/python ] || bash scripts/setup.sh
source .venv/bin/activate  # `mlflow server` starts `uvicorn` from PATH
echo "team server: http://$host:$port (tracking store ${db%%\?*}, artifacts $artifacts)" >&2
exec mlflow server --app-name basic-auth --backend-store-uri "$db" --artifacts-destination "$artifacts" \
  --host "$host" --port "$port" "$@"
