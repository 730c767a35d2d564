#!/usr/bin/env bash
# wxbroker from shell scripts, with curl over the Unix socket.
#
#   source deploy/clients/shell/wxbroker.sh
#   WXBROKER_APP=shop
#   token=$(wxbroker_token)
#   wxbroker_call tcb/invokecloudfunction 'env=prod-3f9a&name=music' '{"$url":"playlist"}'
#   wxbroker_call tcb/databasequery '' '{"env":"prod-3f9a","query":"db.collection(\"playlist\").get()"}'
#
# Run directly for a demonstration: ./wxbroker.sh [app]

WXBROKER_SOCKET=${WXBROKER_SOCKET:-/run/wxbroker/wxbroker.sock}
WXBROKER_CLIENT=${WXBROKER_CLIENT:-shell}

_wxbroker_curl() {
  curl --silent --show-error --max-time 35 \
    --unix-socket "$WXBROKER_SOCKET" \
    -H "Wxbroker-Client: $WXBROKER_CLIENT" "$@"
}

_wxbroker_app_path() {
  if [ -n "${WXBROKER_APP:-}" ]; then
    printf '/v1/apps/%s/%s' "$WXBROKER_APP" "$1"
  else
    printf '/v1/%s' "$1"
  fi
}

# Prints the app's current token (fails when the broker has none).
wxbroker_token() {
  _wxbroker_curl --fail "http://localhost$(_wxbroker_app_path token)?format=text"
}

# Reports a token WeChat rejected (40001/40014/42001); prints the broker's answer.
wxbroker_invalidate() {
  _wxbroker_curl --fail -X POST -H 'Content-Type: application/json' \
    --data "{\"access_token\":\"$1\"}" \
    "http://localhost$(_wxbroker_app_path token/invalidate)"
}

# wxbroker_call PATH [QUERY] [JSON_BODY]: a WeChat API through the broker's
# proxy, which adds the token and retries once if WeChat rejects it. POST
# when a body is given, GET otherwise. Prints WeChat's answer.
wxbroker_call() {
  local path=$1 query=${2:-} body=${3:-}
  local url="http://localhost$(_wxbroker_app_path "proxy/$path")"
  [ -n "$query" ] && url="$url?$query"
  if [ -n "$body" ]; then
    _wxbroker_curl -X POST -H 'Content-Type: application/json' --data-binary "$body" "$url"
  else
    _wxbroker_curl "$url"
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  WXBROKER_APP=${1:-${WXBROKER_APP:-}}
  echo "token: $(wxbroker_token | wc -c | tr -d " ") characters (not shown)"
  echo "quota of /cgi-bin/token:"
  wxbroker_call cgi-bin/openapi/quota/get 'cgi_path=%2Fcgi-bin%2Ftoken'
  echo
fi
