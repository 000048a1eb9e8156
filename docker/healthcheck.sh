#!/bin/bash
# HEALTHCHECK: GET /livez on the admin listener ($MANDATE_ADMIN, host:port), with bash's
# /dev/tcp so that the image needs no HTTP client. Exit 0 on "200", 1 otherwise.
addr=${MANDATE_ADMIN:-127.0.0.1:9901}
exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}" || exit 1
printf 'GET /livez HTTP/1.0\r\nHost: %s\r\n\r\n' "$addr" >&3
read -r -t 3 _ status _ <&3 || exit 1
[ "$status" = 200 ]
