#!/usr/bin/env bash
# Helpers shared by scripts/test and scripts/dev: install what a fresh machine lacks,
# skip what is there.

say() { printf '==> %s\n' "$*" >&2; }

# Root commands go through sudo only when we are not root, so CI containers running as
# root need no sudo binary. -n: never prompt, CI has no stdin.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

ensure_nextest() {
    if cargo nextest --version >/dev/null 2>&1; then
        say "cargo-nextest present: $(cargo nextest --version | head -n1)"
    else
        say "cargo-nextest missing: installing it (cargo install cargo-nextest --locked)"
        cargo install cargo-nextest --locked
    fi
}

# Debian's Chromium, which tests/ui_browser.rs drives with playwright-core: Playwright's
# own browser downloads are not reachable from CI, a Debian package is.
ensure_chromium() {
    if [ -x /usr/bin/chromium ]; then
        say "Chromium present: $(/usr/bin/chromium --version 2>/dev/null | head -n1)"
        return
    fi
    say "Chromium missing: apt-get install chromium"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
}

pg_ready() {
    command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432
}

# The newest installed cluster version, e.g. `15` (from /etc/postgresql/15/main).
pg_version() {
    ls /etc/postgresql 2>/dev/null | sort -V | tail -n1
}

ensure_postgres() {
    if pg_ready; then
        [ -n "$(pg_version)" ] && ensure_local_trust "$(pg_version)"
        say "PostgreSQL is accepting connections at 127.0.0.1:5432"
        return
    fi
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        say "PostgreSQL is not installed: apt-get install postgresql"
        as_root apt-get update
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
        local version
        version="$(pg_version)"
        if [ -z "$version" ]; then
            version="$(ls /usr/lib/postgresql | sort -V | tail -n1)"
            as_root pg_createcluster "$version" main
        fi
    fi
    local version
    version="$(pg_version)"
    ensure_local_trust "$version"
    say "starting PostgreSQL $version (pg_ctlcluster $version main start)"
    # --skip-systemctl-redirect: containers and CI runners usually have no systemd.
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 30); do
        if pg_ready; then
            say "PostgreSQL is accepting connections at 127.0.0.1:5432"
            return
        fi
        sleep 1
    done
    say "PostgreSQL did not become ready at 127.0.0.1:5432 within 30s"
    exit 1
}

# Tests and `sagaflow dev` connect as `postgres` over TCP from 127.0.0.1 without a
# password. Debian's cluster asks for one (scram-sha-256), including the cluster that
# comes preinstalled on the project's machines, so a trust line for the `postgres` role
# from 127.0.0.1 only is put first in pg_hba.conf, once, marked as ours. (Any local user
# can then connect as `postgres`: fine for a development or CI machine, not for a shared
# one.) Done before the cluster starts, so it takes
# effect without a reload.
PG_TRUST_MARK="# sagaflow scripts/lib.sh: local tests connect without a password"
ensure_local_trust() {
    local hba="/etc/postgresql/$1/main/pg_hba.conf"
    [ -f "$hba" ] || return 0
    if as_root grep -qF "$PG_TRUST_MARK" "$hba" || as_root grep -qE '^host\s+all\s+(all|postgres)\s+127\.0\.0\.1/32\s+trust' "$hba"; then
        return
    fi
    say "allowing password-less connections from 127.0.0.1 in $hba (tests and sagaflow dev connect as postgres)"
    as_root sed -i "1i host all postgres 127.0.0.1/32 trust\n$PG_TRUST_MARK" "$hba"
    # A cluster the package already started still runs with the old rules.
    as_root pg_ctlcluster --skip-systemctl-redirect "$1" main reload 2>/dev/null || true
}


# A free TCP port on 127.0.0.1 (the kernel's choice; released before it is used).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# kill -0 also succeeds on a zombie, which a broker started by this shell becomes.
alive() {
    [ -r "/proc/$1/stat" ] && ! grep -qE '^[0-9]+ \(.*\) Z' "/proc/$1/stat"
}

# True when $1 is the broker of directory $2, not another process that reused its pid.
is_broker() {
    alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF "kafka.Kafka $2/server.properties"
}
