# One host running everything: PostgreSQL (local socket only), the seed and
# the API on port 3000. flake.nix adds the rates module:
#   nixos-rebuild build-vm --flake .#single      (try it in a VM)
#   nixos-rebuild switch --flake .#single --target-host root@HOST
# See docs/deploy.md.
{ lib, ... }:
{
  services.rates = {
    enable = true;
    host = "0.0.0.0";
    openFirewall = true;
    # The defaults: PostgreSQL on this host (database.createLocally), the
    # sample data (seed.dumpFile = null). For your own data:
    # seed.dumpFile = "/var/lib/rates/rates.sql";
  };

  # --- Placeholder hardware: replace for a real machine ---------------------
  # For a physical machine or a cloud VM, replace this block with the output
  # of `nixos-generate-config --show-hardware-config` on the target (or let
  # `nixos-anywhere --generate-hardware-config` write it): file systems, boot
  # loader, kernel modules, platform. As it stands it evaluates and builds,
  # and `nixos-rebuild build-vm` replaces the file systems and boot loader
  # with the VM's own.
  nixpkgs.hostPlatform = lib.mkDefault "x86_64-linux";
  boot.loader.grub.device = lib.mkDefault "/dev/sda"; # UEFI: boot.loader.systemd-boot.enable = true;
  fileSystems."/" = lib.mkDefault {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
  };

  networking.hostName = "rates";

  # Administration over SSH with keys only; nixos-rebuild --target-host and
  # nixos-anywhere log in this way. Add your public key before deploying.
  services.openssh = {
    enable = true;
    settings.PasswordAuthentication = false;
  };
  users.users.root.openssh.authorizedKeys.keys = [
    # "ssh-ed25519 AAAA... you@laptop"
  ];

  # `nixos-rebuild build-vm` only: http://localhost:3000 on the host reaches
  # the API in the VM, and the VM's console logs in as root.
  virtualisation.vmVariant = {
    virtualisation.memorySize = 2048;
    virtualisation.forwardPorts = [
      {
        from = "host";
        host.port = 3000;
        guest.port = 3000;
      }
    ];
    services.getty.autologinUser = "root";
  };

  # The release this host was first installed with; it selects stateful
  # defaults such as the PostgreSQL major version. Do not raise it on an
  # existing host without reading the release notes (PostgreSQL needs
  # pg_upgrade).
  system.stateVersion = "25.11";
}
