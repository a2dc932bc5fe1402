#!/usr/bin/env bash
# Quick start: build toolgate and ssh-mcp and run the gateway on 127.0.0.1:8787 in front of
# ssh-mcp, with a policy (read-only commands unattended, sessions rate-limited, tunnels refused)
# and embedded state in .toolgate/. The first run creates a grant and prints its token, and
# copies the example hosts file to .toolgate/ssh-hosts.toml: edit it to point at your host.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release --locked -p toolgate -p toolgate-ssh-mcp >&2

dir=.toolgate
config="$dir/quickstart.toml"
mkdir -p "$dir"
chmod 700 "$dir"
if [ ! -f "$config" ]; then
    token="tg_$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
    hash=$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)
    umask 077
    printf '%s\n' "$token" >"$dir/quickstart.token"
    sed -e "s/@TOKEN_SHA256@/$hash/" examples/quickstart.toml >"$config"
    echo "Created $config and a grant 'quickstart'; its token is in $dir/quickstart.token" >&2
fi
if ! grep -q '^\[servers\.ssh\]' "$config"; then
    # A .toolgate/ from an earlier quick start (the demo server): front ssh-mcp now, same token.
    hash=$(tr -d '\n' <"$dir/quickstart.token" | sha256sum | cut -d' ' -f1)
    sed -e "s/@TOKEN_SHA256@/$hash/" examples/quickstart.toml >"$config"
    rm -f "$dir/quickstart-policy.json"
    echo "Updated $config to guard ssh-mcp (the grant's token is unchanged)" >&2
fi
if ! grep -q '^admin = ' "$config"; then
    # A .toolgate/ from before the web UI: add it, same token.
    hash=$(tr -d '\n' <"$dir/quickstart.token" | sha256sum | cut -d' ' -f1)
    sed -e "s/@TOKEN_SHA256@/$hash/" examples/quickstart.toml >"$config"
    echo "Updated $config: the web UI listens on 127.0.0.1:8788" >&2
fi
if [ ! -f "$dir/quickstart-policy.json" ]; then
    cp examples/policies/quickstart-ssh.json "$dir/quickstart-policy.json"
fi
if [ ! -f "$dir/ssh-hosts.toml" ]; then
    sed -e "s/^user = \"me\"/user = \"$(id -un)\"/" examples/ssh-hosts.toml >"$dir/ssh-hosts.toml"
    echo "Created $dir/ssh-hosts.toml (host 'localhost' = $(id -un)@127.0.0.1:22 with ~/.ssh/id_ed25519); edit it for your host" >&2
fi
target/release/ssh-mcp --config "$dir/ssh-hosts.toml" --check >&2
token=$(cat "$dir/quickstart.token")
cat >&2 <<EOT

toolgate: MCP endpoint http://127.0.0.1:8787/mcp  (grant 'quickstart'), guarding ssh-mcp
  web UI: http://127.0.0.1:8788 (log in with the one-time link in the log below)
  hosts:  $dir/ssh-hosts.toml      policy: $dir/quickstart-policy.json
  token:  $token
  try:    curl -s http://127.0.0.1:8787/mcp -H 'Authorization: Bearer $token' \\
            -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \\
            -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"curl","version":"0"}}}'

EOT
exec target/release/toolgate serve --config "$config" "$@"
