-- Sets a role's password from a file, for clients on other hosts: the NixOS
-- module's rates-db-password service and the cluster tests run this file.
--
--   psql --no-psqlrc --set=ON_ERROR_STOP=1 --set=role=rates \
--     --set=password_file=/run/secrets/rates-db-password --file=db/role-password.sql
--
-- psql reads the file itself (a backquoted \set, with the path shell-quoted by
-- :'password_file'), so the password is on no command line and in no
-- environment; the server is told not to log the statement, even when it fails.

\set password `head -n 1 :'password_file'`
SET log_statement = 'none';
SET log_min_error_statement = 'panic';
ALTER ROLE :"role" PASSWORD :'password';
