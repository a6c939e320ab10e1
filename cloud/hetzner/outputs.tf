output "url" {
  description = "Where the service answers."
  value       = "http://${hcloud_server.host[module.layout.entry.host].ipv4_address}:${module.layout.entry.port}"
}

output "hosts" {
  description = "name => { configuration, private_ip, public_ip, server_id }"
  value = {
    for name, server in hcloud_server.host : name => {
      configuration = "hetzner-${name}"
      private_ip    = local.hosts[name].address
      public_ip     = server.ipv4_address
      server_id     = server.id
    }
  }
}

output "ssh_config" {
  description = "For ~/.ssh/config (docs/cloud.md): the hosts by the addresses nix run .#deploy uses."
  value       = module.install.ssh_config
}

output "deploy" {
  description = "The command that deploys later releases, one host at a time."
  value       = var.layout == "single" ? "nixos-rebuild switch --flake .#hetzner-single --target-host root@rates-hetzner-single" : "RATES_DEPLOY_PREFIX=hetzner- nix run .#deploy"
}
