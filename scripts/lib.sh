# shellcheck shell=bash
# What the shell scripts of scripts/ and bench/ share: progress lines, running a command as root
# or as the postgres user, throwaway PostgreSQL clusters, and the release binaries. Sourced,
# never run; each script first changes to the repository root, then:
#
#   . scripts/lib.sh
#
# bench/run (Python) starts and stops its cluster with cluster_start and cluster_stop too. The
# end-to-end tests have their own cluster bootstrap in Rust (tests/src/cluster.rs): the tests
# need it as a type (keeping a failed test's cluster, connections), and a Rust test should not
# shell out to this file. Rust and the scripts thus have one implementation each, with the same
# conventions: initdb as the postgres user when run as root, trust authentication, UTF8 with
# the C.UTF-8 locale, and a Unix socket only, in the cluster's own directory.

# The PostgreSQL programs used: initdb, pg_ctl, psql, pgbench.
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

# A progress line on stderr.
say() { printf '==> %s\n' "$*" >&2; }

# Runs a command as the postgres user when we are root (initdb and postgres refuse to run as
# root), else as ourselves.
as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# Runs a command as root: directly when we are root, else through sudo (installing Debian
# packages and the extension).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else printf 'error: root is needed to run: %s\nHINT:  Run this as root, or install sudo.\n' "$*" >&2; exit 1
    fi
}

# Makes a new directory /tmp/NAME.XXXXXX that the postgres user can use, and prints its path:
#   WORK=$(work_dir dbmirror-bench)
work_dir() {
    local dir
    dir=$(mktemp -d "/tmp/$1.XXXXXX")
    chmod 755 "$dir"
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir"; fi
    printf '%s\n' "$dir"
}

# The data directories of the clusters cluster_start has made, for clusters_stop.
CLUSTERS=()

# cluster_start DATA [SETTING=VALUE ...]
# Makes a cluster in DATA (which must not exist yet) and starts it, its log in DATA.log, with
# no TCP listener and its Unix socket in the directory holding DATA. Each SETTING=VALUE is a
# server setting for this cluster (`port=5501`, `fsync=off`); values must not contain spaces.
# Call clusters_stop from an EXIT trap to stop it again.
cluster_start() {
    local data=$1 options setting
    shift
    options="-c listen_addresses='' -c unix_socket_directories='$(dirname "$data")'"
    for setting in "$@"; do options+=" -c $setting"; done
    CLUSTERS+=("$data")
    as_postgres "$PG_BIN/initdb" -D "$data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
    as_postgres "$PG_BIN/pg_ctl" start -w -D "$data" -l "$data.log" -o "$options" >/dev/null
}

# cluster_stop DATA [MODE]
# Stops the cluster in DATA if it is running, with pg_ctl's shutdown MODE (default fast;
# immediate when the data is thrown away anyway). Never fails, so that it can run from an EXIT
# trap after anything went wrong.
cluster_stop() {
    if [ -f "$1/postmaster.pid" ]; then
        as_postgres "$PG_BIN/pg_ctl" stop -m "${2:-fast}" -D "$1" >/dev/null 2>&1 || true
    fi
}

# clusters_stop [MODE]
# cluster_stop for every cluster cluster_start has made in this shell.
clusters_stop() {
    local data
    for data in "${CLUSTERS[@]}"; do cluster_stop "$data" "${1:-fast}"; done
}

# Builds target/release/dbmirror-export and dbmirror-apply unless both are there.
release_binaries() {
    if [ ! -x target/release/dbmirror-export ] || [ ! -x target/release/dbmirror-apply ]; then
        cargo build --release -q --bins -p dbmirror-export -p dbmirror-apply
    fi
}

# Seconds since the epoch, with nanoseconds, for timing.
now() { date +%s.%N; }

# The median of numbers (the lower of the middle two for an even count).
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
