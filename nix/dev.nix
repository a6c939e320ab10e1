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
    postgresql # initdb, postgres, pg_isready, psql
    rates # rates-seed, rates-serve
    coreutils # od, tr, mkdir, mv, rm in postgres-init
    bash
    curl # the API's readiness and liveness probes
  ];
  # The configuration is read from the store, so the state directory is
  # anchored to the caller's working directory rather than to the file.
  # --use-uds: the control API on a per-PID Unix socket instead of TCP port
  # 8080, so that two stacks can run at once.
  text = ''
    export RATES_STATE_DIR="''${RATES_STATE_DIR:-$PWD/.state}"
    exec process-compose up --config ${../process-compose.yaml} --use-uds "$@"
  '';
}
