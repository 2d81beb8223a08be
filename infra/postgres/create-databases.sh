#!/bin/sh
# One database per server, created on the first start of an empty data volume.
set -eu
for db in mlflow mlflow_users prefect; do
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -c "CREATE DATABASE \"$db\""
done
