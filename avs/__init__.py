"""The ``avs`` command line (``avs --help``). Each subcommand imports only what it needs."""
