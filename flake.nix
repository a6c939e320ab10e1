{
  description = "rates: a JSON API of average daily shipping prices, with its local stack, image and checks";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";
  # Partitions the cloud hosts' disks for nixos-anywhere, and makes their
  # fileSystems from the same layout (nix/hosts/cloud.nix, docs/cloud.md).
  inputs.disko = {
    url = "github:nix-community/disko/v1.13.0";
    inputs.nixpkgs.follows = "nixpkgs";
  };

  # Wiring only: every output's logic lives in nix/<output>.nix.
  # disko has no default in Nix, which always passes every input; the null is
  # for evaluation harnesses that pass nixpkgs alone (../shared/tools/nix-eval
  # on the project's build machines, which cannot fetch disko either): they
  # see every output but the cloud hosts.
  outputs = { self, nixpkgs, disko ? null }:
    let
      inherit (nixpkgs) lib;
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      eachSystem = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      ratesFor = pkgs: self.packages.${pkgs.stdenv.hostPlatform.system}.rates;
      formatterFor = pkgs: self.formatter.${pkgs.stdenv.hostPlatform.system};
    in
    {
      packages = eachSystem (pkgs:
        let
          rates = pkgs.callPackage ./nix/package.nix { };
        in
        {
          inherit rates;
          default = rates;
        }
        # dockerTools builds Linux images only.
        // lib.optionalAttrs pkgs.stdenv.hostPlatform.isLinux {
          image = pkgs.callPackage ./nix/image.nix { inherit rates; };
        });

      apps = eachSystem (pkgs: {
        dev = {
          type = "app";
          program = lib.getExe (pkgs.callPackage ./nix/dev.nix { rates = ratesFor pkgs; });
          meta.description = "The local stack (PostgreSQL, seed, API) under process-compose";
        };
        # The cluster's rolling upgrade (docs/deploy.md, "Several hosts").
        deploy = {
          type = "app";
          program = lib.getExe (pkgs.callPackage ./nix/deploy.nix { });
          meta.description = "Deploy the cluster (db, api1, api2, lb) one host at a time, without losing a request";
        };
      });

      devShells = eachSystem (pkgs: {
        default = pkgs.callPackage ./nix/devshell.nix {
          rates = ratesFor pkgs;
          formatter = formatterFor pkgs;
        };
      });

      # Not callPackage: see the comment at the top of nix/checks.nix.
      checks = eachSystem (pkgs: import ./nix/checks.nix {
        inherit pkgs self;
        rates = ratesFor pkgs;
        formatter = formatterFor pkgs;
      });

      # nixfmt (RFC 166) is nixpkgs' own formatter but cannot be installed on the
      # machines that run this repository's static checks, so the flake exposes
      # nixpkgs-fmt: the same tool and version (1.3.0) those checks install from
      # crates.io (.ci/install-nix-tools). `nix fmt` without arguments passes none
      # on, and nixpkgs-fmt would then read stdin, hence the "." default.
      formatter = eachSystem (pkgs: pkgs.writeShellApplication {
        name = "nixpkgs-fmt-tree";
        runtimeInputs = [ pkgs.nixpkgs-fmt ];
        text = ''exec nixpkgs-fmt "''${@:-.}"'';
      });

      # For hosts that pin their own nixpkgs: `nixpkgs.overlays = [ rates.overlays.default ]`
      # gives them pkgs.rates, built with their package set.
      overlays.default = final: _prev: {
        rates = final.callPackage ./nix/package.nix { };
      };

      nixosModules.default = lib.modules.importApply ./nix/module.nix { inherit self; };

      # One host with everything (nix/hosts/single.nix), and the cluster's
      # db, api1, api2 and lb (nix/hosts/cluster.nix): docs/deploy.md. The same
      # on the VMs that cloud/ creates, aws-single, aws-db, ..., hetzner-lb
      # (nix/hosts/cloud.nix): docs/cloud.md.
      nixosConfigurations =
        let
          nixos = modules: host: lib.nixosSystem { modules = [ self.nixosModules.default host ] ++ modules; };
          cluster = import ./nix/hosts/cluster.nix;
          cloud = import ./nix/hosts/cloud.nix;
        in
        lib.mapAttrs (_: nixos [ ]) ({ single = ./nix/hosts/single.nix; } // cluster.hosts)
        // lib.optionalAttrs (disko != null)
          (lib.mapAttrs (_: nixos [ disko.nixosModules.disko ]) (cloud.hosts "aws" // cloud.hosts "hetzner"));
    };
}
