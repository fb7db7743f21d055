#!/usr/bin/env bash
# Generates the TLS material the tests use, at test time (no key is ever committed).
# Idempotent and safe to run from several test files at once (prove -j): a lock serialises the
# runs, and nothing is regenerated while every file is present and valid for at least a day.
#
#   t/gen-certs.sh [DIR]        DIR defaults to t/certs (gitignored)
#
# Writes into DIR:
#   ca.crt ca.key                 a test CA ("LB Test CA")
#   localhost.crt localhost.key   signed by the CA; CN localhost, SAN DNS:localhost, IP:127.0.0.1
#   backend.test.crt .key         signed by the CA; CN backend.test, SAN DNS:backend.test
#   untrusted.crt untrusted.key   self-signed (not by the CA); SAN DNS:localhost, IP:127.0.0.1,
#                                 DNS:backend.test, so only the trust check can reject it
# and prints DIR's absolute path.
set -euo pipefail

dir=${1:-$(dirname "$0")/certs}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
command -v openssl >/dev/null 2>&1 || { echo "gen-certs.sh: openssl not found (apt-get install openssl)" >&2; exit 1; }

exec 9>"$dir/.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi

files="ca.crt ca.key localhost.crt localhost.key backend.test.crt backend.test.key untrusted.crt untrusted.key"

complete() {
    local f
    [ -f "$dir/.complete" ] || return 1
    for f in $files; do [ -s "$dir/$f" ] || return 1; done
    for f in ca localhost backend.test untrusted; do
        openssl x509 -in "$dir/$f.crt" -noout -checkend 86400 >/dev/null 2>&1 || return 1
    done
    openssl verify -CAfile "$dir/ca.crt" "$dir/localhost.crt" "$dir/backend.test.crt" >/dev/null 2>&1 || return 1
}

if ! complete; then
    tmp=$(mktemp -d "$dir/.tmp.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    days=3650
    key() { openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$tmp/$1.key" 2>/dev/null; }

    # CA
    key ca
    cat >"$tmp/ca.ext" <<'EOF'
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
    openssl req -new -key "$tmp/ca.key" -subj "/CN=LB Test CA" -out "$tmp/ca.csr"
    openssl x509 -req -in "$tmp/ca.csr" -signkey "$tmp/ca.key" -days "$days" -sha256 \
        -extfile "$tmp/ca.ext" -out "$tmp/ca.crt" 2>/dev/null

    # leaf NAME SAN: signed by the CA
    leaf() {
        local name=$1 san=$2
        key "$name"
        cat >"$tmp/$name.ext" <<EOF
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = $san
authorityKeyIdentifier = keyid
EOF
        openssl req -new -key "$tmp/$name.key" -subj "/CN=$name" -out "$tmp/$name.csr"
        openssl x509 -req -in "$tmp/$name.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" \
            -set_serial "0x$(openssl rand -hex 8)" -days "$days" -sha256 \
            -extfile "$tmp/$name.ext" -out "$tmp/$name.crt" 2>/dev/null
    }
    leaf localhost "DNS:localhost, IP:127.0.0.1"
    leaf backend.test "DNS:backend.test"

    # self-signed, trusted by nobody
    key untrusted
    cat >"$tmp/untrusted.ext" <<'EOF'
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, DNS:backend.test
EOF
    openssl req -new -key "$tmp/untrusted.key" -subj "/CN=untrusted" -out "$tmp/untrusted.csr"
    openssl x509 -req -in "$tmp/untrusted.csr" -signkey "$tmp/untrusted.key" -days "$days" -sha256 \
        -extfile "$tmp/untrusted.ext" -out "$tmp/untrusted.crt" 2>/dev/null

    openssl verify -CAfile "$tmp/ca.crt" "$tmp/localhost.crt" "$tmp/backend.test.crt" >/dev/null
    if openssl verify -CAfile "$tmp/ca.crt" "$tmp/untrusted.crt" >/dev/null 2>&1; then
        echo "gen-certs.sh: untrusted.crt unexpectedly verifies against the CA" >&2; exit 1
    fi

    rm -f "$dir/.complete"
    chmod 600 "$tmp"/*.key
    for f in $files; do mv -f "$tmp/$f" "$dir/$f"; done
    : >"$dir/.complete"
fi

echo "$dir"
