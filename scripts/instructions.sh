#!/usr/bin/env bash
# Instructions toolgate executes per `tools/call`, counted by valgrind's callgrind: unlike
# times, the count does not move with the load on a shared machine, so it tells whether a
# change to the call path made the gateway do less (see BENCHMARKS.md).
#
# Usage: scripts/instructions.sh [CALLS]    (TOOLGATE_BIN_DIR=DIR to measure other builds,
# TOOLGATE_EXTRA_CONFIG=TOML to append to the gateway's configuration)
# Needs release builds (cargo build --release -p toolgate -p toolgate-demo-server), valgrind,
# curl and python3. Runs `toolgate serve` under callgrind in front of `demo-mcp-server`, once
# over stdio and once over HTTP, then `toolgate stdio` in front of it; for each, sends 200
# warm-up calls (one session; one keep-alive connection over HTTP), zeroes the counters, sends
# CALLS calls and divides the count by CALLS. The count covers every thread of the gateway (the
# audit writer and SQLite included) but not the kernel. Under valgrind, SHA-256 runs its
# portable code (no SHA extensions): hashing counts several times what it costs natively.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

calls="${1:-1000}"
bin="${TOOLGATE_BIN_DIR:-target/release}"
for tool in valgrind callgrind_control curl python3; do
    command -v "$tool" >/dev/null || { echo "instructions.sh: $tool is required" >&2; exit 2; }
done
for exe in toolgate demo-mcp-server; do
    [[ -x "$bin/$exe" ]] || { echo "instructions.sh: build $bin/$exe first" >&2; exit 2; }
done
bin="$(cd "$bin" && pwd)"

work="$(mktemp -d /tmp/toolgate-instructions.XXXXXX)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/$2" && return 0; sleep 0.2; done
    echo "instructions.sh: nothing answers on port $1" >&2
    exit 1
}

token="tg_$(head -c 32 /dev/urandom | xxd -p -c 64)"
digest="$(printf %s "$token" | sha256sum | cut -d' ' -f1)"
gw_port="$(free_port)"
demo_port="$(free_port)"
printf '{"version": "1", "default": "allow"}\n' > "$work/policy.json"
cat > "$work/gateway.toml" <<EOF
[listen]
mcp = "127.0.0.1:$gw_port"
[state]
dir = "$work/state"
[servers.demo-stdio]
command = "$bin/demo-mcp-server"
[servers.demo-http]
url = "http://127.0.0.1:$demo_port/mcp"
[grants.bench]
token_sha256 = "$digest"
policy = "$work/policy.json"
EOF
# Extra configuration for experiments, e.g. TOOLGATE_EXTRA_CONFIG=$'[audit]\nenabled = false'.
printf '%s\n' "${TOOLGATE_EXTRA_CONFIG:-}" >> "$work/gateway.toml"

"$bin/demo-mcp-server" --http "127.0.0.1:$demo_port" > "$work/demo.log" 2>&1 &
pids+=($!)
wait_http "$demo_port" mcp
valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
    "$bin/toolgate" serve --config "$work/gateway.toml" > "$work/gateway.log" 2>&1 &
gateway=$!
pids+=("$gateway")
wait_http "$gw_port" healthz

# Opens a session on PATH and sends N calls of `echo`, checking every answer.
drive() {
    python3 - "$gw_port" "$token" "$1" "$2" <<'EOF'
import http.client, json, sys
port, token, path, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
conn = http.client.HTTPConnection("127.0.0.1", int(port))
headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
           "Accept": "application/json, text/event-stream"}
def post(body):
    conn.request("POST", path, json.dumps(body), headers)
    r = conn.getresponse()
    return r, r.read()
r, _ = post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "instructions", "version": "1"}}})
headers["Mcp-Session-Id"] = r.getheader("mcp-session-id")
headers["MCP-Protocol-Version"] = "2025-11-25"
post({"jsonrpc": "2.0", "method": "notifications/initialized"})
for i in range(1, n + 1):
    r, body = post({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"text": "hello from toolgate-bench"}}})
    if r.status != 200 or b'"result"' not in body or b'"isError":true' in body:
        sys.exit(f"call {i} on {path} failed: {r.status} {body[:200]!r}")
EOF
}

dumps=0
for upstream in stdio http; do
    drive "/mcp/demo-$upstream" 200
    callgrind_control -z "$gateway" > /dev/null 2>&1
    drive "/mcp/demo-$upstream" "$calls"
    callgrind_control -d "$gateway" > /dev/null 2>&1
    dumps=$((dumps + 1))
    total="$(awk '/^summary:/ {print $2}' "$work/callgrind.out.$dumps")"
    printf 'toolgate HTTP -> %-5s upstream: %d instructions per call (%d calls)\n' \
        "$upstream" $((total / calls)) "$calls"
done

# `toolgate stdio`: the driver spawns it under callgrind and speaks JSON lines on its pipes.
python3 - "$bin/toolgate" "$work" "$calls" <<'EOF'
import json, subprocess, sys
toolgate, work, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
gateway = subprocess.Popen(
    ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/stdio.out",
     toolgate, "stdio", "--config", f"{work}/gateway.toml", "--grant", "bench"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(f"{work}/stdio.log", "w"))
def send(message):
    gateway.stdin.write((json.dumps(message) + "\n").encode())
    gateway.stdin.flush()
def receive():
    return json.loads(gateway.stdout.readline())
send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "instructions", "version": "1"}}})
receive()
send({"jsonrpc": "2.0", "method": "notifications/initialized"})
def call(n, first):
    for i in range(first, first + n):
        send({"jsonrpc": "2.0", "id": i, "method": "tools/call",
              "params": {"name": "demo-stdio__echo", "arguments": {"text": "hello from toolgate-bench"}}})
        answer = receive()
        if "result" not in answer or answer["result"].get("isError"):
            sys.exit(f"call {i} over toolgate stdio failed: {answer}")
call(200, 1)
control = lambda flag: subprocess.run(["callgrind_control", flag, str(gateway.pid)], capture_output=True, check=True)
control("-z")
call(calls, 1000)
control("-d")
gateway.stdin.close()
gateway.wait()
total = next(int(l.split()[1]) for l in open(f"{work}/stdio.out.1") if l.startswith("summary:"))
print(f"toolgate stdio -> stdio upstream: {total // calls} instructions per call ({calls} calls)")
EOF
