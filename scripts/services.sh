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
#        bash scripts/services.sh redis-stop|redis-start|pg-stop|pg-start DIR
#            stops one of a started pair, or starts it again on the same port (its port is
#            recorded in DIR/redis.port, DIR/pg.port), for tests of a store going away.
#            Redis comes back empty (nothing is saved); PostgreSQL keeps its data.
# Needs redis-server and PostgreSQL (Debian packages redis-server, postgresql): the test
# command installs them (scripts/setup-test-deps.sh).
set -euo pipefail

cmd="${1:-}"
dir="${2:-}"
if [ -z "$cmd" ] || [ -z "$dir" ]; then
    echo "usage: $0 start|stop|redis-stop|redis-start|pg-stop|pg-start DIR [WATCH_PID]" >&2
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

# Redis on port $1, data (none saved) and log in $dir.
run_redis() {
    redis-server --bind 127.0.0.1 --port "$1" --save '' --appendonly no \
        --dir "$dir" --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >&2
    for _ in $(seq 100); do
        redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    log "redis did not answer on 127.0.0.1:$1 (see $dir/redis.log)"
    return 1
}

# PostgreSQL of $dir/pg on port $2 ($1: its bin directory).
run_pg() {
    as_pg "$1/pg_ctl" -D "$dir/pg" -l "$dir/pg/server.log" -w \
        -o "-h 127.0.0.1 -p $2 -k $dir/pg -c fsync=off -c max_connections=200" start >/dev/null
}

# Waits until nothing listens on 127.0.0.1:$1 any more.
wait_closed() {
    for _ in $(seq 100); do
        python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.2)' "$1" \
            2>/dev/null || return 0
        sleep 0.1
    done
    log "127.0.0.1:$1 still accepts connections"
    return 1
}

# The port recorded for $1 (redis or pg) by `start`.
port_of() {
    [ -f "$dir/$1.port" ] || {
        log "no $dir/$1.port: start the pair with \`$0 start $dir\` first"
        exit 1
    }
    cat "$dir/$1.port"
}

# Stopped once its port is closed (the process may linger a moment as a zombie).
redis_stop() {
    local port pid
    port="$(port_of redis)"
    if [ -f "$dir/redis.pid" ]; then
        pid="$(cat "$dir/redis.pid")"
        # SHUTDOWN is immediate; SIGTERM waits for Redis's next timer tick (up to seconds).
        redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
        rm -f "$dir/redis.pid"
    fi
    wait_closed "$port"
}

redis_start() {
    run_redis "$(port_of redis)"
}

pg_stop() {
    local port bin
    port="$(port_of pg)"
    bin="$(pg_bin)"
    as_pg "$bin/pg_ctl" -D "$dir/pg" -m fast -w stop >/dev/null
    wait_closed "$port"
}

pg_start() {
    run_pg "$(pg_bin)" "$(port_of pg)"
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
    echo "$redis_port" >"$dir/redis.port"
    run_redis "$redis_port" || true

    pg_port="$(free_port)"
    echo "$pg_port" >"$dir/pg.port"
    mkdir -p "$dir/pg"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres "$dir/pg"
        chmod 700 "$dir/pg"
        chmod o+x "$dir"
    fi
    as_pg "$bin/initdb" -D "$dir/pg" -A trust -U toolgate --no-sync >/dev/null
    run_pg "$bin" "$pg_port"
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
    redis-stop | redis-start | pg-stop | pg-start)
        [ -d "$dir" ] || {
            log "no directory $dir"
            exit 1
        }
        dir="$(cd "$dir" && pwd)"
        "${cmd/-/_}"
        ;;
    *)
        echo "usage: $0 start|stop|redis-stop|redis-start|pg-stop|pg-start DIR [WATCH_PID]" >&2
        exit 2
        ;;
esac
