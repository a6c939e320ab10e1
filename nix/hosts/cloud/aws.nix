# Amazon EC2, x86_64 Nitro instance types (every current generation): the
# root volume is the NVMe device /dev/nvme0n1, the network card ENA (in the
# kernel). Not nixpkgs' virtualisation/amazon-image.nix: it is for images
# (its fileSystems."/" is a labelled partition, not disko's) and reconfigures
# the host from EC2 user data at boot (amazon-init), which would bypass the
# flake.
{
  nixpkgs.hostPlatform = "x86_64-linux";
  disko.devices.disk.main.device = "/dev/nvme0n1";
  boot.initrd.availableKernelModules = [ "nvme" ];
  # The serial console, which `aws ec2 get-console-output` and EC2 Serial
  # Console read.
  boot.kernelParams = [ "console=ttyS0,115200n8" ];
  # The Amazon Time Sync Service, as amazon-image.nix sets it.
  networking.timeServers = [ "169.254.169.123" ];
}
