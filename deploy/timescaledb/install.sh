#!/usr/bin/env bash
# Install TimescaleDB (Apache-2 edition) into the local PostgreSQL cluster.
#
# Usage: deploy/timescaledb/install.sh
# Env overrides: PGVER (major version), PGCLUSTER (default main),
#                PGHOST (127.0.0.1), PGPORT (5432), PGUSER (postgres), TMPDIR.
#
# Strategy:
#   1. If the extension is already available and preloaded: do nothing.
#   2. If it is available but not preloaded: only configure + restart.
#   3. Otherwise install it: the distro package postgresql-<ver>-timescaledb
#      when the machine's apt sources have one; else build Debian's source
#      package (from trixie, which ships 2.19.x) against the local server.
# Then preload it, restart the cluster and prove CREATE EXTENSION works.
#
# Safe to re-run: every step checks before it changes anything.

set -Eeuo pipefail

readonly ME="install.sh"
PGHOST="${PGHOST:-127.0.0.1}"
PGPORT="${PGPORT:-5432}"
PGUSER="${PGUSER:-postgres}"
PGCLUSTER="${PGCLUSTER:-main}"
PGVER="${PGVER:-}"
# Suite that carries a timescaledb source package we know builds here.
readonly SRC_SUITE="trixie"
readonly SRC_PKG="timescaledb"
readonly KEYRING="/usr/share/keyrings/debian-archive-keyring.gpg"

STEP="start"
WORKDIR=""
SCRATCH_DB=""
SUDO=""

say()  { echo "$ME: $*"; }
die()  { echo "$ME: ERROR: $*" >&2; exit 1; }

# --- error handling / cleanup -------------------------------------------------

on_error() {
    local rc=$? line=$1
    # With errtrace the trap also fires inside $(...) subshells; report once,
    # from the main shell.
    [[ $BASHPID == "$$" ]] || exit "$rc"
    echo "$ME: FAILED during step '$STEP' (line $line, exit $rc)" >&2
    exit "$rc"
}
trap 'on_error $LINENO' ERR

cleanup() {
    # Never let cleanup itself trigger the ERR trap or change the exit code.
    set +e
    if [[ -n "$SCRATCH_DB" ]]; then
        psql_q -d postgres -c "DROP DATABASE IF EXISTS \"$SCRATCH_DB\"" >/dev/null 2>&1
    fi
    if [[ -n "$WORKDIR" && -d "$WORKDIR" ]]; then
        rm -rf -- "$WORKDIR"
    fi
}
trap cleanup EXIT

# Run a command with its output captured in a log file; on failure print a
# one-line message plus the log's tail instead of a wall of apt/cmake noise.
run_logged() {
    local log=$1 what=$2; shift 2
    if ! "$@" >>"$log" 2>&1; then
        echo "$ME: ERROR: $what failed; last lines of $log:" >&2
        tail -n 25 "$log" | sed 's/^/    | /' >&2
        # Keep the log: copy it out of WORKDIR, which cleanup removes.
        local kept="${TMPDIR:-/tmp}/timescaledb-install-failed.log"
        cp -f "$log" "$kept" 2>/dev/null && echo "$ME: full log kept at $kept" >&2
        exit 1
    fi
}

# --- helpers ------------------------------------------------------------------

# Root needs nothing; otherwise use sudo for privileged steps if we can.
init_privileges() {
    if [[ $EUID -eq 0 ]]; then
        SUDO=""
    elif command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        die "must run as root (or have sudo) to install packages and edit the cluster config"
    fi
}

# Run a command in another directory without changing ours (for run_logged).
in_dir() {
    local dir=$1; shift
    (cd "$dir" && "$@")
}

# Quiet psql: no psqlrc, unaligned output, stop on error, no NOTICE chatter.
psql_q() {
    PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" psql -X -q -At -v ON_ERROR_STOP=1 -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" "$@"
}

server_up() {
    pg_isready -q -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" >/dev/null 2>&1
}

