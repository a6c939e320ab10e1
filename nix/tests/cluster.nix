# VM test of nix/hosts/cluster.nix: the database host, two API hosts and the
# HAProxy load balancer, each running its role from that file, and a client.
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

  host = role: address: {
    imports = [
      self.nixosModules.default
      role
      (onPrivateNetwork address)
    ];
  };
in
{
  name = "rates-cluster";

  nodes = {
    db = host cluster.roles.db network.db;
    api1 = host cluster.roles.api network.api.api1;
    api2 = host cluster.roles.api network.api.api2;
    lb = { pkgs, ... }: {
      imports = [ (host cluster.roles.lb network.lb) ];
      # socat talks to HAProxy's runtime API to read the servers' states.
      environment.systemPackages = [ pkgs.socat ];
    };
    client = onPrivateNetwork "10.0.0.100";
  };

  testScript = ''
    import json
    import secrets

    LB = "http://${network.lb}"
    # The sample data's known answer, shared with tests/testlib/sample.py.
    with open("${../../tests/testlib/sample_answer.json}") as f:
        SAMPLE = json.load(f)
    QUERY = SAMPLE["path"]
    EXPECTED = SAMPLE["body"]
    PASSWORD_FILE = "${cluster.passwordFile}"
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
            "echo 'show stat' | socat - UNIX-CONNECT:/run/haproxy/haproxy.sock"
            f" | grep '^rates,{name},.*,{state},'"
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


    start_all()

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
            api.wait_for_open_port(3000)
            api.wait_until_succeeds("curl --fail --silent http://127.0.0.1:3000/readyz")

    with subtest("the load balancer serves the sample data"):
        lb.wait_for_unit("haproxy.service")
        lb.wait_for_open_port(80)
        lb.wait_until_succeeds(server_is("api1", "UP"))
        lb.wait_until_succeeds(server_is("api2", "UP"))
        got = json.loads(client.succeed(f"curl --fail --silent '{LB}{QUERY}'"))
        assert got == EXPECTED, f"/rates through the load balancer returned {got!r}, expected {EXPECTED!r}"

    with subtest("the password is in no unit file and no log"):
        for node in (db, api1, api2):
            node.fail(f"grep --dereference-recursive --fixed-strings --quiet {password} /etc/systemd/system")
            node.fail(f"journalctl --output=cat | grep --fixed-strings --quiet {password}")

    with subtest("requests keep succeeding while an API host is down"):
        api1.succeed("systemctl stop rates.service")
        # Before HAProxy's check notices, retries send requests to api2.
        assert_all_served(status_codes(30), "just after api1 stopped")
        lb.wait_until_succeeds(server_is("api1", "DOWN"))
        assert_all_served(status_codes(30), "with api1 out of rotation")

        api1.succeed("systemctl start rates.service")
        api1.wait_for_unit("rates.service")
        api1.wait_until_succeeds("curl --fail --silent http://127.0.0.1:3000/readyz")
        lb.wait_until_succeeds(server_is("api1", "UP"))
        assert_all_served(status_codes(30), "after api1 came back")
  '';
}
