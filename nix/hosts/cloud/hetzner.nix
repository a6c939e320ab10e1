# Hetzner Cloud, x86_64 servers (cx, cpx, ccx): KVM guests booting by BIOS,
# the disk is virtio-scsi's /dev/sda, as in nixos-anywhere's Hetzner example
# (github.com/nix-community/nixos-anywhere-examples).
{ modulesPath, ... }:
{
  imports = [ (modulesPath + "/profiles/qemu-guest.nix") ];
  nixpkgs.hostPlatform = "x86_64-linux";
  disko.devices.disk.main.device = "/dev/sda";
}