wait_for_server() {
    local i
    for i in $(seq 1 60); do
        server_up && return 0
        sleep 1
    done
    die "PostgreSQL on $PGHOST:$PGPORT did not accept connections within 60s (see /var/log/postgresql/postgresql-$PGVER-$PGCLUSTER.log)"
}

# Choose the major version: explicit PGVER, else the running server, else the
# only (or newest) cluster directory in /etc/postgresql.
detect_version() {
    STEP="detect PostgreSQL version"
    local running=""
    if server_up; then
        running=$(( $(psql_q -d postgres -c 'SHOW server_version_num') / 10000 ))
    fi
    if [[ -n "$PGVER" ]]; then
        # A mismatch would make us build for one server and test another.
        [[ -z "$running" || "$running" == "$PGVER" ]] ||
            die "PGVER=$PGVER but the server on $PGHOST:$PGPORT is PostgreSQL $running"
        say "using PGVER=$PGVER from the environment"
    elif [[ -n "$running" ]]; then
        PGVER=$running
        say "running server is PostgreSQL $PGVER ($PGHOST:$PGPORT)"
    else
        PGVER=$(ls -1 /etc/postgresql 2>/dev/null | sort -n | tail -n 1 || true)
        [[ -n "$PGVER" ]] || die "no running server on $PGHOST:$PGPORT and nothing in /etc/postgresql"
        say "no running server; using newest configured cluster PostgreSQL $PGVER"
    fi
}

# pg_ctlcluster must bypass systemd (it is not running on these machines).
cluster_ctl() {
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$PGVER" "$PGCLUSTER" "$1"
}

ensure_server_running() {
    STEP="start PostgreSQL"
    server_up && return 0
    say "server not running; starting cluster $PGVER/$PGCLUSTER"
    cluster_ctl start || die "could not start cluster $PGVER/$PGCLUSTER (see /var/log/postgresql/postgresql-$PGVER-$PGCLUSTER.log)"
    wait_for_server
}

is_available() {
    [[ "$(psql_q -d postgres -c "SELECT 1 FROM pg_available_extensions WHERE name='timescaledb'")" == "1" ]]
}

is_preloaded() {
    psql_q -d postgres -c 'SHOW shared_preload_libraries' | tr ',' '\n' | tr -d ' "' | grep -x timescaledb >/dev/null
}

apt_get() {
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -q -y "$@"
}

# Candidate version of a binary package in the machine's apt sources ("" if none).
apt_candidate() {
    apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}' | grep -v '^(none)$' || true
}

# --- install paths ------------------------------------------------------------

apt_update() {
    STEP="apt-get update"
    say "refreshing apt package lists"
    run_logged "$WORKDIR/apt.log" "apt-get update" apt_get update
}

install_binary_package() {
    local pkg=$1
    STEP="install $pkg"
    say "installing distro package $pkg"
    run_logged "$WORKDIR/apt.log" "apt-get install $pkg" apt_get install "$pkg"
}

# The machine's own Debian mirror URI: from deb822 debian.sources (the stanza
# whose Suites include the plain release codename, not -security), or from a
# one-line sources.list entry. Re-using it keeps us on whatever mirror/proxy
# this machine is allowed to reach.
debian_mirror_uri() {
    local codename uri=""
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
    if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
        uri=$(awk -v cn="$codename" '
            function flush() { if (hit && uri != "" && !done) { print uri; done = 1 } hit = 0; uri = "" }
            /^[[:space:]]*$/ { flush(); next }
            /^[[:space:]]*#/ { next }
            tolower($1) == "uris:"   { uri = $2 }
            tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == cn) hit = 1 }
            END { flush() }' /etc/apt/sources.list.d/debian.sources)
    fi
    if [[ -z "$uri" && -r /etc/apt/sources.list ]]; then
        # deb [opts] URI suite components...
        uri=$(awk -v cn="$codename" '
            $1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                          if ($(i+1) == cn) { print $i; exit } }' /etc/apt/sources.list)
    fi
    [[ -n "$uri" ]] || die "could not find the Debian mirror URI for '$codename' in /etc/apt/sources.list{,.d/debian.sources}"
    echo "$uri"
}

