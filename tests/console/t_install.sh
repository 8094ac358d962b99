#!/usr/bin/env bash
# t_install.sh - `make install`'s files, staged with DESTDIR (database 117,
# unused): the binary, the library and its header through pkg-config (a
# program is compiled against them and run), the man page, the bash
# completion, and the systemd units checked by `systemd-analyze verify`.
. "$(dirname "$0")/../cli/lib.sh"
build=$(dirname "$STEPQ")
d=$(mktemp -d)
trap 'rm -rf "$d" "$tmpout"' EXIT

expect_ok "cmake --install with DESTDIR" 'DESTDIR=$d cmake --install "$build" >/dev/null'
bin=$(find "$d" -path "*/bin/stepq" | head -1)
pc=$(find "$d" -name stepq.pc | head -1)
prefix=$(sed -n 's/^prefix=//p' "$pc")
expect_ok "the binary, library, header, pkg-config file, man page, completion, units" '
    [ -x "$bin" ] && [ -n "$(find "$d" -name "libstepq.so.0*")" ] &&
    [ -f "$d$prefix/include/stepq.h" ] && [ -f "$d$prefix/share/man/man1/stepq.1" ] &&
    [ -f "$d$prefix/share/bash-completion/completions/stepq" ] &&
    [ -f "$d$prefix/lib/systemd/system/stepq-serve.service" ] &&
    [ -f "$d$prefix/lib/systemd/system/stepq-worker@.service" ]'
expect_ok "the installed stepq --version" '"$bin" --version | grep -qx "stepq $(sed -n "s/^Version: //p" "$pc")"'
cat >"$d/use.c" <<'C'
#include <stdio.h>
#include <stepq.h>
int main(void)
{
    printf("%s %s\n", STEPQ_VERSION, stepq_phase_name(STEPQ_PHASE_DUAL_READ));
    return 0;
}
C
expect_ok "a program builds against the installed header and library with pkg-config" '
    export PKG_CONFIG_SYSROOT_DIR=$d PKG_CONFIG_PATH=$(dirname "$pc")
    lib=$(find "$d" -name "libstepq.so" | head -1)
    san=""; ldd "$lib" | grep -q libasan && san="-fsanitize=address,undefined" # make test-asan
    cc $san -o "$d/use" "$d/use.c" $(pkg-config --cflags --libs stepq) &&
    LD_LIBRARY_PATH=$(dirname "$(find "$d" -name "libstepq.so" | head -1)") "$d/use" | grep -q " dual-read$"'
expect_ok "the man page has every command" '
    for c in submit get list claim serve worker "migrate backfill" "migrate cleanup"; do
        grep -qx ".SS $c" "$d$prefix/share/man/man1/stepq.1"; done &&
    { ! command -v man >/dev/null || man -l "$d$prefix/share/man/man1/stepq.1" 2>&1 | grep -q "migrate backfill"; }'
expect_ok "bash completes commands, subcommands and options" '
    bash -c ". \"$d$prefix/share/bash-completion/completions/stepq\"
        COMP_WORDS=(\"$bin\" mig); COMP_CWORD=1; _stepq; [ \"\${COMPREPLY[*]}\" = migrate ] || exit 1
        COMP_WORDS=(\"$bin\" migrate backfill --dr); COMP_CWORD=3; _stepq; [ \"\${COMPREPLY[*]}\" = --dry-run ] || exit 1
        complete -p stepq >/dev/null"'

# systemd-analyze verify checks that ExecStart's program exists: point the
# units at the staged binary. It warns (exit 0) about lines it ignores, such
# as a comment at the end of a line: any output fails the test.
if command -v systemd-analyze >/dev/null; then
    for u in stepq-serve.service stepq-worker@.service; do
        sed "s|^ExecStart=$prefix/bin/stepq|ExecStart=$d$prefix/bin/stepq|" "$d$prefix/lib/systemd/system/$u" >"$d/$u"
    done
    cp "$d/stepq-worker@.service" "$d/stepq-worker@w1.service"
    expect_ok "systemd-analyze verify: the units are clean" '
        out=$(systemd-analyze verify "$d/stepq-serve.service" "$d/stepq-worker@w1.service" 2>&1); rc=$?
        echo "$out"; [ $rc = 0 ] && [ -z "$out" ]'
    expect_ok "the units run what was installed" 'grep -q "^ExecStart=$prefix/bin/stepq serve" "$d$prefix/lib/systemd/system/stepq-serve.service"'
else
    echo "skip systemd-analyze verify: systemd-analyze is not installed (Debian package systemd)"
fi
finish
