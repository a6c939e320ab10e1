# The flake's `checks` for one system: the package with its test suite, and
# the static checks over every .nix file, run with the same tools and flags as
# the repository's own static tests (installed by .ci/install-nix-tools).
{ lib
, callPackage
, runCommand
, statix
, deadnix
, rates
, formatter
}:
let
  nixFiles = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.fileFilter (file: file.hasExt "nix") ../.;
  };

  staticCheck = name: tool: command:
    runCommand "rates-${name}" { nativeBuildInputs = [ tool ]; } ''
      cd ${nixFiles}
      ${command}
      touch "$out"
    '';
in
{
  inherit rates;
  # The local stack end to end (tests/e2e), in the sandbox.
  e2e = callPackage ./tests/e2e.nix { inherit rates; };
  nix-format = staticCheck "nix-format" formatter "nixpkgs-fmt-tree --check .";
  nix-statix = staticCheck "nix-statix" statix "statix check .";
  nix-deadnix = staticCheck "nix-deadnix" deadnix "deadnix --fail .";
}
