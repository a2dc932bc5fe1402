#!/usr/bin/env bash
# Quick start: build toolgate and run it on 127.0.0.1:8787 in front of the demo MCP server,
# with embedded state in .toolgate/. The first run creates a grant and prints its token.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release --locked -p toolgate -p toolgate-demo-server >&2

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
if [ ! -f "$dir/quickstart-policy.json" ]; then
    cp examples/policies/quickstart-demo.json "$dir/quickstart-policy.json"
fi
token=$(cat "$dir/quickstart.token")
cat >&2 <<EOT

toolgate: MCP endpoint http://127.0.0.1:8787/mcp  (grant 'quickstart')
  token:  $token
  try:    curl -s http://127.0.0.1:8787/mcp -H 'Authorization: Bearer $token' \\
            -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \\
            -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"curl","version":"0"}}}'

EOT
exec target/release/toolgate serve --config "$config" "$@"
