# `nix run .#deploy`: the cluster's rolling upgrade, nix/deploy.sh, with the
# address plan it deploys (nix/hosts/cluster/network.json, copied to the
# store: it holds no secret) and jq, which reads it. ssh and nixos-rebuild
# are the operator's own, as for the single-host commands in docs/deploy.md;
# the script checks for them before it touches a host.
{ bash, jq, writeShellApplication }:
writeShellApplication {
  name = "rates-deploy";
  runtimeInputs = [ jq ];
  text = ''
    RATES_DEPLOY_NETWORK="''${RATES_DEPLOY_NETWORK:-${./hosts/cluster/network.json}}"
    export RATES_DEPLOY_NETWORK
    exec ${bash}/bin/bash ${./deploy.sh} "$@"
  '';
  meta.description = "Deploy the cluster of nix/hosts/cluster.nix one host at a time, without losing a request";
}
