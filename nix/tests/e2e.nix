# tests/e2e in the build sandbox: the local stack (process-compose.yaml) with
# the flake's own PostgreSQL, process-compose and rates, on loopback only.
# The reference dump is not in the sandbox, so the stack serves the sample
# data, which the tests check against its known answers.
{ lib
, runCommand
, python3
, postgresql
, process-compose
, curl
, procps
, rates
}:
let
  src = lib.fileset.toSource {
    root = ../..;
    fileset = lib.fileset.unions [
      ../../pyproject.toml
      ../../process-compose.yaml
      ../../tests
    ];
  };
  # The tests import rates (settings, helpers) as well as running its commands.
  python = python3.withPackages (ps: [
    (ps.toPythonModule rates)
    ps.pytest
    ps.hypothesis
  ]);
in
runCommand "rates-e2e"
{
  nativeBuildInputs = [
    python
    postgresql
    process-compose
    curl # the stack's probes
    procps # pgrep: the tests prove no process is left behind
    rates
  ];
  # The darwin sandbox blocks loopback networking unless this is set.
  __darwinAllowLocalNetworking = true;
} ''
  cp -r ${src} source
  chmod -R u+w source
  cd source
  export HOME="$TMPDIR"
  pytest -p no:cacheprovider -m e2e tests/e2e
  touch "$out"
''
