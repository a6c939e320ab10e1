# One pytest level (tests/<level>) in the build sandbox, against the built
# package: `integration` (throwaway PostgreSQL servers from initdb/pg_ctl)
# and `e2e` (the local stack, process-compose.yaml and stack/, with the
# flake's own PostgreSQL, process-compose and rates). Loopback only. The
# reference dump is not in the sandbox: the contract cases on it skip, saying
# so, and the tests check the sample data against its known answers.
{ lib
, runCommand
, python3
, postgresql
, process-compose
, util-linux
, curl
, procps
, tmux
, rates
, level
}:
let
  src = lib.fileset.toSource {
    root = ../..;
    fileset = lib.fileset.unions [
      ../../pyproject.toml
      # The local stack as a checkout holds it: the e2e tests start it in
      # checkouts of their own (testlib/stack.py) and run nix/dev.sh,
      # what `nix run .#dev` runs; docker-compose.yaml shows that a bare
      # `process-compose up` leaves it alone.
      ../../process-compose.yaml
      ../../.pc_env
      ../../stack
      ../../nix/dev.sh
      ../../docker-compose.yaml
      ../../.envrc
      ../../tests
      ../../testlib
    ];
  };

  # What each level runs besides Python, PostgreSQL and rates.
  levelInputs = {
    integration = [ ];
    e2e = [
      process-compose
      util-linux # flock (stack/about)
      curl # the API's liveness probe (stack/api-alive)
      tmux # the stack's terminal UI, as a user sees it
    ];
  }.${level};

  # schemathesis is not packaged in nixpkgs 25.11: the OpenAPI fuzzing runs in
  # .ci/run (pyproject.toml's `test` extra), not here.
  pytestArgs = lib.optionals (level == "integration") [ "--ignore=tests/integration/test_openapi.py" ];

  # The tests import rates (settings, helpers) as well as running its commands.
  python = python3.withPackages (ps: [
    (ps.toPythonModule rates)
    ps.pytest
    ps.hypothesis
    ps.pyyaml
  ]);
in
runCommand "rates-${level}"
{
  nativeBuildInputs = [
    python
    postgresql
    procps # pgrep: tests find the processes they kill, and prove none is left
    rates
  ] ++ levelInputs;
  # The darwin sandbox blocks loopback networking unless this is set.
  __darwinAllowLocalNetworking = true;
} ''
  cp -r ${src} source
  chmod -R u+w source
  cd source
  export HOME="$TMPDIR"
  pytest -p no:cacheprovider -m ${lib.escapeShellArg level} ${lib.escapeShellArgs pytestArgs} tests/${level}
  touch "$out"
''
