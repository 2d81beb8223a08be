#!/bin/sh
# Writes the basic-auth config from the environment at start (the auth store's URI holds a password), then
# runs the server: backend store from MLFLOW_BACKEND_STORE_URI, artifacts proxied to /mlartifacts.
# auth_cache_ttl_seconds: a credential checked once is trusted for a minute instead of hashing the password on
# every request (~0.15 s of CPU each); registering one model makes some 150 requests.
set -eu
umask 077
config="$(mktemp -d)/basic_auth.ini"
cat > "$config" <<INI
[mlflow]
default_permission = NO_PERMISSIONS
database_uri = ${MLFLOW_AUTH_DATABASE_URI}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = 60
INI
export MLFLOW_AUTH_CONFIG_PATH="$config"
exec mlflow server --app-name basic-auth --host 0.0.0.0 --port 5000 \
  --artifacts-destination /mlartifacts --allowed-hosts "${MLFLOW_ALLOWED_HOSTS}" "$@"
