# The NixOS module: `services.rates` runs the API (rates.service), loads the
# data once (rates-seed.service) and, by default, creates its PostgreSQL
# database on the same host. Exported by flake.nix with
# `lib.modules.importApply ./nix/module.nix { inherit self; }`, so the default
# package is this flake's, whatever nixpkgs the host uses.
#
# Followed: nixos/modules/services/web-apps/mealie.nix (DynamicUser, peer
# authentication as the role of the same name, ordering after
# postgresql.target), nixos/modules/services/databases/postgresql.nix
# (ensureDatabases, ensureUsers, postgresql.target) and the hardening of
# postgresql.service in that file.
{ self }:
{ config, lib, pkgs, ... }:
let
  cfg = config.services.rates;
  pg = config.services.postgresql;

  # Variables the module sets itself; `environment` may not override them.
  managedVariables = [
    "PGHOST"
    "PGPORT"
    "PGDATABASE"
    "PGUSER"
    "PGPASSWORD_FILE"
    "RATES_HOST"
    "RATES_PORT"
    "RATES_WORKERS"
    "RATES_THREADS"
    "RATES_DUMP"
  ];
  # Secrets that would land in the world-readable store if set here.
  secretVariables = [ "PGPASSWORD" ];
  clashing = lib.intersectLists (managedVariables ++ secretVariables) (lib.attrNames cfg.environment);

  isSocketDir = host: host != null && lib.hasPrefix "/" host;
  isLoopback = host: lib.elem host [ "127.0.0.1" "::1" "localhost" ];

  # The API hosts of a cluster reach a remote server with a password; on the
  # database host itself, peer authentication over the socket needs none.
  usePassword = cfg.database.passwordFile != null && !cfg.database.createLocally;

  libpqEnvironment = {
    PGHOST = cfg.database.host;
    PGPORT = toString cfg.database.port;
    PGDATABASE = cfg.database.name;
    PGUSER = cfg.database.user;
  } // lib.optionalAttrs usePassword {
    # %d is the unit's credentials directory (systemd.unit(5), "Specifiers"),
    # filled from LoadCredential= below; the password never enters the
    # environment, the unit file or the store.
    PGPASSWORD_FILE = "%d/pgpassword";
  };

  commonEnvironment = cfg.environment // libpqEnvironment // {
    PYTHONUNBUFFERED = "1";
  };

  # Ordering and requirements on the database. postgresql.target requires
  # postgresql.service and postgresql-setup.service (which runs the ensure*
  # statements), and a target is implicitly ordered after what it requires
  # (systemd.target(5), "Default Dependencies"): once it is active, the role
  # and database exist. It is wanted, not required: Requires= would carry a
  # restart of PostgreSQL on to the seed, and from there to the API.
  databaseUnits =
    if cfg.database.createLocally
    then {
      after = [ "postgresql.target" ];
      wants = [ "postgresql.target" ];
    }
    else {
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
    };

  # Shared by every unit below; what each unit adds is next to it.
  hardening = {
    CapabilityBoundingSet = "";
    AmbientCapabilities = "";
    NoNewPrivileges = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    PrivateDevices = true;
    # Peer authentication still sees the real uid: credentials passed over a
    # Unix socket are translated into the receiver's (PostgreSQL's) user
    # namespace (user_namespaces(7)).
    PrivateUsers = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    ProtectProc = "invisible";
    ProcSubset = "pid";
    # AF_UNIX for the PostgreSQL socket and the journal.
    RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    # CPython without its (optional, off by default) JIT, psycopg2 and libpq
    # never map memory both writable and executable.
    MemoryDenyWriteExecute = true;
    SystemCallArchitectures = "native";
    SystemCallFilter = [ "@system-service" "~@privileged" "~@resources" ];
    UMask = "0077";
  };

  # The service's own Unix user: allocated by systemd while a unit runs, so
  # nothing is left on disk and no account is declared. With a local
  # database it carries the role's name, which peer authentication requires
  # (mealie.nix does the same).
  serviceUser = {
    DynamicUser = true;
    User = if cfg.database.createLocally then cfg.database.user else "rates";
    # Implied by DynamicUser=; spelled out because the postgres-owned unit
    # below must NOT have it.
    RemoveIPC = true;
  };

  credentials = lib.optionalAttrs usePassword {
    LoadCredential = [ "pgpassword:${cfg.database.passwordFile}" ];
  };
