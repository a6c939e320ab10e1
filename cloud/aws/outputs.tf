output "url" {
  description = "Where the service answers."
  value       = "http://${aws_instance.host[module.layout.entry.host].public_ip}:${module.layout.entry.port}"
}

output "hosts" {
  description = "name => { configuration, private_ip, public_ip, instance_id }"
  value = {
    for name, instance in aws_instance.host : name => {
      configuration = "aws-${name}"
      private_ip    = instance.private_ip
      public_ip     = instance.public_ip
      instance_id   = instance.id
    }
  }
}

output "ami" {
  description = "The NixOS AMI the hosts booted before they were installed."
  value       = { id = data.aws_ami.nixos.id, name = data.aws_ami.nixos.name }
}

output "ssh_config" {
  description = "For ~/.ssh/config (docs/cloud.md): the hosts by the addresses nix run .#deploy uses."
  value       = module.install.ssh_config
}

output "deploy" {
  description = "The command that deploys later releases, one host at a time."
  value       = var.layout == "single" ? "nixos-rebuild switch --flake .#aws-single --target-host root@rates-aws-single" : "RATES_DEPLOY_PREFIX=aws- nix run .#deploy"
}
