# The rates service: a Python application built from this repository's
# pyproject.toml, with its unit tests as the check phase.
{ lib
, python3Packages
, postgresql
, writableTmpDirAsHomeHook
}:
let
  # The name, version and runtime dependencies have one home: pyproject.toml.
  project = (lib.importTOML ../pyproject.toml).project;
  # "flask>=3.0" -> ps.flask: pyproject.toml spells each name as nixpkgs does,
  # and the build's pythonRuntimeDepsCheck holds the versions to it.
  pythonDependencies = ps: map (spec: ps.${lib.head (builtins.match "([A-Za-z0-9_.-]+).*" spec)}) project.dependencies;
  # The test levels: tests/<level>, each a pytest marker.
  levels = map (marker: lib.head (lib.splitString ":" marker))
    (lib.importTOML ../pyproject.toml).tool.pytest.ini_options.markers;
  # buildPythonApplication takes `finalAttrs: { ... }` only from nixpkgs 26.05
  # on (NixOS/nixpkgs#271387); on 25.11 these let bindings stand in.
in
python3Packages.buildPythonApplication {
  pname = project.name;
  inherit (project) version;
  pyproject = true;

  # Only what the build and its tests read, so edits elsewhere (docs, Nix,
  # CI) do not rebuild the package. README.md is the project's `readme`.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../pyproject.toml
      (lib.fileset.maybeMissing ../README.md)
      # The unit tests hold it and rates/settings.py together. The local
      # stack's files are not here: editing them rebuilds nothing.
      ../.env.example
      ../rates
      ../db
      ../tests
      ../testlib
    ];
  };

  build-system = [ python3Packages.setuptools ];

  dependencies = pythonDependencies python3Packages;

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
  # The other levels, pyproject.toml's markers, are not even collected: their
  # modules import tools (process-compose drivers, linters, schemathesis) that
  # the build environment does not have.
  disabledTestPaths = map (level: "tests/${level}") (lib.remove "unit" levels);

  # Test the installed package, not the source tree: only the installed one
  # has rates/db (setuptools maps db/ there), where the SQL is read from.
  preCheck = ''
    rm -r rates
  '';

  pythonImportsCheck = [ "rates" ];

  # The dev shell's editable install takes the same dependencies from its own
  # Python set. The VM tests (nix/tests) run from the flake's `checks`, where
  # the NixOS module is available.
  passthru = {
    inherit pythonDependencies;
    tests = { };
  };

  meta = {
    inherit (project) description;
    license = lib.licenses.mit;
    mainProgram = "rates-serve";
    platforms = lib.platforms.unix;
  };
}
