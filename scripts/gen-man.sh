#!/usr/bin/env bash
# gen-man.sh STEPQ OUT - writes the stepq(1) man page from the help texts of
# the built binary (`stepq --help`, `stepq CMD --help`, `stepq migrate SUB
# --help`), so the page and the program never disagree.
set -euo pipefail
S=$1
out=$2
esc() { sed -e 's/\\/\\e/g' -e 's/^\./\\\&./' -e "s/^'/\\\\\\&'/"; }
{
    echo ".TH STEPQ 1 \"\" \"stepq $("$S" --version | cut -d' ' -f2)\" \"User Commands\""
    echo ".SH NAME"
    echo "stepq \\- a Redis-backed step queue and its job:* to step:* key migration"
    echo ".SH SYNOPSIS"
    echo ".nf"
    "$S" --help | sed -n '1,2p' | esc
    echo ".fi"
    echo ".SH DESCRIPTION"
    echo ".nf"
    "$S" --help | sed '1,2d' | esc
    echo ".fi"
    echo ".SH COMMANDS"
    for c in $("$S" --help | sed -n '/^commands:/,/^$/p' | awk 'NR > 1 && NF { print $1 }'); do
        [ "$c" = migrate ] && continue
        echo ".SS $c"
        echo ".nf"
        "$S" "$c" --help 2>&1 | esc
        echo ".fi"
    done
    for c in $("$S" migrate --help | sed -n '/^subcommands:/,$p' | awk 'NR > 1 && NF { print $1 }'); do
        echo ".SS migrate $c"
        echo ".nf"
        "$S" migrate "$c" --help 2>&1 | esc
        echo ".fi"
    done
    echo ".SH ENVIRONMENT"
    echo "REDIS_URL, STEPQ_NAMESPACE, STEPQ_RULES, STEPQ_RETENTION, STEPQ_API_TOKEN (serve),"
    echo "STEPQ_OPERATOR (the audit log's who), ENABLE_DUAL_WRITE_STEPS and PRIMARY_KEY_PATTERN (a pin)."
    echo ".SH EXIT STATUS"
    echo "0 done, 1 failed, 2 usage error, 3 not found or nothing to claim, 4 refused by a rule."
} >"$out"
