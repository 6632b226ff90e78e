# Sourced by the postgres image's entrypoint (docker-entrypoint.sh) on the first start only, when
# the data directory is empty: one login role per service, owning the one database of the same
# name, which no other role may connect to. No service ever connects as the superuser.
# Each password is read by psql itself from the mounted Secret file (never on a command line);
# the service's database URL in the same Secret must carry the same password.
for service in auth resource; do
  docker_process_sql --dbname postgres <<SQL
\set role $service
\set password \`cat /run/secrets/persons-auth/$service-db-password\`
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"role" OWNER :"role";
REVOKE ALL ON DATABASE :"role" FROM PUBLIC;
SQL
done
