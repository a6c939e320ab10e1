# The rates service: a Python application built from this repository's
# pyproject.toml, with its unit tests as the check phase.
{ lib
, python3Packages
, postgresql
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
      ../.envrc
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

  # The check phase is the unit tests and the import check: fast and
  # hermetic, so that a loaded laptop or a busy builder never fails a user's
  # first `nix run .#dev`. The levels that start servers are flake checks of
  # their own (checks.integration, checks.e2e: nix/tests/pytest.nix).
  nativeCheckInputs = [
    python3Packages.pytestCheckHook
    python3Packages.hypothesis
    writableTmpDirAsHomeHook # hypothesis wants a writable $HOME
  ];

  # pytestCheckHook turns this into `-m "((unit))"`
  # (pkgs/development/interpreters/python/hooks/pytest-check-hook.sh).
  enabledTestMarks = [ "unit" ];
  # Not even collected: their modules import tools (process-compose drivers,
  # linters, schemathesis) that the build environment does not have.
  disabledTestPaths = [
    "tests/integration"
    "tests/faults"
    "tests/e2e"
    "tests/bench"
    "tests/static"
    "tests/compose"
    "tests/cluster"
  ];

  # Test the installed package, not the source tree: only the installed one
  # has rates/db (setuptools maps db/ there), where the SQL is read from.
  preCheck = ''
    rm -r rates
  '';

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
