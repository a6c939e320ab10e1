# The flake's `checks` for one system: every test level `nix flake check`
# runs, and the static checks over every .nix file with the same tools and
# flags as the repository's own static tests (installed by
# .ci/install-nix-tools).
#
# flake.nix imports this file rather than calling it with `callPackage`:
# callPackage wraps an attribute-set result in makeOverridable, which adds
# `override` and `overrideDerivation` (lib/customisation.nix), and
# `nix flake check` rejects every `checks.<system>` value that is not a
# derivation.
{ pkgs
, self
, rates
, formatter
}:
let
  inherit (pkgs) lib;

  nixFiles = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.fileFilter (file: file.hasExt "nix") ../.;
  };

  staticCheck = name: tool: command:
    pkgs.runCommand "rates-${name}" { nativeBuildInputs = [ tool ]; } ''
      cd ${nixFiles}
      ${command}
      touch "$out"
    '';

  pytestLevel = level: pkgs.callPackage ./tests/pytest.nix { inherit rates level; };

  # NixOS VM tests, one per nix/tests/<name>.nix; Linux only, and they need
  # KVM (the GitHub workflow enables it).
  vmTests = lib.optionalAttrs pkgs.stdenv.hostPlatform.isLinux {
    vm-single = pkgs.testers.runNixOSTest (import ./tests/single.nix { inherit self; });
    vm-cluster = pkgs.testers.runNixOSTest (import ./tests/cluster.nix { inherit self; });
  };
in
{
  # The package, whose check phase is the unit tests.
  inherit rates;
  # The test levels that need servers, each a check of its own, so that
  # building the package (`nix run .#dev`, `nix develop`, the image) never
  # waits on a test that starts and kills processes.
  integration = pytestLevel "integration";
  e2e = pytestLevel "e2e";
  nix-format = staticCheck "nix-format" formatter "nixpkgs-fmt-tree --check .";
  nix-statix = staticCheck "nix-statix" pkgs.statix "statix check .";
  nix-deadnix = staticCheck "nix-deadnix" pkgs.deadnix "deadnix --fail .";
}
  // vmTests
