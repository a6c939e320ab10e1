# VM test of the module's defaults on one host: local PostgreSQL, the seed,
# the API. Run by `nix flake check` as checks.<system>.vm-single, or alone:
#   nix build -L .#checks.x86_64-linux.vm-single
{ self }:
let
  # `systemd-analyze security` scores a unit from 0 (every sandboxing option
  # on) to 10. What this service cannot give up (IPv4/IPv6 sockets for its
  # clients, so no PrivateNetwork= or IP allow list, and the host's root
  # file system) costs about a point; 2.0 fails the test when a hardening
  # option is dropped, without demanding options the service cannot use.
  maxExposure = "2.0";
in
{
  name = "rates-single";

  nodes.machine = {
    imports = [ self.nixosModules.default ];
    services.rates.enable = true;
    # The seed gives up on an absent PostgreSQL after 3 s instead of 30, so
    # that the retry subtest below is quick.
    services.rates.environment.RATES_SEED_WAIT = "3";
    # PostgreSQL, two gunicorn workers and the seed's generator at once.
    virtualisation.memorySize = 2048;
  };

  testScript = ''
    import json
    import re
    import shlex

    # The sample data's known answer, shared with testlib/sample.py.
    with open("${../../testlib/sample_answer.json}") as f:
        SAMPLE = json.load(f)
    QUERY = "http://127.0.0.1:3000" + SAMPLE["path"]
    EXPECTED = SAMPLE["body"]
    MAX_EXPOSURE = ${maxExposure}


    def psql(sql: str) -> str:
        """Run one statement in the rates database as the postgres superuser."""
        return machine.succeed(
            f"runuser -u postgres -- psql --dbname=rates --no-psqlrc -tAc {shlex.quote(sql)}"
        ).strip()


    def unit_property(unit: str, name: str) -> str:
        return machine.succeed(f"systemctl show --property={name} --value {unit}").strip()


    def assert_sample_data() -> None:
        got = json.loads(machine.succeed(f"curl --fail --silent '{QUERY}'"))
        assert got == EXPECTED, f"/rates returned {got!r}, expected {EXPECTED!r}"


    start_all()

    with subtest("the API serves the sample data"):
        machine.wait_for_unit("rates.service")
        machine.wait_for_open_port(3000)
        machine.wait_until_succeeds("curl --fail --silent http://127.0.0.1:3000/readyz")
        health = json.loads(machine.succeed("curl --fail --silent http://127.0.0.1:3000/healthz"))
        assert health == {"status": "ok"}, f"/healthz returned {health!r}"
        assert_sample_data()
        count = psql("SELECT count(*) FROM prices")
        assert count == "57000", f"prices holds {count} rows after the seed, expected 57000"

    with subtest("PostgreSQL is not reachable from the network"):
        listening = machine.succeed("ss --no-header --listening --tcp --numeric 'sport = :5432'")
        for line in listening.splitlines():
            local = line.split()[3]
            assert local.startswith(("127.0.0.1:", "[::1]:")), (
                f"PostgreSQL listens on {local}; with createLocally it must listen on loopback only"
            )

    with subtest("a PostgreSQL restart does not restart the API"):
        pid_before = unit_property("rates.service", "MainPID")
        machine.succeed("systemctl restart postgresql.service")
        machine.wait_for_unit("postgresql.target")
        # The pool replaces the connections the restart broke.
        machine.wait_until_succeeds(f"curl --fail --silent '{QUERY}'")
        assert_sample_data()
        pid_after = unit_property("rates.service", "MainPID")
        assert pid_before == pid_after, (
            f"rates.service was restarted with PostgreSQL (MainPID {pid_before} -> {pid_after}); "
            "it must only want postgresql.target, not require it"
        )
        restarts = unit_property("rates.service", "NRestarts")
        assert restarts == "0", f"rates.service restarted {restarts} times, expected none"

    with subtest("a second seed run changes nothing"):
        loaded_before = psql("SELECT loaded_at FROM rates_seed")
        machine.succeed("systemctl restart rates-seed.service")
        invocation = unit_property("rates-seed.service", "InvocationID")
        # journald may store the last lines just after the unit exits.
        machine.wait_until_succeeds(
            f"journalctl --output=cat _SYSTEMD_INVOCATION_ID={invocation}"
            " | grep --fixed-strings 'rates-seed: nothing to do'"
        )
        loaded_after = psql("SELECT loaded_at FROM rates_seed")
        assert loaded_before == loaded_after, (
            f"the second seed run reloaded the data (loaded_at {loaded_before} -> {loaded_after})"
        )
        rows = psql("SELECT count(*) FROM rates_seed")
        assert rows == "1", f"rates_seed holds {rows} rows, expected 1"
        assert_sample_data()

    with subtest("the seed restarting leaves the API running"):
        # rates.service wants the seed; Requires= would restart it with the seed.
        pid = unit_property("rates.service", "MainPID")
        assert pid == pid_before, (
            f"rates.service was restarted with rates-seed (MainPID {pid_before} -> {pid})"
        )

    with subtest("a failed seed is retried until it succeeds"):
        # PostgreSQL masked, then stopped: the seed's Wants= cannot start it again.
        machine.succeed("systemctl mask --runtime postgresql.service")
        machine.succeed("systemctl stop postgresql.service")
        machine.succeed("systemctl restart --no-block rates-seed.service")
        # It fails after RATES_SEED_WAIT (3 s) and is started again 10 s later.
        machine.wait_until_succeeds(
            "test $(systemctl show --property=NRestarts --value rates-seed.service) -ge 1",
            timeout=120,
        )
        # Waiting for its next start (auto-restart), or running it.
        state = unit_property("rates-seed.service", "ActiveState")
        assert state == "activating", (
            f"rates-seed.service is {state} while PostgreSQL is down, expected activating"
        )
        status = machine.succeed(
            "curl --silent --output /dev/null --write-out '%{http_code}' http://127.0.0.1:3000/readyz"
        )
        assert status == "503", f"/readyz answered {status} with PostgreSQL down, expected 503"
        machine.succeed("systemctl unmask --runtime postgresql.service")
        machine.succeed("systemctl start postgresql.target")
        # The next automatic start succeeds; nobody touches the seed.
        machine.wait_until_succeeds("systemctl is-active rates-seed.service", timeout=120)
        machine.wait_until_succeeds("curl --fail --silent http://127.0.0.1:3000/readyz")
        assert_sample_data()
        pid = unit_property("rates.service", "MainPID")
        assert pid == pid_before, f"rates.service was restarted (MainPID {pid_before} -> {pid})"

    with subtest("rates.service is sandboxed"):
        report = machine.succeed("systemd-analyze security --no-pager rates.service")
        print(report)
        found = re.search(r"Overall exposure level for rates\.service: (\d+\.\d+)", report)
        assert found is not None, "systemd-analyze security printed no overall exposure level"
        exposure = float(found.group(1))
        assert exposure <= MAX_EXPOSURE, (
            f"rates.service's exposure is {exposure}, above {MAX_EXPOSURE}: "
            "a hardening option was dropped from nix/module.nix"
        )
  '';
}
