#!/usr/bin/env bash
# Starts (or stops) a private Redis and PostgreSQL for the tests, on loopback ports of their
# own, with their data under DIR. Never touches a system-wide server.
#
# Usage: bash scripts/services.sh start DIR [WATCH_PID]
#            prints the environment the tests read, e.g.
#              export TOOLGATE_TEST_REDIS=redis://127.0.0.1:41234/
#              export TOOLGATE_TEST_POSTGRES=postgres://toolgate@127.0.0.1:41235/toolgate
#            With WATCH_PID, both servers are stopped when that process ends.
#        bash scripts/services.sh stop DIR
# Needs redis-server and PostgreSQL (Debian packages redis-server, postgresql): the test
# command installs them (scripts/setup-test-deps.sh).
set -euo pipefail

cmd="${1:-}"
dir="${2:-}"
if [ -z "$cmd" ] || [ -z "$dir" ]; then
    echo "usage: $0 start|stop DIR [WATCH_PID]" >&2
    exit 2
fi

log() { printf 'services: %s\n' "$*" >&2; }

pg_bin() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/pg_ctl" ]; then
            echo "$d"
            return 0
        fi
    done
    if command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v pg_ctl)"
        return 0
    fi
    return 1
}

# PostgreSQL refuses to run as root: run its programs as the `postgres` user then.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

stop() {
    if [ -f "$dir/redis.pid" ]; then
        kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
        rm -f "$dir/redis.pid"
    fi
    if [ -f "$dir/pg/postmaster.pid" ]; then
        local bin
        bin="$(pg_bin)"
        as_pg "$bin/pg_ctl" -D "$dir/pg" -m immediate stop >/dev/null 2>&1 || true
    fi
}

start() {
    command -v redis-server >/dev/null 2>&1 || {
        log "redis-server not found: install the Debian package redis-server (bash scripts/setup-test-deps.sh)"
        exit 1
    }
    local bin
    bin="$(pg_bin)" || {
        log "PostgreSQL not found: install the Debian package postgresql (bash scripts/setup-test-deps.sh)"
        exit 1
    }
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"

    local redis_port pg_port
    redis_port="$(free_port)"
    redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
        --dir "$dir" --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >&2
    for _ in $(seq 100); do
        redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
        sleep 0.1
    done

    pg_port="$(free_port)"
    mkdir -p "$dir/pg"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres "$dir/pg"
        chmod 700 "$dir/pg"
        chmod o+x "$dir"
    fi
    as_pg "$bin/initdb" -D "$dir/pg" -A trust -U toolgate --no-sync >/dev/null
    as_pg "$bin/pg_ctl" -D "$dir/pg" -l "$dir/pg/server.log" -w \
        -o "-h 127.0.0.1 -p $pg_port -k $dir/pg -c fsync=off -c max_connections=200" start >/dev/null
    as_pg "$bin/createdb" -h 127.0.0.1 -p "$pg_port" -U toolgate toolgate

    if [ -n "${3:-}" ]; then
        local watched="$3"
        (
            trap '' HUP
            while kill -0 "$watched" 2>/dev/null; do sleep 1; done
            bash "$0" stop "$dir"
            rm -rf "$dir"
        ) </dev/null >/dev/null 2>&1 &
        disown
    fi
    log "redis on 127.0.0.1:$redis_port, postgresql on 127.0.0.1:$pg_port (data in $dir)"
    echo "export TOOLGATE_TEST_REDIS=redis://127.0.0.1:$redis_port/"
    echo "export TOOLGATE_TEST_POSTGRES=postgres://toolgate@127.0.0.1:$pg_port/toolgate"
}

case "$cmd" in
    start) start "$@" ;;
    stop) stop ;;
    *)
        echo "usage: $0 start|stop DIR [WATCH_PID]" >&2
        exit 2
        ;;
esac
