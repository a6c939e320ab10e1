# The hosts that cloud/ creates with OpenTofu (docs/cloud.md): the single
# host of single.nix and the roles of cluster.nix, on cloud VMs that
# nixos-anywhere installs, with a disk that disko lays out. flake.nix makes
# them nixosConfigurations.CLOUD-HOST: aws-single, aws-db, aws-api1, ...,
# hetzner-lb. `nix run .#deploy` deploys the cluster's later releases with
# RATES_DEPLOY_PREFIX=CLOUD- (nix/deploy.sh).
#
# What each cloud needs (the disk's device, kernel modules) is in
# cloud/CLOUD.nix; the rest is the same everywhere. The hosts take their
# addresses by DHCP: the cloud assigns each the address of network.json that
# OpenTofu gave it, and on Hetzner the route through its gateway.
let
  cluster = import ./cluster.nix;
  inherit (cluster) network;

  # Where cloud/modules/install/extra-files.sh puts the database password:
  # under /var/lib, which survives reboots, unlike network.json's
  # passwordFile under /run, which is linked to it at every boot.
  storedPasswordFile = "/var/lib/secrets/rates-db-password";

  common = {
    # One disk: a BIOS boot partition for GRUB's core image, an EFI system
    # partition, and the root file system (disko's example/hybrid.nix).
    # Disko also makes fileSystems from it and adds the disk to
    # boot.loader.grub.devices.
    disko.devices.disk.main = {
      type = "disk";
      content = {
        type = "gpt";
        partitions = {
          boot = {
            size = "1M";
            type = "EF02";
          };
          ESP = {
            size = "512M";
            type = "EF00";
            content = {
              type = "filesystem";
              format = "vfat";
              mountpoint = "/boot";
              mountOptions = [ "umask=0077" ];
            };
          };
          root = {
            size = "100%";
            content = {
              type = "filesystem";
              format = "ext4";
              mountpoint = "/";
            };
          };
        };
      };
    };
    # GRUB boots the disk either way the machine starts: BIOS (Hetzner's x86
    # servers; AWS for a legacy-BIOS AMI) or UEFI, as the removable-media
    # loader, which needs no EFI variables.
    boot.loader.grub = {
      efiSupport = true;
      efiInstallAsRemovable = true;
    };

    # Root logs in with a key only: the one nixos-anywhere put into
    # /root/.ssh/authorized_keys, which NixOS leaves alone.
    services.openssh = {
      enable = true;
      settings = {
        PasswordAuthentication = false;
        PermitRootLogin = "prohibit-password";
      };
    };

    system.stateVersion = "25.11";
  };

  # db and the API hosts: network.json's passwordFile is a link to the file
  # that nixos-anywhere installed. Only root may look into its directory.
  password = {
    systemd.tmpfiles.settings."10-rates-db-password" = {
      ${dirOf network.passwordFile}.d = {
        mode = "0700";
        user = "root";
        group = "root";
      };
      ${network.passwordFile}."L+".argument = storedPasswordFile;
    };
  };

  clusterHost = name: modules: {
    imports = modules;
    networking.hostName = name;
  };

  roles = {
    single = {
      imports = [ ./single.nix ];
      # The API port that cloud/ opens to the world.
      services.rates.port = network.ports.api;
      # single.nix's placeholder disk (a lib.mkDefault): disko names the disk.
      boot.loader.grub.device = "";
    };
    db = clusterHost "db" [ cluster.roles.db password ];
    lb = clusterHost "lb" [ cluster.roles.lb ];
  } // builtins.mapAttrs (name: _: clusterHost name [ cluster.roles.api password ]) network.api;
in
{
  inherit storedPasswordFile;

  # hosts CLOUD: CLOUD-HOST => its modules, without the rates module and
  # disko's, which flake.nix adds.
  hosts = cloud: builtins.listToAttrs (map
    (name: {
      name = "${cloud}-${name}";
      value = {
        imports = [
          common
          ./cloud/${cloud}.nix
          roles.${name}
        ];
      };
    })
    (builtins.attrNames roles));
}
