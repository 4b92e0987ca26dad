# Shared by tools/demo, tools/test and bench/: find the repo, install what is
# missing, build. Sourced, not run.

PGSWEEPER_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_BINDIR=${PG_BINDIR:-/usr/lib/postgresql/15/bin}

# Debian packages the build, the tests and the demo need beyond the base image.
PGSWEEPER_PACKAGES=(
        gcc pkg-config meson ninja-build
        libpq-dev libyaml-dev libsystemd-dev scdoc
        postgresql-15 systemd
        python3 python3-pytest python3-psycopg
)

as_root() {
        if [ "$(id -u)" -eq 0 ]; then
                "$@"
        elif command -v sudo >/dev/null; then
                sudo "$@"
        else
                echo "need root (or sudo) to run: $*" >&2
                return 1
        fi
}

# Install the packages that are not installed yet; no network use when none is missing.
ensure_packages() {
        local missing=() p
        for p in "${PGSWEEPER_PACKAGES[@]}" "$@"; do
                dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
        done
        [ ${#missing[@]} -eq 0 ] && return 0
        echo "==> installing: ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# build DIR [meson options...]: configure once, then compile.
build() {
        local dir=$1
        shift
        if [ ! -f "$PGSWEEPER_ROOT/$dir/build.ninja" ]; then
                meson setup "$PGSWEEPER_ROOT/$dir" "$PGSWEEPER_ROOT" "$@"
        fi
        meson compile -C "$PGSWEEPER_ROOT/$dir"
}

# Throwaway PostgreSQL cluster in a temp dir, run as the postgres OS user when
# we are root (initdb refuses root). Sets PGHOST (socket dir), PGPORT and
# PG_PID; pg_stop_cluster stops exactly that pid and removes the dir.
pg_run() {
        if [ "$(id -u)" -eq 0 ]; then setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; else "$@"; fi
}

free_port() {
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pg_start_cluster() {
        PG_DIR=$(mktemp -d /tmp/pgsweeper-pg.XXXXXX)
        chmod 755 "$PG_DIR"
        [ "$(id -u)" -eq 0 ] && chown postgres: "$PG_DIR"
        pg_run "$PG_BINDIR/initdb" -D "$PG_DIR/data" -A trust -U postgres --no-sync >"$PG_DIR/initdb.log" 2>&1 || {
                cat "$PG_DIR/initdb.log" >&2
                return 1
        }
        PGHOST=$PG_DIR
        PGPORT=$(free_port)
        export PGHOST PGPORT
        # exec in a subshell: $! is then the postmaster itself, which we stop by pid
        (exec >"$PG_DIR/server.log" 2>&1
         if [ "$(id -u)" -eq 0 ]; then exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$PG_BINDIR/postgres" \
                -D "$PG_DIR/data" -k "$PG_DIR" -p "$PGPORT" -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off "$@"
         else exec "$PG_BINDIR/postgres" \
                -D "$PG_DIR/data" -k "$PG_DIR" -p "$PGPORT" -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off "$@"
         fi) &
        PG_PID=$!
        local i
        for i in $(seq 1 100); do
                "$PG_BINDIR/pg_isready" -q -h "$PGHOST" -p "$PGPORT" && return 0
                sleep 0.1
        done
        echo "PostgreSQL did not start:" >&2
        cat "$PG_DIR/server.log" >&2
        return 1
}

pg_stop_cluster() {
        if [ -n "${PG_PID:-}" ] && kill -0 "$PG_PID" 2>/dev/null; then
                kill -INT "$PG_PID"
                for _ in $(seq 1 100); do kill -0 "$PG_PID" 2>/dev/null || break; sleep 0.1; done
                kill -KILL "$PG_PID" 2>/dev/null || true
        fi
        [ -n "${PG_DIR:-}" ] && rm -rf "$PG_DIR"
        PG_PID= PG_DIR=
}

# The least-privilege role pgsweeper connects as, and a non-superuser app role.
pg_create_roles() {
        psql -q -X -U postgres -d postgres -v ON_ERROR_STOP=1 <<'SQL'
CREATE ROLE pgsweeper LOGIN;
GRANT pg_monitor, pg_signal_backend TO pgsweeper;
CREATE ROLE app LOGIN;
CREATE DATABASE appdb OWNER app;
SQL
}
