#!/usr/bin/env bash
# Start Label Studio (from the venv made by scripts/install_label_studio.sh) on a loopback port,
# configured so a local ML backend on 127.0.0.1 can be connected and can download task files.
#
# Environment (all optional):
#   LS_VENV        venv with label-studio               (default: <repo>/.ls-venv)
#   LS_PORT        port                                 (default: 8080)
#   LS_HOST        bind address                         (default: 127.0.0.1)
#   LS_DATA_DIR    Label Studio data dir (SQLite, media) (default: <repo>/data/label-studio)
#   LS_FILES_ROOT  local-files document root            (default: <repo>/data/files)
#   LS_USERNAME    admin e-mail                         (default: admin@example.com)
#   LS_PASSWORD    admin password                       (default: admin12345)
#   LS_USER_TOKEN  admin's legacy API token             (default: generated once, kept in
#                                                        $LS_DATA_DIR/.user_token)
#
# The backend then uses LABEL_STUDIO_URL=http://$LS_HOST:$LS_PORT and
# LABEL_STUDIO_API_KEY=$LS_USER_TOKEN (sent as "Authorization: Token <key>").
# A fresh SQLite database takes ~75 s to come up on 2 cores; a restart ~17 s.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LS_VENV="${LS_VENV:-$REPO_ROOT/.ls-venv}"
LS_PORT="${LS_PORT:-8080}"
LS_HOST="${LS_HOST:-127.0.0.1}"
LS_DATA_DIR="${LS_DATA_DIR:-$REPO_ROOT/data/label-studio}"
LS_FILES_ROOT="${LS_FILES_ROOT:-$REPO_ROOT/data/files}"
LS_USERNAME="${LS_USERNAME:-admin@example.com}"
LS_PASSWORD="${LS_PASSWORD:-admin12345}"

if [ ! -x "$LS_VENV/bin/label-studio" ]; then
    echo "error: no label-studio in $LS_VENV; run scripts/install_label_studio.sh first" >&2
    exit 1
fi

mkdir -p "$LS_DATA_DIR" "$LS_FILES_ROOT"
if [ -z "${LS_USER_TOKEN:-}" ]; then
    token_file="$LS_DATA_DIR/.user_token"
    if [ ! -s "$token_file" ]; then
        (umask 077; "$LS_VENV/bin/python" -c 'import secrets; print(secrets.token_hex(20))' >"$token_file")
    fi
    LS_USER_TOKEN="$(cat "$token_file")"
fi

echo "Label Studio: http://$LS_HOST:$LS_PORT  user $LS_USERNAME  data $LS_DATA_DIR"
echo "Local files root: $LS_FILES_ROOT (add storages under a subfolder of it)"
echo "Backend env: LABEL_STUDIO_URL=http://$LS_HOST:$LS_PORT LABEL_STUDIO_API_KEY=$LS_USER_TOKEN"

export LABEL_STUDIO_BASE_DATA_DIR="$LS_DATA_DIR"
export LABEL_STUDIO_USERNAME="$LS_USERNAME"
export LABEL_STUDIO_PASSWORD="$LS_PASSWORD"
export LABEL_STUDIO_USER_TOKEN="$LS_USER_TOKEN"
export LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true
export LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK=true
export LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true
export LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT="$LS_FILES_ROOT"
# Allow an ML backend on a loopback / private address, and let LS create its <backend>/webhook.
export ML_BLOCK_LOCAL_IP=false
export SSRF_PROTECTION_ENABLED=false

exec "$LS_VENV/bin/label-studio" start --no-browser \
    --internal-host "$LS_HOST" --host "http://$LS_HOST:$LS_PORT" --port "$LS_PORT" "$@"