# Download the trixie source package with a private apt config, so the
# machine's sources, lists and caches are left untouched. Signatures are
# verified against debian-archive-keyring, which (2023.3+deb12u2 and later)
# already contains the trixie archive keys.
fetch_source() {
    STEP="fetch $SRC_PKG source from $SRC_SUITE"
    local uri apt_dir="$WORKDIR/apt"
    uri=$(debian_mirror_uri)
    say "downloading $SRC_PKG source package from $uri $SRC_SUITE"
    # Early, readable failure if the keyring predates trixie (apt would
    # refuse anyway; we never turn signature checking off). Needs gpg, which
    # apt itself does not; without it apt's own check is the only one.
    # (grep without -q: an early exit would SIGPIPE gpg and, with pipefail,
    # look like a failure.)
    mkdir -m 700 -p "$WORKDIR/gnupg"
    if command -v gpg >/dev/null 2>&1 &&
       ! GNUPGHOME="$WORKDIR/gnupg" gpg --batch --show-keys "$KEYRING" 2>/dev/null | grep "/$SRC_SUITE)" >/dev/null; then
        die "$KEYRING has no $SRC_SUITE keys; upgrade debian-archive-keyring (signature checks stay on)"
    fi
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$WORKDIR/src"
    echo "deb-src [signed-by=$KEYRING] $uri $SRC_SUITE main" >"$apt_dir/sources.list"
    # apt drops privileges to _apt for downloads; let it write into our dirs.
    if [[ $EUID -eq 0 ]] && id _apt >/dev/null 2>&1; then
        chmod 755 "$WORKDIR"
        chown -R _apt "$apt_dir/lists/partial" "$WORKDIR/src"
    fi
    local -a opts=(
        -o "Dir::Etc::sourcelist=$apt_dir/sources.list"
        -o "Dir::Etc::sourceparts=/nonexistent"
        -o "Dir::State::Lists=$apt_dir/lists"
        -o "Dir::Cache=$apt_dir/cache"
    )
    run_logged "$WORKDIR/apt.log" "apt-get update ($SRC_SUITE sources)" apt-get -q "${opts[@]}" update
    run_logged "$WORKDIR/apt.log" "apt-get source $SRC_PKG" \
        in_dir "$WORKDIR/src" apt-get -q "${opts[@]}" source --download-only "$SRC_PKG"
}

build_from_source() {
    local pg_config="/usr/lib/postgresql/$PGVER/bin/pg_config"

    STEP="install build dependencies"
    say "installing build dependencies (postgresql-server-dev-$PGVER, cmake, dpkg-dev)"
    run_logged "$WORKDIR/apt.log" "apt-get install build dependencies" \
        apt_get install "postgresql-server-dev-$PGVER" cmake dpkg-dev build-essential

    fetch_source

    STEP="unpack $SRC_PKG source"
    local dsc srcdir
    dsc=$(ls "$WORKDIR"/src/"${SRC_PKG}"_*.dsc 2>/dev/null | head -n 1)
    [[ -n "$dsc" ]] || die "no $SRC_PKG .dsc downloaded"
    say "unpacking $(basename "$dsc")"
    srcdir="$WORKDIR/build-src"
    run_logged "$WORKDIR/build.log" "dpkg-source -x" dpkg-source -x "$dsc" "$srcdir"

    STEP="configure $SRC_PKG (cmake)"
    say "configuring (Apache-2 only, no tests) against $pg_config"
    run_logged "$WORKDIR/build.log" "bootstrap (cmake)" \
        in_dir "$srcdir" ./bootstrap -DAPACHE_ONLY=1 -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
                                     -DWARNINGS_AS_ERRORS=OFF -DPG_CONFIG="$pg_config"

    STEP="build $SRC_PKG"
    say "compiling and installing (make -j$(nproc))"
    run_logged "$WORKDIR/build.log" "make" make -C "$srcdir/build" -j"$(nproc)"
    run_logged "$WORKDIR/build.log" "make install" $SUDO make -C "$srcdir/build" install
}

