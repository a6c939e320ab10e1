# `nix run .#dev`: nix/dev.sh, which runs the local stack of the checkout you
# are in (its process-compose.yaml and stack/, the same files a bare
# `process-compose up` there reads), with every program that process-compose
# and the steps in stack/ call on PATH. Arguments go to `process-compose up`,
# e.g. `nix run .#dev -- --tui=false`.
{ writeShellApplication
, bash
, process-compose
, postgresql
, rates
, coreutils
, util-linux
, gnugrep
, gnused
, curl
}:
writeShellApplication {
  name = "rates-dev";
  runtimeInputs = [
    process-compose
    bash # the steps' shell, and process-compose's for commands and probes
    postgresql # initdb, postgres, pg_ctl, psql
    rates # rates-seed, rates-serve, rates-probe
    coreutils # cat, dirname, mkdir, mkfifo, mv, od, readlink, rm, tail, tee, tr
    util-linux # flock: one stack per state directory (stack/about)
    gnugrep # the servers' last messages (stack/postgres, stack/api)
    gnused # .env, read as process-compose reads it (stack/env.sh)
    curl # the API's liveness probe (stack/api-alive)
  ];
  text = ''exec ${bash}/bin/bash ${./dev.sh} "$@"'';
}
