# VM test of nix/hosts/cluster.nix: the database host, two API hosts and the
# HAProxy load balancer, each running its role from that file (so the same
# nix/hosts/cluster/ files as the hosts deployed and tests/cluster), and a
# client that deploys them with the repository's rolling upgrade, nix/deploy.sh
# (`nix run .#deploy`), over SSH as an operator's machine does. Only how one
# host is switched differs: the API hosts go to a prebuilt specialisation with
# a new build label, as `nixos-rebuild switch` would activate a new system.
# Then, with one API host stopped and then the other, the same script again:
# the host that is down goes first.
# Run by `nix flake check` as checks.<system>.vm-cluster, or alone:
#   nix build -L .#checks.x86_64-linux.vm-cluster
{ self }:
let
  cluster = import ../hosts/cluster.nix;
  inherit (cluster) network;

  # The test driver gives every VM 192.168.1.N on eth1, the shared link; the
  # cluster's own addresses are added on the same link, so the roles run
  # unchanged.
  onPrivateNetwork = address: {
    networking.interfaces.eth1.ipv4.addresses = [
      {
        inherit address;
        inherit (network) prefixLength;
      }
    ];
  };

  # A deployed host: the module, its role, and SSH for the deploy script
  # (the client's key is authorized at test time).
  host = role: address: {
    imports = [
      self.nixosModules.default
      role
      (onPrivateNetwork address)
    ];
    services.openssh.enable = true;
  };

  # An API host, with the release the rolling upgrade switches it to: the same
  # configuration with a build label (/healthz's Rates-Build header).
  api = address: {
    imports = [ (host cluster.roles.api address) ];
    specialisation.upgraded.configuration.services.rates.environment.RATES_BUILD = "upgraded";
  };