install_timescaledb() {
    STEP="create work directory"
    WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/timescaledb-install.XXXXXX")
    apt_update
    local pkg="postgresql-$PGVER-timescaledb" cand
    cand=$(apt_candidate "$pkg")
    if [[ -n "$cand" ]]; then
        install_binary_package "$pkg"
    else
        say "no $pkg in this machine's apt sources; building from Debian's $SRC_SUITE source package"
        build_from_source
    fi
    STEP="check extension files"
    is_available || die "timescaledb still not in pg_available_extensions after install"
}

# --- configuration ------------------------------------------------------------

# Add timescaledb to the *current* preload list (keeping anything else that is
# already preloaded) in a conf.d file, then restart. conf.d is included at the
# end of postgresql.conf on Debian, so this wins over postgresql.conf.
configure_preload() {
    STEP="configure shared_preload_libraries"
    local confdir="/etc/postgresql/$PGVER/$PGCLUSTER/conf.d"
    local conf="$confdir/timescaledb.conf" current libs
    [[ -d "$confdir" ]] || die "$confdir does not exist (is cluster $PGVER/$PGCLUSTER a Debian cluster?)"
    current=$(psql_q -d postgres -c 'SHOW shared_preload_libraries' | tr -d ' "')
    libs="timescaledb${current:+,$current}"
    say "writing $conf (shared_preload_libraries = '$libs')"
    $SUDO tee "$conf" >/dev/null <<EOF
# Managed by deploy/timescaledb/install.sh
shared_preload_libraries = '$libs'
timescaledb.telemetry_level = off
EOF

    STEP="restart PostgreSQL"
    say "restarting cluster $PGVER/$PGCLUSTER"
    cluster_ctl restart || die "restart of $PGVER/$PGCLUSTER failed (see /var/log/postgresql/postgresql-$PGVER-$PGCLUSTER.log)"
    wait_for_server
    if ! is_preloaded; then
        local src
        src=$(psql_q -d postgres -c "SELECT sourcefile||':'||sourceline FROM pg_settings WHERE name='shared_preload_libraries'")
        die "timescaledb still not preloaded after restart; the setting comes from $src"
    fi
}

# Prove it works: CREATE EXTENSION in a throw-away database.
verify() {
    STEP="verify CREATE EXTENSION"
    SCRATCH_DB="tsdb_install_check_$$"
    psql_q -d postgres -c "DROP DATABASE IF EXISTS \"$SCRATCH_DB\"" >/dev/null
    psql_q -d postgres -c "CREATE DATABASE \"$SCRATCH_DB\"" >/dev/null
    local out version license
    out=$(psql_q -d "$SCRATCH_DB" -c 'CREATE EXTENSION IF NOT EXISTS timescaledb' \
              -c "SELECT extversion FROM pg_extension WHERE extname='timescaledb'" \
              -c 'SHOW timescaledb.license')
    version=$(sed -n 1p <<<"$out")
    license=$(sed -n 2p <<<"$out")
    psql_q -d postgres -c "DROP DATABASE \"$SCRATCH_DB\"" >/dev/null
    SCRATCH_DB=""
    say "CREATE EXTENSION timescaledb works (checked in a scratch database, now dropped)"
    say "timescaledb version: $version"
    say "timescaledb.license: $license"
}

# --- main ---------------------------------------------------------------------

main() {
    init_privileges
    detect_version
    ensure_server_running

    STEP="check current state"
    local available=no preloaded=no
    is_available && available=yes
    is_preloaded && preloaded=yes
    if [[ $available == yes && $preloaded == yes ]]; then
        local v
        v=$(psql_q -d postgres -c "SELECT default_version FROM pg_available_extensions WHERE name='timescaledb'")
        say "timescaledb $v already installed and preloaded in PostgreSQL $PGVER; nothing to do"
        return 0
    fi

    if [[ $available == yes ]]; then
        say "timescaledb is installed but not preloaded; configuring only"
    else
        install_timescaledb
    fi
    configure_preload
    verify
    say "done"
}

main "$@"
