# bench/lib.sh - what the walk benchmarks (run-migrate.sh, run-scale.sh)
# share; sourced after they set B (the build's bench dir), tmp, and the
# function cli (redis-cli to the server under test).

field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" "$2"; } # field NAME FILE

# fresh URL N: an empty server loaded with N steps; prints the old key count.
fresh_at() {
    cli FLUSHALL >/dev/null
    "$B/load_legacy" "$1" "$2" >"$tmp/load"
    field keys "$tmp/load"
}

# timed NAME CMD...: runs CMD under GNU time; NAME.out, NAME.wall (s),
# NAME.rss (KiB).
timed() {
    local name=$1
    shift
    /usr/bin/time -f '%e %M' -o "$tmp/$name.time" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" || {
        echo "benchmark step '$name' failed:" >&2
        tail -5 "$tmp/$name.err" >&2
        exit 1
    }
    read -r wall rss <"$tmp/$name.time"
    echo "$wall" >"$tmp/$name.wall"
    echo "$rss" >"$tmp/$name.rss"
}