in
{
  options.services.rates = {
    enable = lib.mkEnableOption "the rates API of average daily shipping prices";

    package = lib.mkOption {
      type = lib.types.package;
      default = self.packages.${pkgs.stdenv.hostPlatform.system}.rates;
      defaultText = lib.literalExpression "self.packages.\${pkgs.stdenv.hostPlatform.system}.rates";
      description = "The rates package; it provides `rates-serve` and `rates-seed`.";
    };

    # On by default; a database host that only creates the database and
    # loads the data turns it off.
    serve.enable = lib.mkEnableOption "the API server, rates.service" // {
      default = true;
      example = false;
    };

    host = lib.mkOption {
      type = lib.types.str;
      default = "127.0.0.1";
      example = "0.0.0.0";
      description = ''
        Address the API listens on (RATES_HOST). `0.0.0.0` for every IPv4
        interface, e.g. behind a load balancer on another host.
      '';
    };

    port = lib.mkOption {
      type = lib.types.port;
      default = 3000;
      description = "TCP port the API listens on (RATES_PORT).";
    };

    # null by default: the service's own defaults (rates/settings.py, 2 and
    # 2) apply, which is what the cluster tests run, with no second copy here.
    workers = lib.mkOption {
      type = lib.types.nullOr (lib.types.ints.between 1 64);
      default = null;
      example = 4;
      description = ''
        gunicorn worker processes (RATES_WORKERS); about one per CPU core.
        null: the service's default, 2.
      '';
    };

    threads = lib.mkOption {
      type = lib.types.nullOr (lib.types.ints.between 1 64);
      default = null;
      example = 4;
      description = ''
        Threads per worker, the requests one worker serves at once
        (RATES_THREADS). null: the service's default, 2, which on 2 cores
        gave a shorter tail than 4 at the same throughput
        (docs/performance.md).
      '';
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Whether to open {option}`services.rates.port` in the firewall.";
    };

    environment = lib.mkOption {
      type = lib.types.attrsOf lib.types.str;
      default = { };
      example = {
        RATES_ACCESS_LOG = "true";
        RATES_POOL_SIZE = "8";
        RATES_STATEMENT_TIMEOUT_MS = "2000";
      };
      description = ''
        Further environment variables for rates-serve and rates-seed; see
        `.env.example` in the repository for every variable. Those the
        module sets from its own options (${lib.concatStringsSep ", " managedVariables})
        cannot be set here, and neither can PGPASSWORD: the values land in
        the world-readable Nix store. Use
        {option}`services.rates.database.passwordFile` for the password.
      '';
    };

    database = {
      createLocally = lib.mkOption {
        type = lib.types.bool;
        default = true;
        description = ''
          Whether to run PostgreSQL on this host and create the database and
          its owner role there (`services.postgresql.ensureDatabases`,
          `ensureUsers`). The service then connects over the Unix socket with
          peer authentication, without a password, and nothing is opened to
          the network.
        '';
      };

      host = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = if cfg.database.createLocally then "/run/postgresql" else null;
        defaultText = lib.literalExpression ''
          if config.services.rates.database.createLocally then "/run/postgresql" else null
        '';
        example = "10.0.0.10";
        description = ''
          PostgreSQL host name, IP address or Unix socket directory (PGHOST).
          Must be set when {option}`services.rates.database.createLocally` is
          false.
        '';
      };

      port = lib.mkOption {
        type = lib.types.port;
        default = if cfg.database.createLocally then pg.settings.port else 5432;
        defaultText = lib.literalExpression ''
          if config.services.rates.database.createLocally
          then config.services.postgresql.settings.port
          else 5432
        '';
        description = "PostgreSQL port (PGPORT); with a socket directory, it names the socket file.";
      };

      name = lib.mkOption {
        type = lib.types.str;
        default = "rates";
        description = "Database that holds the rates data (PGDATABASE).";
      };

      user = lib.mkOption {
        type = lib.types.str;
        default = "rates";
        description = ''
          PostgreSQL role to connect as (PGUSER). With
          {option}`services.rates.database.createLocally` it is also the name
          of the services' Unix user, as peer authentication requires, and
          must equal {option}`services.rates.database.name`, which
          `ensureDBOwnership` gives it.
        '';
      };

      passwordFile = lib.mkOption {
        # A string, not a path: a path value would be copied into the
        # world-readable Nix store at evaluation time.
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "/run/secrets/rates-db-password";
        description = ''
          File whose first line is the role's password, read by systemd
          (LoadCredential=) when a unit starts, so it can stay readable by
          root alone. It is a string, not a Nix path, because a path would be
          copied into the world-readable store: provision the file out of
          band (scp, sops-nix, agenix).

          With {option}`services.rates.database.createLocally` false, the
          services log in with it. With it true, the module sets the local
          role's password from it (rates-db-password.service), so that API
          hosts elsewhere can log in over TCP; the local services still use
          peer authentication.
        '';
      };
    };

    seed = {
      # rates-seed is idempotent: a no-op when the same data is loaded. In a
      # cluster, one host (the database host) runs it.
      enable = lib.mkEnableOption "loading the data with rates-seed.service before the API starts" // {
        default = true;
        example = false;
      };

      dumpFile = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "/var/lib/rates/rates-2016.sql";
        description = ''
          Plain-SQL pg_dump to load (RATES_DUMP); null loads the project's
          generated sample data into an empty database, and keeps whatever
          rates-seed loaded before (set it back to null and the last dump
          stays). The service runs as a dynamic user, so the
          file must be world-readable (a store path, or mode 0644): it is
          data, not a secret. A new dump under the same name is loaded on
          `systemctl restart rates-seed.service`; a new name is loaded by the
          next `nixos-rebuild switch`.
        '';
      };

      replace = lib.mkOption {
        type = lib.types.bool;
        default = false;
        description = ''
          Whether rates-seed may replace different data that is already
          loaded (`--replace`). Without it, a different dump makes
          rates-seed.service fail (exit status 3, not retried) and leaves the
          loaded data, which the API goes on serving.
        '';
      };
    };
  };

  config = lib.mkIf cfg.enable (lib.mkMerge [
    {
      assertions = [
        {
          assertion = cfg.database.host != null;
          message = ''
            services.rates.database.host is unset. Set it to the PostgreSQL
            server's address, or set services.rates.database.createLocally = true
            to run PostgreSQL on this host.
          '';
        }
        {
          assertion = cfg.database.createLocally -> isSocketDir cfg.database.host;
          message = ''
            services.rates.database.createLocally creates a role without a
            password that logs in by peer authentication over the Unix socket,
            but services.rates.database.host is "${toString cfg.database.host}".
            Leave database.host at its default ("/run/postgresql"), or set
            database.createLocally = false to use that server.
          '';
        }
        {
          assertion = cfg.database.createLocally -> cfg.database.name == cfg.database.user;
          message = ''
            services.rates.database.createLocally makes the role the owner of
            the database of the same name (ensureDBOwnership), but
            database.name is "${cfg.database.name}" and database.user is
            "${cfg.database.user}". Set both to the same name.
          '';
        }
        {
          assertion = cfg.database.createLocally -> !(lib.hasAttr cfg.database.user config.users.users);
          message = ''
            services.rates.database.user is "${cfg.database.user}", an existing
            user: with createLocally the services run as a dynamic user of
            that name, and systemd would run them as the existing account
            instead. Choose another name (the default is "rates").
          '';
        }
        {
          assertion = !cfg.database.createLocally
            -> cfg.database.passwordFile != null || isSocketDir cfg.database.host || cfg.environment ? PGPASSFILE;
          message = ''
            services.rates.database.createLocally is false and the server at
            "${toString cfg.database.host}" is reached over TCP, but no
            password is configured. Set services.rates.database.passwordFile
            to a file provisioned on this host (e.g. "/run/secrets/rates-db-password"),
            or set database.createLocally = true for a local database.
          '';
        }
        {
          assertion = clashing == [ ];
          message = ''
            services.rates.environment sets ${lib.concatStringsSep ", " clashing}.
            Use the module's options instead (host, port, workers, threads,
            database.*, seed.dumpFile), and database.passwordFile for the
            password: values in `environment` are stored world-readable in
            the Nix store.
          '';
        }
      ];

      warnings = lib.optional (cfg.serve.enable && !isLoopback cfg.host && !cfg.openFirewall) ''
        services.rates.host is "${cfg.host}" but services.rates.openFirewall is
        false: only clients your own firewall rules admit can reach port
        ${toString cfg.port}. Set openFirewall = true, or host = "127.0.0.1"
        behind a local reverse proxy.
      '';

      networking.firewall.allowedTCPPorts = lib.mkIf (cfg.serve.enable && cfg.openFirewall) [ cfg.port ];
    }

    (lib.mkIf cfg.database.createLocally {
      # The package follows system.stateVersion (PostgreSQL 17 for 25.11,
      # postgresql.nix): a supported major version that changes only when
      # the operator raises stateVersion after a pg_upgrade, never by itself.
      services.postgresql = {
        enable = true;
        ensureDatabases = [ cfg.database.name ];
        # nixpkgs' default pg_hba.conf has `local all all peer`: the Unix user
        # "rates" logs in as the role "rates" over the socket. This module
        # opens nothing to the network: PostgreSQL listens on localhost unless
        # the host sets services.postgresql.enableTCPIP (as the cluster's
        # database host does, nix/hosts/cluster.nix).
        ensureUsers = [
          {
            name = cfg.database.user;
            ensureDBOwnership = true;
          }
        ];
      };
    })

    (lib.mkIf (cfg.database.createLocally && cfg.database.passwordFile != null) {
      # Sets the local role's password for clients on other hosts, with the
      # SQL file the cluster tests run too (it says how the password stays out
      # of every command line, environment and log).
      systemd.services.rates-db-password = {
        description = "Set the rates PostgreSQL role's password from a file";
        wantedBy = [ "multi-user.target" ];
        after = [ "postgresql.target" ];
        wants = [ "postgresql.target" ];
        path = [ pg.finalPackage ];
        environment = {
          PGHOST = "/run/postgresql";
          PGPORT = toString pg.settings.port;
        };
        script = ''
          if [ ! -s "$CREDENTIALS_DIRECTORY/pgpassword" ]; then
            echo "rates-db-password: ${cfg.database.passwordFile} is empty" >&2
            exit 1
          fi
          psql --dbname=postgres --no-psqlrc --set=ON_ERROR_STOP=1 \
            --set=role=${lib.escapeShellArg cfg.database.user} \
            --set=password_file="$CREDENTIALS_DIRECTORY/pgpassword" \
            --file=${../db/role-password.sql}
          echo "rates-db-password: password of role ${cfg.database.user} set"
        '';
        # Runs again when the file is provisioned after boot: the secret may
        # arrive later than the first start.
        serviceConfig = hardening // {
          Type = "oneshot";
          RemainAfterExit = true;
          Restart = "on-failure";
          RestartSec = 5;
          User = pg.superUser;
          Group = pg.superUser;
          LoadCredential = [ "pgpassword:${cfg.database.passwordFile}" ];
          # No RemoveIPC=: it would delete the shared memory of the running
          # PostgreSQL, which belongs to the same user, when this unit stops.
        };
      };
    })

    (lib.mkIf cfg.seed.enable {
      systemd.services.rates-seed = databaseUnits // {
        description = "Load the rates data into PostgreSQL";
        wantedBy = [ "multi-user.target" ];
        environment = commonEnvironment // lib.optionalAttrs (cfg.seed.dumpFile != null) {
          RATES_DUMP = cfg.seed.dumpFile;
        };
        # The unit text holds every input (package, dump name, database), so
        # `nixos-rebuild switch` runs the seed again whenever one changes
        # (restartIfChanged, on by default); unchanged data is a no-op.
        serviceConfig = hardening // serviceUser // credentials // {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = lib.escapeShellArgs (
            [ (lib.getExe' cfg.package "rates-seed") ] ++ lib.optional cfg.seed.replace "--replace"
          );
          # A passing failure (PostgreSQL not ready within RATES_SEED_WAIT, a
          # dropped connection) is retried until it succeeds, so the host
          # recovers by itself. Exit status 2 (bad configuration) and 3 (other
          # data already loaded, seed.replace unset) need an operator:
          # retrying would only repeat them.
          Restart = "on-failure";
          RestartSec = 10;
          RestartPreventExitStatus = [ 2 3 ];
          # Generating the sample data needs a temporary file: PrivateTmp.
        };
      };
    })

    (lib.mkIf cfg.serve.enable {
      systemd.services.rates = lib.mkMerge [
        databaseUnits
        {
          description = "rates: JSON API of average daily shipping prices";
          wantedBy = [ "multi-user.target" ];
          environment = commonEnvironment // {
            RATES_HOST = cfg.host;
            RATES_PORT = toString cfg.port;
          } // lib.optionalAttrs (cfg.workers != null) {
            RATES_WORKERS = toString cfg.workers;
          } // lib.optionalAttrs (cfg.threads != null) {
            RATES_THREADS = toString cfg.threads;
          };
          serviceConfig = hardening // serviceUser // credentials // {
            Type = "exec";
            ExecStart = lib.getExe' cfg.package "rates-serve";
            # gunicorn: SIGHUP starts new workers, then lets the old ones
            # finish; SIGTERM stops gracefully within its 30 s graceful
            # timeout, so systemd waits longer before SIGKILL. KillMode=mixed
            # sends SIGTERM to the arbiter alone, which stops its workers.
            ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
            KillSignal = "SIGTERM";
            KillMode = "mixed";
            TimeoutStopSec = 45;
            Restart = "on-failure";
            RestartSec = 5;
          };
        }
        # The API starts once the seed has run. Wanted, not required:
        # Requires= would restart the API whenever the seed restarts (a new
        # dump, `nixos-rebuild switch`), dropping requests, and would keep it
        # down after one failed seed until an operator acts. The API needs
        # neither: /readyz answers 503 until the data is there, and rates-seed
        # sends NOTIFY rates_data when it commits, so the running workers
        # serve the new data without a restart.
        (lib.mkIf cfg.seed.enable {
          after = [ "rates-seed.service" ];
          wants = [ "rates-seed.service" ];
        })
      ];
    })
  ]);
}
