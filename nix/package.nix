# The rates service: a Python application built from this repository's
# pyproject.toml, with its unit and integration tests as the check phase.
{ lib
, python3Packages
, postgresql
, procps
, addBinToPathHook
, writableTmpDirAsHomeHook
}:
let
  # buildPythonApplication takes `finalAttrs: { ... }` only from nixpkgs 26.05
  # on (NixOS/nixpkgs#271387); on 25.11 a let binding stands in, not `rec`.
  version = "0.1.0";
in
python3Packages.buildPythonApplication {
  pname = "rates";
  inherit version;
  pyproject = true;

  # Only what the build and its tests read, so edits elsewhere (docs, Nix,
  # CI) do not rebuild the package. README.md is the project's `readme`.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../pyproject.toml
      (lib.fileset.maybeMissing ../README.md)
      # Unit tests read these: .env.example against rates/settings.py, and
      # the local stack's configuration.
      ../.env.example
      ../process-compose.yaml
      ../rates
      ../db
      ../tests
    ];
  };

  build-system = [ python3Packages.setuptools ];

  dependencies = [
    python3Packages.flask
    python3Packages.gunicorn
    python3Packages.psycopg2
  ];

  # rates-seed runs psql. nixpkgs has no client-only package with psql
  # (`libpq` is the library alone, pkgs/servers/sql/postgresql/libpq.nix), so
  # the wrappers get the default postgresql's bin/ (psql, pg_isready, ...).
  makeWrapperArgs = [ "--prefix" "PATH" ":" (lib.makeBinPath [ postgresql ]) ];

  nativeCheckInputs = [
    python3Packages.pytestCheckHook
    python3Packages.hypothesis
    python3Packages.pyyaml
    procps # pgrep: the seed test finds rates-seed's psql child to kill it
    # The integration tests start their own throwaway server from initdb,
    # pg_ctl and postgres on PATH. postgresqlTestHook
    # (pkgs/by-name/po/postgresqlTestHook) is therefore not used: it would
    # start one shared server before the check phase that no test connects to.
    postgresql
    # Tests that run rates-seed or rates-serve find the installed ones.
    addBinToPathHook
    # initdb, hypothesis and libpq want a writable $HOME.
    writableTmpDirAsHomeHook
  ];

  # pytestCheckHook turns this into `-m "((unit) or (integration))"`
  # (pkgs/development/interpreters/python/hooks/pytest-check-hook.sh); e2e
  # needs the whole stack and static the linters, neither of which belong in
  # a package build.
  enabledTestMarks = [
    "unit"
    "integration"
  ];
  # Not even collected: their modules may import tools (process-compose
  # drivers, linters) that the build environment does not have.
  disabledTestPaths = [
    "tests/e2e"
    "tests/static"
    # schemathesis' Python API changed between major releases; the fuzzing
    # runs in .ci/run with the release pyproject.toml pins (4.x).
    "tests/integration/test_openapi.py"
  ];

  # Test the installed package, not the source tree: only the installed one
  # has rates/db (setuptools maps db/ there), where the SQL is read from.
  preCheck = ''
    rm -r rates
  '';

  # The integration tests' servers listen on 127.0.0.1. The Linux sandbox has
  # a loopback interface; the darwin sandbox needs this to allow it.
  __darwinAllowLocalNetworking = true;

  pythonImportsCheck = [ "rates" ];

  # The VM tests (nix/tests) run from the flake's `checks`, where the NixOS
  # module is available; nothing further to attach here yet.
  passthru.tests = { };

  meta = {
    description = "JSON API of average daily shipping prices between ports and regions";
    license = lib.licenses.mit;
    mainProgram = "rates-serve";
    platforms = lib.platforms.unix;
  };
}
