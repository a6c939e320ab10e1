# `nix run .#dev`: the local stack defined in process-compose.yaml, with every
# program it calls on PATH. Arguments go to `process-compose up`, e.g.
# `nix run .#dev -- --tui=false`.
{ writeShellApplication
, process-compose
, postgresql
, coreutils
, bash
, curl
, rates
}:
writeShellApplication {
  name = "rates-dev";
  runtimeInputs = [
    process-compose
    postgresql # initdb, postgres, pg_ctl, psql
    rates # rates-seed, rates-serve
    coreutils # od, tr, mkdir, mkfifo, mv, rm, tee, tail in the commands
    bash
    curl # the API's readiness and liveness probes
  ];
  # The configuration is read from the store, so the stack runs from the
  # root of the checkout the caller is in (any subdirectory of it): there
  # process-compose reads .env and the state goes to .state, which
  # .gitignore covers. Outside a checkout, from the working directory.
  # Relative RATES_STATE_DIR and RATES_DUMP stay relative to the caller.
  # --use-uds: the control API on a per-PID Unix socket instead of TCP port
  # 8080, so that two stacks can run at once.
  text = ''
    for var in RATES_STATE_DIR RATES_DUMP; do
      if [[ -n "''${!var:-}" && "''${!var}" != /* ]]; then
        export "$var=$PWD/''${!var}"
      fi
    done
    root="$PWD"
    dir="$PWD"
    while [[ "$dir" != / ]]; do
      if [[ -f "$dir/process-compose.yaml" && -f "$dir/rates/serve.py" ]]; then
        root="$dir"
        break
      fi
      dir="$(dirname "$dir")"
    done
    cd "$root"
    export RATES_STATE_DIR="''${RATES_STATE_DIR:-$root/.state}"
    exec process-compose up --config ${../process-compose.yaml} --use-uds "$@"
  '';
}
