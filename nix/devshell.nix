# `nix develop`: Python with the service installed in editable form (its
# commands run the code in the working tree), the test tools, PostgreSQL and
# process-compose for the local stack, and every linter the checks run; the
# libpq variables point at the local stack (.envrc).
{ lib
, mkShell
, python3
, postgresql
, process-compose
, util-linux
, curl
, ruff
, shellcheck
, yamllint
, nixpkgs-fmt
, statix
, deadnix
, wrk
, formatter
, rates
}:
let
  # An editable install (pkgs/development/interpreters/python/editable.nix):
  # a .pth file pointing at $REPO_ROOT, set by the shellHook below, plus
  # pyproject.toml's console scripts (rates-serve, rates-seed, rates-probe).
  # rates/sql.py finds db/ beside rates/ there.
  editable = python3.pkgs.mkPythonEditablePackage {
    inherit (rates) pname version;
    root = "$REPO_ROOT";
    # pyproject.toml's runtime dependencies, as nix/package.nix reads them.
    dependencies = rates.pythonDependencies python3.pkgs;
    inherit ((lib.importTOML ../pyproject.toml).project) scripts;
  };
in
mkShell {
  packages = [
    (python3.withPackages (ps: [
      editable
      ps.pytest
      ps.hypothesis
      ps.pyyaml
      # Not schemathesis: nixpkgs 25.11 has no package of it, so
      # tests/integration/test_openapi.py skips here, saying so; the fuzzing
      # runs in .ci/run and in a venv (pyproject.toml's `test` extra).
      ps.detect-secrets
    ]))
    postgresql # initdb, postgres, psql: the tests' servers and the stack's
    process-compose
    util-linux # flock: one local stack per state directory (stack/about)
    curl # the local stack's liveness probe (stack/api-alive)
    ruff
    shellcheck
    yamllint
    nixpkgs-fmt
    formatter # the flake's formatter: `nixpkgs-fmt-tree` formats the tree
    statix
    deadnix
    wrk
  ];
  # The editable install resolves $REPO_ROOT when Python starts: the root of
  # the checkout `nix develop` was started in, from any subdirectory of it.
  shellHook = ''
    if [ -z "''${REPO_ROOT:-}" ]; then
      REPO_ROOT="$PWD"
      while [ "$REPO_ROOT" != / ] && [ ! -f "$REPO_ROOT/rates/__init__.py" ]; do
        REPO_ROOT="$(dirname "$REPO_ROOT")"
      done
      if [ "$REPO_ROOT" = / ]; then
        echo "rates dev shell: no rates/ above $PWD; set REPO_ROOT to the checkout" >&2
        REPO_ROOT="$PWD"
      fi
    fi
    export REPO_ROOT
    # psql, rates-seed and pytest reach the stack `nix run .#dev` started,
    # with no variable typed. Under direnv, .envrc itself does this after
    # `use flake` has run this hook.
    if [ -z "''${DIRENV_IN_ENVRC:-}" ] && [ -f "$REPO_ROOT/.envrc" ]; then
      . "$REPO_ROOT/.envrc"
    fi
  '';
}
