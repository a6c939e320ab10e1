# A small cluster: one database host, two API hosts behind one HAProxy load
# balancer, all on one private network.
#
# What is deployed is what is tested: the address plan, the HAProxy
# configuration, the database host's pg_hba.conf lines and the API hosts'
# settings are files in ./cluster/, which this file reads and the cluster
# tests (tests/cluster) read too; the rolling upgrade that deploys them is
# nix/deploy.sh (`nix run .#deploy`), which the tests drive.
#   cluster/network.json          the address plan: hosts, ports, the API
#                                 subnet, the password file's path
#   cluster/haproxy.cfg           the load balancer's configuration (template)
#   cluster/pg_hba.conf           who may log in to PostgreSQL (template)
#   cluster/api-environment.json  the API hosts' RATES_* settings
# The templates' @name@ placeholders are filled in from network.json, here
# by `fill` and in the tests by testlib/cluster_plan.py, which checks
# that the two agree.
#
# The file returns
#   network, haproxyConfig, pgHba, apiEnvironment  the above, read and filled in;
#   roles  each host's service configuration, without hardware;
#   hosts  roles plus a placeholder hardware block: flake.nix makes these
#          nixosConfigurations.{db,api1,api2,lb}, adding the rates module.
# The VM test (nix/tests/cluster.nix) runs the roles.
#
# Addresses are examples from a private range: change them in
# cluster/network.json to your network.
let
  inherit (builtins) attrNames concatStringsSep fromJSON readFile replaceStrings;

  network = fromJSON (readFile ./cluster/network.json);
  apiEnvironment = fromJSON (readFile ./cluster/api-environment.json);

  # One `server` line per API host, in name order (attrNames sorts).
  apiServers = concatStringsSep "\n" (map
    (name: "  server ${name} ${network.api.${name}}:${toString network.ports.api}")
    (attrNames network.api));

  fill = replaceStrings
    [ "@apiSubnet@" "@lbPort@" "@backend@" "@adminSocket@" "@apiServers@" ]
    [ network.apiSubnet (toString network.ports.lb) network.haproxy.backend network.haproxy.adminSocket apiServers ];

  haproxyConfig = fill (readFile ./cluster/haproxy.cfg);
  pgHba = fill (readFile ./cluster/pg_hba.conf);

  # Provisioned out of band on the database host and on every API host, mode
  # 0400 root, never in the store: see "Secrets" in docs/deploy.md.
  inherit (network) passwordFile;

  roles = {
    # PostgreSQL for the API hosts: the rates module creates the database and
    # the role, sets the role's password from passwordFile and loads the
    # data; it runs no API here.
    db = {
      services.rates = {
        enable = true;
        serve.enable = false;
        database.passwordFile = passwordFile;
      };

      services.postgresql = {
        # Listen on every interface; pg_hba.conf admits the API subnet only,
        # with SCRAM (PostgreSQL's default password_encryption since 14).
        enableTCPIP = true;
        settings.port = network.ports.db;
        authentication = pgHba;
      };

      # On a host with a public interface, open the port on the private one
      # only: networking.firewall.interfaces.<nic>.allowedTCPPorts.
      networking.firewall.allowedTCPPorts = [ network.ports.db ];
    };

    # An API host; the load balancer spreads requests over all of them.
    api = {
      services.rates = {
        enable = true;
        host = "0.0.0.0";
        port = network.ports.api;
        openFirewall = true;
        database = {
          createLocally = false;
          host = network.db;
          port = network.ports.db;
          inherit passwordFile;
        };
        # The database host loads the data once for all API hosts.
        seed.enable = false;
        environment = apiEnvironment;
      };
    };

    # HAProxy rather than nginx: open-source nginx has only passive health
    # checks (max_fails/fail_timeout, i.e. client requests find the dead
    # host), while HAProxy polls /readyz and takes a host out of rotation
    # before clients notice, retries what a dying host dropped, and can
    # drain a host through its runtime API for a rolling upgrade.
    lb = { pkgs, ... }: {
      services.haproxy = {
        enable = true;
        config = haproxyConfig;
      };
      # The rolling upgrade talks to HAProxy's runtime API with socat, as
      # HAProxy's management guide does.
      environment.systemPackages = [ pkgs.socat ];
      networking.firewall.allowedTCPPorts = [ network.ports.lb ];
    };
  };

  # Placeholder hardware and access, as in single.nix: replace it with the
  # output of `nixos-generate-config --show-hardware-config` on each host.
  # `nic` is the private network interface (see `ip link` on the host).
  hardware = { name, address, nic ? "ens3" }: { lib, ... }: {
    nixpkgs.hostPlatform = lib.mkDefault "x86_64-linux";
    boot.loader.grub.device = lib.mkDefault "/dev/sda";
    fileSystems."/" = lib.mkDefault {
      device = "/dev/disk/by-label/nixos";
      fsType = "ext4";
    };

    networking.hostName = name;
    networking.interfaces.${nic}.ipv4.addresses = [
      {
        inherit address;
        inherit (network) prefixLength;
      }
    ];

    services.openssh = {
      enable = true;
      settings.PasswordAuthentication = false;
    };
    users.users.root.openssh.authorizedKeys.keys = [
      # "ssh-ed25519 AAAA... you@laptop"
    ];

    system.stateVersion = "25.11";
  };

  host = role: name: address: {
    imports = [
      role
      (hardware { inherit name address; })
    ];
  };
in
{
  inherit network haproxyConfig pgHba apiEnvironment passwordFile roles;

  hosts = {
    db = host roles.db "db" network.db;
    lb = host roles.lb "lb" network.lb;
  } // builtins.mapAttrs (host roles.api) network.api;
}
