#!/bin/sh
# A self-signed certificate for trying Alem behind nginx (compose.yaml, deploy/nginx.conf):
#   deploy/self-signed-cert.sh [HOSTNAME] [DIRECTORY]
# writes DIRECTORY/alem.crt and DIRECTORY/alem.key (default: localhost, deploy/tls). Browsers
# warn about it: for a real deployment put the ministry's certificate and key at those paths.
# Keeps an existing pair, so running it again never replaces a certificate in use.
set -eu
host="${1:-localhost}"
dir="${2:-$(dirname "$0")/tls}"
mkdir -p "$dir"
if [ -s "$dir/alem.crt" ] && [ -s "$dir/alem.key" ]; then
    echo "Keeping the certificate in $dir (remove alem.crt and alem.key to make a new one)."
    exit 0
fi
umask 077
openssl req -x509 -newkey rsa:3072 -sha256 -nodes -days 365 \
    -subj "/CN=$host" -addext "subjectAltName=DNS:$host,DNS:localhost,IP:127.0.0.1" \
    -keyout "$dir/alem.key" -out "$dir/alem.crt" 2>/dev/null
# The key stays readable by its owner only; nginx's master process reads it as root.
chmod 644 "$dir/alem.crt"
echo "Wrote $dir/alem.crt and $dir/alem.key for $host (self-signed, valid 365 days)."
