# The service as an OCI image: `docker run IMAGE` serves on port 3000,
# `docker run IMAGE rates-seed` loads the data once, and `rates-probe` is the
# health check (docker-compose.yaml runs all three). Configuration (PGHOST,
# PGPASSWORD or PGPASSWORD_FILE, RATES_*) comes from the container's
# environment; the image carries no secrets.
#
# buildLayeredImage rather than streamLayeredImage
# (doc/build-helpers/images/dockertools.section.md): its result is the image
# tarball itself, so `nix build .#image && docker load < result` works, and the
# same file can be pushed or archived; one store path per layer lets pulls share
# the Python and PostgreSQL layers across releases.
{ dockerTools
, rates
}:
dockerTools.buildLayeredImage {
  name = "rates";
  tag = rates.version;

  contents = [
    rates # bin/rates-serve, bin/rates-seed and bin/rates-probe, linked into /bin
    # /etc/passwd and /etc/group with root and nobody (65534): libpq looks up
    # the current user's name for its default PGUSER.
    dockerTools.fakeNss
    # /etc/ssl/certs for libpq's sslrootcert=system (verify-full to a managed
    # PostgreSQL); a few hundred kilobytes.
    dockerTools.caCertificates
  ];

  # gunicorn's worker heartbeat files and Python's tempfile need a writable
  # /tmp. No shell is added: the Python wrappers carry their own interpreter.
  extraCommands = ''
    mkdir -m 1777 tmp
  '';

  config = {
    # Cmd, not Entrypoint, so that `docker run IMAGE rates-seed` replaces it.
    Cmd = [ "rates-serve" ];
    User = "65534:65534";
    WorkingDir = "/tmp";
    ExposedPorts."3000/tcp" = { };
    Env = [
      "PATH=/bin"
      # The service defaults to 127.0.0.1, unreachable from outside a container.
      "RATES_HOST=0.0.0.0"
      "RATES_PORT=3000"
      "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"
      "PYTHONUNBUFFERED=1"
    ];
  };
}
