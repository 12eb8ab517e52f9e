"""The ground floor: helpers every room shares (settings from the environment, TOML
configs, file hashes, L2 normalisation, progress bars, the --quiet/--json output)."""
