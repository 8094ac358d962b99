#!/usr/bin/env bash
# Connection URLs against a server of its own that requires a password and
# has an ACL user: AUTH, ACL users, SELECT, and clear refusals.
. "$(dirname "$0")/lib.sh"
S=$STEPQ
own_server auth --requirepass s3cret
redis-cli -p "$REDIS_PORT" -a s3cret --no-auth-warning ACL SETUSER alice on '>al1ce' '~*' '&*' '+@all' >/dev/null

expect_ok "password in a redis:// URL" '
    id=$($S -u "redis://:s3cret@127.0.0.1:$REDIS_PORT/3" submit)
    [ "$(redis-cli -p "$REDIS_PORT" -a s3cret --no-auth-warning -n 3 EXISTS "job:$id")" = 1 ]'
expect_ok "ACL user and password, percent-encoded" '
    $S -u "redis://alice:al%31ce@127.0.0.1:$REDIS_PORT/4" submit >/dev/null
    [ "$(redis-cli -p "$REDIS_PORT" -a s3cret --no-auth-warning -n 4 DBSIZE)" -ge 1 ]'
expect_code 1 "a wrong password is refused, saying AUTH" '
    out=$($S -u "redis://:nope@127.0.0.1:$REDIS_PORT" submit 2>&1); echo "$out"
    echo "$out" | grep -q "AUTH" && ! echo "$out" | grep -q nope || exit 9
    $S -u "redis://:nope@127.0.0.1:$REDIS_PORT" submit'
expect_code 1 "no password where one is needed" '$S -u "redis://127.0.0.1:$REDIS_PORT" submit'
expect_code 1 "a database that does not exist" '$S -u "redis://:s3cret@127.0.0.1:$REDIS_PORT/500" submit'

finish
