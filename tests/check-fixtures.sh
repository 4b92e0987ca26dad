#!/usr/bin/env bash
# check-fixtures.sh PGSWEEPER SOURCE_ROOT
#
# tests/fixtures/invalid/X.yaml: `pgsweeper --check -c invalid/X.yaml`, run
# from tests/fixtures so file names in messages are stable, must exit 78,
# print nothing on stdout and exactly X.err on stderr.
# tests/fixtures/valid/X.yaml: --check prints "configuration OK", exits 0,
# stderr is exactly X.err (warnings) or empty; --dump prints exactly X.dump,
# and the dump loads back to the same dump (less its "# from FILE" comments).
# Only the top level of invalid/ and valid/ holds main files: the files they
# include live in subdirectories (X.d/) and are checked through them.
# conf/*.yaml: --check passes without any warning.
# PGSWEEPER_FIXTURES_UPDATE=1 rewrites the expected files instead (review the diff!).
set -u
bin=$1
root=$2
update=${PGSWEEPER_FIXTURES_UPDATE:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=0
checked=0

fail() {
        echo "FAIL: $*"
        failed=$((failed + 1))
}

# same FILE EXPECTED: compare, or rewrite EXPECTED when updating
same() {
        if [ -n "$update" ]; then
                if [ -s "$1" ] || [[ "$2" == *.dump ]]; then cp "$1" "$2"; else rm -f "$2"; fi
                return 0
        fi
        if [ ! -e "$2" ]; then
                [ ! -s "$1" ] && return 0
                fail "$2 is missing; got:"
                cat "$1"
                return 1
        fi
        if ! diff -u "$2" "$1"; then
                fail "$2 differs (diff above: - expected, + got)"
                return 1
        fi
}

cd "$root/tests/fixtures" || exit 1
for f in invalid/*.yaml; do
        checked=$((checked + 1))
        "$bin" --check -c "$f" >"$tmp/out" 2>"$tmp/err"
        rc=$?
        [ $rc -eq 78 ] || fail "$f: exit code $rc, want 78"
        [ -s "$tmp/out" ] && fail "$f: unexpected stdout: $(cat "$tmp/out")"
        same "$tmp/err" "${f%.yaml}.err"
        grep -q hunter2 "$tmp/err" && fail "$f: a password leaked into the messages"
done

for f in valid/*.yaml; do
        checked=$((checked + 1))
        "$bin" --check -c "$f" >"$tmp/out" 2>"$tmp/err"
        rc=$?
        [ $rc -eq 0 ] || fail "$f: exit code $rc, want 0"
        [ "$(cat "$tmp/out")" = "configuration OK" ] || fail "$f: stdout is not \"configuration OK\": $(cat "$tmp/out")"
        same "$tmp/err" "${f%.yaml}.err"
        "$bin" --dump -c "$f" >"$tmp/dump" 2>/dev/null || fail "$f: --dump failed"
        same "$tmp/dump" "${f%.yaml}.dump"
        grep -q hunter2 "$tmp/dump" && fail "$f: a password leaked into the dump"
        cp "$tmp/dump" "$tmp/again.yaml"
        "$bin" --dump -c "$tmp/again.yaml" >"$tmp/dump2" 2>/dev/null || fail "$f: its dump does not load"
        # A fleet's dump names the included file of each server in a "# from"
        # comment; read back, the dump is one file, so its dump has none.
        sed '/^  # from /d' "$tmp/dump" >"$tmp/dump-merged"
        cmp -s "$tmp/dump-merged" "$tmp/dump2" || fail "$f: its dump does not load back to the same dump"
done

cd "$root" || exit 1
for f in conf/*.yaml; do
        checked=$((checked + 1))
        "$bin" --check -c "$f" >"$tmp/out" 2>"$tmp/err"
        rc=$?
        [ $rc -eq 0 ] && [ "$(cat "$tmp/out")" = "configuration OK" ] && [ ! -s "$tmp/err" ] ||
                fail "$f: exit $rc, stdout $(cat "$tmp/out"), stderr: $(cat "$tmp/err")"
done

echo "$checked files checked, $failed failures"
[ $failed -eq 0 ]
