output "ssh_config" {
  description = "An ssh_config(5) snippet: each host by the name nix run .#deploy and nixos-rebuild use (its private address from network.json, or rates-CONFIGURATION), reached at its public address."
  value = join("", concat(
    [<<-EOT
      # The rates hosts by the names nix run .#deploy uses (their addresses in
      # nix/hosts/cluster/network.json), reached at their public addresses.
      # Known hosts are kept under HostKeyAlias, apart from any other machine at
      # the same address; a host's key is accepted at the first connection,
      # which nix run .#deploy makes without a terminal to ask on.
      # From `tofu output -raw ssh_config`: write it again after every apply.
      EOT
    ],
    [for name, host in var.hosts : <<-EOT
      Host ${coalesce(host.address, "rates-${host.configuration}")}
        HostName ${host.public_address}
        User root
        HostKeyAlias rates-${host.configuration}
        StrictHostKeyChecking accept-new
      EOT
    ],
  ))
}

output "systems" {
  description = "name => the store path of the NixOS system installed on it."
  value       = { for name, build in module.system : name => build.result.out }
}

output "handoff" {
  description = "name => { system, partitioner (the flake attributes built), target_host, instance_id, password_file (\"\": none) }: what each host's install gets."
  value       = local.handoff
}
