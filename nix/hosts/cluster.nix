# A small cluster: one database host, two API hosts behind one HAProxy load
# balancer, all on one private network.
#
# One file, not one per host: the hosts share one address plan and one
# password path, and each refers to the others' addresses (pg_hba.conf
# admits the API subnet, HAProxy lists the API hosts). Here they cannot
# drift apart. The file returns
#   network  the address plan (nix/tests/cluster.nix gives the VMs these),
#   roles    each host's service configuration, without hardware,
#   hosts    roles plus a placeholder hardware block: flake.nix makes these
#            nixosConfigurations.{db,api1,api2,lb}, adding the rates module.
# The VM test runs the roles, so what is tested is what is deployed.
#
# Addresses are examples from a private range; change them to your network.
let
  network = {
    subnet = "10.0.0.0/24";
    prefixLength = 24;
    lb = "10.0.0.2";
    db = "10.0.0.10";
    api = {
      api1 = "10.0.0.11";
      api2 = "10.0.0.12";
    };
  };

  # Provisioned out of band on the database host and on every API host, mode
  # 0400 root, never in the store: see "Secrets" in docs/deploy.md.
  passwordFile = "/run/secrets/rates-db-password";

  apiPort = 3000;

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
        # Listen on every interface; pg_hba.conf below admits the API subnet
        # only, with SCRAM (PostgreSQL's default password_encryption since 14).
        enableTCPIP = true;
        authentication = ''
          host rates rates ${network.subnet} scram-sha-256
        '';
      };

      # On a host with a public interface, open the port on the private one
      # only: networking.firewall.interfaces.<nic>.allowedTCPPorts.
      networking.firewall.allowedTCPPorts = [ 5432 ];
    };

    # An API host; the load balancer spreads requests over all of them.
    api = {
      services.rates = {
        enable = true;
        host = "0.0.0.0";
        port = apiPort;
        openFirewall = true;
        database = {
          createLocally = false;
          host = network.db;
          inherit passwordFile;
        };
        # The database host loads the data once for all API hosts.
        seed.enable = false;
      };
    };

    # HAProxy rather than nginx: open-source nginx has only passive health
    # checks (max_fails/fail_timeout, i.e. client requests find the dead
    # host), while HAProxy polls /readyz and takes a host out of rotation
    # before clients notice; retries with redispatch cover the seconds
    # between a host stopping and the check noticing.
    lb = {
      services.haproxy = {
        enable = true;
        # nixos/modules/services/networking/haproxy.nix prepends a `global`
        # section with the runtime API socket, /run/haproxy/haproxy.sock.
        config = ''
          defaults
            mode http
            timeout connect 2s
            timeout client 30s
            timeout server 30s
            # A connection refused by a stopping host is retried on another.
            retries 3
            option redispatch
            retry-on conn-failure empty-response response-timeout

          frontend http
            bind :80
            default_backend rates

          backend rates
            balance roundrobin
            # /readyz answers 200 only when the host's database answers.
            option httpchk GET /readyz
            http-check expect status 200
            default-server inter 2s fall 2 rise 2
          ${builtins.concatStringsSep "\n" (
            builtins.attrValues (
              builtins.mapAttrs (name: address: "  server ${name} ${address}:${toString apiPort} check") network.api
            )
          )}
        '';
      };
      networking.firewall.allowedTCPPorts = [ 80 ];
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
  inherit network passwordFile roles;

  hosts = {
    db = host roles.db "db" network.db;
    lb = host roles.lb "lb" network.lb;
  } // builtins.mapAttrs (host roles.api) network.api;
}
