# What bench/run.sh, bench/ab.sh and bench/instructions.sh share (sourced,
# not run): a free port and the configuration of one run of the provider.

# A free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# write_config DIR PORT: DIR/idp.toml and DIR/clients/bench.toml for one run
# of the provider on PORT, its data in DIR/data, with the caller's
# $CLIENT_ID, $SECRET_HASH_LINE (from `idp client secret`) and $REDIRECT_URI;
# and, when the caller sets $DPOP_CLIENT_ID and $DPOP_CLIENT_JWKS (a JWK Set
# as JSON, from `idp-bench-drive keygen`), DIR/clients/$DPOP_CLIENT_ID.toml:
# the private_key_jwt + DPoP client.
write_config() {
    local dir=$1 port=$2
    mkdir -p "$dir/clients" "$dir/data"
    cat >"$dir/idp.toml" <<EOT
# Written by the benchmark (bench/config.sh) for one run.
listen = "127.0.0.1:$port"
issuer = "http://127.0.0.1:$port"
data_dir = "$dir/data"
clients_dir = "clients"
# [password] keeps the OWASP defaults: m=19456 KiB, t=2, p=1.
EOT
    cat >"$dir/clients/bench.toml" <<EOT
client_id = "$CLIENT_ID"
name = "Benchmark portal"
type = "confidential"
$SECRET_HASH_LINE
redirect_uris = ["$REDIRECT_URI"]
grant_types = ["authorization_code", "refresh_token", "client_credentials"]
scopes = ["openid", "profile", "email"]
id_token_signed_response_alg = "ES256"

[lifetimes]
# Codes are minted before they are exchanged.
authorization_code_secs = 600
EOT
    if [ -n "${DPOP_CLIENT_ID:-}" ] && [ -n "${DPOP_CLIENT_JWKS:-}" ]; then
        cat >"$dir/clients/$DPOP_CLIENT_ID.toml" <<EOT
client_id = "$DPOP_CLIENT_ID"
name = "Benchmark portal (private_key_jwt + DPoP)"
type = "confidential"
token_endpoint_auth_method = "private_key_jwt"
jwks = '$DPOP_CLIENT_JWKS'
dpop_bound_access_tokens = true
redirect_uris = ["$REDIRECT_URI"]
grant_types = ["authorization_code", "refresh_token"]
scopes = ["openid", "profile", "email"]
id_token_signed_response_alg = "ES256"

[lifetimes]
authorization_code_secs = 600
EOT
    fi
}