in
{
  name = "rates-cluster";

  nodes = {
    db = host cluster.roles.db network.db;
    api1 = api network.api.api1;
    api2 = api network.api.api2;
    lb = host cluster.roles.lb network.lb;
    client = { pkgs, ... }: {
      imports = [ (onPrivateNetwork network.client) ];
      environment.systemPackages = [
        pkgs.openssh
        (pkgs.callPackage ../deploy.nix { })
        # RATES_DEPLOY_SWITCH for this test: the API hosts to the upgraded
        # specialisation, the others to the system they run (nothing changes).
        (pkgs.writeShellApplication {
          name = "switch-host";
          runtimeInputs = [ pkgs.openssh ];
          text = ''
            name=$1 address=$2
            echo "$name" >> /tmp/switched
            case $name in
              api*) system=/run/booted-system/specialisation/upgraded ;;
              *) system=/run/current-system ;;
            esac
            ssh -o BatchMode=yes "root@$address" "$system/bin/switch-to-configuration test"
          '';
        })
        # Load through the load balancer: one status code per request, until stopped.
        (pkgs.writeShellApplication {
          name = "load";
          runtimeInputs = [ pkgs.curl ];
          text = ''
            while true; do
              # curl writes 000 for a request that got no answer; the loop goes on.
              curl --silent --output /dev/null --write-out '%{http_code}\n' --max-time 10 "$1" >> "$2" || true
            done
          '';
        })
      ];
    };
  };

  testScript = ''
    import json
    import secrets

    LB = "http://${network.lb}:${toString network.ports.lb}"
    # The sample data's known answer, shared with testlib/sample.py.
    with open("${../../testlib/sample_answer.json}") as f:
        SAMPLE = json.load(f)
    QUERY = SAMPLE["path"]
    EXPECTED = SAMPLE["body"]
    PASSWORD_FILE = "${network.passwordFile}"
    BACKEND = "${network.haproxy.backend}"
    ADMIN_SOCKET = "${network.haproxy.adminSocket}"
    API_PORT = ${toString network.ports.api}
    HOSTS = [
        (db, "${network.db}"),
        (api1, "${network.api.api1}"),
        (api2, "${network.api.api2}"),
        (lb, "${network.lb}"),
    ]
    DEPLOY = "RATES_DEPLOY_SWITCH=switch-host rates-deploy"
    # A fresh password for every run, made here: it is never in the store.
    password = secrets.token_hex(24)


    def provision_secret(node) -> None:
        """What an operator (or sops-nix, agenix) does out of band."""
        node.succeed(
            "install -d -m 0700 /run/secrets"
            f" && (umask 077 && echo {password} > {PASSWORD_FILE})"
        )


    def server_is(name: str, state: str) -> str:
        """A command that succeeds when HAProxy reports the API host in `state`."""
        return (
            f"echo 'show stat' | socat - UNIX-CONNECT:{ADMIN_SOCKET}"
            f" | grep '^{BACKEND},{name},.*,{state},'"
        )


    def status_codes(count: int) -> list[str]:
        """HTTP status of `count` requests through the load balancer; 000: no answer."""
        codes: list[str] = []
        for _ in range(count):
            _, out = client.execute(
                "curl --silent --output /dev/null --write-out '%{http_code}' --max-time 10"
                f" '{LB}{QUERY}'"
            )
            codes.append(out.strip())
        return codes


    def assert_all_served(codes: list[str], situation: str) -> None:
        failed = [code for code in codes if code != "200"]
        assert not failed, (
            f"{len(failed)} of {len(codes)} requests through the load balancer failed {situation}: {codes}"
        )


    def build(node) -> str:
        """The release an API host runs: /healthz's Rates-Build header."""
        headers = node.succeed(f"curl --fail --silent --dump-header - --output /dev/null http://127.0.0.1:{API_PORT}/healthz")
        return next(
            line.split(":", 1)[1].strip()
            for line in headers.splitlines()
            if line.lower().startswith("rates-build:")
        )


    start_all()

    with subtest("the client reaches every host over SSH, as an operator's machine does"):
        client.succeed("install -d -m 0700 /root/.ssh && ssh-keygen -q -t ed25519 -N ''' -f /root/.ssh/id_ed25519")
        key = client.succeed("cat /root/.ssh/id_ed25519.pub").strip()
        for node, address in HOSTS:
            node.wait_for_unit("sshd.service")
            node.succeed(f"install -d -m 0700 /root/.ssh && echo '{key}' >> /root/.ssh/authorized_keys")
            client.wait_until_succeeds(f"ssh-keyscan -t ed25519 {address} > /tmp/key && test -s /tmp/key")
            client.succeed(f"cat /tmp/key >> /root/.ssh/known_hosts && ssh -o BatchMode=yes root@{address} true")

    with subtest("the deploy script switches nothing while a password file is missing"):
        out = client.fail(f"{DEPLOY} --first 2>&1")
        assert f"the database password file {PASSWORD_FILE} is missing or empty on: db api1 api2; nothing was changed" in out, out
        client.fail("test -e /tmp/switched")

    with subtest("the database password is provisioned out of band"):
        for node in (db, api1, api2):
            provision_secret(node)
        # The units that read it retry every 5 s until it exists; restarting
        # them now is quicker.
        db.wait_for_unit("postgresql.target")
        db.succeed("systemctl restart rates-db-password.service")
        db.wait_for_unit("rates-seed.service")
        for api in (api1, api2):
            api.succeed("systemctl restart rates.service")

    with subtest("every API host reaches the database"):
        for api in (api1, api2):
            api.wait_for_unit("rates.service")
            api.wait_for_open_port(API_PORT)
            api.wait_until_succeeds(f"curl --fail --silent http://127.0.0.1:{API_PORT}/readyz")

    with subtest("the load balancer serves the sample data"):
        lb.wait_for_unit("haproxy.service")
        lb.wait_for_open_port(${toString network.ports.lb})
        lb.wait_until_succeeds(server_is("api1", "UP"))
        lb.wait_until_succeeds(server_is("api2", "UP"))
        got = json.loads(client.succeed(f"curl --fail --silent '{LB}{QUERY}'"))
        assert got == EXPECTED, f"/rates through the load balancer returned {got!r}, expected {EXPECTED!r}"

    with subtest("the password is in no unit file and no log"):
        for node in (db, api1, api2):
            node.fail(f"grep --dereference-recursive --fixed-strings --quiet {password} /etc/systemd/system")
            # Not grep --quiet: it would stop at the first match, journalctl
            # would die of SIGPIPE, and under pipefail the pipeline would fail,
            # so a leaked password would pass. grep reads to the end here.
            node.fail(f"journalctl --output=cat | grep --fixed-strings {password} >/dev/null")

    with subtest("requests keep succeeding while an API host is down"):
        api1.succeed("systemctl stop rates.service")
        # Before HAProxy's check notices, retries send requests to api2.
        assert_all_served(status_codes(30), "just after api1 stopped")
        lb.wait_until_succeeds(server_is("api1", "DOWN"))
        assert_all_served(status_codes(30), "with api1 out of rotation")

        api1.succeed("systemctl start rates.service")
        api1.wait_for_unit("rates.service")
        api1.wait_until_succeeds(f"curl --fail --silent http://127.0.0.1:{API_PORT}/readyz")
        lb.wait_until_succeeds(server_is("api1", "UP"))
        assert_all_served(status_codes(30), "after api1 came back")

    with subtest("the rolling upgrade replaces every API host under load, losing no request"):
        for api in (api1, api2):
            assert not build(api).endswith("+upgraded"), build(api)
        client.succeed(f"systemd-run --unit=load /run/current-system/sw/bin/load '{LB}{QUERY}' /tmp/codes")
        client.wait_until_succeeds("test -s /tmp/codes")
        client.succeed(f"{DEPLOY} >&2")
        client.succeed("systemctl stop load.service")
        codes = client.succeed("cat /tmp/codes").split()
        assert_all_served(codes, "during the rolling upgrade")
        assert client.succeed("cat /tmp/switched").split() == ["db", "api1", "api2", "lb"]
        for api in (api1, api2):
            assert build(api).endswith("+upgraded"), build(api)
        lb.succeed(server_is("api1", "UP"), server_is("api2", "UP"))

    with subtest("an API host already down is switched first, whichever it is, losing no request"):
        # tests/cluster does the same with the first and the last API host down.
        # Switching to the running system starts the stopped rates.service again
        # (switch-to-configuration starts the active targets, which want it).
        for down, other in ((api1, api2), (api2, api1)):
            down.succeed("systemctl stop rates.service")
            lb.wait_until_succeeds(server_is(down.name, "DOWN"))
            client.succeed("rm -f /tmp/switched /tmp/codes")
            client.succeed(f"systemd-run --unit=load-{down.name} /run/current-system/sw/bin/load '{LB}{QUERY}' /tmp/codes")
            client.wait_until_succeeds("test -s /tmp/codes")
            out = client.succeed(f"{DEPLOY} 2>&1")
            client.succeed(f"systemctl stop load-{down.name}.service")
            assert f"{down.name} is out of rotation (DOWN): it serves nothing, so it is switched first" in out, out
            assert_all_served(client.succeed("cat /tmp/codes").split(), f"while deploying with {down.name} down")
            switched = client.succeed("cat /tmp/switched").split()
            assert switched == ["db", down.name, other.name, "lb"], f"switched in the order {switched}"
            lb.succeed(server_is("api1", "UP"), server_is("api2", "UP"))
  '';
}
